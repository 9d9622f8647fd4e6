/**
 * The scheduler interface, in the shape of Xen's `struct scheduler`
 * (xen/common/sched/private.h). A policy is pure: it keeps no timers and does
 * no I/O. Its caller (the simulation harness, or the hypervisor's vCPU threads)
 * owns the clock and passes `now` (ns) into every operation that needs it.
 *
 * Reschedule requests (Xen: raising SCHEDULE_SOFTIRQ on a pCPU) are collected
 * by the policy; after any operation the caller takes them with
 * takeTickled() and must call doSchedule() on each pCPU listed, and on every
 * pCPU whose slice (the last doSchedule's sliceNs) has run out.
 */
import type { RunstateInfo, RUNSTATE_blocked, RUNSTATE_offline } from './runstate.ts';

/** xen/include/public/domctl.h XEN_SCHEDULER_*. Never renumber. */
export const XEN_SCHEDULER_CREDIT = 5;
export const XEN_SCHEDULER_CREDIT2 = 6;
export const XEN_SCHEDULER_ARINC653 = 7;
export const XEN_SCHEDULER_RTDS = 8;
export const XEN_SCHEDULER_NULL = 9;

/** The `sched=` names this project implements (Xen's opt_name). */
export type SchedOptName = 'credit' | 'credit2' | 'null';
export const SCHED_OPT_NAMES: readonly SchedOptName[] = ['credit', 'credit2', 'null'];

/** One vCPU: domain id and vCPU number within the domain. */
export interface VcpuRef {
  readonly domid: number;
  readonly vcpuId: number;
}

/** doSchedule's sliceNs when no timer is needed (Xen: next_time = -1, the idle vCPU or null). */
export const SLICE_NONE = -1;

/** What doSchedule() decided for one pCPU (Xen: prev->next_task, prev->next_time). */
export interface ScheduleDecision {
  /** The vCPU to run, or null for the pCPU's idle vCPU. */
  readonly next: VcpuRef | null;
  /** ns until this pCPU must call doSchedule() again; SLICE_NONE: only when tickled. */
  readonly sliceNs: number;
  /** next was taken from another pCPU (Xen: unit->migrated). */
  readonly migrated: boolean;
}

/** Per-domain parameters of XEN_DOMCTL_SCHEDOP_{get,put}info for credit and credit2. */
export interface SchedParams {
  /** Relative weight, 1..65535; default 256. */
  readonly weight: number;
  /** Cap in % of one pCPU, 0..100 * nr_vcpus; 0 = no cap. */
  readonly cap: number;
}

export type GetParamsResult =
  | { readonly ok: true; readonly params: SchedParams }
  | { readonly ok: false; readonly rc: number };

/** How a vCPU stops being runnable: it blocked (SCHEDOP_block) or was paused / brought down. */
export type SleepState = typeof RUNSTATE_blocked | typeof RUNSTATE_offline;

/**
 * Operations return 0 or a negative Xen errno (-ESRCH unknown domain or vCPU,
 * -EEXIST duplicate, -EBUSY domain still has vCPUs, -EINVAL bad argument);
 * they never throw on bad arguments. They throw only on a broken invariant of
 * this code (a bug), or when given a pCPU number outside 0..nrPcpus-1.
 */
export interface Scheduler {
  /** Xen's long name, e.g. "SMP Credit Scheduler". */
  readonly name: string;
  readonly opt_name: SchedOptName;
  /** XEN_SCHEDULER_*. */
  readonly sched_id: number;
  readonly nrPcpus: number;
  /** Call tick(now) at every multiple of this period (ns); 0: the policy has no periodic work. */
  readonly tickPeriodNs: number;

  /** alloc_domdata: a domain joins the scheduler with default parameters. */
  insertDomain(domid: number): number;
  /** free_domdata: the domain must have no vCPUs left (-EBUSY). */
  removeDomain(domid: number): number;
  /** insert_unit: the vCPU joins offline (not runnable); wake() makes it runnable. */
  insertVcpu(ref: VcpuRef, now: number): number;
  /** remove_unit: the vCPU leaves at once, even if running (its pCPU is tickled). */
  removeVcpu(ref: VcpuRef, now: number): number;

  /** sleep: the vCPU stops being runnable. If it is running, its pCPU is tickled. */
  sleep(ref: VcpuRef, now: number, state?: SleepState): number;
  /** wake: the vCPU becomes runnable again; no-op if it already is. */
  wake(ref: VcpuRef, now: number): number;
  /** yield (SCHEDOP_yield): give way to other runnable vCPUs; tickles its pCPU if running. */
  yield(ref: VcpuRef, now: number): number;

  /** do_schedule: choose what pCPU `pcpu` runs from `now`. */
  doSchedule(pcpu: number, now: number): ScheduleDecision;
  /** The timer interrupt's scheduler work at `now` (credit: csched_tick and csched_acct). */
  tick(now: number): void;

  /** adjust, XEN_DOMCTL_SCHEDOP_getinfo. */
  getParams(domid: number): GetParamsResult;
  /** adjust, XEN_DOMCTL_SCHEDOP_putinfo; an absent field is left unchanged. */
  putParams(domid: number, params: Partial<SchedParams>, now: number): number;

  /** Hard affinity: the pCPUs the vCPU may run on. Empty or out of range: -EINVAL. */
  setAffinity(ref: VcpuRef, pcpus: readonly number[], now: number): number;
  getAffinity(ref: VcpuRef): readonly number[] | undefined;

  /** pCPUs with a reschedule request pending, ascending; clears them. */
  takeTickled(): number[];
  /** The vCPU the pCPU is running (Xen: curr_on_cpu), null when idle. */
  current(pcpu: number): VcpuRef | null;
  /** VCPUOP_get_runstate_info's view of the vCPU at `now`. */
  runstate(ref: VcpuRef, now: number): RunstateInfo | undefined;
  /** What `xl debug-keys r` prints for this scheduler; `now` defaults to the last doSchedule/tick time. */
  dump(now?: number): string;
}
