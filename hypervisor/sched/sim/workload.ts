/**
 * Synthetic guest behaviours for the scheduler simulation: what a vCPU does
 * with the pCPU while it has one, reduced to "when will it block or yield".
 */

/** Always runnable; never blocks or yields. */
export interface CpuBoundWorkload {
  readonly kind: 'cpu';
}

/** Runs runNs of CPU, blocks for blockNs, wakes, and again. */
export interface IoBoundWorkload {
  readonly kind: 'io';
  readonly runNs: number;
  readonly blockNs: number;
  /** Blocked from 0 until this time (staggers several I/O vCPUs); default 0. */
  readonly firstWakeNs?: number;
}

/**
 * The "yield-before-tick" attacker: CPU-bound, except that guardNs before every
 * multiple of periodNs (the scheduler's 10 ms tick) it blocks and wakes
 * wakeDelayNs after the boundary ('block'), or yields ('yield'), so that it is
 * never the running vCPU when a sampling scheduler would charge it.
 */
export interface AttackerWorkload {
  readonly kind: 'attacker';
  readonly mode: 'block' | 'yield';
  readonly guardNs: number;
  readonly wakeDelayNs: number;
  /** Default 10 ms. */
  readonly periodNs?: number;
}

export type Workload = CpuBoundWorkload | IoBoundWorkload | AttackerWorkload;

export const ATTACKER_DEFAULT_PERIOD_NS = 10_000_000;

/** The next tick boundary an attacker acts on, and when it acts (>= now). */
export function attackerNextAction(w: AttackerWorkload, now: number, handledBoundary: number): {
  boundary: number;
  at: number;
} {
  const period = w.periodNs ?? ATTACKER_DEFAULT_PERIOD_NS;
  const boundary = (Math.floor(Math.max(now, handledBoundary) / period) + 1) * period;
  return { boundary, at: Math.max(boundary - w.guardNs, now) };
}

/** A workload's fields are usable: positive integer times, guard inside the period. */
export function checkWorkload(w: Workload): string | null {
  const pos = (n: number): boolean => Number.isInteger(n) && n > 0;
  switch (w.kind) {
    case 'cpu':
      return null;
    case 'io':
      if (!pos(w.runNs) || !pos(w.blockNs)) return 'io: runNs and blockNs must be positive integers';
      if (w.firstWakeNs !== undefined && !(Number.isInteger(w.firstWakeNs) && w.firstWakeNs >= 0)) return 'io: bad firstWakeNs';
      return null;
    case 'attacker': {
      const period = w.periodNs ?? ATTACKER_DEFAULT_PERIOD_NS;
      if (!pos(period) || !pos(w.guardNs) || !pos(w.wakeDelayNs)) return 'attacker: times must be positive integers';
      if (w.guardNs + w.wakeDelayNs >= period) return 'attacker: guardNs + wakeDelayNs must be below the period';
      return null;
    }
  }
}
