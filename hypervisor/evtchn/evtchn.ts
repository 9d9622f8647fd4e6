/**
 * Event channels, 2-level ABI (Xen: common/event_channel.c, event_2l.c).
 *
 * Port records live in shared state (hv.evtchn, EVTCHN_WORDS per port), guarded
 * by the owning domain's lock (for two domains: lower slot first). The pending
 * and mask bitmaps, selectors and evtchn_upcall_pending live in the domain's
 * shared_info frame, exactly where Xen puts them, and are updated with atomic
 * bit operations so guests and other vCPUs see Xen's ordering.
 */
import { EEXIST, EINVAL, ENOENT, ENOSPC } from '../../shared/errno.ts';
import { PER_VCPU_VIRQS } from '../../shared/abi/event-channel.ts';
import { VCPU_INFO, vcpuInfoOffset } from '../../shared/abi/shared-info.ts';
import { PAGE_SIZE } from '../../shared/types.ts';
import { domLock, domUnlock, liveSlot } from '../domain.ts';
import {
  D, DOMSTATE_ACTIVE, EV_REMOTE_DOM, EV_REMOTE_GEN, EV_REMOTE_PORT, EV_STATE, EVTCHN_2L_PORTS, HvState, NR_VIRQS, V,
  VPF_blocked,
} from '../state.ts';

/** Internal port states (Xen's ECS_*); EVTCHNOP_status maps them to EVTCHNSTAT_*. */
export const ECS_FREE = 0;
export const ECS_RESERVED = 1;
export const ECS_UNBOUND = 2;
export const ECS_INTERDOMAIN = 3;
export const ECS_PIRQ = 4;
export const ECS_VIRQ = 5;
export const ECS_IPI = 6;

const SHARED_PENDING = 2048;
const SHARED_MASK = 2560;
const SEL_OFFSET = VCPU_INFO.fields.evtchn_pending_sel.offset;
const UPCALL_PENDING = VCPU_INFO.fields.evtchn_upcall_pending.offset;

export function portState(hv: HvState, slot: number, port: number): number {
  return Atomics.load(hv.evtchn, hv.ev(slot, port, EV_STATE)) & 0xff;
}

export function notifyVcpu(hv: HvState, slot: number, port: number): number {
  return (Atomics.load(hv.evtchn, hv.ev(slot, port, EV_STATE)) >>> 8) & 0xff;
}

export function setPort(hv: HvState, slot: number, port: number, state: number, vcpu: number, remoteDom: number, remotePort: number, remoteGen = 0): void {
  hv.evtchn[hv.ev(slot, port, EV_REMOTE_DOM)] = remoteDom;
  hv.evtchn[hv.ev(slot, port, EV_REMOTE_PORT)] = remotePort;
  hv.evtchn[hv.ev(slot, port, EV_REMOTE_GEN)] = remoteGen;
  Atomics.store(hv.evtchn, hv.ev(slot, port, EV_STATE), (state & 0xff) | ((vcpu & 0xff) << 8));
}

/** port_is_valid(): a number inside the 2-level ABI's port space. */
export function portValid(port: number): boolean {
  return Number.isInteger(port) && port >= 0 && port < EVTCHN_2L_PORTS;
}

/** Word index in mem32 of bit `bit` of the u64 array at byte `base`, and the bit within that word. */
function bitWord(base: number, bit: number): [number, number] {
  return [(base + (bit >>> 6) * 8 + ((bit >>> 5) & 1) * 4) >>> 2, 1 << (bit & 31)];
}

function sharedInfoBase(hv: HvState, slot: number): number {
  const si = Atomics.load(hv.dom, hv.d(slot, D.shared_info_mfn));
  return si < 0 ? -1 : si * PAGE_SIZE;
}

/** test_and_set_bit on a shared_info bitmap; returns the old bit. */
function testAndSet(hv: HvState, base: number, bit: number): boolean {
  const [w, m] = bitWord(base, bit);
  return (Atomics.or(hv.mem32, w, m) & m) !== 0;
}

function testAndClear(hv: HvState, base: number, bit: number): boolean {
  const [w, m] = bitWord(base, bit);
  return (Atomics.and(hv.mem32, w, ~m) & m) !== 0;
}

function testBit(hv: HvState, base: number, bit: number): boolean {
  const [w, m] = bitWord(base, bit);
  return (Atomics.load(hv.mem32, w) & m) !== 0;
}

/** Is the port's pending bit set? */
export function portPending(hv: HvState, slot: number, port: number): boolean {
  const si = sharedInfoBase(hv, slot);
  return si >= 0 && testBit(hv, si + SHARED_PENDING, port);
}

