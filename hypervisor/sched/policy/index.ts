/**
 * createScheduler(): the `sched=` boot option (xen/common/sched/core.c,
 * scheduler_init()). Xen falls back to its default on an unknown name; here the
 * caller gets the error and decides (the host configuration rejects it).
 */
import { EINVAL } from './errno.ts';
import { CreditScheduler } from './credit.ts';
import { Credit2Scheduler } from './credit2.ts';
import { NullScheduler } from './null.ts';
import { SCHED_OPT_NAMES, type Scheduler, type SchedOptName } from './types.ts';

export type { Scheduler, SchedOptName, VcpuRef, ScheduleDecision, SchedParams, GetParamsResult, SleepState } from './types.ts';
export { SLICE_NONE, SCHED_OPT_NAMES, XEN_SCHEDULER_CREDIT, XEN_SCHEDULER_CREDIT2, XEN_SCHEDULER_NULL } from './types.ts';
export * from './runstate.ts';

/** The host configuration's default, as in Xen before 4.12 and in this project. */
export const DEFAULT_SCHEDULER: SchedOptName = 'credit';

export type CreateSchedulerResult =
  | { readonly ok: true; readonly scheduler: Scheduler }
  | { readonly ok: false; readonly rc: number; readonly reason: string };

function isOptName(name: string): name is SchedOptName {
  return (SCHED_OPT_NAMES as readonly string[]).includes(name);
}

/**
 * A new scheduler for pCPUs 0..nrPcpus-1. Fails with -EINVAL and a reason for a
 * name other than credit, credit2, null, or nrPcpus not a positive integer.
 */
export function createScheduler(name: string, nrPcpus: number): CreateSchedulerResult {
  if (!isOptName(name)) {
    return { ok: false, rc: -EINVAL, reason: `unknown scheduler '${name}' (known: ${SCHED_OPT_NAMES.join(', ')})` };
  }
  if (!Number.isInteger(nrPcpus) || nrPcpus < 1) {
    return { ok: false, rc: -EINVAL, reason: `nrPcpus must be a positive integer, got ${nrPcpus}` };
  }
  switch (name) {
    case 'credit': return { ok: true, scheduler: new CreditScheduler(nrPcpus) };
    case 'credit2': return { ok: true, scheduler: new Credit2Scheduler(nrPcpus) };
    case 'null': return { ok: true, scheduler: new NullScheduler(nrPcpus) };
  }
}
