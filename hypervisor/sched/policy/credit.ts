/**
 * The credit scheduler, after xen/common/sched/credit.c ("SMP Credit Scheduler",
 * sched=credit): per-pCPU run queues ordered by priority (BOOST, UNDER, OVER),
 * FIFO within a priority; a 10 ms tick charges the running unit; every 30 ms
 * csched_acct() shares out credit by weight; idle or OVER pCPUs steal work.
 *
 * Where this differs from Xen, on purpose (each marked "Hardening" below):
 *  - a unit is charged exactly at every deschedule and every tick, and joins
 *    the active list when charged at a deschedule too (Xen: only at a tick), so
 *    a unit that is never running at a tick still earns and loses priority in
 *    csched_acct() (otherwise it stays UNDER, and BOOSTed on every wake, for ever);
 *  - a unit loses BOOST when it is descheduled, not only at a tick, and a
 *    waking unit is boosted only if its credit, charged up to its last
 *    deschedule, is still >= 0 (Xen: if the last csched_acct() left it UNDER);
 *    with these, a vCPU that blocks just before every tick and wakes just after
 *    gets its fair share (Xen's literal rules give it 90% against one hog);
 *  - a unit put back on its run queue at a deschedule is offered to an idle
 *    pCPU in its affinity (Xen leaves it queued until that pCPU happens to
 *    schedule), and a unit preempted by a waker that cannot use the idle pCPUs
 *    moves to one (Xen's comment in __runq_tickle() intends this; its code tests
 *    the waker's affinity and so, without soft affinity, never does it): no pCPU
 *    idles while a unit allowed on it waits.
 * Not modelled: SMT siblings and NUMA nodes, soft affinity, cpupools, the
 * running-unit migration check in csched_unit_acct(), tasklets.
 */
import {
  CSCHED_MIN_TIMER, SCHED_DEFAULT_RATELIMIT_US, SchedulerBase, type UnitDecision, type WakeReason,
} from './base.ts';
import { cpumaskCycle } from './cpumask.ts';
import {
  CSCHED_CREDITS_PER_MSEC, CSCHED_DEFAULT_TSLICE_MS, CSCHED_DEFAULT_WEIGHT, CSCHED_PRI_IDLE,
  CSCHED_PRI_TS_BOOST, CSCHED_PRI_TS_OVER, CSCHED_PRI_TS_UNDER, CSCHED_TICKS_PER_TSLICE,
  acctStart, acctStop, burnCredits, csched_acct,
  type CschedAcctState, type CschedDom, type CschedUnit,
} from './credit-acct.ts';
import { SLICE_NONE, XEN_SCHEDULER_CREDIT, type SchedParams, type VcpuRef } from './types.ts';

const MILLISECS = (ms: number): number => ms * 1_000_000;
const MICROSECS = (us: number): number => us * 1_000;

export interface CreditOptions {
  /**
   * The accounting hardenings above (deschedule charging joins the active
   * list, deschedule ends BOOST, boost needs credit >= 0). Default true; false
   * gives Xen's literal rules, under which the yield-before-tick attack works.
   */
  readonly hardened?: boolean;
}

/** struct csched_pcpu. */
interface CschedPcpu {
  /** Runnable units waiting here, highest priority first (the idle unit is implicit). */
  readonly runq: CschedUnit[];
  runq_sort_last: number;
  tick: number;
}

export class CreditScheduler extends SchedulerBase<CschedUnit, CschedDom> {
  readonly name = 'SMP Credit Scheduler';
  readonly opt_name = 'credit' as const;
  readonly sched_id = XEN_SCHEDULER_CREDIT;

  readonly tslice = MILLISECS(CSCHED_DEFAULT_TSLICE_MS);
  readonly ticks_per_tslice = CSCHED_TICKS_PER_TSLICE;
  readonly tickPeriodNs = this.tslice / this.ticks_per_tslice;
  readonly ratelimit = MICROSECS(SCHED_DEFAULT_RATELIMIT_US);
  readonly credits_per_tslice = CSCHED_CREDITS_PER_MSEC * CSCHED_DEFAULT_TSLICE_MS;

