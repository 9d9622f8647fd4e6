/**
 * Domain lifecycle (Xen: common/domain.c): create, pause/unpause, shutdown,
 * crash, kill (destroy) and the relinquishing of resources. Hypervisor code: it
 * runs on whichever thread made the hypercall (or on the boot CPU for Dom0).
 */
import { EAGAIN, EEXIST, EINVAL, ENOMEM, EOVERFLOW } from '../shared/errno.ts';
import { lock, unlock } from '../shared/lock.ts';
import { RUNSTATE_offline, SHUTDOWN_crash } from '../shared/hypercall.ts';
import { DOMID_FIRST_RESERVED, DOMID_INVALID } from '../shared/types.ts';
import { DEFAULT_MAX_GRANT_FRAMES, DEFAULT_MAX_MAPTRACK_FRAMES } from '../shared/abi/grant-table.ts';
import { EVTCHN_2L_NR_CHANNELS } from '../shared/abi/shared-info.ts';
import { XEN_DOMCTL_CDF_xs_domain } from '../shared/abi/domctl.ts';
import { printk } from './console.ts';
import { closeAll, evtchnInit, sendDom0Virq } from './evtchn/evtchn.ts';
import { gnttabRelinquish } from './gnttab/relinquish.ts';
import { VIRQ_DOM_EXC } from '../shared/abi/event-channel.ts';
import { VCPU_INFO, VCPU_TIME_INFO, XEN_LEGACY_MAX_VCPUS } from '../shared/abi/shared-info.ts';
import { PAGE_SIZE } from '../shared/types.ts';

/** XEN_PVCLOCK_TSC_STABLE_BIT (xen.h). */
const XEN_PVCLOCK_TSC_STABLE_BIT = 1;
import { allocXenFrame, dropAllocation, heapLock, heapUnlock, putPage, PGC_allocated } from './mm/frames.ts';
import { entryMfn, p2mClear } from './mm/p2m.ts';
import type { PlatformPort } from './platform-port.ts';
import {
  D, D_HANDLE_OFFSET, D_WORDS, DOMF_privileged, DOMF_xs_domain, DOMSTATE_ACTIVE, DOMSTATE_DEAD, DOMSTATE_DYING, DOMSTATE_FREE,
  G, HvState, P2M_INVALID, P2M_TYPE_SHIFT, PGT_shared_info, p2m_map_foreign, p2m_ram_rw, V, VPF_down, VPF_killed,
  VPF_shutdown, VT, VTHREAD_NONE, VTHREAD_STARTING, VPF_initialised, GNT_MAX_FRAMES, ACTIVE_PER_GRANT_FRAME,
  MAPTRACK_MAX_FRAMES, V_WORDS,
} from './state.ts';

export interface DomainCreateParams {
  /** Requested domid; 0 (or >= DOMID_FIRST_RESERVED) means pick one. */
  readonly domid: number;
  readonly cdf: number;
  readonly maxVcpus: number;
  readonly ssidref: number;
  readonly handle: Uint8Array;
  readonly maxEvtchnPort: number;
  readonly maxGrantFrames: number;
  readonly maxMaptrackFrames: number;
  readonly privileged: boolean;
  /** Boot only: create domain 0 itself. */
  readonly isDom0?: boolean;
}

export interface CreatedDomain {
  readonly domid: number;
  readonly slot: number;
}

/** Slot of a domain that exists in any state but FREE; -1 if none. */
export function slotOf(hv: HvState, domid: number): number {
  if (!Number.isInteger(domid) || domid < 0 || domid >= DOMID_FIRST_RESERVED) return -1;
  const s = hv.domidMap[domid];
  if (s < 0 || Atomics.load(hv.dom, hv.d(s, D.state)) === DOMSTATE_FREE) return -1;
  return s;
}

/** Slot of a live (not dying) domain; -1 if none. Xen's rcu_lock_domain_by_id for most ops. */
export function liveSlot(hv: HvState, domid: number): number {
  const s = slotOf(hv, domid);
  return s >= 0 && Atomics.load(hv.dom, hv.d(s, D.state)) === DOMSTATE_ACTIVE ? s : -1;
}

