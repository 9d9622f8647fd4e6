/**
 * The part of the scheduler every policy shares: what Xen keeps in
 * xen/common/sched/core.c rather than in a policy file.
 *  - the domain and vCPU tables (sched_init_domain(), sched_init_vcpu()),
 *  - runnability (unit_runnable(): not asleep, not parked by a cap),
 *  - runstate accounting (vcpu_runstate_change()),
 *  - which vCPU each pCPU runs (curr_on_cpu()) and the pending SCHEDULE_SOFTIRQs,
 *  - argument checks for adjust and hard affinity, before the policy sees them.
 * A policy extends SchedulerBase and implements the hooks, named after the
 * struct scheduler operations they stand for.
 */
import { EBUSY, EEXIST, EINVAL, ESRCH } from './errno.ts';
import { allCpus, formatCpuList, parseAffinity } from './cpumask.ts';
import {
  RUNSTATE_blocked, RUNSTATE_offline, RUNSTATE_runnable, RUNSTATE_running,
  runstateChange, runstateInit, runstateSnapshot,
  type RunstateInfo, type RunstateState,
} from './runstate.ts';
import type {
  GetParamsResult, ScheduleDecision, Scheduler, SchedOptName, SchedParams, SleepState, VcpuRef,
} from './types.ts';

/** SCHED_DEFAULT_RATELIMIT_US (xen/include/xen/sched-if.h, sched_ratelimit_us): 1 ms. */
export const SCHED_DEFAULT_RATELIMIT_US = 1000;
/** XEN_SYSCTL_SCHED_RATELIMIT_MIN (public/sysctl.h), credit's CSCHED_MIN_TIMER: 100 us. */
export const CSCHED_MIN_TIMER = 100_000;

/** Xen's limits on credit/credit2 weight (uint16_t, 0 meaning "unchanged" on the wire). */
export const WEIGHT_MIN = 1;
export const WEIGHT_MAX = 65535;

/** The fields of a scheduling unit that the core owns; policies extend it. */
export interface UnitBase {
  readonly ref: VcpuRef;
  /** sched_unit_master(): the pCPU the vCPU runs on, is queued on, or last ran on. */
  processor: number;
  /** Hard affinity: sorted, non-empty. */
  affinity: readonly number[];
  /** False between sleep() and wake() (Xen: _VPF_blocked or a pause). */
  awake: boolean;
  /** The runstate while asleep. */
  sleepState: SleepState;
  /** Not runnable because its domain is over its cap (credit: PARKED; credit2: _VPF_parked). */
  parked: boolean;
  runstate: RunstateInfo;
}

export interface DomBase<U extends UnitBase> {
  readonly domid: number;
  /** The domain's vCPUs in this scheduler, in insertion order. */
  readonly units: U[];
}

/** The policy's choice for one pCPU, before the core records it. */
export interface UnitDecision<U> {
  readonly next: U | null;
  readonly sliceNs: number;
  readonly migrated: boolean;
}

/** Why a unit is being made runnable (Xen's wake paths differ: only a real wake boosts). */
export type WakeReason = 'wake' | 'unpark' | 'migrate';

function keyOf(ref: VcpuRef): string {
  return `${ref.domid}.${ref.vcpuId}`;
}

function isId(n: number): boolean {
  return Number.isInteger(n) && n >= 0;
}

export abstract class SchedulerBase<U extends UnitBase, D extends DomBase<U>> implements Scheduler {
  abstract readonly name: string;
  abstract readonly opt_name: SchedOptName;
  abstract readonly sched_id: number;
  abstract readonly tickPeriodNs: number;

  protected readonly doms = new Map<number, D>();
  protected readonly units = new Map<string, U>();
  /** curr_on_cpu(): null means the pCPU runs its idle vCPU. */
  protected readonly curr: (U | null)[];
  private readonly softirqPending = new Set<number>();
  /** The latest clock value seen by doSchedule or tick, for dump(). */
  private lastNow = 0;

