/**
 * The credit2 scheduler's constants and structures (xen/common/sched/credit2.c),
 * and its time-to-credit conversions, which are pure.
 */
import type { DomBase, UnitBase } from './base.ts';

const MILLISECS = (ms: number): number => ms * 1_000_000;
const MICROSECS = (us: number): number => us * 1_000;

export const CSCHED2_DEFAULT_WEIGHT = 256;
/** Minimum length a timer will be set. */
export const CSCHED2_MIN_TIMER = MICROSECS(500);
/** Credit units start with and are reset to: the highest weight can run 10 ms. */
export const CSCHED2_CREDIT_INIT = MILLISECS(10);
export const CSCHED2_CREDIT_MIN = -CSCHED2_CREDIT_INIT;
/** The idle unit's credit: below any real unit's. */
export const CSCHED2_IDLE_CREDIT = CSCHED2_CREDIT_MIN - 1;
export const CSCHED2_CARRYOVER_MAX = CSCHED2_MIN_TIMER;
/** Not Xen's: how much a runnable unit may carry over a reset (see resetCredit()). */
export const CSCHED2_CARRYOVER_MAX_RUNNABLE = CSCHED2_CREDIT_INIT;
/** opt_migrate_resist = 500 us. */
export const CSCHED2_MIGRATE_RESIST = MICROSECS(500);
export const CSCHED2_MIGRATE_COMPENSATION = MICROSECS(50);
/** How tolerant we should be when peeking at runtime of units on other cpus. */
export const CSCHED2_RATELIMIT_TICKLE_TOLERANCE = MICROSECS(50);
/** Reset: value below which credit will be reset. */
export const CSCHED2_CREDIT_RESET = 0;
/** Maximum time a guest can be run for. */
export const CSCHED2_MAX_TIMER = CSCHED2_CREDIT_INIT;
/** Period of the cap replenishment (opt_cap_period = 10 ms). */
export const CSCHED2_BDGT_REPL_PERIOD = MILLISECS(10);

/** Xen's STIME_MAX as a budget: "no cap". */
export const NO_BUDGET_LIMIT = Number.POSITIVE_INFINITY;

/** struct csched2_unit. */
export interface Csched2Unit extends UnitBase {
  readonly sdom: Csched2Dom;
  credit: number;
  weight: number;
  /** Remainder of the time-to-credit division. */
  residual: number;
  /** Budget held (capped domains), Infinity when the domain has no cap. */
  budget: number;
  budget_quota: number;
  start_time: number;
  /** The pCPU tickled to pick this unit up, -1 if none. */
  tickled_cpu: number;
  /** CSFLAG_unit_yield. */
  yieldFlag: boolean;
  /** CSFLAG_pinned. */
  pinned: boolean;
  onRunq: boolean;
}

/** struct csched2_dom. */
export interface Csched2Dom extends DomBase<Csched2Unit> {
  weight: number;
  cap: number;
  tot_budget: number;
  budget: number;
  next_repl: number;
  /** Units waiting for budget, most recently parked first. */
  readonly parked_units: Csched2Unit[];
}

/**
 * t2c_update(): charge `time` ns of running to svc, at max_weight / weight
 * credits per ns, keeping the division's remainder in residual; never below
 * CSCHED2_CREDIT_MIN. A product too large for exact arithmetic can only mean
 * the floor anyway.
 */
export function t2cUpdate(time: number, svc: Csched2Unit, maxWeight: number): void {
  const val = time * maxWeight + svc.residual;
  if (!Number.isSafeInteger(val)) {
    svc.residual = 0;
    svc.credit = CSCHED2_CREDIT_MIN;
    return;
  }
  const burnt = Math.floor(val / svc.weight);
  svc.residual = val - burnt * svc.weight;
  svc.credit = Math.max(svc.credit - burnt, CSCHED2_CREDIT_MIN);
}

/** c2t(): the running time in which svc burns `credit`. */
export function c2t(credit: number, svc: Csched2Unit, maxWeight: number): number {
  return Math.floor((credit * svc.weight) / maxWeight);
}