export function domidOfSlot(hv: HvState, slot: number): number {
  return Atomics.load(hv.dom, hv.d(slot, D.domid));
}

export function domLock(hv: HvState, slot: number): void { lock(hv.dom, hv.d(slot, D.lock)); }
export function domUnlock(hv: HvState, slot: number): void { unlock(hv.dom, hv.d(slot, D.lock)); }

export function isPrivileged(hv: HvState, slot: number): boolean {
  return (Atomics.load(hv.dom, hv.d(slot, D.flags)) & DOMF_privileged) !== 0;
}

/** Wake a vCPU sleeping on its futex word (Xen's vcpu_kick). */
export function vcpuKick(hv: HvState, slot: number, vcpu: number): void {
  const i = hv.v(slot, vcpu, V.wake);
  Atomics.add(hv.vcpu, i, 1);
  Atomics.notify(hv.vcpu, i);
}

/** Tell anyone waiting for domain state changes (Dom0's toolstack) to look again. */
export function domainEvent(hv: HvState): void {
  Atomics.add(hv.g, G.DOMAIN_EVENT_GEN, 1);
  Atomics.notify(hv.g, G.DOMAIN_EVENT_GEN);
}

/** Runstate transition with timestamp accounting (vcpu.h RUNSTATE_*). */
export function runstateChange(hv: HvState, slot: number, vcpu: number, state: number): void {
  const now = hv.now();
  const i = hv.vt(slot, vcpu, VT.STATE_ENTRY);
  const old = Atomics.load(hv.vcpu, hv.v(slot, vcpu, V.runstate));
  const t = hv.vt(slot, vcpu, VT.TIME0 + old);
  hv.vcpuTime[t] += now - hv.vcpuTime[i];
  hv.vcpuTime[i] = now;
  Atomics.store(hv.vcpu, hv.v(slot, vcpu, V.runstate), state);
}

function pickDomid(hv: HvState, requested: number): number {
  if (requested > 0 && requested < DOMID_FIRST_RESERVED) {
    return slotOf(hv, requested) >= 0 ? -EEXIST : requested;
  }
  // Auto-allocate after the rover, wrapping from DOMID_FIRST_RESERVED to 1.
  const rover = hv.g[G.DOMID_ROVER];
  for (let i = 1; i < DOMID_FIRST_RESERVED; i++) {
    const d = ((rover + i - 1) % (DOMID_FIRST_RESERVED - 1)) + 1;
    if (slotOf(hv, d) < 0 && hv.domidMap[d] < 0) {
      hv.g[G.DOMID_ROVER] = d;
      return d;
    }
  }
  return -ENOMEM;
}

/**
 * domain_create(): a new domain, paused (controller pause count 1) with its
 * vCPUs down until the builder sets their context. Returns the domid and slot,
 * or a negative errno (-EEXIST domid in use, -ENOMEM no slot or memory).
 * Parameters must already be validated by the caller.
 */
