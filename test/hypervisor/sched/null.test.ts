/**
 * The null scheduler (hypervisor/sched/policy/null.ts): one vCPU per pCPU for
 * good, a waitqueue for the rest, no time slicing, no parameters.
 */
import { describe, expect, it } from 'vitest';
import { NullScheduler } from '../../../hypervisor/sched/policy/null.ts';
import { SLICE_NONE, XEN_SCHEDULER_NULL } from '../../../hypervisor/sched/policy/types.ts';
import { simulate } from '../../../hypervisor/sched/sim/harness.ts';
import { CPU, EINVAL, MS, S, io, make, ref, withDomains } from './helpers.ts';

describe('null scheduler', () => {
  it('names and numbers', () => {
    const s = new NullScheduler(1);
    expect(s.name).toBe('null Scheduler');
    expect(s.opt_name).toBe('null');
    expect(s.sched_id).toBe(XEN_SCHEDULER_NULL);
    expect(s.sched_id).toBe(9);
    expect(s.tickPeriodNs).toBe(0);
  });

  it('gives each vCPU its own pCPU; the extra one waits and never runs', () => {
    const r = simulate({
      scheduler: 'null', nrPcpus: 2, durationNs: 2 * S,
      domains: [1, 2, 3].map((domid) => ({ domid, vcpus: [{ workload: CPU }] })),
    });
    expect(r.vcpus.map((v) => v.share)).toEqual([1, 1, 0]);
    expect(r.vcpus[0].perPcpuNs[1]).toBe(0); // never moves
    expect(r.vcpus[1].perPcpuNs[0]).toBe(0);
    expect(r.vcpus[2].firstRunNs).toBe(-1);
    expect(r.schedules).toBe(2); // no time slicing: one schedule per pCPU, at boot
  });

  it('the waiting vCPU runs once another leaves', () => {
    const r = simulate({
      scheduler: 'null', nrPcpus: 2, durationNs: 2 * S,
      domains: [1, 2, 3].map((domid) => ({ domid, vcpus: [{ workload: CPU }] })),
      actions: [{ atNs: 1 * S, kind: 'removeVcpu', domid: 1, vcpuId: 0 }],
    });
    expect(r.vcpus[2].firstRunNs).toBe(1 * S);
    expect(r.vcpus[2].perPcpuNs).toEqual([1 * S, 0]); // it took the freed pCPU 0
    expect(r.vcpus[0].cpuNs).toBe(1 * S);
    expect(r.vcpus[1].cpuNs).toBe(2 * S);
  });

  it('never time-slices: every decision has no timer', () => {
    const s = make('null', 1);
    withDomains(s, [1, 2]);
    for (let t = 0; t < 5; t++) {
      const d = s.doSchedule(0, t * 10 * MS);
      expect(d).toEqual({ next: ref(1), sliceNs: SLICE_NONE, migrated: false });
    }
    expect(s.yield(ref(1), 50 * MS)).toBe(0);
    expect(s.doSchedule(0, 50 * MS).next).toEqual(ref(1));
  });

  it('a blocked vCPU keeps its pCPU, which idles while the waiter could run (not work-conserving)', () => {
    const r = simulate({
      scheduler: 'null', nrPcpus: 1, durationNs: 1 * S,
      domains: [{ domid: 1, vcpus: [{ workload: io(1 * MS, 1 * MS) }] }, { domid: 2, vcpus: [{ workload: CPU }] }],
    });
    expect(r.vcpus[0].share).toBeCloseTo(0.5, 3);
    expect(r.vcpus[1].cpuNs).toBe(0);
    expect(r.pcpus[0].idleWhileRunnableNs).toBeGreaterThan(0.45 * S);
    expect(r.vcpus[0].wakeLatency.maxNs).toBe(0);
  });

  it('a waiter is only given a pCPU in its affinity', () => {
    const r = simulate({
      scheduler: 'null', nrPcpus: 2, durationNs: 2 * S,
      domains: [
        { domid: 1, vcpus: [{ workload: CPU, affinity: [0] }] },
        { domid: 2, vcpus: [{ workload: CPU, affinity: [1] }] },
        { domid: 3, vcpus: [{ workload: CPU, affinity: [1] }] },
      ],
      actions: [{ atNs: 1 * S, kind: 'removeVcpu', domid: 1, vcpuId: 0 }],
    });
    expect(r.vcpus[2].firstRunNs).toBe(-1); // pCPU 0 freed, but d3 may only use pCPU 1
  });

  it('an affinity change away from its pCPU hands that pCPU to a waiter', () => {
    const r = simulate({
      scheduler: 'null', nrPcpus: 2, durationNs: 2 * S,
      domains: [
        { domid: 1, vcpus: [{ workload: CPU }] },
        { domid: 2, vcpus: [{ workload: CPU }] },
        { domid: 3, vcpus: [{ workload: CPU, affinity: [0] }] },
      ],
      actions: [{ atNs: 1 * S, kind: 'setAffinity', domid: 1, vcpuId: 0, pcpus: [1] }],
    });
    // d1 leaves pCPU 0 for pCPU 1, which d2 holds: d1 waits, d3 gets pCPU 0.
    expect(r.vcpus[0].cpuNs).toBe(1 * S);
    expect(r.vcpus[2].firstRunNs).toBe(1 * S);
    expect(r.vcpus[2].perPcpuNs).toEqual([1 * S, 0]);
  });

  it('has no parameters: getinfo and putinfo fail with -EINVAL', () => {
    const s = make('null', 1);
    withDomains(s, [1]);
    expect(s.getParams(1)).toEqual({ ok: false, rc: EINVAL });
    expect(s.putParams(1, { weight: 512 }, 0)).toBe(EINVAL);
  });

  it('dump lists assignments and the waitqueue', () => {
    const s = make('null', 1);
    withDomains(s, [1, 2]);
    s.doSchedule(0, 0);
    const d = s.dump(0);
    expect(d).toContain('Scheduler: null Scheduler (null)');
    expect(d).toContain('CPU[00], unit=d1v0');
    expect(d).toContain('Waitqueue: d2v0');
    expect(d).toContain('[2.0] pcpu=-1');
  });
});
