/**
 * The PV domain builder (the role of libxenguest's xc_dom_* and of libxl's
 * build_pre/build_pv): a new domain with its memory, kernel image, start_info,
 * xenstore and console ring pages and their event channels, and vCPU 0's
 * context, left paused for the caller to introduce to xenstored and unpause.
 *
 * Guest physmap (shared/guest/image.ts): gfn 0 image, 1 start_info, 2 xenstore
 * ring, 3 console ring, 4.. RAM. The event channels are unbound ports of the
 * new domain offered to Dom0 (libxl__build_pre: xc_evtchn_alloc_unbound(domid,
 * store_domid / console_domid)), the guest's first two ports: 1 for xenstore,
 * 2 for the console. start_info's store_mfn and console.domU.mfn carry the
 * ring pages' gfns: our guests are auto-translated, and for those xc_dom
 * reports pfns (libxl__build_pv: "if (xc_dom_translated(dom)) state->store_mfn
 * = dom->xenstore_pfn").
 */
import {
  CONSOLE_GFN, encodeKernelImage, encodeStartInfo, IMAGE_GFN, MIN_PV_PAGES, START_INFO_GFN, XENSTORE_GFN,
} from '../shared/guest/image.ts';
import { PAGE_SIZE } from '../shared/types.ts';
import { XenError } from '../shared/guest/xen.ts';
import { ENOMEM } from '../shared/errno.ts';
import type { XenCtrl } from './libxc.ts';
import type { DiskSpec } from './toolstack/disk.ts';

export interface PvBuildConfig {
  readonly name: string;
  /** Kernel module path, relative to the project root. */
  readonly kernel: string;
  readonly memoryMiB: number;
  /** Ceiling for ballooning up; defaults to memoryMiB. */
  readonly maxmemMiB?: number;
  readonly vcpus?: number;
  readonly cmdline?: string;
  /** The domain handle (xen_domain_handle_t) as a UUID string; default all zeroes. */
  readonly uuid?: string;
  /**
   * Give the domain its xenstore and console rings and their event channels
   * (default true). False leaves start_info's store and console fields 0 and
   * allocates no port, like a dom0less domain with xen,enhanced "disabled"
   * (gfns 2 and 3 stay reserved, unused): for tests of bare event channels.
   */
  readonly rings?: boolean;
  /**
   * Virtual block devices (xl.cfg `disk=`), created by the toolstack
   * (toolstack/vbd.ts) once the domain is built; the builder ignores them.
   * Plain data: a config survives a JSON round trip.
   */
  readonly disks?: readonly DiskSpec[];
}

/** What the toolstack needs after the build (libxl__domain_build_state). */
export interface PvBuildState {
  readonly domid: number;
  /** Pages of initial RAM (nr_pages), the special pages included. */
  readonly nrPages: number;
  /** Ceiling in KiB (max_mem). */
  readonly maxMemKiB: number;
  /** gfn of the xenstore ring page (start_info store_mfn); 0 when built without rings. */
  readonly storeGfn: number;
  /** The guest's xenstore port, unbound, offered to Dom0 (start_info store_evtchn). */
  readonly storePort: number;
  /** gfn of the console ring page (start_info console.domU.mfn). */
  readonly consoleGfn: number;
  /** The guest's console port, unbound, offered to Dom0 (start_info console.domU.evtchn). */
  readonly consolePort: number;
}

/** The console and xenstore back ends live in Dom0 (libxl's store_domid and console_domid). */
const BACKEND_DOMID = 0;

export const pagesOf = (mib: number): number => Math.floor((mib * 1024 * 1024) / PAGE_SIZE);

/** A UUID string as the 16 bytes of a xen_domain_handle_t; undefined for a malformed one. */
export function uuidBytes(uuid: string): Uint8Array | undefined {
  const hex = uuid.replace(/-/g, '');
  if (!/^[0-9a-fA-F]{32}$/.test(hex)) return undefined;
  return Uint8Array.from({ length: 16 }, (_, i) => parseInt(hex.slice(2 * i, 2 * i + 2), 16));
}

/** Build a paused PV domain; returns what the toolstack needs. Destroys the half-built domain on failure. */
export async function buildPv(ctrl: XenCtrl, c: PvBuildConfig): Promise<PvBuildState> {
  const pages = pagesOf(c.memoryMiB);
  if (pages < MIN_PV_PAGES) throw new Error(`${c.name}: memory ${c.memoryMiB} MiB is below the minimum of ${MIN_PV_PAGES} pages`);
  const handle = c.uuid === undefined ? undefined : uuidBytes(c.uuid);
  if (c.uuid !== undefined && !handle) throw new Error(`${c.name}: malformed uuid ${c.uuid}`);
  const domid = ctrl.createDomain({ maxVcpus: c.vcpus ?? 1, handle });
  try {
    const maxMemKiB = Math.max(c.maxmemMiB ?? c.memoryMiB, c.memoryMiB) * 1024;
    ctrl.maxMem(domid, maxMemKiB);
    const gfns = Array.from({ length: pages }, (_, i) => i);
    const done = ctrl.xen.populatePhysmap(gfns, 0, domid);
    if (done !== pages) throw new XenError(`populate_physmap(d${domid}: ${done} of ${pages} pages)`, done < 0 ? done : -ENOMEM);
    const info = ctrl.domainInfo(domid);
    if (!info) throw new Error(`domain ${domid} vanished while being built`);
    // The ring pages are fresh (zeroed) frames: both rings start empty, indexes 0.
    const rings = c.rings ?? true;
    const storePort = rings ? ctrl.evtchnAllocUnbound(domid, BACKEND_DOMID) : 0;
    const consolePort = rings ? ctrl.evtchnAllocUnbound(domid, BACKEND_DOMID) : 0;
    const storeGfn = rings ? XENSTORE_GFN : 0;
    const consoleGfn = rings ? CONSOLE_GFN : 0;
    ctrl.withForeignPage(domid, IMAGE_GFN, (gpa) => ctrl.xen.k.mem.write(gpa, encodeKernelImage(c.kernel)));
    ctrl.withForeignPage(domid, START_INFO_GFN, (gpa) => ctrl.xen.k.mem.write(gpa, encodeStartInfo({
      nrPages: pages, sharedInfoMaddr: info.sharedInfoFrame * PAGE_SIZE, flags: 0, cmdline: c.cmdline ?? '',
      storeMfn: storeGfn, storeEvtchn: storePort, consoleMfn: consoleGfn, consoleEvtchn: consolePort,
    })));
    ctrl.setVcpuContext(domid, 0, IMAGE_GFN * PAGE_SIZE, START_INFO_GFN * PAGE_SIZE);
    return { domid, nrPages: pages, maxMemKiB, storeGfn, storePort, consoleGfn, consolePort };
  } catch (e) {
    await ctrl.destroyDomain(domid);
    throw e;
  }
}

/** Build a paused PV domain; returns its domid. (buildPv without the state.) */
export async function buildPvDomain(ctrl: XenCtrl, c: PvBuildConfig): Promise<number> {
  return (await buildPv(ctrl, c)).domid;
}