export function domainCreate(hv: HvState, p: DomainCreateParams): CreatedDomain | number {
  lock(hv.g, G.DOMLIST_LOCK);
  try {
    const domid = p.isDom0 ? (slotOf(hv, 0) >= 0 ? -EEXIST : 0) : pickDomid(hv, p.domid);
    if (domid < 0) return domid;
    let slot = -1;
    for (let s = 0; s < hv.cfg.maxDomains; s++) {
      if (Atomics.compareExchange(hv.dom, hv.d(s, D.state), DOMSTATE_FREE, DOMSTATE_DYING) === DOMSTATE_FREE) {
        slot = s;
        break;
      }
    }
    if (slot < 0) return -ENOMEM;
    heapLock(hv);
    const si = allocXenFrame(hv, PGT_shared_info);
    heapUnlock(hv);
    if (si < 0) {
      Atomics.store(hv.dom, hv.d(slot, D.state), DOMSTATE_FREE);
      return -ENOMEM;
    }
    const base = slot * D_WORDS;
    const gen = hv.dom[base + D.generation];
    hv.dom.fill(0, base, base + D_WORDS);
    hv.dom[base + D.generation] = gen + 1;
    hv.dom[base + D.domid] = domid;
    hv.dom[base + D.flags] = (p.privileged ? DOMF_privileged : 0) | (p.cdf & XEN_DOMCTL_CDF_xs_domain ? DOMF_xs_domain : 0);
    hv.dom[base + D.pause_count] = 1;
    hv.dom[base + D.shutdown_code] = -1;
    hv.dom[base + D.max_vcpus] = p.maxVcpus;
    hv.dom[base + D.shared_info_mfn] = si;
    hv.dom[base + D.ssidref] = p.ssidref | 0;
    hv.dom[base + D.cdf] = p.cdf | 0;
    hv.dom[base + D.target] = DOMID_INVALID;
    hv.dom[base + D.max_evtchn_port] = p.maxEvtchnPort > 0 ? Math.min(p.maxEvtchnPort, EVTCHN_2L_NR_CHANNELS - 1) : EVTCHN_2L_NR_CHANNELS - 1;
    hv.dom[base + D.max_grant_frames] = p.maxGrantFrames >= 0 ? p.maxGrantFrames : DEFAULT_MAX_GRANT_FRAMES;
    hv.dom[base + D.max_maptrack_frames] = p.maxMaptrackFrames >= 0 ? p.maxMaptrackFrames : DEFAULT_MAX_MAPTRACK_FRAMES;
    hv.domBytes.set(p.handle.subarray(0, 16), slot * (D_WORDS * 4) + D_HANDLE_OFFSET);
    hv.p2m.fill(P2M_INVALID, hv.p2mIndex(slot, 0), hv.p2mIndex(slot, hv.cfg.p2mEntries));
    hv.evtchn.fill(0, hv.ev(slot, 0, 0), hv.ev(slot + 1, 0, 0));
    hv.virqPorts.fill(0, hv.virq(slot, 0, 0), hv.virq(slot + 1, 0, 0));
    hv.grantFrames.fill(-1, slot * GNT_MAX_FRAMES, (slot + 1) * GNT_MAX_FRAMES);
    hv.activeFrames.fill(-1, slot * GNT_MAX_FRAMES * ACTIVE_PER_GRANT_FRAME, (slot + 1) * GNT_MAX_FRAMES * ACTIVE_PER_GRANT_FRAME);
    hv.maptrackFrames.fill(-1, slot * MAPTRACK_MAX_FRAMES, (slot + 1) * MAPTRACK_MAX_FRAMES);
    hv.dom[base + D.maptrack_head] = -1;
    const now = hv.now();
    for (let v = 0; v < hv.cfg.maxVcpus; v++) {
      const w = hv.v(slot, v, 0);
      const wake = hv.vcpu[w + V.wake];
      hv.vcpu.fill(0, w, w + V_WORDS);
      hv.vcpu[w + V.wake] = wake;
      hv.vcpu[w + V.pause_flags] = VPF_down;
      hv.vcpu[w + V.runstate] = RUNSTATE_offline;
      hv.vcpu[w + V.pcpu] = -1;
      hv.vcpu[w + V.thread] = VTHREAD_NONE;
      const t = hv.vt(slot, v, 0);
      hv.vcpuTime.fill(0n, t, t + VT.COUNT);
      hv.vcpuTime[t + VT.STATE_ENTRY] = now;
    }
    evtchnInit(hv, slot);
    initVcpuTimeInfo(hv, si);
    hv.domidMap[domid] = slot;
    Atomics.store(hv.dom, hv.d(slot, D.state), DOMSTATE_ACTIVE);
    domainEvent(hv);
    return { domid, slot };
  } finally {
    unlock(hv.g, G.DOMLIST_LOCK);
  }
}

