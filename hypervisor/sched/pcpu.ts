/**
 * pCPU hand-out: at most `pcpus` vCPUs hold a pCPU at once (the foundation's
 * simple scheduler; the credit/credit2/null policies decide *who* next, this
 * module is the mechanism that makes a thread run or park).
 *
 * pcpuOwner[p] is the vCPU index holding pCPU p, or -1. A vCPU without a pCPU
 * sleeps on G.PCPU_GEN, which is bumped on every acquire and release.
 */
import { G, HvState, V, VT } from '../state.ts';

export const NO_PCPU = -1;

export function vcpuIndex(hv: HvState, slot: number, vcpu: number): number {
  return slot * hv.cfg.maxVcpus + vcpu;
}

function tryTake(hv: HvState, vidx: number): number {
  for (let p = 0; p < hv.cfg.pcpus; p++) {
    if (Atomics.compareExchange(hv.pcpuOwner, p, -1, vidx) === -1) {
      Atomics.add(hv.g, G.PCPU_GEN, 1);
      return p;
    }
  }
  return NO_PCPU;
}

/**
 * Take a pCPU for (slot, vcpu), sleeping until one is free. `stop` is checked
 * on every wake-up: when it returns true the wait is abandoned (NO_PCPU).
 */
export function pcpuAcquire(hv: HvState, slot: number, vcpu: number, stop: () => boolean): number {
  const vidx = vcpuIndex(hv, slot, vcpu);
  for (;;) {
    if (stop()) return NO_PCPU;
    let p = tryTake(hv, vidx);
    if (p !== NO_PCPU) return granted(hv, slot, vcpu, p);
    const gen = Atomics.load(hv.g, G.PCPU_GEN);
    Atomics.add(hv.g, G.PCPU_WAITERS, 1);
    p = tryTake(hv, vidx);
    if (p === NO_PCPU) Atomics.wait(hv.g, G.PCPU_GEN, gen, 20);
    Atomics.sub(hv.g, G.PCPU_WAITERS, 1);
    if (p !== NO_PCPU) return granted(hv, slot, vcpu, p);
  }
}

function granted(hv: HvState, slot: number, vcpu: number, p: number): number {
  Atomics.store(hv.vcpu, hv.v(slot, vcpu, V.pcpu), p);
  Atomics.store(hv.vcpu, hv.v(slot, vcpu, V.preempt), 0);
  hv.vcpuTime[hv.vt(slot, vcpu, VT.SLICE_START)] = hv.now();
  return p;
}

/** Give back the pCPU held by (slot, vcpu), if any, and wake one waiter. */
export function pcpuRelease(hv: HvState, slot: number, vcpu: number): void {
  const i = hv.v(slot, vcpu, V.pcpu);
  const p = Atomics.exchange(hv.vcpu, i, NO_PCPU);
  if (p === NO_PCPU) return;
  const vidx = vcpuIndex(hv, slot, vcpu);
  Atomics.compareExchange(hv.pcpuOwner, p, vidx, -1);
  Atomics.add(hv.g, G.PCPU_GEN, 1);
  if (Atomics.load(hv.g, G.PCPU_WAITERS) > 0) Atomics.notify(hv.g, G.PCPU_GEN, 1);
}

/**
 * A preemption point: if the timer asked this vCPU to give way and someone is
 * waiting, release the pCPU, let a waiter take it, and queue again.
 * Returns false if `stop` fired while waiting (no pCPU held then).
 */
export function pcpuPreemptionPoint(hv: HvState, slot: number, vcpu: number, stop: () => boolean): boolean {
  if (Atomics.load(hv.vcpu, hv.v(slot, vcpu, V.preempt)) === 0) return true;
  return pcpuYield(hv, slot, vcpu, stop);
}

/** SCHEDOP_yield: give way to a waiting vCPU, if any. */
export function pcpuYield(hv: HvState, slot: number, vcpu: number, stop: () => boolean): boolean {
  Atomics.store(hv.vcpu, hv.v(slot, vcpu, V.preempt), 0);
  if (Atomics.load(hv.g, G.PCPU_WAITERS) === 0) return true;
  pcpuRelease(hv, slot, vcpu);
  // Let a waiter take the pCPU before queueing again (bounded).
  const gen = Atomics.load(hv.g, G.PCPU_GEN);
  Atomics.wait(hv.g, G.PCPU_GEN, gen, 2);
  return pcpuAcquire(hv, slot, vcpu, stop) !== NO_PCPU;
}

/** Timer tick: ask every vCPU that overran its slice to give way while others wait. */
export function pcpuTick(hv: HvState): void {
  if (Atomics.load(hv.g, G.PCPU_WAITERS) === 0) return;
  const slice = BigInt(hv.cfg.timesliceMs) * 1_000_000n;
  const now = hv.now();
  for (let p = 0; p < hv.cfg.pcpus; p++) {
    const vidx = Atomics.load(hv.pcpuOwner, p);
    if (vidx < 0) continue;
    const slot = Math.floor(vidx / hv.cfg.maxVcpus);
    const vcpu = vidx % hv.cfg.maxVcpus;
    if (now - hv.vcpuTime[hv.vt(slot, vcpu, VT.SLICE_START)] >= slice) {
      Atomics.store(hv.vcpu, hv.v(slot, vcpu, V.preempt), 1);
    }
  }
}