  private readonly pcpus: CschedPcpu[];
  /** prv->idlers. */
  private readonly idlers = new Set<number>();
  private readonly acct: CschedAcctState;
  private runq_sort = 0;
  private balance_bias = 0;
  private last_tickle_cpu = 0;
  /** When csched_acct() (the master ticker) runs next. */
  private nextAcct: number;

  private readonly hardened: boolean;

  constructor(nrPcpus: number, opts: CreditOptions = {}) {
    super(nrPcpus);
    this.hardened = opts.hardened ?? true;
    this.pcpus = Array.from({ length: nrPcpus }, () => ({ runq: [], runq_sort_last: 0, tick: 0 }));
    for (let c = 0; c < nrPcpus; c++) this.idlers.add(c);
    this.acct = {
      activeSdom: [], weight: 0, credit: this.credits_per_tslice * nrPcpus,
      credit_balance: 0, credits_per_tslice: this.credits_per_tslice,
    };
    this.nextAcct = this.tslice;
  }

  // ---- domains and units ----------------------------------------------------

  protected allocDomdata(domid: number): CschedDom {
    return { domid, units: [], weight: CSCHED_DEFAULT_WEIGHT, cap: 0, activeUnits: [] };
  }

  protected allocUdata(sdom: CschedDom, ref: VcpuRef, now: number): CschedUnit {
    return {
      ...this.unitBase(ref, now), sdom, pri: CSCHED_PRI_TS_UNDER, credit: 0, residual: 0,
      start_time: now, last_sched_time: now, yieldFlag: false, pinned: false,
      kickedAway: false, active: false, onRunq: false,
    };
  }

  /** csched_unit_insert(): place the unit; it is offline, so it is not queued yet. */
  protected insertUnit(svc: CschedUnit): void {
    svc.processor = this.cpuPick(svc);
  }

  /** csched_unit_remove(). */
  protected removeUnit(svc: CschedUnit): void {
    if (svc.onRunq) this.runqRemove(svc);
    svc.parked = false;
    if (svc.active) acctStop(this.acct, svc);
  }

  /** csched_unit_sleep(). */
  protected sleepUnit(svc: CschedUnit): void {
    if (this.isCurr(svc)) this.raiseSchedule(svc.processor);
    else if (svc.onRunq) this.runqRemove(svc);
  }

  /**
   * csched_unit_wake(): queue the unit and tickle. Only a real wake of an UNDER
   * unit that still has credit boosts it; not a migration, not an unpark after a cap.
   */
  protected wakeUnit(svc: CschedUnit, _now: number, reason: WakeReason): void {
    if (this.isCurr(svc) || svc.onRunq) return;
    if (!this.allowed(svc, svc.processor)) svc.processor = this.cpuPick(svc);
    // Hardening: UNDER is what the last csched_acct() said; also require the credit left now.
    if (reason === 'wake' && svc.pri === CSCHED_PRI_TS_UNDER && (svc.credit >= 0 || !this.hardened)) {
      svc.pri = CSCHED_PRI_TS_BOOST;
    }
    this.runqInsert(svc.processor, svc);
    this.runqTickle(svc);
  }

  /** csched_unit_yield(). */
  protected yieldUnit(svc: CschedUnit): void {
    svc.yieldFlag = true;
  }

  /** csched_aff_cntl() plus the core's vcpu_migrate() for a unit now out of its affinity. */
  protected adjustAffinity(svc: CschedUnit, now: number): void {
    svc.pinned = svc.affinity.length === 1;
    if (this.allowed(svc, svc.processor)) return;
    if (this.isCurr(svc)) {
      this.raiseSchedule(svc.processor); // csched_schedule() moves it
    } else if (svc.onRunq) {
      this.runqRemove(svc);
      svc.processor = this.cpuPick(svc);
      this.wakeUnit(svc, now, 'migrate');
    } else {
      svc.processor = this.cpuPick(svc);
    }
  }

  /** csched_dom_cntl(), putinfo. */
  protected adjustDom(sdom: CschedDom, p: Partial<SchedParams>): void {
    if (p.weight !== undefined) {
      if (this.acct.activeSdom.includes(sdom)) {
        this.acct.weight += (p.weight - sdom.weight) * sdom.activeUnits.length;
      }
      sdom.weight = p.weight;
    }
    if (p.cap !== undefined) sdom.cap = p.cap;
  }