/**
 * pvclock parameters in every vcpu_time_info of a new shared_info page: our TSC
 * (KernelApi.rdtsc) counts nanoseconds since boot, so system time = tsc with
 * tsc_to_system_mul 0x80000000 and tsc_shift 1 (x * 2 * 2^31 / 2^32 = x).
 */
function initVcpuTimeInfo(hv: HvState, si: number): void {
  const dv = hv.machineView(si * PAGE_SIZE, PAGE_SIZE);
  for (let v = 0; v < XEN_LEGACY_MAX_VCPUS; v++) {
    const t = v * VCPU_INFO.size + VCPU_INFO.fields.time_version.offset;
    dv.setUint32(t + VCPU_TIME_INFO.fields.version.offset, 2, true);
    dv.setBigUint64(t + VCPU_TIME_INFO.fields.tsc_timestamp.offset, 0n, true);
    dv.setBigUint64(t + VCPU_TIME_INFO.fields.system_time.offset, 0n, true);
    dv.setUint32(t + VCPU_TIME_INFO.fields.tsc_to_system_mul.offset, 0x80000000, true);
    dv.setInt8(t + VCPU_TIME_INFO.fields.tsc_shift.offset, 1);
    dv.setUint8(t + VCPU_TIME_INFO.fields.flags.offset, XEN_PVCLOCK_TSC_STABLE_BIT);
  }
}

/** Start threads for vCPUs that are initialised, up, and have none yet. Domain lock held. */
function startVcpuThreads(hv: HvState, slot: number, port: PlatformPort): void {
  const gen = hv.dom[hv.d(slot, D.generation)];
  const max = hv.dom[hv.d(slot, D.max_vcpus)];
  for (let v = 0; v < max; v++) {
    const flags = Atomics.load(hv.vcpu, hv.v(slot, v, V.pause_flags));
    if (!(flags & VPF_initialised) || (flags & VPF_down)) continue;
    if (Atomics.compareExchange(hv.vcpu, hv.v(slot, v, V.thread), VTHREAD_NONE, VTHREAD_STARTING) !== VTHREAD_NONE) continue;
    Atomics.add(hv.dom, hv.d(slot, D.threads_live), 1);
    port.startVcpu(slot, v, gen);
  }
}

/** domain_pause_by_systemcontroller(). */
export function domainPause(hv: HvState, slot: number): number {
  domLock(hv, slot);
  try {
    const i = hv.d(slot, D.pause_count);
    // Xen caps the toolstack's pause count at 255.
    if (hv.dom[i] >= 255) return -EOVERFLOW;
    hv.dom[i]++;
  } finally {
    domUnlock(hv, slot);
  }
  domainEvent(hv);
  return 0;
}

/** domain_unpause_by_systemcontroller(): -EINVAL if not paused by the controller. */
export function domainUnpause(hv: HvState, slot: number, port: PlatformPort): number {
  domLock(hv, slot);
  try {
    const i = hv.d(slot, D.pause_count);
    if (hv.dom[i] <= 0) return -EINVAL;
    if (--hv.dom[i] === 0) startVcpuThreads(hv, slot, port);
  } finally {
    domUnlock(hv, slot);
  }
  for (let v = 0; v < hv.cfg.maxVcpus; v++) vcpuKick(hv, slot, v);
  domainEvent(hv);
  return 0;
}

/** Bring a vCPU up with a context (setvcpucontext with VGCF_online). Domain lock held by caller? No: takes it. */
export function vcpuInitialise(hv: HvState, slot: number, vcpu: number, entryGpa: number, arg0Gpa: number, port: PlatformPort): void {
  domLock(hv, slot);
  try {
    Atomics.store(hv.vcpu, hv.v(slot, vcpu, V.entry_gpa), entryGpa | 0);
    Atomics.store(hv.vcpu, hv.v(slot, vcpu, V.arg0_gpa), arg0Gpa | 0);
    const f = hv.v(slot, vcpu, V.pause_flags);
    Atomics.store(hv.vcpu, f, (Atomics.load(hv.vcpu, f) | VPF_initialised) & ~VPF_down);
    if (hv.dom[hv.d(slot, D.pause_count)] === 0) startVcpuThreads(hv, slot, port);
  } finally {
    domUnlock(hv, slot);
  }
  vcpuKick(hv, slot, vcpu);
}

