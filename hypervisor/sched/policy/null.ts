/**
 * The null scheduler, after xen/common/sched/null.c ("null Scheduler",
 * sched=null): each vCPU is assigned one pCPU for good and that pCPU runs it
 * or nothing; there is no time slicing. vCPUs beyond the free pCPUs wait,
 * unassigned, in a FIFO waitqueue until a pCPU in their affinity frees up
 * (a vCPU removed, or moved by an affinity change).
 *
 * A vCPU that blocks keeps its pCPU, which then idles (this is the null
 * scheduler's point: no run queue, no migration, no scheduling latency).
 * Not modelled: soft affinity, vCPUs going offline (VPF_down) releasing their
 * pCPU; here only removeVcpu() and an affinity change release one.
 */
import { EINVAL } from './errno.ts';
import { SchedulerBase, type DomBase, type UnitBase, type UnitDecision } from './base.ts';
import { formatCpuList } from './cpumask.ts';
import {
  SLICE_NONE, XEN_SCHEDULER_NULL, type GetParamsResult, type SchedParams, type VcpuRef,
} from './types.ts';

/** struct null_unit. */
interface NullUnit extends UnitBase {
  inWaitq: boolean;
}

/** struct null_dom. */
type NullDom = DomBase<NullUnit>;

export class NullScheduler extends SchedulerBase<NullUnit, NullDom> {
  readonly name = 'null Scheduler';
  readonly opt_name = 'null' as const;
  readonly sched_id = XEN_SCHEDULER_NULL;
  readonly tickPeriodNs = 0;

  /** null_pcpu->unit: the unit assigned to each pCPU. */
  private readonly assigned: (NullUnit | null)[];
  /** prv->cpus_free. */
  private readonly cpusFree = new Set<number>();
  /** prv->waitq. */
  private readonly waitq: NullUnit[] = [];

  constructor(nrPcpus: number) {
    super(nrPcpus);
    this.assigned = new Array<NullUnit | null>(nrPcpus).fill(null);
    for (let c = 0; c < nrPcpus; c++) this.cpusFree.add(c);
  }

  protected allocDomdata(domid: number): NullDom {
    return { domid, units: [] };
  }

  protected allocUdata(_dom: NullDom, ref: VcpuRef, now: number): NullUnit {
    return { ...this.unitBase(ref, now), inWaitq: false };
  }

  /** unit_assign(). */
  private assign(unit: NullUnit, cpu: number): void {
    this.assigned[cpu] = unit;
    unit.processor = cpu;
    this.cpusFree.delete(cpu);
  }

  /** unit_deassign(): free the pCPU and hand it to the first waiter allowed there. */
  private deassign(unit: NullUnit): void {
    const cpu = unit.processor;
    this.assigned[cpu] = null;
    this.cpusFree.add(cpu);
    const wvc = this.waitq.find((w) => this.allowed(w, cpu));
    if (wvc) {
      this.waitqRemove(wvc);
      this.assign(wvc, cpu);
      this.raiseSchedule(cpu);
    }
  }

  private waitqRemove(unit: NullUnit): void {
    this.waitq.splice(this.waitq.indexOf(unit), 1);
    unit.inWaitq = false;
  }

  private waitqAdd(unit: NullUnit): void {
    this.waitq.push(unit);
    unit.inWaitq = true;
  }

  /** pick_res(): its pCPU if free (or already its own) and allowed, else a free allowed one, else -1. */
  private pickRes(unit: NullUnit): number {
    const cpu = unit.processor;
    if ((this.assigned[cpu] === null || this.assigned[cpu] === unit) && this.allowed(unit, cpu)) return cpu;
    const free = unit.affinity.find((c) => this.cpusFree.has(c));
    return free ?? -1;
  }

  /** null_unit_insert(): assign a free pCPU, or wait. */
  protected insertUnit(unit: NullUnit): void {
    const cpu = this.pickRes(unit);
    if (cpu >= 0 && this.assigned[cpu] === null) this.assign(unit, cpu);
    else this.waitqAdd(unit);
  }

  /** null_unit_remove(). */
  protected removeUnit(unit: NullUnit): void {
    if (unit.inWaitq) this.waitqRemove(unit);
    else if (this.assigned[unit.processor] === unit) this.deassign(unit);
  }