/** vcpu_mark_events_pending(): set evtchn_upcall_pending; kick the vCPU if it was clear. */
function markEventsPending(hv: HvState, slot: number, vcpu: number, si: number): void {
  if (Atomics.exchange(hv.mem8, si + vcpuInfoOffset(vcpu) + UPCALL_PENDING, 1) === 0) kickIfWaiting(hv, slot, vcpu);
}

/** Wake a vCPU that sleeps in SCHEDOP_block or SCHEDOP_poll (others see the bit at their next look). */
export function kickIfWaiting(hv: HvState, slot: number, vcpu: number): void {
  const i = hv.v(slot, vcpu, V.wake);
  Atomics.add(hv.vcpu, i, 1);
  if ((Atomics.load(hv.vcpu, hv.v(slot, vcpu, V.pause_flags)) & VPF_blocked) || Atomics.load(hv.vcpu, hv.v(slot, vcpu, V.polling))) {
    Atomics.notify(hv.vcpu, i);
  }
}

/**
 * evtchn_2l_set_pending(): test-and-set pending (stop if it was set); if the
 * port is not masked and the selector bit was clear, set upcall_pending and kick.
 * Pollers of the domain are woken whatever the mask says (Xen's evtchn_check_pollers).
 */
export function setPending(hv: HvState, slot: number, vcpu: number, port: number): void {
  const si = sharedInfoBase(hv, slot);
  if (si < 0) return;
  if (testAndSet(hv, si + SHARED_PENDING, port)) return;
  if (!testBit(hv, si + SHARED_MASK, port) && !testAndSet(hv, si + vcpuInfoOffset(vcpu) + SEL_OFFSET, port >>> 6)) {
    markEventsPending(hv, slot, vcpu, si);
  }
  const max = Atomics.load(hv.dom, hv.d(slot, D.max_vcpus));
  for (let v = 0; v < max; v++) if (Atomics.load(hv.vcpu, hv.v(slot, v, V.polling))) kickIfWaiting(hv, slot, v);
}

/** evtchn_2l_unmask(): if the mask bit was set and the port is pending, deliver as set_pending would. */
export function unmaskPort(hv: HvState, slot: number, port: number): void {
  const si = sharedInfoBase(hv, slot);
  if (si < 0) return;
  const vcpu = notifyVcpu(hv, slot, port);
  if (testAndClear(hv, si + SHARED_MASK, port) && testBit(hv, si + SHARED_PENDING, port) &&
      !testAndSet(hv, si + vcpuInfoOffset(vcpu) + SEL_OFFSET, port >>> 6)) {
    markEventsPending(hv, slot, vcpu, si);
  }
}

function clearPending(hv: HvState, slot: number, port: number): void {
  const si = sharedInfoBase(hv, slot);
  if (si >= 0) testAndClear(hv, si + SHARED_PENDING, port);
}

/** get_free_port(): the lowest free port, or -ENOSPC beyond the domain's limit. Domain lock held. */
export function getFreePort(hv: HvState, slot: number): number {
  const max = Math.min(Atomics.load(hv.dom, hv.d(slot, D.max_evtchn_port)), EVTCHN_2L_PORTS - 1);
  for (let p = 1; p <= max; p++) if (portState(hv, slot, p) === ECS_FREE) return p;
  return -ENOSPC;
}

/** The interdomain peer of a port if it is still the same live domain, else -1. */
function peerSlot(hv: HvState, slot: number, port: number): number {
  const rd = hv.evtchn[hv.ev(slot, port, EV_REMOTE_DOM)];
  const rs = liveSlot(hv, rd);
  if (rs < 0 && rd >= 0) {
    // A dying peer still has its records until relinquish: accept it while it exists.
    const s = hv.domidMap[rd];
    if (s >= 0 && hv.dom[hv.d(s, D.generation)] === hv.evtchn[hv.ev(slot, port, EV_REMOTE_GEN)]) return s;
    return -1;
  }
  return rs >= 0 && hv.dom[hv.d(rs, D.generation)] === hv.evtchn[hv.ev(slot, port, EV_REMOTE_GEN)] ? rs : -1;
}

/** Lock two domains in slot order (or one, if the same). */
export function lockPair(hv: HvState, a: number, b: number): () => void {
  if (a === b) {
    domLock(hv, a);
    return () => domUnlock(hv, a);
  }
  const [x, y] = a < b ? [a, b] : [b, a];
  domLock(hv, x);
  domLock(hv, y);
  return () => { domUnlock(hv, y); domUnlock(hv, x); };
}

const domidOf = (hv: HvState, slot: number): number => hv.dom[hv.d(slot, D.domid)];
const genOf = (hv: HvState, slot: number): number => hv.dom[hv.d(slot, D.generation)];