/**
 * domain_shutdown(): the first reason wins. Every vCPU is parked; Dom0's
 * shutdown halts the host.
 */
export function domainShutdown(hv: HvState, slot: number, reason: number, port: PlatformPort): void {
  domLock(hv, slot);
  try {
    if (hv.dom[hv.d(slot, D.is_shut_down)]) return;
    hv.dom[hv.d(slot, D.shutdown_code)] = reason;
    Atomics.store(hv.dom, hv.d(slot, D.is_shut_down), 1);
    for (let v = 0; v < hv.cfg.maxVcpus; v++) Atomics.or(hv.vcpu, hv.v(slot, v, V.pause_flags), VPF_shutdown);
  } finally {
    domUnlock(hv, slot);
  }
  const domid = domidOfSlot(hv, slot);
  printk(hv, `Domain ${domid} shutdown: reason ${reason}`);
  for (let v = 0; v < hv.cfg.maxVcpus; v++) vcpuKick(hv, slot, v);
  domainEvent(hv);
  if (domid !== 0) sendDom0Virq(hv, VIRQ_DOM_EXC);
  if (domid === 0) port.halt(reason);
}

/** domain_crash(): a guest fault. Prints why and shuts the domain down with SHUTDOWN_crash. */
export function domainCrash(hv: HvState, slot: number, why: string, port: PlatformPort): void {
  printk(hv, `Domain ${domidOfSlot(hv, slot)} crashed: ${why.slice(0, 200)}`);
  domainShutdown(hv, slot, SHUTDOWN_crash, port);
}

/**
 * domain_kill() for XEN_DOMCTL_destroydomain: marks the domain dying, stops its
 * threads, then relinquishes its resources. -EAGAIN while threads are still
 * running (the caller retries, as libxc does); 0 once done.
 */
export function domainKill(hv: HvState, slot: number, port: PlatformPort): number {
  const si = hv.d(slot, D.state);
  if (Atomics.compareExchange(hv.dom, si, DOMSTATE_ACTIVE, DOMSTATE_DYING) === DOMSTATE_ACTIVE) {
    for (let v = 0; v < hv.cfg.maxVcpus; v++) {
      Atomics.or(hv.vcpu, hv.v(slot, v, V.pause_flags), VPF_killed);
      vcpuKick(hv, slot, v);
    }
    if (Atomics.load(hv.dom, hv.d(slot, D.threads_live)) > 0) port.killDomain(slot, hv.dom[hv.d(slot, D.generation)]);
    domainEvent(hv);
  }
  const state = Atomics.load(hv.dom, si);
  if (state === DOMSTATE_DEAD || state === DOMSTATE_FREE) return 0;
  if (Atomics.load(hv.dom, hv.d(slot, D.threads_live)) > 0) return -EAGAIN;
  relinquishResources(hv, slot);
  return 0;
}

/**
 * domain_relinquish_resources(): unmap everything from the P2M, drop the
 * allocation reference of every frame the domain owns and free its shared_info.
 * Frames that others still map stay owned (the domain is a zombie, DEAD) until
 * the last mapping goes; then the slot is freed.
 */