  protected domParams(sdom: CschedDom): SchedParams {
    return { weight: sdom.weight, cap: sdom.cap };
  }

  // ---- run queues -----------------------------------------------------------

  private nrRunnable(cpu: number): number {
    return this.pcpus[cpu].runq.length + (this.curr[cpu] ? 1 : 0);
  }

  /**
   * __runq_insert(): after every unit of equal or higher priority. A yielding
   * unit goes behind one more unit if that one is not idle.
   */
  private runqInsert(cpu: number, svc: CschedUnit): void {
    const runq = this.pcpus[cpu].runq;
    let i = runq.findIndex((it) => svc.pri > it.pri);
    if (i < 0) i = runq.length;
    if (svc.yieldFlag && i < runq.length) i++;
    runq.splice(i, 0, svc);
    svc.onRunq = true;
    svc.processor = cpu;
  }

  private runqRemove(svc: CschedUnit): void {
    const runq = this.pcpus[svc.processor].runq;
    runq.splice(runq.indexOf(svc), 1);
    svc.onRunq = false;
  }

  /** csched_runq_sort(): after an accounting, move UNDER (and BOOST) units ahead of OVER ones. */
  private runqSort(cpu: number): void {
    const spc = this.pcpus[cpu];
    if (spc.runq_sort_last === this.runq_sort) return;
    spc.runq_sort_last = this.runq_sort;
    const under = spc.runq.filter((s) => s.pri >= CSCHED_PRI_TS_UNDER);
    const over = spc.runq.filter((s) => s.pri < CSCHED_PRI_TS_UNDER);
    spc.runq.splice(0, spc.runq.length, ...under, ...over);
  }

  /**
   * _csched_cpu_pick() without SMT topology: the unit's pCPU if allowed and
   * idle, else an idle pCPU in its affinity, else its pCPU (or the next allowed).
   */
  private cpuPick(svc: CschedUnit): number {
    const cpus = svc.affinity;
    let cpu = cpus.includes(svc.processor) ? svc.processor : cpumaskCycle(svc.processor, cpus);
    const idle = cpus.filter((c) => this.idlers.has(c)
      || (c === svc.processor && this.pcpus[c].runq.length === 0 && (this.curr[c] === null || this.curr[c] === svc)));
    if (!idle.includes(cpu) && idle.length > 0) cpu = cpumaskCycle(cpu, idle);
    return cpu;
  }

  /** __runq_tickle(): choose which pCPU(s) should reschedule because `snew` is queued. */
  private runqTickle(snew: CschedUnit): void {
    const cpu = snew.processor;
    const cur = this.curr[cpu];
    const curPri = cur ? cur.pri : CSCHED_PRI_IDLE;
    const idleMask = [...this.idlers].sort((a, b) => a - b);
    let mask: number[] = [];

    if (snew.pinned && this.idlers.has(cpu)) {
      mask = [cpu];
    } else if (curPri === CSCHED_PRI_IDLE || (idleMask.length === 0 && snew.pri > curPri)) {
      mask = [cpu];
    } else if (idleMask.length > 0) {
      const newIdlers = idleMask.filter((c) => this.allowed(snew, c));
      if (newIdlers.length === 0 && snew.pri > curPri) {
        // Hardening: Xen tests snew's affinity here; the intent is cur's.
        if (cur && idleMask.some((c) => this.allowed(cur, c))) cur.kickedAway = true;
        mask = [cpu];
      } else if (newIdlers.length > 0) {
        this.last_tickle_cpu = cpumaskCycle(this.last_tickle_cpu, newIdlers);
        mask = [this.last_tickle_cpu];
      }
    }
    for (const c of mask) {
      this.idlers.delete(c);
      this.raiseSchedule(c);
    }
  }

  /**
   * Hardening: offer each unit still queued on cpu to a distinct idle pCPU in
   * its affinity, which will steal it (csched_load_balance()). Xen leaves them
   * queued until an idle pCPU happens to schedule.
   */
  private tickleIdlers(cpu: number): void {
    for (const svc of this.pcpus[cpu].runq) {
      const idle = svc.affinity.filter((c) => c !== cpu && this.idlers.has(c));
      if (idle.length === 0) continue;
      this.last_tickle_cpu = cpumaskCycle(this.last_tickle_cpu, idle);
      this.idlers.delete(this.last_tickle_cpu);
      this.raiseSchedule(this.last_tickle_cpu);
    }
  }

