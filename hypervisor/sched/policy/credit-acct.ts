/**
 * Credit accounting for the credit scheduler: burn_credits() and csched_acct()
 * of xen/common/sched/credit.c, as functions over the policy's data, so that
 * the arithmetic can be read (and tested) apart from the run queues.
 */
import type { DomBase, UnitBase } from './base.ts';

export const CSCHED_DEFAULT_WEIGHT = 256;
export const CSCHED_TICKS_PER_TSLICE = 3;
/** Default timeslice: 30 ms. */
export const CSCHED_DEFAULT_TSLICE_MS = 30;
export const CSCHED_CREDITS_PER_MSEC = 10;

/** Priorities (svc->pri). */
export const CSCHED_PRI_TS_BOOST = 0;  /* time-share waking up */
export const CSCHED_PRI_TS_UNDER = -1; /* time-share w/ credits */
export const CSCHED_PRI_TS_OVER = -2;  /* time-share w/o credits */
export const CSCHED_PRI_IDLE = -64;    /* idle */

const NS_PER_MS = 1_000_000;

/** struct csched_unit. */
export interface CschedUnit extends UnitBase {
  readonly sdom: CschedDom;
  pri: number;
  credit: number;
  /** Sub-credit remainder of the last charge, in ns * CSCHED_CREDITS_PER_MSEC. */
  residual: number;
  /** When the unit was last charged (or started running). */
  start_time: number;
  last_sched_time: number;
  /** CSCHED_FLAG_UNIT_YIELD. */
  yieldFlag: boolean;
  /** CSCHED_FLAG_UNIT_PINNED: hard affinity is a single pCPU. */
  pinned: boolean;
  /** _VPF_migrating set by __runq_tickle(): move off this pCPU at the next schedule. */
  kickedAway: boolean;
  /** On sdom->active_unit. */
  active: boolean;
  /** On the run queue of pCPU `processor`. */
  onRunq: boolean;
}

/** struct csched_dom. */
export interface CschedDom extends DomBase<CschedUnit> {
  weight: number;
  cap: number;
  /** sdom->active_unit, most recently activated first. */
  readonly activeUnits: CschedUnit[];
}

/** The system-wide fields of struct csched_private that accounting reads and writes. */
export interface CschedAcctState {
  /** prv->active_sdom, most recently activated first. */
  readonly activeSdom: CschedDom[];
  /** Sum of the weights of the active units. */
  weight: number;
  /** credits_per_tslice * ncpus. */
  readonly credit: number;
  credit_balance: number;
  readonly credits_per_tslice: number;
}

/**
 * burn_credits(): charge the unit for the time since start_time, exactly.
 * Xen advances start_time only by the time it charged and also keeps the
 * remainder in `residual`, so a remainder is charged twice; here start_time
 * moves to `now` and only `residual` carries the remainder.
 */
export function burnCredits(svc: CschedUnit, now: number): void {
  const delta = now - svc.start_time;
  if (delta <= 0) return;
  const val = delta * CSCHED_CREDITS_PER_MSEC + svc.residual;
  const credits = Math.floor(val / NS_PER_MS);
  svc.residual = val - credits * NS_PER_MS;
  svc.credit -= credits;
  svc.start_time = now;
}

/** __csched_unit_acct_start(): put the unit (and its domain) on the active lists. */
export function acctStart(prv: CschedAcctState, svc: CschedUnit): void {
  if (svc.active) return;
  const sdom = svc.sdom;
  svc.active = true;
  sdom.activeUnits.unshift(svc);
  prv.weight += sdom.weight;
  if (!prv.activeSdom.includes(sdom)) prv.activeSdom.unshift(sdom);
}

/** __csched_unit_acct_stop_locked(). */
export function acctStop(prv: CschedAcctState, svc: CschedUnit): void {
  if (!svc.active) return;
  const sdom = svc.sdom;
  svc.active = false;
  sdom.activeUnits.splice(sdom.activeUnits.indexOf(svc), 1);
  prv.weight -= sdom.weight;
  if (sdom.activeUnits.length === 0) prv.activeSdom.splice(prv.activeSdom.indexOf(sdom), 1);
}