export function relinquishResources(hv: HvState, slot: number): void {
  const domid = domidOfSlot(hv, slot);
  closeAll(hv, slot);
  // Grant mappings both ways and the grant table go before the P2M sweep (hypervisor/gnttab/relinquish.ts).
  gnttabRelinquish(hv, slot);
  for (let v = 0; v < hv.cfg.maxVcpus; v++) {
    const t = hv.vt(slot, v, 0);
    hv.vcpuTime.fill(0n, t + VT.SINGLESHOT, t + VT.COUNT);
  }
  domLock(hv, slot);
  heapLock(hv);
  try {
    const base = hv.p2mIndex(slot, 0);
    for (let g = 0; g < hv.cfg.p2mEntries; g++) {
      const e = hv.p2m[base + g];
      if (e === P2M_INVALID) continue;
      p2mClear(hv, slot, g);
      const t = e >>> P2M_TYPE_SHIFT;
      if (t === p2m_ram_rw) {
        if (hv.ftOwner[entryMfn(e)] === domid) dropAllocation(hv, entryMfn(e));
      } else if (t === p2m_map_foreign) {
        releaseForeignFrame(hv, slot, entryMfn(e));
      }
    }
    // Frames owned but not in the P2M (none today; grant transfers later).
    for (let m = 0; m < hv.nrFrames; m++) {
      if (hv.ftOwner[m] === domid && (hv.ftType[m] & PGC_allocated)) dropAllocation(hv, m);
    }
    const si = hv.dom[hv.d(slot, D.shared_info_mfn)];
    if (si >= 0) {
      hv.dom[hv.d(slot, D.shared_info_mfn)] = -1;
      putPage(hv, si);
    }
    Atomics.store(hv.dom, hv.d(slot, D.state), DOMSTATE_DEAD);
  } finally {
    heapUnlock(hv);
    domUnlock(hv, slot);
  }
  // Xen's domain_kill raises VIRQ_DOM_EXC on reaching DOMDYING_dead, whether
  // or not mappings keep the domain alive: Dom0's daemons learn that it is
  // dying and let go of what they map (then the slot is freed, below or later).
  sendDom0Virq(hv, VIRQ_DOM_EXC);
  finishIfDead(hv, slot);
  domainEvent(hv);
}

/** Drop a foreign mapping's reference on frame `m` held by domain `slot`. heap_lock held. */
export function releaseForeignFrame(hv: HvState, slot: number, m: number): void {
  Atomics.sub(hv.dom, hv.d(slot, D.foreign_maps), 1);
  const owner = putPage(hv, m);
  if (owner >= 0) pendingFinish.add(owner);
}

const pendingFinish = new Set<number>();

/** Free the slot of a dead domain once it owns no frame (its last mapping went away). */
export function finishIfDead(hv: HvState, slot: number): void {
  const todo = [slot, ...pendingFinish];
  pendingFinish.clear();
  for (const s of todo) {
    if (Atomics.load(hv.dom, hv.d(s, D.state)) !== DOMSTATE_DEAD) continue;
    if (Atomics.load(hv.dom, hv.d(s, D.tot_pages)) !== 0) continue;
    if (Atomics.load(hv.dom, hv.d(s, D.foreign_maps)) !== 0) continue;
    const domid = domidOfSlot(hv, s);
    if (Atomics.compareExchange(hv.dom, hv.d(s, D.state), DOMSTATE_DEAD, DOMSTATE_FREE) === DOMSTATE_DEAD) {
      if (hv.domidMap[domid] === s) hv.domidMap[domid] = -1;
      printk(hv, `Domain ${domid} destroyed`);
      domainEvent(hv);
      sendDom0Virq(hv, VIRQ_DOM_EXC);
    }
  }
}

/** The platform reports a vCPU thread has exited (normally or not). */
export function vcpuThreadExited(hv: HvState, slot: number, vcpu: number, generation: number, abnormal: string | null, port: PlatformPort): void {
  if (hv.dom[hv.d(slot, D.generation)] !== generation) return;
  if (abnormal !== null && Atomics.load(hv.dom, hv.d(slot, D.state)) === DOMSTATE_ACTIVE) {
    domainCrash(hv, slot, `vcpu${vcpu} thread died: ${abnormal}`, port);
  }
  Atomics.store(hv.vcpu, hv.v(slot, vcpu, V.pcpu), -1);
  Atomics.sub(hv.dom, hv.d(slot, D.threads_live), 1);
  domainEvent(hv);
}

export { VPF_shutdown, VPF_killed };
