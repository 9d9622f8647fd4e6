/**
 * The PV domain builder (the role of libxenguest's xc_dom_* and libxl's
 * domain create): a new domain with its memory, kernel image, start_info and
 * vCPU 0 context, left paused for the caller to unpause.
 */
import { encodeKernelImage, encodeStartInfo, IMAGE_GFN, MIN_PV_PAGES, START_INFO_GFN } from '../shared/guest/image.ts';
import { PAGE_SIZE } from '../shared/types.ts';
import { XenError } from '../shared/guest/xen.ts';
import { ENOMEM } from '../shared/errno.ts';
import type { XenCtrl } from './libxc.ts';

export interface PvBuildConfig {
  readonly name: string;
  /** Kernel module path, relative to the project root. */
  readonly kernel: string;
  readonly memoryMiB: number;
  /** Ceiling for ballooning up; defaults to memoryMiB. */
  readonly maxmemMiB?: number;
  readonly vcpus?: number;
  readonly cmdline?: string;
}

export const pagesOf = (mib: number): number => Math.floor((mib * 1024 * 1024) / PAGE_SIZE);

/** Build a paused PV domain; returns its domid. Destroys the half-built domain on failure. */
export async function buildPvDomain(ctrl: XenCtrl, c: PvBuildConfig): Promise<number> {
  const pages = pagesOf(c.memoryMiB);
  if (pages < MIN_PV_PAGES) throw new Error(`${c.name}: memory ${c.memoryMiB} MiB is below the minimum of ${MIN_PV_PAGES} pages`);
  const domid = ctrl.createDomain({ maxVcpus: c.vcpus ?? 1 });
  try {
    ctrl.maxMem(domid, Math.max(c.maxmemMiB ?? c.memoryMiB, c.memoryMiB) * 1024);
    const gfns = Array.from({ length: pages }, (_, i) => i);
    const done = ctrl.xen.populatePhysmap(gfns, 0, domid);
    if (done !== pages) throw new XenError(`populate_physmap(d${domid}: ${done} of ${pages} pages)`, done < 0 ? done : -ENOMEM);
    const info = ctrl.domainInfo(domid);
    if (!info) throw new Error(`domain ${domid} vanished while being built`);
    ctrl.withForeignPage(domid, IMAGE_GFN, (gpa) => ctrl.xen.k.mem.write(gpa, encodeKernelImage(c.kernel)));
    ctrl.withForeignPage(domid, START_INFO_GFN, (gpa) => ctrl.xen.k.mem.write(gpa, encodeStartInfo({
      nrPages: pages, sharedInfoMaddr: info.sharedInfoFrame * PAGE_SIZE, flags: 0, cmdline: c.cmdline ?? '',
    })));
    ctrl.setVcpuContext(domid, 0, IMAGE_GFN * PAGE_SIZE, START_INFO_GFN * PAGE_SIZE);
    return domid;
  } catch (e) {
    await ctrl.destroyDomain(domid);
    throw e;
  }
}
