/**
 * Hypervisor start of day (Xen: __start_xen + construct_dom0), on the boot CPU
 * (the platform's main thread): initialise the shared state, the heap, and
 * build domain 0 from its kernel image, paused until the platform is ready.
 */
import { SIF_INITDOMAIN, SIF_PRIVILEGED } from '../shared/abi/start-info.ts';
import { encodeKernelImage, encodeStartInfo, IMAGE_GFN, MIN_PV_PAGES, START_INFO_GFN } from '../shared/guest/image.ts';
import { PAGE_SIZE } from '../shared/types.ts';
import { XEN_EXTRAVERSION, XEN_VERSION_MAJOR, XEN_VERSION_MINOR } from '../shared/hypercall.ts';
import { printk } from './console.ts';
import { domainCreate, domainUnpause, vcpuInitialise } from './domain.ts';
import { buddyInit } from './mm/buddy.ts';
import { buddyOf } from './mm/frames.ts';
import { copyToGuest } from './mm/p2m.ts';
import { populateExtent } from './mm/physmap.ts';
import type { PlatformPort } from './platform-port.ts';
import { D, G, G64, HvState, OWNER_FREE } from './state.ts';

/** Fresh state: every frame free, no domains, no pCPU held. */
export function initState(hv: HvState): void {
  hv.g.fill(0);
  hv.g[G.NR_FRAMES] = hv.nrFrames;
  hv.g[G.NR_PCPUS] = hv.cfg.pcpus;
  hv.g64[G64.BOOT_NS] = process.hrtime.bigint();
  hv.ftOwner.fill(OWNER_FREE);
  hv.ftCount.fill(0);
  hv.ftType.fill(0);
  hv.ftGfn.fill(-1);
  buddyInit(buddyOf(hv));
  hv.g[G.FREE_PAGES] = hv.nrFrames;
  hv.domidMap.fill(-1);
  hv.dom.fill(0);
  hv.pcpuOwner.fill(-1);
  printk(hv, `Xen version ${XEN_VERSION_MAJOR}.${XEN_VERSION_MINOR}${XEN_EXTRAVERSION} (xents, TypeScript)`);
  printk(hv, `${hv.cfg.pcpus} pCPUs, ${hv.nrFrames} frames (${hv.cfg.memMiB} MiB), scheduler ${hv.cfg.sched}`);
}

export interface Dom0Params {
  /** Kernel module path, relative to the project root. */
  readonly kernel: string;
  readonly memMiB: number;
  readonly cmdline: string;
}

/**
 * construct_dom0(): domain 0, privileged, its memory populated at gfns
 * 0..nr_pages-1, the kernel image and start_info written, vCPU 0 online.
 * Unpaused by `startDom0`. Returns the slot; throws if the host cannot hold it.
 */
export function constructDom0(hv: HvState, p: Dom0Params, port: PlatformPort): number {
  const r = domainCreate(hv, {
    domid: 0, cdf: 0, maxVcpus: 1, ssidref: 0, handle: new Uint8Array(16), maxEvtchnPort: 0,
    maxGrantFrames: -1, maxMaptrackFrames: -1, privileged: true, isDom0: true,
  });
  if (typeof r === 'number') throw new Error(`cannot create domain 0: ${r}`);
  const pages = Math.floor((p.memMiB * 1024 * 1024) / PAGE_SIZE);
  if (pages < MIN_PV_PAGES) throw new Error(`dom0 needs at least ${MIN_PV_PAGES} pages`);
  Atomics.store(hv.dom, hv.d(r.slot, D.max_pages), pages);
  for (let g = 0; g < pages; g++) {
    if (populateExtent(hv, r.slot, g, 0) !== 0) throw new Error(`out of memory building dom0 (${g} of ${pages} pages)`);
  }
  const si = hv.dom[hv.d(r.slot, D.shared_info_mfn)];
  copyToGuest(hv, r.slot, IMAGE_GFN * PAGE_SIZE, encodeKernelImage(p.kernel));
  copyToGuest(hv, r.slot, START_INFO_GFN * PAGE_SIZE, encodeStartInfo({
    nrPages: pages, sharedInfoMaddr: si * PAGE_SIZE, flags: SIF_PRIVILEGED | SIF_INITDOMAIN, cmdline: p.cmdline,
  }));
  vcpuInitialise(hv, r.slot, 0, IMAGE_GFN * PAGE_SIZE, START_INFO_GFN * PAGE_SIZE, port);
  printk(hv, `Dom0 kernel ${p.kernel}, ${pages} pages`);
  return r.slot;
}

export function startDom0(hv: HvState, slot: number, port: PlatformPort): void {
  domainUnpause(hv, slot, port);
}
