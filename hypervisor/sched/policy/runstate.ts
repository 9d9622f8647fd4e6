/**
 * Per-vCPU runstate accounting, as Xen keeps it in struct vcpu_runstate_info
 * (xen/include/public/vcpu.h) and updates it in vcpu_runstate_change()
 * (xen/common/sched/core.c). Pure: every function returns a new value.
 *
 * Contract: in a stored value, `time[s]` is the total nanoseconds spent in state
 * `s` up to `state_entry_time`; the time since then belongs to `state` and is
 * added by runstateSnapshot() (what VCPUOP_get_runstate_info reports).
 */

/** VCPU is currently running on a physical CPU. */
export const RUNSTATE_running = 0;
/** VCPU is runnable, but not currently scheduled on any physical CPU. */
export const RUNSTATE_runnable = 1;
/** VCPU is blocked (a.k.a. idle): it is not runnable (SCHEDOP_block). */
export const RUNSTATE_blocked = 2;
/** VCPU is not runnable and not blocked: down, paused, or parked by a cap. */
export const RUNSTATE_offline = 3;

export type RunstateState =
  | typeof RUNSTATE_running
  | typeof RUNSTATE_runnable
  | typeof RUNSTATE_blocked
  | typeof RUNSTATE_offline;

export interface RunstateInfo {
  readonly state: RunstateState;
  /** When `state` was entered (ns, the scheduler clock). */
  readonly state_entry_time: number;
  /** Time spent in each state, indexed by RUNSTATE_*, up to state_entry_time. */
  readonly time: readonly [number, number, number, number];
}

export const RUNSTATE_NAMES: readonly string[] = ['running', 'runnable', 'blocked', 'offline'];

/** A new vCPU's runstate: in `state` since `now`, no time accumulated. */
export function runstateInit(now: number, state: RunstateState = RUNSTATE_offline): RunstateInfo {
  return { state, state_entry_time: now, time: [0, 0, 0, 0] };
}

/**
 * vcpu_runstate_change(): charge the time since state_entry_time to the old
 * state and enter `state` at `now`. A clock that went backwards charges nothing
 * (Xen: `if ( delta > 0 )`), and the entry time then stays where it was.
 */
export function runstateChange(info: RunstateInfo, state: RunstateState, now: number): RunstateInfo {
  const delta = now - info.state_entry_time;
  if (delta <= 0) return { state, state_entry_time: info.state_entry_time, time: info.time };
  const time: [number, number, number, number] = [...info.time];
  time[info.state] += delta;
  return { state, state_entry_time: now, time };
}

/**
 * vcpu_runstate_get(): the info with the current state's time brought up to
 * `now`; state_entry_time is left as it is, as Xen reports it.
 */
export function runstateSnapshot(info: RunstateInfo, now: number): RunstateInfo {
  const delta = now - info.state_entry_time;
  if (delta <= 0) return info;
  const time: [number, number, number, number] = [...info.time];
  time[info.state] += delta;
  return { state: info.state, state_entry_time: info.state_entry_time, time };
}