  constructor(readonly nrPcpus: number) {
    if (!Number.isInteger(nrPcpus) || nrPcpus < 1) throw new RangeError(`nrPcpus must be >= 1, got ${nrPcpus}`);
    this.curr = new Array<U | null>(nrPcpus).fill(null);
  }

  // ---- policy hooks (struct scheduler) ------------------------------------

  /** alloc_domdata. */
  protected abstract allocDomdata(domid: number): D;
  /** alloc_udata: build the unit; initialise the core fields with unitBase(). */
  protected abstract allocUdata(dom: D, ref: VcpuRef, now: number): U;
  /** insert_unit: the unit is in the tables, offline. */
  protected abstract insertUnit(unit: U, now: number): void;
  /** remove_unit: forget the unit; the core has already taken it off its pCPU. */
  protected abstract removeUnit(unit: U, now: number): void;
  /** sleep: the unit was runnable and no longer is (it may still be curr). */
  protected abstract sleepUnit(unit: U, now: number): void;
  /** wake: the unit was not runnable and now is (it may still be curr). */
  protected abstract wakeUnit(unit: U, now: number, reason: WakeReason): void;
  /** yield: the running unit asks to give way; the core tickles its pCPU. */
  protected abstract yieldUnit(unit: U): void;
  /** do_schedule. The returned unit must be runnable, allowed on cpu, and not curr elsewhere. */
  protected abstract schedule(cpu: number, now: number): UnitDecision<U>;
  /** context_saved: prev has just been switched out of its pCPU. */
  protected contextSaved(_prev: U, _now: number): void {}
  /** adjust_affinity: unit.affinity has changed; move the unit if it must. */
  protected abstract adjustAffinity(unit: U, now: number): void;
  /** adjust (putinfo), arguments already checked. */
  protected abstract adjustDom(dom: D, params: Partial<SchedParams>, now: number): void;
  protected abstract domParams(dom: D): SchedParams;
  /** The timer interrupt's work. */
  protected abstract tickPolicy(now: number): void;
  /** dump_settings and dump_cpu_state. */
  protected abstract dumpSettings(now: number): string[];
  protected abstract dumpCpuState(cpu: number, now: number): string[];

  // ---- helpers for the policies ---------------------------------------------

  /** The core fields of a new unit: offline, allowed everywhere, on pCPU vcpuId mod nrPcpus. */
  protected unitBase(ref: VcpuRef, now: number): UnitBase {
    return {
      ref: { domid: ref.domid, vcpuId: ref.vcpuId },
      processor: ref.vcpuId % this.nrPcpus,
      affinity: allCpus(this.nrPcpus),
      awake: false,
      sleepState: RUNSTATE_offline,
      parked: false,
      runstate: runstateInit(now, RUNSTATE_offline),
    };
  }

  /** unit_runnable(). */
  protected runnable(unit: U): boolean {
    return unit.awake && !unit.parked;
  }

  protected isCurr(unit: U): boolean {
    return this.curr[unit.processor] === unit;
  }

  protected allowed(unit: U, cpu: number): boolean {
    return unit.affinity.includes(cpu);
  }

  /** cpu_raise_softirq(cpu, SCHEDULE_SOFTIRQ). */
  protected raiseSchedule(cpu: number): void {
    this.softirqPending.add(cpu);
  }

  /** Set or clear the parked flag; runnability and runstate follow. No policy hook runs. */
  protected markParked(unit: U, parked: boolean, now: number): void {
    unit.parked = parked;
    this.syncRunstate(unit, now);
  }

  /** Bring the runstate in line with the unit's state (Xen's choice in vcpu_runstate_change callers). */
  protected syncRunstate(unit: U, now: number): void {
    let state: RunstateState;
    if (this.isCurr(unit)) state = RUNSTATE_running;
    else if (!unit.awake) state = unit.sleepState;
    else if (unit.parked) state = RUNSTATE_offline;
    else state = RUNSTATE_runnable;
    if (state !== unit.runstate.state) unit.runstate = runstateChange(unit.runstate, state, now);
  }

