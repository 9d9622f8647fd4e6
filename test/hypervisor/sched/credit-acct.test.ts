/** csched_acct() and burn_credits() (hypervisor/sched/policy/credit-acct.ts), by hand-computed examples. */
import { describe, expect, it } from 'vitest';
import {
  CSCHED_PRI_TS_BOOST, CSCHED_PRI_TS_OVER, CSCHED_PRI_TS_UNDER,
  acctStart, burnCredits, csched_acct,
  type CschedAcctState, type CschedDom, type CschedUnit,
} from '../../../hypervisor/sched/policy/credit-acct.ts';
import { runstateInit } from '../../../hypervisor/sched/policy/runstate.ts';

function dom(domid: number, weight: number, cap = 0): CschedDom {
  return { domid, units: [], weight, cap, activeUnits: [] };
}

function unit(sdom: CschedDom, vcpuId: number, credit: number): CschedUnit {
  const u: CschedUnit = {
    ref: { domid: sdom.domid, vcpuId }, processor: 0, affinity: [0], awake: true, sleepState: 2, parked: false,
    runstate: runstateInit(0), sdom, pri: CSCHED_PRI_TS_UNDER, credit, residual: 0, start_time: 0, last_sched_time: 0,
    yieldFlag: false, pinned: false, kickedAway: false, active: false, onRunq: false,
  };
  sdom.units.push(u);
  return u;
}

function prv(ncpus: number): CschedAcctState {
  return { activeSdom: [], weight: 0, credit: 300 * ncpus, credit_balance: 0, credits_per_tslice: 300 };
}

const noActions = {
  park: (): void => { throw new Error('unexpected park'); },
  unpark: (): void => { throw new Error('unexpected unpark'); },
};

describe('csched_acct', () => {
  it('shares 300 credits per pCPU by weight, rounding up', () => {
    const p = prv(1);
    const a = unit(dom(1, 256), 0, 0);
    const b = unit(dom(2, 768), 0, 0);
    acctStart(p, a);
    acctStart(p, b);
    expect(p.weight).toBe(1024);
    csched_acct(p, noActions);
    expect([a.credit, b.credit]).toEqual([75, 225]);
    expect(p.credit_balance).toBe(300);
  });

  it('weight counts per active vCPU: 2 vCPUs of one domain vs 1 of another, equal weights', () => {
    const p = prv(1);
    const d1 = dom(1, 256);
    const a0 = unit(d1, 0, 0);
    const a1 = unit(d1, 1, 0);
    const b = unit(dom(2, 256), 0, 0);
    for (const u of [a0, a1, b]) acctStart(p, u);
    csched_acct(p, noActions);
    expect([a0.credit, a1.credit, b.credit]).toEqual([100, 100, 100]);
  });

  it('a capped domain earns at most cap% of a timeslice and is parked below -cap', () => {
    const p = prv(1);
    const d = dom(1, 256, 25);
    const u = unit(d, 0, -300);
    acctStart(p, u);
    const parked: CschedUnit[] = [];
    csched_acct(p, { ...noActions, park: (s) => parked.push(s) });
    expect(u.credit).toBe(-225);
    expect(u.pri).toBe(CSCHED_PRI_TS_OVER);
    expect(parked).toEqual([u]);
  });

  it('unparks at credit >= 0, without boost', () => {
    const p = prv(1);
    const u = unit(dom(1, 256, 25), 0, -75);
    u.parked = true;
    acctStart(p, u);
    const unparked: CschedUnit[] = [];
    csched_acct(p, { ...noActions, unpark: (s) => unparked.push(s) });
    expect(u.credit).toBe(0);
    expect(u.pri).toBe(CSCHED_PRI_TS_UNDER);
    expect(unparked).toEqual([u]);
  });

  it('clamps credit at -credits_per_tslice, and halves and deactivates above +credits_per_tslice', () => {
    const p = prv(1);
    const low = unit(dom(1, 256), 0, -900);
    const high = unit(dom(2, 256), 0, 200);
    acctStart(p, low);
    acctStart(p, high);
    csched_acct(p, noActions);
    expect(low.credit).toBe(-300);
    expect(high.credit).toBe(175); // 200 + 150 = 350 > 300: halved
    expect(high.active).toBe(false);
    expect(p.activeSdom.map((d) => d.domid)).toEqual([1]);
    expect(p.weight).toBe(256);
  });

  it('recomputes priority from credit: BOOST and UNDER become OVER below 0', () => {
    const p = prv(1);
    const u = unit(dom(1, 256), 0, -400);
    u.pri = CSCHED_PRI_TS_BOOST;
    acctStart(p, u);
    csched_acct(p, noActions);
    expect(u.pri).toBe(CSCHED_PRI_TS_OVER);
  });

  it('with no active unit, does nothing but reset the balance', () => {
    const p = prv(2);
    p.credit_balance = -50;
    csched_acct(p, noActions);
    expect(p.credit_balance).toBe(0);
  });
});

describe('burn_credits', () => {
  it('charges 10 credits per ms, carrying the sub-credit remainder exactly', () => {
    const u = unit(dom(1, 256), 0, 0);
    burnCredits(u, 150_000); // 1.5 credits
    expect(u.credit).toBe(-1);
    burnCredits(u, 300_000); // 3 in all
    expect(u.credit).toBe(-3);
    burnCredits(u, 450_000); // 4.5 in all (Xen's own version would have charged 5)
    expect(u.credit).toBe(-4);
    burnCredits(u, 450_000); // no time passed
    expect(u.credit).toBe(-4);
    expect(u.start_time).toBe(450_000);
  });
});
