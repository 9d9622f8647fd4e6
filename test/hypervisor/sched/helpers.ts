/**
 * Shared pieces of the scheduler tests: workload shorthands, expected shares,
 * and a tiny driver for policy-level tests that do not need the harness.
 */
import { expect } from 'vitest';
import { createScheduler } from '../../../hypervisor/sched/policy/index.ts';
import type { Scheduler, SchedOptName, VcpuRef } from '../../../hypervisor/sched/policy/types.ts';
import type { SimResult, Workload } from '../../../hypervisor/sched/sim/harness.ts';

export const US = 1_000;
export const MS = 1_000_000;
export const S = 1_000_000_000;

export const CPU: Workload = { kind: 'cpu' };
export const io = (runNs: number, blockNs: number, firstWakeNs?: number): Workload => ({ kind: 'io', runNs, blockNs, firstWakeNs });
export const attacker = (mode: 'block' | 'yield'): Workload => ({ kind: 'attacker', mode, guardNs: 50 * US, wakeDelayNs: 50 * US });

/** Xen errno values the policies return, negated. */
export const EINVAL = -22;
export const ESRCH = -3;
export const EEXIST = -17;
export const EBUSY = -16;

export function make(name: SchedOptName, nrPcpus: number): Scheduler {
  const r = createScheduler(name, nrPcpus);
  if (!r.ok) throw new Error(r.reason);
  return r.scheduler;
}

export const ref = (domid: number, vcpuId = 0): VcpuRef => ({ domid, vcpuId });

/** One domain per entry, one vCPU each, inserted and (optionally) woken at `now`. */
export function withDomains(s: Scheduler, domids: readonly number[], now = 0, wake = true): void {
  for (const d of domids) {
    expect(s.insertDomain(d)).toBe(0);
    expect(s.insertVcpu(ref(d), now)).toBe(0);
    if (wake) expect(s.wake(ref(d), now)).toBe(0);
  }
}

/**
 * Proportional shares by weight of `nrPcpus` pCPUs, no vCPU above one pCPU
 * (water-filling): what a fair weighted scheduler gives CPU-bound vCPUs.
 */
export function fairShares(weights: readonly number[], nrPcpus: number): number[] {
  const out = new Array<number>(weights.length).fill(0);
  let capacity = nrPcpus;
  let rest = weights.map((_, i) => i);
  for (;;) {
    const total = rest.reduce((a, i) => a + weights[i], 0);
    const full = rest.filter((i) => (capacity * weights[i]) / total > 1);
    if (full.length === 0) {
      for (const i of rest) out[i] = (capacity * weights[i]) / total;
      return out;
    }
    for (const i of full) out[i] = 1;
    capacity -= full.length;
    rest = rest.filter((i) => !full.includes(i));
  }
}

/** Every vCPU's share (fraction of one pCPU) is within `tol` of `expected`, in order. */
export function expectShares(r: SimResult, expected: readonly number[], tol: number): void {
  const got = r.vcpus.map((v) => v.share);
  expect(got.length).toBe(expected.length);
  got.forEach((g, i) => {
    if (Math.abs(g - expected[i]) > tol) {
      throw new Error(`vCPU ${i}: share ${(g * 100).toFixed(2)}% vs expected ${(expected[i] * 100).toFixed(2)}% ±${tol * 100}%\n`
        + `all: ${got.map((x) => (x * 100).toFixed(2)).join(' ')}`);
    }
  });
}

/** No pCPU was idle while a vCPU allowed on it was runnable. */
export function expectWorkConserving(r: SimResult): void {
  for (const p of r.pcpus) expect(p.idleWhileRunnableNs, `pCPU${p.pcpu} idle while runnable`).toBe(0);
}