/** evtchn_alloc_unbound: a port of `slot` that `remoteDomid` may bind to. Returns the port or -errno. */
export function allocUnbound(hv: HvState, slot: number, remoteDomid: number): number {
  domLock(hv, slot);
  try {
    const port = getFreePort(hv, slot);
    if (port < 0) return port;
    setPort(hv, slot, port, ECS_UNBOUND, 0, remoteDomid, 0);
    Atomics.add(hv.dom, hv.d(slot, D.evtchn_in_use), 1);
    return port;
  } finally {
    domUnlock(hv, slot);
  }
}

/**
 * evtchn_bind_interdomain: connect a new local port of `slot` (vCPU `vcpu`) to
 * the remote's unbound port, which must name us. The new local port is marked
 * pending, as Xen does. Returns the local port or -errno.
 */
export function bindInterdomain(hv: HvState, slot: number, vcpu: number, rslot: number, rport: number): number {
  if (!portValid(rport)) return -EINVAL;
  const unlock = lockPair(hv, slot, rslot);
  let lport: number;
  try {
    if (portState(hv, rslot, rport) !== ECS_UNBOUND || hv.evtchn[hv.ev(rslot, rport, EV_REMOTE_DOM)] !== domidOf(hv, slot)) return -EINVAL;
    lport = getFreePort(hv, slot);
    if (lport < 0) return lport;
    if (slot === rslot && lport === rport) return -EINVAL;
    setPort(hv, slot, lport, ECS_INTERDOMAIN, vcpu, domidOf(hv, rslot), rport, genOf(hv, rslot));
    setPort(hv, rslot, rport, ECS_INTERDOMAIN, notifyVcpu(hv, rslot, rport), domidOf(hv, slot), lport, genOf(hv, slot));
    Atomics.add(hv.dom, hv.d(slot, D.evtchn_in_use), 1);
  } finally {
    unlock();
  }
  setPending(hv, slot, vcpu, lport);
  return lport;
}

/** evtchn_bind_virq. */
export function bindVirq(hv: HvState, slot: number, virq: number, vcpu: number): number {
  if (!Number.isInteger(virq) || virq < 0 || virq >= NR_VIRQS) return -EINVAL;
  if (!PER_VCPU_VIRQS.has(virq) && vcpu !== 0) return -EINVAL;
  if (vcpu < 0 || vcpu >= Atomics.load(hv.dom, hv.d(slot, D.max_vcpus))) return -ENOENT;
  domLock(hv, slot);
  try {
    const vi = hv.virq(slot, vcpu, virq);
    if (hv.virqPorts[vi] !== 0) return -EEXIST;
    const port = getFreePort(hv, slot);
    if (port < 0) return port;
    setPort(hv, slot, port, ECS_VIRQ, vcpu, virq, 0);
    Atomics.store(hv.virqPorts, vi, port);
    Atomics.add(hv.dom, hv.d(slot, D.evtchn_in_use), 1);
    return port;
  } finally {
    domUnlock(hv, slot);
  }
}

/** evtchn_bind_ipi. */
export function bindIpi(hv: HvState, slot: number, vcpu: number): number {
  if (vcpu < 0 || vcpu >= Atomics.load(hv.dom, hv.d(slot, D.max_vcpus))) return -ENOENT;
  domLock(hv, slot);
  try {
    const port = getFreePort(hv, slot);
    if (port < 0) return port;
    setPort(hv, slot, port, ECS_IPI, vcpu, 0, 0);
    Atomics.add(hv.dom, hv.d(slot, D.evtchn_in_use), 1);
    return port;
  } finally {
    domUnlock(hv, slot);
  }
}

/**
 * evtchn_close: free the port; an interdomain peer goes back to unbound (naming
 * us, so we could bind again). -EINVAL for a free or reserved port.
 */