  protected unitOf(ref: VcpuRef): U | undefined {
    return this.units.get(keyOf(ref));
  }

  protected checkCpu(cpu: number): void {
    if (!Number.isInteger(cpu) || cpu < 0 || cpu >= this.nrPcpus) {
      throw new RangeError(`pCPU ${cpu} out of range 0..${this.nrPcpus - 1}`);
    }
  }

  // ---- struct scheduler operations -----------------------------------------

  insertDomain(domid: number): number {
    if (!isId(domid)) return -EINVAL;
    if (this.doms.has(domid)) return -EEXIST;
    this.doms.set(domid, this.allocDomdata(domid));
    return 0;
  }

  removeDomain(domid: number): number {
    const dom = this.doms.get(domid);
    if (!dom) return -ESRCH;
    if (dom.units.length > 0) return -EBUSY;
    this.doms.delete(domid);
    return 0;
  }

  insertVcpu(ref: VcpuRef, now: number): number {
    if (!isId(ref.domid) || !isId(ref.vcpuId)) return -EINVAL;
    const dom = this.doms.get(ref.domid);
    if (!dom) return -ESRCH;
    if (this.units.has(keyOf(ref))) return -EEXIST;
    const unit = this.allocUdata(dom, ref, now);
    this.units.set(keyOf(ref), unit);
    dom.units.push(unit);
    this.insertUnit(unit, now);
    return 0;
  }

  removeVcpu(ref: VcpuRef, now: number): number {
    const unit = this.unitOf(ref);
    const dom = this.doms.get(ref.domid);
    if (!unit || !dom) return -ESRCH;
    if (this.isCurr(unit)) {
      this.curr[unit.processor] = null;
      this.raiseSchedule(unit.processor);
    }
    this.removeUnit(unit, now);
    unit.awake = false;
    unit.sleepState = RUNSTATE_offline;
    this.syncRunstate(unit, now);
    this.units.delete(keyOf(ref));
    dom.units.splice(dom.units.indexOf(unit), 1);
    return 0;
  }

  sleep(ref: VcpuRef, now: number, state: SleepState = RUNSTATE_blocked): number {
    const unit = this.unitOf(ref);
    if (!unit) return -ESRCH;
    if (state !== RUNSTATE_blocked && state !== RUNSTATE_offline) return -EINVAL;
    const wasRunnable = this.runnable(unit);
    unit.awake = false;
    unit.sleepState = state;
    if (wasRunnable) this.sleepUnit(unit, now);
    this.syncRunstate(unit, now);
    return 0;
  }

  wake(ref: VcpuRef, now: number): number {
    const unit = this.unitOf(ref);
    if (!unit) return -ESRCH;
    if (unit.awake) return 0;
    unit.awake = true;
    if (this.runnable(unit)) this.wakeUnit(unit, now, 'wake');
    this.syncRunstate(unit, now);
    return 0;
  }

  yield(ref: VcpuRef, _now: number): number {
    const unit = this.unitOf(ref);
    if (!unit) return -ESRCH;
    if (this.isCurr(unit)) {
      this.yieldUnit(unit);
      this.raiseSchedule(unit.processor);
    }
    return 0;
  }

  doSchedule(pcpu: number, now: number): ScheduleDecision {
    this.checkCpu(pcpu);
    this.lastNow = Math.max(this.lastNow, now);
    const prev = this.curr[pcpu];
    const d = this.schedule(pcpu, now);
    const next = d.next;
    if (next) this.checkPick(next, pcpu);
    this.curr[pcpu] = next;
    if (next) next.processor = pcpu;
    if (prev && prev !== next) {
      this.syncRunstate(prev, now);
      this.contextSaved(prev, now);
    }
    if (next && next !== prev) this.syncRunstate(next, now);
    return { next: next ? next.ref : null, sliceNs: d.sliceNs, migrated: d.migrated };
  }