  /** csched_runq_steal(): the first unit on peer's queue better than `pri` that may run on cpu. */
  private runqSteal(peer: number, cpu: number, pri: number): CschedUnit | null {
    if (this.curr[peer] === null) return null; // peer is about to pick up its own work
    for (const speer of this.pcpus[peer].runq) {
      if (speer.pri <= pri) break;
      if (this.allowed(speer, cpu)) {
        this.runqRemove(speer);
        speer.processor = cpu;
        return speer;
      }
    }
    return null;
  }

  /** csched_load_balance(): steal from a busy peer, else take snext off the local queue. */
  private loadBalance(cpu: number, snext: CschedUnit | null, pri: number): [CschedUnit | null, boolean] {
    const workers: number[] = [];
    for (let c = 0; c < this.nrPcpus; c++) if (c !== cpu && !this.idlers.has(c)) workers.push(c);
    const first = cpumaskCycle(this.balance_bias, workers);
    if (first >= 0) {
      let peer = first;
      do {
        if (this.nrRunnable(peer) > 1) {
          const speer = this.runqSteal(peer, cpu, pri);
          if (speer) {
            this.balance_bias = peer;
            return [speer, true];
          }
        }
        peer = cpumaskCycle(peer, workers);
      } while (peer !== first);
    }
    if (snext) this.runqRemove(snext);
    return [snext, false];
  }

  // ---- schedule and tick ----------------------------------------------------

  /** csched_schedule(). */
  protected schedule(cpu: number, now: number): UnitDecision<CschedUnit> {
    const scurr = this.curr[cpu];
    if (scurr) {
      const runtime = Math.max(0, now - scurr.runstate.state_entry_time);
      burnCredits(scurr, now);
      scurr.last_sched_time = now;
      /* Rate limiting: keep a unit that has run less than ratelimit, unless it yields. */
      if (!scurr.yieldFlag && this.ratelimit > 0 && this.runnable(scurr) && this.allowed(scurr, cpu)
          && !scurr.kickedAway && runtime < this.ratelimit) {
        const tslice = runtime < CSCHED_MIN_TIMER ? CSCHED_MIN_TIMER : this.ratelimit - runtime;
        return { next: scurr, sliceNs: tslice, migrated: false };
      }
      this.requeueCurrent(scurr, cpu);
    }

    const runq = this.pcpus[cpu].runq;
    let snext: CschedUnit | null = runq.length > 0 ? runq[0] : null;
    const pri = snext ? snext.pri : CSCHED_PRI_IDLE;
    let migrated = false;
    if (snext && pri > CSCHED_PRI_TS_OVER) this.runqRemove(snext);
    else [snext, migrated] = this.loadBalance(cpu, snext, pri);
    this.tickleIdlers(cpu);

    if (snext) {
      this.idlers.delete(cpu);
      snext.start_time = now;
      snext.processor = cpu;
      return { next: snext, sliceNs: this.tslice, migrated };
    }
    this.idlers.add(cpu);
    return { next: null, sliceNs: SLICE_NONE, migrated: false };
  }

  /** The descheduled unit: account it, then queue it here, move it, or let it go. */
  private requeueCurrent(scurr: CschedUnit, cpu: number): void {
    if (this.hardened) {
      if (scurr.pri === CSCHED_PRI_TS_BOOST) scurr.pri = CSCHED_PRI_TS_UNDER; // Hardening
      if (!scurr.active) acctStart(this.acct, scurr); // Hardening
    }
    if (this.runnable(scurr)) {
      if (this.allowed(scurr, cpu) && !scurr.kickedAway) {
        this.runqInsert(cpu, scurr);
      } else {
        // vcpu_migrate(): affinity changed, or kicked away for a waker.
        scurr.kickedAway = false;
        scurr.processor = this.cpuPick(scurr);
        this.runqInsert(scurr.processor, scurr);
        if (scurr.processor !== cpu) this.runqTickle(scurr);
      }
    }
    scurr.yieldFlag = false;
    scurr.kickedAway = false;
  }