export function closePort(hv: HvState, slot: number, port: number): number {
  if (!portValid(port)) return -EINVAL;
  for (;;) {
    const rslot = portState(hv, slot, port) === ECS_INTERDOMAIN ? peerSlot(hv, slot, port) : slot;
    const unlock = lockPair(hv, slot, rslot >= 0 ? rslot : slot);
    try {
      const st = portState(hv, slot, port);
      if (st === ECS_FREE || st === ECS_RESERVED) return -EINVAL;
      if (st === ECS_INTERDOMAIN) {
        // The peer may have changed while we were not holding its lock: look again.
        if (peerSlot(hv, slot, port) !== rslot) continue;
        if (rslot >= 0) {
          const rport = hv.evtchn[hv.ev(slot, port, EV_REMOTE_PORT)];
          if (portState(hv, rslot, rport) === ECS_INTERDOMAIN && hv.evtchn[hv.ev(rslot, rport, EV_REMOTE_PORT)] === port) {
            setPort(hv, rslot, rport, ECS_UNBOUND, notifyVcpu(hv, rslot, rport), domidOf(hv, slot), 0);
          }
        }
      } else if (st === ECS_VIRQ) {
        // As Xen: clear the binding on whichever vCPU holds it (a global VIRQ
        // stays bound on vCPU 0 even after bind_vcpu moved its port).
        const virq = hv.evtchn[hv.ev(slot, port, EV_REMOTE_DOM)];
        const max = Atomics.load(hv.dom, hv.d(slot, D.max_vcpus));
        for (let v = 0; v < max; v++) {
          const vi = hv.virq(slot, v, virq);
          if (hv.virqPorts[vi] === port) Atomics.store(hv.virqPorts, vi, 0);
        }
      }
      setPort(hv, slot, port, ECS_FREE, 0, 0, 0);
      clearPending(hv, slot, port);
      Atomics.sub(hv.dom, hv.d(slot, D.evtchn_in_use), 1);
      return 0;
    } finally {
      unlock();
    }
  }
}

/**
 * evtchn_send: interdomain sets the remote port pending, IPI the local one,
 * unbound drops the event silently; any other state is -EINVAL.
 */
export function sendPort(hv: HvState, slot: number, port: number): number {
  if (!portValid(port)) return -EINVAL;
  switch (portState(hv, slot, port)) {
    case ECS_INTERDOMAIN: {
      const rslot = peerSlot(hv, slot, port);
      if (rslot < 0) return 0;
      const rport = hv.evtchn[hv.ev(slot, port, EV_REMOTE_PORT)];
      if (Atomics.load(hv.dom, hv.d(rslot, D.state)) !== DOMSTATE_ACTIVE) return 0;
      setPending(hv, rslot, notifyVcpu(hv, rslot, rport), rport);
      return 0;
    }
    case ECS_IPI:
      setPending(hv, slot, notifyVcpu(hv, slot, port), port);
      return 0;
    case ECS_UNBOUND:
      return 0;
    default:
      return -EINVAL;
  }
}

/** send_guest_vcpu_virq / send_guest_global_virq: raise a VIRQ if the domain bound it. */
export function sendVirq(hv: HvState, slot: number, vcpu: number, virq: number): void {
  const perVcpu = PER_VCPU_VIRQS.has(virq);
  const port = Atomics.load(hv.virqPorts, hv.virq(slot, perVcpu ? vcpu : 0, virq));
  // A global VIRQ goes to its port's notify vCPU (bind_vcpu may have moved it).
  if (port > 0) setPending(hv, slot, perVcpu ? vcpu : notifyVcpu(hv, slot, port), port);
}

/** Raise a global VIRQ at Dom0 (VIRQ_DOM_EXC, VIRQ_CONSOLE), if it is up. */
export function sendDom0Virq(hv: HvState, virq: number): void {
  const s = liveSlot(hv, 0);
  if (s >= 0) sendVirq(hv, s, 0, virq);
}

/** evtchn_bind_vcpu: move where a port's events are delivered. */
export function bindVcpu(hv: HvState, slot: number, port: number, vcpu: number): number {
  // Xen checks the vCPU first (-ENOENT), then the port (-EINVAL).
  if (vcpu < 0 || vcpu >= Atomics.load(hv.dom, hv.d(slot, D.max_vcpus))) return -ENOENT;
  if (!portValid(port)) return -EINVAL;
  domLock(hv, slot);
  try {
    const st = portState(hv, slot, port);
    if (st === ECS_VIRQ) {
      const virq = hv.evtchn[hv.ev(slot, port, EV_REMOTE_DOM)];
      if (PER_VCPU_VIRQS.has(virq)) return -EINVAL;
    } else if (st !== ECS_UNBOUND && st !== ECS_INTERDOMAIN && st !== ECS_PIRQ) {
      return -EINVAL;
    }
    const w = hv.ev(slot, port, EV_STATE);
    Atomics.store(hv.evtchn, w, (Atomics.load(hv.evtchn, w) & 0xff) | ((vcpu & 0xff) << 8));
    return 0;
  } finally {
    domUnlock(hv, slot);
  }
}

/** evtchn_reset / domain destruction: close every port of the domain. */
export function closeAll(hv: HvState, slot: number): void {
  for (let p = 1; p < EVTCHN_2L_PORTS; p++) {
    const st = portState(hv, slot, p);
    if (st !== ECS_FREE && st !== ECS_RESERVED) closePort(hv, slot, p);
  }
}

/** Reserve port 0 of a new domain (Xen's evtchn_init). */
export function evtchnInit(hv: HvState, slot: number): void {
  setPort(hv, slot, 0, ECS_RESERVED, 0, 0, 0);
}
