/** Runstate accounting (hypervisor/sched/policy/runstate.ts), after vcpu_runstate_change(). */
import { describe, expect, it } from 'vitest';
import {
  RUNSTATE_blocked, RUNSTATE_offline, RUNSTATE_runnable, RUNSTATE_running,
  runstateChange, runstateInit, runstateSnapshot,
} from '../../../hypervisor/sched/policy/runstate.ts';

describe('runstate', () => {
  it("uses Xen's state numbers", () => {
    expect([RUNSTATE_running, RUNSTATE_runnable, RUNSTATE_blocked, RUNSTATE_offline]).toEqual([0, 1, 2, 3]);
  });

  it('charges each interval to the state it was spent in', () => {
    let r = runstateInit(100);
    r = runstateChange(r, RUNSTATE_runnable, 150);
    r = runstateChange(r, RUNSTATE_running, 200);
    r = runstateChange(r, RUNSTATE_blocked, 500);
    expect(r).toEqual({ state: RUNSTATE_blocked, state_entry_time: 500, time: [300, 50, 0, 50] });
  });

  it('a snapshot adds the time in the current state, keeping state_entry_time', () => {
    const r = runstateChange(runstateInit(0), RUNSTATE_running, 10);
    expect(runstateSnapshot(r, 25)).toEqual({ state: RUNSTATE_running, state_entry_time: 10, time: [15, 0, 0, 10] });
    expect(r.time).toEqual([0, 0, 0, 10]); // pure: the stored value is unchanged
  });

  it('a clock that went backwards charges nothing', () => {
    const r = runstateChange(runstateInit(100), RUNSTATE_running, 90);
    expect(r).toEqual({ state: RUNSTATE_running, state_entry_time: 100, time: [0, 0, 0, 0] });
    expect(runstateSnapshot(r, 50)).toBe(r);
  });
});
