/**
 * The vCPU thread's side of the pCPU tokens (the "hardware" side of
 * scheduling; core.ts, on the scheduler thread, decides who gets which pCPU).
 *
 * A vCPU runs guest code only while it holds a pCPU:
 *  - waking, it first tries to claim an idle pCPU the scheduler left open
 *    (pcpuClaim: one compare-and-swap, no wait; the scheduler is told after);
 *  - else it asks for one by posting WAKE and then sleeps on its own futex word
 *    (V.wake) until the scheduler publishes a grant in its GRANT word and
 *    kicks it; it takes the grant (V.pcpu = the pCPU);
 *  - it gives the pCPU back by posting RELEASE with a reason: preempted (the
 *    scheduler set V.preempt and this is a preemption point), yielding,
 *    blocking, or going offline. It never waits for an answer to a release.
 * Each function here is a few atomic operations and at most one ring post;
 * the waiting itself is the caller's (hypervisor/vcpu/runtime.ts), which also
 * checks for kill and pause while it waits.
 */
import { D, HvState, PCPU_CLOSED, PCPU_OPEN_ANY, PCPU_OPEN_FOR, SCHED_IDLE_ASSIGNED, SQ, SV, V } from '../state.ts';
import {
  RELEASE_BLOCKED, RELEASE_OFFLINE, RELEASE_PREEMPTED, RELEASE_YIELD, SCHED_EV_CLAIM, SCHED_EV_EXIT, SCHED_EV_RELEASE, SCHED_EV_WAKE,
  releaseArg, schedPost,
} from './ring.ts';

export const NO_PCPU = -1;
export { RELEASE_BLOCKED, RELEASE_OFFLINE, RELEASE_PREEMPTED, RELEASE_YIELD };

export function vcpuIndex(hv: HvState, slot: number, vcpu: number): number {
  return slot * hv.cfg.maxVcpus + vcpu;
}

function grantIdx(hv: HvState, slot: number, vcpu: number): number {
  return vcpuIndex(hv, slot, vcpu) * SV.WORDS + SV.GRANT;
}

/** The vCPU is runnable and holds no pCPU: ask the scheduler for one. */
export function pcpuRequest(hv: HvState, slot: number, vcpu: number): void {
  schedPost(hv, SCHED_EV_WAKE, vcpuIndex(hv, slot, vcpu), 0);
}

/** Is pCPU `p` in the vCPU's hard affinity? (racy read of the stored mask: the scheduler has the last word) */
function allowedOn(hv: HvState, slot: number, vcpu: number, p: number): boolean {
  const base = vcpuIndex(hv, slot, vcpu) * SV.WORDS;
  if (Atomics.load(hv.schedVcpu, base + SV.AFF_GEN) !== Atomics.load(hv.dom, hv.d(slot, D.generation))) return true;
  return ((Atomics.load(hv.schedVcpu, base + SV.AFF_HARD + (p >>> 5)) >>> (p & 31)) & 1) !== 0;
}

/**
 * The wake-up fast path: take an idle pCPU the scheduler has left open to
 * this vCPU (PCPU_OPEN_ANY, or PCPU_OPEN_FOR this vCPU), trying `last` (the
 * pCPU it last ran on) first, then the next ones in turn, as credit's
 * cpu_pick() would. On success the vCPU holds that pCPU at once and the
 * scheduler is told with a CLAIM event, without waiting for it; the policy
 * still decides, and if it decides otherwise it asks for the pCPU back.
 * Returns the pCPU, or NO_PCPU if none is open (then ask with pcpuRequest()).
 */
export function pcpuClaim(hv: HvState, slot: number, vcpu: number, last: number): number {
  const n = hv.cfg.pcpus;
  const vidx = vcpuIndex(hv, slot, vcpu);
  const mine = PCPU_OPEN_FOR(vidx);
  const start = last >= 0 && last < n ? last : vcpu % n;
  for (let i = 0; i < n; i++) {
    const p = (start + i) % n;
    const v = Atomics.load(hv.pcpuOwner, p);
    if (v !== PCPU_OPEN_ANY && v !== mine) continue;
    if (!allowedOn(hv, slot, vcpu, p)) continue;
    if (Atomics.compareExchange(hv.pcpuOwner, p, v, vidx) !== v) continue;
    Atomics.store(hv.vcpu, hv.v(slot, vcpu, V.pcpu), p);
    // A request that raced with our last release is stale: nobody can want an open pCPU back.
    Atomics.store(hv.vcpu, hv.v(slot, vcpu, V.preempt), 0);
    // Nobody waits on a claim: the scheduler hears of it at its next wake-up.
    schedPost(hv, SCHED_EV_CLAIM, vidx, p, false);
    return p;
  }
  return NO_PCPU;
}