  /** The invariants every policy's pick must meet; a failure is a bug in the policy. */
  private checkPick(next: U, pcpu: number): void {
    if (!this.runnable(next)) throw new Error(`${this.opt_name}: picked non-runnable d${next.ref.domid}v${next.ref.vcpuId}`);
    if (!this.allowed(next, pcpu)) throw new Error(`${this.opt_name}: d${next.ref.domid}v${next.ref.vcpuId} not allowed on pCPU ${pcpu}`);
    for (let c = 0; c < this.nrPcpus; c++) {
      if (c !== pcpu && this.curr[c] === next) {
        throw new Error(`${this.opt_name}: d${next.ref.domid}v${next.ref.vcpuId} picked on pCPU ${pcpu} while running on ${c}`);
      }
    }
  }

  tick(now: number): void {
    this.lastNow = Math.max(this.lastNow, now);
    this.tickPolicy(now);
  }

  getParams(domid: number): GetParamsResult {
    const dom = this.doms.get(domid);
    if (!dom) return { ok: false, rc: -ESRCH };
    return { ok: true, params: this.domParams(dom) };
  }

  /**
   * Checks, in this order, then acts: weight an integer 1..65535, cap an integer
   * 0..100 * nr_vcpus (credit2's rule in csched2_dom_cntl(), applied to both
   * credit policies). Nothing changes unless every field is valid.
   */
  putParams(domid: number, params: Partial<SchedParams>, now: number): number {
    const dom = this.doms.get(domid);
    if (!dom) return -ESRCH;
    const { weight, cap } = params;
    if (weight !== undefined && (!Number.isInteger(weight) || weight < WEIGHT_MIN || weight > WEIGHT_MAX)) return -EINVAL;
    if (cap !== undefined && (!Number.isInteger(cap) || cap < 0 || cap > 100 * dom.units.length)) return -EINVAL;
    this.adjustDom(dom, params, now);
    return 0;
  }

  setAffinity(ref: VcpuRef, pcpus: readonly number[], now: number): number {
    const unit = this.unitOf(ref);
    if (!unit) return -ESRCH;
    const mask = parseAffinity(pcpus, this.nrPcpus);
    if (!mask) return -EINVAL;
    unit.affinity = mask;
    this.adjustAffinity(unit, now);
    return 0;
  }

  getAffinity(ref: VcpuRef): readonly number[] | undefined {
    const unit = this.unitOf(ref);
    return unit ? [...unit.affinity] : undefined;
  }

  takeTickled(): number[] {
    const cpus = [...this.softirqPending].sort((a, b) => a - b);
    this.softirqPending.clear();
    return cpus;
  }

  current(pcpu: number): VcpuRef | null {
    this.checkCpu(pcpu);
    return this.curr[pcpu]?.ref ?? null;
  }

  runstate(ref: VcpuRef, now: number): RunstateInfo | undefined {
    const unit = this.unitOf(ref);
    return unit ? runstateSnapshot(unit.runstate, now) : undefined;
  }

  /** Laid out as Xen's dump_runq() ('r' debug key) prints it; `now` defaults to the last doSchedule/tick time. */
  dump(now: number = this.lastNow): string {
    const cpus = formatCpuList(allCpus(this.nrPcpus));
    const lines = [
      `NOW=${now}`,
      `Online Cpus: ${cpus}`,
      'Cpupool 0:',
      `Cpus: ${cpus}`,
      `Scheduler: ${this.name} (${this.opt_name})`,
      ...this.dumpSettings(now),
      'CPUs info:',
    ];
    for (let c = 0; c < this.nrPcpus; c++) lines.push(...this.dumpCpuState(c, now));
    return lines.join('\n') + '\n';
  }

  /** "[d.v]" as Xen's dump functions print a unit. */
  protected static unitName(unit: UnitBase): string {
    return `[${unit.ref.domid}.${unit.ref.vcpuId}]`;
  }
}
