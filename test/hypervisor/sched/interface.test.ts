/**
 * What every policy does the same way through the Scheduler interface
 * (hypervisor/sched/policy/base.ts and index.ts): createScheduler, errno
 * returns, vCPU life cycle, runstate accounting, tickles, invariants.
 */
import { describe, expect, it } from 'vitest';
import { createScheduler, DEFAULT_SCHEDULER } from '../../../hypervisor/sched/policy/index.ts';
import {
  RUNSTATE_blocked, RUNSTATE_offline, RUNSTATE_runnable, RUNSTATE_running,
} from '../../../hypervisor/sched/policy/runstate.ts';
import { SCHED_OPT_NAMES } from '../../../hypervisor/sched/policy/types.ts';
import { EBUSY, EEXIST, EINVAL, ESRCH, MS, make, ref, withDomains } from './helpers.ts';

describe('createScheduler', () => {
  it('builds each policy with its Xen scheduler id', () => {
    const ids = SCHED_OPT_NAMES.map((n) => make(n, 2).sched_id);
    expect(ids).toEqual([5, 6, 9]);
    expect(DEFAULT_SCHEDULER).toBe('credit');
  });

  it('returns an error value, not an exception, for an unknown name or a bad pCPU count', () => {
    expect(createScheduler('rtds', 2)).toEqual({
      ok: false, rc: EINVAL, reason: "unknown scheduler 'rtds' (known: credit, credit2, null)",
    });
    expect(createScheduler('credit', 0)).toMatchObject({ ok: false, rc: EINVAL });
    expect(createScheduler('credit', 1.5)).toMatchObject({ ok: false, rc: EINVAL });
  });
});

for (const name of SCHED_OPT_NAMES) {
  describe(`${name}: the common interface`, () => {
    it('domain and vCPU tables answer with Xen errnos', () => {
      const s = make(name, 2);
      expect(s.insertDomain(1)).toBe(0);
      expect(s.insertDomain(1)).toBe(EEXIST);
      expect(s.insertDomain(-1)).toBe(EINVAL);
      expect(s.insertVcpu(ref(2), 0)).toBe(ESRCH);
      expect(s.insertVcpu(ref(1), 0)).toBe(0);
      expect(s.insertVcpu(ref(1), 0)).toBe(EEXIST);
      expect(s.insertVcpu({ domid: 1, vcpuId: 0.5 }, 0)).toBe(EINVAL);
      expect(s.removeDomain(1)).toBe(EBUSY);
      for (const op of [s.wake(ref(1, 7), 0), s.sleep(ref(1, 7), 0), s.yield(ref(1, 7), 0), s.removeVcpu(ref(1, 7), 0)]) {
        expect(op).toBe(ESRCH);
      }
      expect(s.setAffinity(ref(1, 7), [0], 0)).toBe(ESRCH);
      expect(s.removeVcpu(ref(1), 0)).toBe(0);
      expect(s.removeDomain(1)).toBe(0);
      expect(s.removeDomain(1)).toBe(ESRCH);
    });

    it('affinity: empty, out of range or non-integer pCPUs are -EINVAL', () => {
      const s = make(name, 2);
      withDomains(s, [1]);
      for (const bad of [[], [2], [-1], [0.5], [0, 7]]) expect(s.setAffinity(ref(1), bad, 0)).toBe(EINVAL);
      expect(s.getAffinity(ref(1))).toEqual([0, 1]);
      expect(s.setAffinity(ref(1), [1, 1], 0)).toBe(0);
      expect(s.getAffinity(ref(1))).toEqual([1]);
    });

    it('a new vCPU is offline until woken; runstate follows it through running, blocked, runnable', () => {
      const s = make(name, 1);
      expect(s.insertDomain(1)).toBe(0);
      expect(s.insertVcpu(ref(1), 0)).toBe(0);
      expect(s.runstate(ref(1), 5)?.state).toBe(RUNSTATE_offline);
      expect(s.wake(ref(1), 10)).toBe(0);
      expect(s.runstate(ref(1), 10)?.state).toBe(RUNSTATE_runnable);
      expect(s.takeTickled()).toEqual([0]);
      expect(s.doSchedule(0, 20).next).toEqual(ref(1));
      expect(s.current(0)).toEqual(ref(1));
      expect(s.sleep(ref(1), 1 * MS)).toBe(0);
      expect(s.takeTickled()).toEqual([0]); // a running vCPU that blocks has its pCPU rescheduled
      expect(s.runstate(ref(1), 1 * MS)?.state).toBe(RUNSTATE_running); // until that happens
      expect(s.doSchedule(0, 1 * MS).next).toBeNull();
      const info = s.runstate(ref(1), 3 * MS)!;
      expect(info.state).toBe(RUNSTATE_blocked);
      expect(info.time).toEqual([1 * MS - 20, 10, 2 * MS, 10]);
      expect(s.wake(ref(1), 3 * MS)).toBe(0);
      expect(s.wake(ref(1), 3 * MS)).toBe(0); // already awake: no-op
      expect(s.runstate(ref(1), 3 * MS)?.state).toBe(RUNSTATE_runnable);
    });

    it('sleep can mark a vCPU offline (paused) rather than blocked; other states are -EINVAL', () => {
      const s = make(name, 1);
      withDomains(s, [1]);
      expect(s.sleep(ref(1), 0, RUNSTATE_offline)).toBe(0);
      expect(s.runstate(ref(1), 0)?.state).toBe(RUNSTATE_offline);
      expect(s.sleep(ref(1), 0, RUNSTATE_running as typeof RUNSTATE_offline)).toBe(EINVAL);
    });

    it('removing a running vCPU frees and tickles its pCPU at once', () => {
      const s = make(name, 1);
      withDomains(s, [1]);
      s.takeTickled();
      expect(s.doSchedule(0, 0).next).toEqual(ref(1));
      expect(s.removeVcpu(ref(1), 1 * MS)).toBe(0);
      expect(s.current(0)).toBeNull();
      expect(s.takeTickled()).toEqual([0]);
      expect(s.runstate(ref(1), 1 * MS)).toBeUndefined();
      expect(s.doSchedule(0, 1 * MS).next).toBeNull();
    });

    it('a pCPU number out of range is a bug in the caller: it throws', () => {
      const s = make(name, 2);
      expect(() => s.doSchedule(2, 0)).toThrow(RangeError);
      expect(() => s.current(-1)).toThrow(RangeError);
    });

    it('dump starts like Xen\'s dump_runq()', () => {
      const s = make(name, 4);
      expect(s.dump(42).split('\n').slice(0, 5)).toEqual([
        'NOW=42', 'Online Cpus: 0-3', 'Cpupool 0:', 'Cpus: 0-3', `Scheduler: ${s.name} (${name})`,
      ]);
      s.doSchedule(1, 7 * MS);
      expect(s.dump().split('\n')[0]).toBe(`NOW=${7 * MS}`); // defaults to the last time seen
    });
  });
}