/** What csched_acct() asks the policy to do to a unit. */
export interface AcctActions {
  /** sched_unit_pause_nosync(): over its cap. */
  park(svc: CschedUnit): void;
  /** sched_unit_unpause(): credit positive again; must not boost. */
  unpark(svc: CschedUnit): void;
}

const div = Math.floor;

/**
 * csched_acct(): every timeslice, share out credits_per_tslice per pCPU among
 * the active domains by weight (capped domains at most their cap), recompute
 * priorities, park capped units below -cap and unpark those back at >= 0,
 * clamp credit to [-credits_per_tslice, credits_per_tslice] (a unit above the
 * top stops earning and keeps half). Integer arithmetic as Xen's (uint32 where
 * Xen's is unsigned; every such value here is >= 0).
 */
export function csched_acct(prv: CschedAcctState, act: AcctActions): void {
  const weight_total = prv.weight;
  let credit_total = prv.credit;
  const cpt = prv.credits_per_tslice;

  /* Converge balance towards 0 when it drops negative */
  if (prv.credit_balance < 0) credit_total -= prv.credit_balance;

  if (weight_total === 0) {
    prv.credit_balance = 0;
    return;
  }

  let weight_left = weight_total;
  let credit_balance = 0;
  let credit_xtra = false;
  let credit_cap = 0;

  for (const sdom of [...prv.activeSdom]) {
    const n = sdom.activeUnits.length;
    weight_left -= sdom.weight * n;

    /* At most, a domain can use credits to run all its active units for one period. */
    let credit_peak = n * cpt;
    if (prv.credit_balance < 0) {
      credit_peak += div((-prv.credit_balance * sdom.weight * n + (weight_total - 1)) / weight_total);
    }

    if (sdom.cap !== 0) {
      credit_cap = div((sdom.cap * cpt + 99) / 100);
      if (credit_cap < credit_peak) credit_peak = credit_cap;
      credit_cap = div((credit_cap + (n - 1)) / n);
    }

    let credit_fair = div((credit_total * sdom.weight * n + (weight_total - 1)) / weight_total);

    if (credit_fair < credit_peak) {
      credit_xtra = true;
    } else {
      if (weight_left !== 0) {
        /* Give other domains a chance at unused credits */
        credit_total += div(((credit_fair - credit_peak) * weight_total + (weight_left - 1)) / weight_left);
      }
      if (credit_xtra) {
        /* Keep domains with extra credits at the head of the queue. */
        prv.activeSdom.splice(prv.activeSdom.indexOf(sdom), 1);
        prv.activeSdom.unshift(sdom);
      }
      credit_fair = credit_peak;
    }

    /* Compute fair share per unit */
    credit_fair = div((credit_fair + (n - 1)) / n);

    for (const svc of [...sdom.activeUnits]) {
      svc.credit += credit_fair;
      let credit = svc.credit;
      if (credit < 0) {
        svc.pri = CSCHED_PRI_TS_OVER;
        /* Park running units of capped-out domains */
        if (sdom.cap !== 0 && credit < -credit_cap && !svc.parked) act.park(svc);
        /* Lower bound on credits */
        if (credit < -cpt) {
          credit = -cpt;
          svc.credit = credit;
        }
      } else {
        svc.pri = CSCHED_PRI_TS_UNDER;
        /* Unpark any capped domains whose credits go positive */
        if (svc.parked) act.unpark(svc);
        /* Upper bound on credits means unit stops earning */
        if (credit > cpt) {
          acctStop(prv, svc);
          credit = Math.trunc(credit / 2);
          svc.credit = credit;
        }
      }
      credit_balance += credit;
    }
  }

  prv.credit_balance = credit_balance;
}
