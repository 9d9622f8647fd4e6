/**
 * The credit2 scheduler (hypervisor/sched/policy/credit2.ts): the shared
 * credit contract, plus Xen's numbers, slice bounds, tickling, and the two
 * deliberate deviations (reset condition, tickling within the rate limit).
 */
import { describe, expect, it } from 'vitest';
import {
  CSCHED2_BDGT_REPL_PERIOD, CSCHED2_CARRYOVER_MAX, CSCHED2_CREDIT_INIT, CSCHED2_CREDIT_RESET, CSCHED2_MAX_TIMER,
  CSCHED2_MIN_TIMER, Credit2Scheduler,
} from '../../../hypervisor/sched/policy/credit2.ts';
import type { ScheduleDecision, Scheduler } from '../../../hypervisor/sched/policy/types.ts';
import { XEN_SCHEDULER_CREDIT2 } from '../../../hypervisor/sched/policy/types.ts';
import { simulate } from '../../../hypervisor/sched/sim/harness.ts';
import { creditContract } from './credit-contract.ts';
import { CPU, MS, S, US, expectShares, io, make, ref, withDomains } from './helpers.ts';

creditContract('credit2');

/** A credit2 policy that records every slice it hands out. */
function recordingSlices(nrPcpus: number): { sched: Scheduler; slices: number[] } {
  const sched = new Credit2Scheduler(nrPcpus);
  const slices: number[] = [];
  const doSchedule = sched.doSchedule.bind(sched);
  sched.doSchedule = (p: number, now: number): ScheduleDecision => {
    const d = doSchedule(p, now);
    if (d.next) slices.push(d.sliceNs);
    return d;
  };
  return { sched, slices };
}

describe('credit2: Xen parameters', () => {
  it('names and numbers', () => {
    const s = new Credit2Scheduler(1);
    expect(s.name).toBe('SMP Credit Scheduler rev2');
    expect(s.opt_name).toBe('credit2');
    expect(s.sched_id).toBe(XEN_SCHEDULER_CREDIT2);
    expect(s.sched_id).toBe(6);
    expect(CSCHED2_CREDIT_INIT).toBe(10 * MS);
    expect(CSCHED2_MIN_TIMER).toBe(500 * US);
    expect(CSCHED2_MAX_TIMER).toBe(10 * MS);
    expect(CSCHED2_CARRYOVER_MAX).toBe(500 * US);
    expect(CSCHED2_CREDIT_RESET).toBe(0);
    expect(CSCHED2_BDGT_REPL_PERIOD).toBe(10 * MS);
    expect(s.tickPeriodNs).toBe(10 * MS);
    expect(s.ratelimit).toBe(1 * MS);
  });

  it('every slice is between CSCHED2_MIN_TIMER and CSCHED2_MAX_TIMER', () => {
    const { sched, slices } = recordingSlices(2);
    simulate({
      scheduler: sched, nrPcpus: 2, durationNs: 2 * S,
      domains: [
        { domid: 1, weight: 256, vcpus: [{ workload: CPU }, { workload: io(300 * US, 2 * MS) }] },
        { domid: 2, weight: 1024, vcpus: [{ workload: CPU }] },
        { domid: 3, cap: 30, vcpus: [{ workload: CPU }] },
      ],
    });
    expect(slices.length).toBeGreaterThan(1000);
    expect(Math.min(...slices)).toBeGreaterThanOrEqual(CSCHED2_MIN_TIMER);
    expect(Math.max(...slices)).toBeLessThanOrEqual(CSCHED2_MAX_TIMER);
  });

  it('a lone vCPU runs until its credit is spent: one CSCHED2_MAX_TIMER slice', () => {
    const s = make('credit2', 1);
    withDomains(s, [1]);
    expect(s.doSchedule(0, 0)).toEqual({ next: ref(1), sliceNs: CSCHED2_MAX_TIMER, migrated: false });
  });

  it('a waking vCPU tickles an idle pCPU rather than preempting', () => {
    const s = make('credit2', 2);
    withDomains(s, [1]);
    s.takeTickled();
    expect(s.doSchedule(0, 0).next).toEqual(ref(1));
    withDomains(s, [2], 1 * MS);
    expect(s.takeTickled()).toEqual([1]);
    expect(s.doSchedule(1, 1 * MS)).toMatchObject({ next: ref(2), migrated: true });
  });

  it('deviation: 4 equal vCPUs on 3 pCPUs get 75% each (Xen\'s clip at a credit reset gives 85/72/72/72)', () => {
    const r = simulate({
      scheduler: 'credit2', nrPcpus: 3, durationNs: 10 * S, warmupNs: 200 * MS,
      domains: [1, 2, 3, 4].map((domid) => ({ domid, vcpus: [{ workload: CPU }] })),
    });
    expectShares(r, [0.75, 0.75, 0.75, 0.75], 0.01);
  });

  it('deviation: 5 equal vCPUs on 4 pCPUs get 80% each (Xen: 87/87/87/87/52)', () => {
    const r = simulate({
      scheduler: 'credit2', nrPcpus: 4, durationNs: 10 * S, warmupNs: 200 * MS,
      domains: [1, 2, 3, 4, 5].map((domid) => ({ domid, vcpus: [{ workload: CPU }] })),
    });
    expectShares(r, [0.8, 0.8, 0.8, 0.8, 0.8], 0.01);
  });

  it('a blocked vCPU does not hoard credit across resets: it runs no longer than a fresh one after waking', () => {
    // d1 sleeps through many resets; on waking it must not monopolise the pCPU.
    const r = simulate({
      scheduler: 'credit2', nrPcpus: 1, durationNs: 3 * S, warmupNs: 1 * S,
      domains: [{ domid: 1, vcpus: [{ workload: io(2 * S, 1, 1 * S) }] }, { domid: 2, vcpus: [{ workload: CPU }] }],
    });
    expectShares(r, [0.5, 0.5], 0.01);
  });

  it('deviation: a waker with more credit waits at most about the rate limit, not a whole slice', () => {
    // The hog has just been switched in when the I/O vCPU wakes (600 us after it blocked):
    // Xen's tickle_score() refuses to preempt within the rate limit and the waker waits up to 10 ms.
    const r = simulate({
      scheduler: 'credit2', nrPcpus: 1, durationNs: 2 * S, warmupNs: 100 * MS,
      domains: [{ domid: 1, vcpus: [{ workload: io(200 * US, 600 * US) }] }, { domid: 2, vcpus: [{ workload: CPU }] }],
    });
    expect(r.vcpus[0].wakeLatency.count).toBeGreaterThan(1000);
    expect(r.vcpus[0].wakeLatency.maxNs).toBeLessThanOrEqual(1 * MS);
  });

  it('dump looks like \'xl debug-keys r\'', () => {
    const s = make('credit2', 1);
    withDomains(s, [1]);
    expect(s.putParams(1, { cap: 50 }, 0)).toBe(0);
    s.doSchedule(0, 0);
    const d = s.dump(0);
    expect(d).toContain('Scheduler: SMP Credit Scheduler rev2 (credit2)');
    expect(d).toContain('\tDomain: 1 w 256 c 50 v 1');
    expect(d).toMatch(/\trun: \[1\.0\] flags=0 cpu=0 credit=\d+ \[w=256\] budget=/);
  });
});