/** Has the scheduler granted this vCPU a pCPU it has not taken yet? */
export function pcpuGranted(hv: HvState, slot: number, vcpu: number): boolean {
  return Atomics.load(hv.schedVcpu, grantIdx(hv, slot, vcpu)) !== 0 && Atomics.load(hv.vcpu, hv.v(slot, vcpu, V.pcpu)) === NO_PCPU;
}

/** Take the granted pCPU: returns it, or NO_PCPU if there is no grant. */
export function pcpuTake(hv: HvState, slot: number, vcpu: number): number {
  const g = Atomics.load(hv.schedVcpu, grantIdx(hv, slot, vcpu));
  if (g === 0) return NO_PCPU;
  Atomics.store(hv.vcpu, hv.v(slot, vcpu, V.pcpu), g - 1);
  return g - 1;
}

/** The pCPU this vCPU holds, NO_PCPU if none. */
export function pcpuHeld(hv: HvState, slot: number, vcpu: number): number {
  return Atomics.load(hv.vcpu, hv.v(slot, vcpu, V.pcpu));
}

/** Does the scheduler want this vCPU's pCPU back? (one atomic load: the preemption check) */
export function pcpuPreemptRequested(hv: HvState, slot: number, vcpu: number): boolean {
  return Atomics.load(hv.vcpu, hv.v(slot, vcpu, V.preempt)) !== 0;
}

/**
 * Give back the pCPU this vCPU holds, if any, saying why (RELEASE_*). The
 * GRANT word is cleared before the post, so a new grant the scheduler makes
 * after seeing the release is never wiped out.
 *
 * Blocking or going offline while no vCPU waits for a pCPU, the policy would
 * leave this pCPU idle: the vCPU opens it itself (rule 2 of core.ts) and the
 * release is posted lazily, so that a block and the next wake-up cost no
 * scheduler round trip. The scheduler still accounts it at the release's time.
 */
export function pcpuRelease(hv: HvState, slot: number, vcpu: number, reason: number): void {
  const p = Atomics.exchange(hv.vcpu, hv.v(slot, vcpu, V.pcpu), NO_PCPU);
  if (p === NO_PCPU) return;
  const vidx = vcpuIndex(hv, slot, vcpu);
  Atomics.store(hv.schedVcpu, grantIdx(hv, slot, vcpu), 0);
  Atomics.store(hv.vcpu, hv.v(slot, vcpu, V.preempt), 0);
  let urgent = true;
  if (reason === RELEASE_BLOCKED || reason === RELEASE_OFFLINE) {
    const rule = Atomics.load(hv.schedRing, SQ.IDLE_RULE);
    const open = rule === SCHED_IDLE_ASSIGNED ? PCPU_OPEN_FOR(vidx)
      : Atomics.load(hv.schedRing, SQ.WAITING) === 0 ? PCPU_OPEN_ANY : PCPU_CLOSED;
    if (open !== PCPU_CLOSED && Atomics.compareExchange(hv.pcpuOwner, p, vidx, open) === vidx) urgent = false;
  }
  // Otherwise only the scheduler hands it on (it may have moved the label meanwhile: then this fails).
  if (urgent) Atomics.compareExchange(hv.pcpuOwner, p, vidx, PCPU_CLOSED);
  schedPost(hv, SCHED_EV_RELEASE, vidx, releaseArg(p, reason), urgent);
}

/**
 * The platform saw the vCPU's thread end (normally or not): the scheduler
 * frees any pCPU it held or had been granted and takes it off its run queues.
 */
export function pcpuThreadExited(hv: HvState, slot: number, vcpu: number, generation: number): void {
  Atomics.store(hv.vcpu, hv.v(slot, vcpu, V.pcpu), NO_PCPU);
  schedPost(hv, SCHED_EV_EXIT, vcpuIndex(hv, slot, vcpu), generation);
}
