/**
 * The credit scheduler (hypervisor/sched/policy/credit.ts): the shared credit
 * contract, plus what is particular to credit: Xen's numbers, 30 ms slices,
 * rate limiting, BOOST on wake, and why the accounting hardenings exist.
 */
import { describe, expect, it } from 'vitest';
import { CreditScheduler } from '../../../hypervisor/sched/policy/credit.ts';
import { SLICE_NONE, XEN_SCHEDULER_CREDIT } from '../../../hypervisor/sched/policy/types.ts';
import { simulate } from '../../../hypervisor/sched/sim/harness.ts';
import { creditContract } from './credit-contract.ts';
import { CPU, MS, S, attacker, make, ref, withDomains } from './helpers.ts';

creditContract('credit');

describe('credit: Xen parameters', () => {
  it('names and numbers', () => {
    const s = new CreditScheduler(2);
    expect(s.name).toBe('SMP Credit Scheduler');
    expect(s.opt_name).toBe('credit');
    expect(s.sched_id).toBe(XEN_SCHEDULER_CREDIT);
    expect(s.sched_id).toBe(5);
    expect(s.tickPeriodNs).toBe(10 * MS);
    expect(s.tslice).toBe(30 * MS);
    expect(s.credits_per_tslice).toBe(300);
    expect(s.ratelimit).toBe(1 * MS);
  });

  it('gives a 30 ms slice, and no timer when idle', () => {
    const s = make('credit', 1);
    expect(s.doSchedule(0, 0)).toEqual({ next: null, sliceNs: SLICE_NONE, migrated: false });
    withDomains(s, [1]);
    expect(s.takeTickled()).toEqual([0]);
    expect(s.doSchedule(0, 0)).toEqual({ next: ref(1), sliceNs: 30 * MS, migrated: false });
  });

  it('rate limit: a vCPU preempted within 1 ms keeps the pCPU until it has run 1 ms', () => {
    const s = make('credit', 1);
    withDomains(s, [1, 2]);
    expect(s.doSchedule(0, 0).next).toEqual(ref(1));
    // A reschedule 300 us in (e.g. a tickle) keeps d1, with what is left of the 1 ms.
    expect(s.doSchedule(0, 300_000)).toEqual({ next: ref(1), sliceNs: 700_000, migrated: false });
    expect(s.doSchedule(0, 1 * MS).next).toEqual(ref(2));
  });

  it('a waking vCPU is boosted and preempts a CPU-bound one at once', () => {
    const s = make('credit', 1);
    withDomains(s, [1, 2]);
    expect(s.doSchedule(0, 0).next).toEqual(ref(1));
    expect(s.sleep(ref(2), 0)).toBe(0);
    expect(s.doSchedule(0, 5 * MS).next).toEqual(ref(1));
    s.takeTickled();
    expect(s.wake(ref(2), 6 * MS)).toBe(0);
    expect(s.dump(6 * MS)).toMatch(/\[2\.0\] pri=0 /);
    expect(s.takeTickled()).toEqual([0]);
    expect(s.doSchedule(0, 6 * MS).next).toEqual(ref(2));
  });

  it("Xen's literal accounting lets the block-before-tick attacker take 80%+; the hardened one does not", () => {
    const cfg = {
      nrPcpus: 1, durationNs: 5 * S, warmupNs: 200 * MS,
      domains: [{ domid: 1, vcpus: [{ workload: attacker('block') }] }, { domid: 2, vcpus: [{ workload: CPU }] }],
    };
    const literal = simulate({ ...cfg, scheduler: new CreditScheduler(1, { hardened: false }) });
    const hardened = simulate({ ...cfg, scheduler: new CreditScheduler(1) });
    expect(literal.vcpus[0].share).toBeGreaterThan(0.8);
    expect(hardened.vcpus[0].share).toBeLessThanOrEqual(0.51);
  });

  it('the unit running at a tick is charged exactly (10 credits per ms)', () => {
    const s = make('credit', 1);
    withDomains(s, [1]);
    s.doSchedule(0, 0);
    s.tick(10 * MS);
    expect(s.dump(10 * MS)).toMatch(/run: \[1\.0\] pri=-1 flags=0 cpu=0 credit=-100 /);
    s.tick(20 * MS);
    expect(s.dump(20 * MS)).toMatch(/credit=-200 /);
  });

  it("dump looks like 'xl debug-keys r'", () => {
    const s = make('credit', 2);
    withDomains(s, [1, 2, 3]);
    s.doSchedule(0, 0);
    const d = s.dump(0);
    expect(d).toContain('Scheduler: SMP Credit Scheduler (credit)');
    expect(d).toContain('Online Cpus: 0-1');
    expect(d).toContain('\ttslice             = 30ms');
    // csched_res_pick() placed d2 on the idle pCPU 1 at insertion; d3 waits on pCPU 0.
    expect(d).toMatch(/CPU\[00\] nr_run=2, sort=0\n\trun: \[1\.0\] pri=0 flags=0 cpu=0 credit=0 \[w=256,cap=0\]\n\t {2}1: \[3\.0\] pri=0 /);
    expect(d).toMatch(/CPU\[01\] nr_run=1, sort=0\n\t {2}1: \[2\.0\] pri=0 flags=0 cpu=1 /);
  });
});