  /** csched_tick() on every pCPU, then csched_acct() when a timeslice has passed, then the sorts. */
  protected tickPolicy(now: number): void {
    for (let cpu = 0; cpu < this.nrPcpus; cpu++) {
      this.pcpus[cpu].tick++;
      const svc = this.curr[cpu];
      if (svc) this.unitAcct(svc, now);
    }
    while (now >= this.nextAcct) {
      csched_acct(this.acct, {
        park: (svc) => this.park(svc, now),
        unpark: (svc) => this.unpark(svc, now),
      });
      this.runq_sort++;
      this.nextAcct += this.tslice;
    }
    for (let cpu = 0; cpu < this.nrPcpus; cpu++) this.runqSort(cpu);
  }

  /** csched_unit_acct(): the unit running at a tick loses BOOST, pays, and is (again) active. */
  private unitAcct(svc: CschedUnit, now: number): void {
    if (svc.pri === CSCHED_PRI_TS_BOOST) svc.pri = CSCHED_PRI_TS_UNDER;
    burnCredits(svc, now);
    if (!svc.active) acctStart(this.acct, svc);
  }

  /** sched_unit_pause_nosync() on a capped-out unit. */
  private park(svc: CschedUnit, now: number): void {
    const wasRunnable = this.runnable(svc);
    this.markParked(svc, true, now);
    if (wasRunnable) this.sleepUnit(svc);
  }

  /** sched_unit_unpause(), with the flag cleared so the wake does not boost. */
  private unpark(svc: CschedUnit, now: number): void {
    this.markParked(svc, false, now);
    if (this.runnable(svc)) this.wakeUnit(svc, now, 'unpark');
    this.syncRunstate(svc, now);
  }

  // ---- dump -----------------------------------------------------------------

  /** csched_dump(). */
  protected dumpSettings(): string[] {
    const lines = [
      'info:',
      `\tncpus              = ${this.nrPcpus}`,
      `\tmaster             = 0`,
      `\tcredit             = ${this.acct.credit}`,
      `\tcredit balance     = ${this.acct.credit_balance}`,
      `\tweight             = ${this.acct.weight}`,
      `\trunq_sort          = ${this.runq_sort}`,
      `\tdefault-weight     = ${CSCHED_DEFAULT_WEIGHT}`,
      `\ttslice             = ${this.tslice / MILLISECS(1)}ms`,
      `\tratelimit          = ${this.ratelimit / MICROSECS(1)}us`,
      `\tcredits per msec   = ${CSCHED_CREDITS_PER_MSEC}`,
      `\tticks per tslice   = ${this.ticks_per_tslice}`,
      `\tmigration delay    = 0us`,
      `idlers: ${[...this.idlers].sort((a, b) => a - b).join(',')}`,
      'active units:',
    ];
    let loop = 0;
    for (const sdom of this.acct.activeSdom) {
      for (const svc of sdom.activeUnits) lines.push(`\t${String(++loop).padStart(3)}: ${this.dumpUnit(svc)}`);
    }
    return lines;
  }

  /** csched_dump_pcpu(). */
  protected dumpCpuState(cpu: number): string[] {
    const spc = this.pcpus[cpu];
    const lines = [`CPU[${String(cpu).padStart(2, '0')}] nr_run=${this.nrRunnable(cpu)}, sort=${spc.runq_sort_last}`];
    const cur = this.curr[cpu];
    if (cur) lines.push(`\trun: ${this.dumpUnit(cur)}`);
    spc.runq.forEach((svc, i) => lines.push(`\t${String(i + 1).padStart(3)}: ${this.dumpUnit(svc)}`));
    return lines;
  }

  /** csched_dump_unit(). */
  private dumpUnit(svc: CschedUnit): string {
    const flags = (svc.parked ? 1 : 0) | (svc.yieldFlag ? 2 : 0) | (svc.pinned ? 8 : 0);
    return `${CreditScheduler.unitName(svc)} pri=${svc.pri} flags=${flags.toString(16)} cpu=${svc.processor}`
      + ` credit=${svc.credit} [w=${svc.sdom.weight},cap=${svc.sdom.cap}]`;
  }
}