  /** null_unit_sleep(): the pCPU stays assigned; if running, it reschedules (to idle). */
  protected sleepUnit(unit: NullUnit): void {
    if (this.isCurr(unit)) this.raiseSchedule(unit.processor);
  }

  /** null_unit_wake(). */
  protected wakeUnit(unit: NullUnit): void {
    if (this.isCurr(unit) || unit.inWaitq) return;
    const cpu = unit.processor;
    if (this.assigned[cpu] === unit) {
      this.raiseSchedule(cpu);
      return;
    }
    if (this.assigned[cpu] === null && this.allowed(unit, cpu)) {
      this.assign(unit, cpu);
      this.raiseSchedule(cpu);
      return;
    }
    this.waitqAdd(unit);
    for (const c of unit.affinity) if (this.cpusFree.has(c)) this.raiseSchedule(c);
  }

  protected yieldUnit(): void {
    /* Nothing else may run on this pCPU: a yield changes nothing. */
  }

  /** null_unit_migrate() for an affinity change that excludes the assigned pCPU. */
  protected adjustAffinity(unit: NullUnit): void {
    if (unit.inWaitq) {
      for (const c of unit.affinity) if (this.cpusFree.has(c)) this.raiseSchedule(c);
      return;
    }
    const old = unit.processor;
    if (this.assigned[old] !== unit || this.allowed(unit, old)) return;
    this.deassign(unit);
    this.raiseSchedule(old);
    const cpu = unit.affinity.find((c) => this.cpusFree.has(c));
    if (cpu === undefined) {
      this.waitqAdd(unit);
    } else {
      this.assign(unit, cpu);
      this.raiseSchedule(cpu);
    }
  }

  /** null_schedule(): the assigned unit if it can run, else idle; never a timer. */
  protected schedule(cpu: number): UnitDecision<NullUnit> {
    let next = this.assigned[cpu];
    if (next === null) {
      const wvc = this.waitq.find((w) => this.allowed(w, cpu));
      if (wvc) {
        this.waitqRemove(wvc);
        this.assign(wvc, cpu);
        next = wvc;
      } else {
        this.cpusFree.add(cpu);
      }
    }
    if (next !== null && !this.runnable(next)) next = null;
    return { next, sliceNs: SLICE_NONE, migrated: false };
  }

  protected tickPolicy(): void {
    /* No periodic work. */
  }

  /** The null scheduler has no .adjust: a credit-shaped request fails sched_adjust()'s sched_id check. */
  override getParams(): GetParamsResult {
    return { ok: false, rc: -EINVAL };
  }

  override putParams(): number {
    return -EINVAL;
  }

  protected adjustDom(_dom: NullDom, _p: Partial<SchedParams>): void {
    /* Unreachable: putParams is refused above. */
  }

  protected domParams(): SchedParams {
    return { weight: 0, cap: 0 };
  }

  /** null_dump(). */
  protected dumpSettings(): string[] {
    const lines = [`\tcpus_free = ${formatCpuList(this.cpusFree)}`, 'Domain info:'];
    let loop = 0;
    for (const dom of this.doms.values()) {
      lines.push(`\tDomain: ${dom.domid}`);
      for (const u of dom.units) lines.push(`\t${String(++loop).padStart(3)}: ${this.dumpUnit(u)}`);
    }
    lines.push(`Waitqueue: ${this.waitq.map((u) => `d${u.ref.domid}v${u.ref.vcpuId}`).join(', ')}`);
    return lines;
  }

  /** null_dump_pcpu(). */
  protected dumpCpuState(cpu: number): string[] {
    const a = this.assigned[cpu];
    const lines = [`CPU[${String(cpu).padStart(2, '0')}]${a ? `, unit=d${a.ref.domid}v${a.ref.vcpuId}` : ''}`];
    const cur = this.curr[cpu];
    if (cur) lines.push(`\trun: ${this.dumpUnit(cur)}`);
    return lines;
  }

  private dumpUnit(u: NullUnit): string {
    return `${NullScheduler.unitName(u)} pcpu=${u.inWaitq ? -1 : u.processor}`;
  }
}
