/**
 * The credit2 scheduler, after xen/common/sched/credit2.c ("SMP Credit
 * Scheduler rev2", sched=credit2, Xen's default since 4.12).
 *
 * Units burn credit as they run, faster the lower their weight
 * (burn = ran_ns * max_weight / weight); the run queue is ordered by credit,
 * highest first; when the best candidate has credit <= 0 every unit of the run
 * queue gets CSCHED2_CREDIT_INIT more, clipped. There is no boost: a waking
 * unit that ran little simply has more credit. A cap is a budget of cap% of
 * CSCHED2_BDGT_REPL_PERIOD, replenished every period (tick()); a unit that
 * finds no budget is parked until the replenishment.
 *
 * Where this differs from Xen, on purpose (details at each function):
 *  - at a credit reset a runnable unit is clipped at INIT + CREDIT_INIT, not
 *    INIT + CARRYOVER_MAX, which only blocked units get (resetCredit());
 *  - a waker with more credit than the unit on its own pCPU tickles that pCPU
 *    even inside the unit's rate limit, and gets it when the rate limit ends
 *    (tickleScore()).
 *
 * All pCPUs share one run queue: what Xen's default runqueue=socket gives on a
 * single-socket host of up to MAX_CPUS_RUNQ (16) pCPUs. Not modelled: several
 * run queues and the load balancing between them, load tracking, SMT, soft
 * affinity, tasklets.
 */
import { SCHED_DEFAULT_RATELIMIT_US, SchedulerBase, type UnitDecision } from './base.ts';
import { cpumaskCycle, cpumaskTestOrCycle } from './cpumask.ts';
import {
  CSCHED2_BDGT_REPL_PERIOD, CSCHED2_CARRYOVER_MAX, CSCHED2_CARRYOVER_MAX_RUNNABLE, CSCHED2_CREDIT_INIT,
  CSCHED2_CREDIT_MIN, CSCHED2_CREDIT_RESET, CSCHED2_DEFAULT_WEIGHT, CSCHED2_IDLE_CREDIT, CSCHED2_MAX_TIMER,
  CSCHED2_MIGRATE_COMPENSATION, CSCHED2_MIGRATE_RESIST, CSCHED2_MIN_TIMER, CSCHED2_RATELIMIT_TICKLE_TOLERANCE,
  NO_BUDGET_LIMIT, c2t, t2cUpdate, type Csched2Dom, type Csched2Unit,
} from './credit2-defs.ts';
import { SLICE_NONE, XEN_SCHEDULER_CREDIT2, type SchedParams, type VcpuRef } from './types.ts';

export * from './credit2-defs.ts';

const MICROSECS = (us: number): number => us * 1_000;

export class Credit2Scheduler extends SchedulerBase<Csched2Unit, Csched2Dom> {
  readonly name = 'SMP Credit Scheduler rev2';
  readonly opt_name = 'credit2' as const;
  readonly sched_id = XEN_SCHEDULER_CREDIT2;
  /** tick() replenishes cap budgets. */
  readonly tickPeriodNs = CSCHED2_BDGT_REPL_PERIOD;
  readonly ratelimit = MICROSECS(SCHED_DEFAULT_RATELIMIT_US);

  /** rqd->runq: highest credit first, FIFO among equals. */
  private readonly runq: Csched2Unit[] = [];
  /** rqd->svc: every unit assigned to the run queue. */
  private readonly svcs: Csched2Unit[] = [];
  private max_weight = 1;
  /** rqd->idle and rqd->tickled. */
  private readonly idle = new Set<number>();
  private readonly tickled = new Set<number>();
  private pick_bias = 0;

  constructor(nrPcpus: number) {
    super(nrPcpus);
    for (let c = 0; c < nrPcpus; c++) this.idle.add(c);
  }

  // ---- credit ---------------------------------------------------------------

  /** burn_credits(): charge the running unit for the time since start_time, and its budget. */
  private burnCredits(svc: Csched2Unit, now: number): void {
    const delta = now - svc.start_time;
    if (delta <= 0) return;
    t2cUpdate(delta, svc, this.max_weight);
    if (this.hasCap(svc)) svc.budget -= delta;
    svc.start_time = now;
  }

  /**
   * reset_credit(): every unit of the run queue gets CREDIT_INIT more (twice
   * that if snext sits at CREDIT_MIN), clipped.
   *
   * Deviation: Xen clips every unit at INIT + CARRYOVER_MAX. With several
   * pCPUs on one run queue the reset comes when the best *queued* unit is
   * spent, while a unit that has just started on another pCPU may still hold
   * most of its credit; clipping it then takes away what it waited for, and
   * shares lock in unfairly (4 equal CPU-bound vCPUs on 3 pCPUs: 85/72/72/72%,
   * 5 on 4: 87/87/87/87/52%). Here a runnable unit is clipped at
   * INIT + CSCHED2_CARRYOVER_MAX_RUNNABLE; a blocked, parked or offline one,
   * which the clip exists for (it must not hoard credit while idle), at
   * Xen's INIT + CARRYOVER_MAX. With one pCPU nothing changes: at a reset no
   * runnable unit is above 0.
   */
  private resetCredit(now: number, snext: Csched2Unit): void {
    let reset = CSCHED2_CREDIT_INIT;
    if (snext.credit === CSCHED2_CREDIT_MIN) reset += CSCHED2_CREDIT_INIT;
    for (const svc of this.svcs) {
      if (this.isCurr(svc)) {
        this.burnCredits(svc, now);
        if (svc.budget <= 0) this.tickleCpu(svc.processor);
      }
      const carryover = this.runnable(svc) ? CSCHED2_CARRYOVER_MAX_RUNNABLE : CSCHED2_CARRYOVER_MAX;
      svc.credit = Math.min(svc.credit + reset, CSCHED2_CREDIT_INIT + carryover);
      svc.start_time = now;
    }
  }

  /** update_max_weight(). */
  private updateMaxWeight(newWeight: number, oldWeight: number): void {
    if (newWeight > this.max_weight) {
      this.max_weight = newWeight;
    } else if (oldWeight === this.max_weight) {
      this.max_weight = this.svcs.reduce((m, s) => Math.max(m, s.weight), 1);
    }
  }

  // ---- budget (caps) --------------------------------------------------------

  private hasCap(svc: Csched2Unit): boolean {
    return svc.budget !== NO_BUDGET_LIMIT;
  }

  /** park_unit(): no budget; off the run queue until a replenishment. */
  private parkUnit(svc: Csched2Unit, now: number): void {
    this.markParked(svc, true, now);
    if (svc.onRunq) this.runqRemove(svc);
    svc.sdom.parked_units.unshift(svc);
  }

  /** unit_grab_budget(): take this unit's quota (or what is left) from the domain's pool. */
  private grabBudget(svc: Csched2Unit, now: number): boolean {
    if (svc.budget > 0) return true;
    const sdom = svc.sdom;
    sdom.budget += svc.budget; // an overrun is paid from the pool
    if (sdom.budget > 0) {
      const budget = sdom.budget >= svc.budget_quota ? svc.budget_quota : sdom.budget;
      svc.budget = budget;
      sdom.budget -= budget;
    } else {
      svc.budget = 0;
      this.parkUnit(svc, now);
    }
    return svc.budget > 0;
  }

  /** unit_return_budget(): put back what the unit did not use; unpark if there is budget. */
  private returnBudget(svc: Csched2Unit, now: number): void {
    const sdom = svc.sdom;
    sdom.budget += svc.budget;
    svc.budget = 0;
    if (sdom.budget > 0) this.unparkParkedUnits(sdom, now);
  }

  /** unpark_parked_units(). */
  private unparkParkedUnits(sdom: Csched2Dom, now: number): void {
    const parked = sdom.parked_units.splice(0);
    for (const svc of parked) {
      this.markParked(svc, false, now);
      if (this.runnable(svc) && !svc.onRunq && !this.isCurr(svc)) {
        this.runqInsert(svc);
        this.runqTickle(svc, now);
      }
    }
  }

  /** replenish_domain_budget() for every capped domain whose period has ended. */
  protected tickPolicy(now: number): void {
    for (const sdom of this.doms.values()) {
      if (sdom.cap === 0 || sdom.next_repl > now) continue;
      do {
        sdom.next_repl += CSCHED2_BDGT_REPL_PERIOD;
        sdom.budget += sdom.tot_budget;
      } while (sdom.next_repl <= now);
      if (sdom.budget <= 0) continue;
      sdom.budget = Math.min(sdom.budget, sdom.tot_budget);
      this.unparkParkedUnits(sdom, now);
    }
  }

  // ---- run queue and tickling -----------------------------------------------

  /** runq_insert(): before the first unit with less credit. */
  private runqInsert(svc: Csched2Unit): void {
    let i = this.runq.findIndex((it) => svc.credit > it.credit);
    if (i < 0) i = this.runq.length;
    this.runq.splice(i, 0, svc);
    svc.onRunq = true;
  }

  private runqRemove(svc: Csched2Unit): void {
    this.runq.splice(this.runq.indexOf(svc), 1);
    svc.onRunq = false;
  }

  /** tickle_cpu(). */
  private tickleCpu(cpu: number): void {
    this.tickled.add(cpu);
    this.raiseSchedule(cpu);
  }

  /** is_preemptable(): cur has run at least ratelimit (less the tolerance). */
  private isPreemptable(cur: Csched2Unit, now: number): boolean {
    if (this.ratelimit <= CSCHED2_RATELIMIT_TICKLE_TOLERANCE) return true;
    return now - cur.runstate.state_entry_time > this.ratelimit - CSCHED2_RATELIMIT_TICKLE_TOLERANCE;
  }

  /**
   * tickle_score(): how much better snew is than what runs on cpu; -1 if cpu
   * runs nothing, or if cpu is not snew's own pCPU and its unit is inside its
   * ratelimit. Deviation: Xen also refuses snew's own pCPU then, and snew waits
   * for the rest of cur's slice (up to CSCHED2_MAX_TIMER); here that pCPU is
   * tickled anyway, keeps cur until the ratelimit ends (runq_candidate(),
   * csched2_runtime()) and then switches, so a waker with more credit waits at
   * most about the ratelimit on its own pCPU. Such a tickle does not reserve
   * snew for that pCPU (runqTickle()), so a pCPU that goes idle meanwhile takes it.
   */
  private tickleScore(now: number, snew: Csched2Unit, cpu: number): number {
    const cur = this.curr[cpu];
    if (!cur) return -1;
    if (cpu !== snew.processor && !this.isPreemptable(cur, now)) return -1;
    this.burnCredits(cur, now);
    let score = snew.credit - cur.credit;
    if (snew.processor !== cpu) score -= CSCHED2_MIGRATE_RESIST;
    /* Every pCPU is in every unit's (default, full) soft affinity: one bonus. */
    if (score > 0) score += CSCHED2_CREDIT_INIT;
    return score;
  }

  /**
   * runq_tickle(): an idle, untickled pCPU in snew's affinity (its own first);
   * else the busy pCPU whose unit snew beats by most, its own pCPU taken at once.
   */
  private runqTickle(snew: Csched2Unit, now: number): void {
    const cpu = snew.processor;
    let ipid = -1;
    if (snew.pinned && this.idle.has(cpu) && !this.tickled.has(cpu)) {
      ipid = cpu;
    } else {
      const idlers = snew.affinity.filter((c) => this.idle.has(c) && !this.tickled.has(c));
      ipid = idlers.length > 0 ? cpumaskTestOrCycle(cpu, idlers) : -1;
      if (ipid < 0) {
        const busy = snew.affinity.filter((c) => !this.idle.has(c) && !this.tickled.has(c));
        let max = 0;
        if (busy.includes(cpu)) {
          const score = this.tickleScore(now, snew, cpu);
          if (score > max) {
            max = score;
            ipid = cpu;
          }
        }
        if (ipid < 0) {
          for (const c of busy) {
            if (c === cpu) continue;
            const score = this.tickleScore(now, snew, c);
            if (score > max) {
              max = score;
              ipid = c;
            }
          }
        }
      }
    }
    if (ipid < 0) return;
    this.tickleCpu(ipid);
    /* A pCPU that will keep its unit until the rate limit ends does not reserve snew (see tickleScore()). */
    const cur = this.curr[ipid];
    snew.tickled_cpu = cur && !this.isPreemptable(cur, now) ? -1 : ipid;
  }

  /** A pCPU in the unit's affinity, its current one if allowed (get_fallback_cpu()). */
  private fallbackCpu(svc: Csched2Unit): number {
    if (this.allowed(svc, svc.processor)) return svc.processor;
    this.pick_bias = cpumaskCycle(this.pick_bias, svc.affinity);
    return this.pick_bias;
  }

  // ---- units and domains ----------------------------------------------------

  protected allocDomdata(domid: number): Csched2Dom {
    return {
      domid, units: [], weight: CSCHED2_DEFAULT_WEIGHT, cap: 0,
      tot_budget: 0, budget: 0, next_repl: 0, parked_units: [],
    };
  }

  protected allocUdata(sdom: Csched2Dom, ref: VcpuRef, now: number): Csched2Unit {
    return {
      ...this.unitBase(ref, now), sdom, credit: CSCHED2_CREDIT_INIT, weight: sdom.weight,
      residual: 0, budget: NO_BUDGET_LIMIT, budget_quota: 0, start_time: now,
      tickled_cpu: -1, yieldFlag: false, pinned: false, onRunq: false,
    };
  }

  /** csched2_unit_insert(): runq_assign(). A unit of a capped domain starts with no budget. */
  protected insertUnit(svc: Csched2Unit): void {
    svc.processor = this.fallbackCpu(svc);
    this.svcs.push(svc);
    this.updateMaxWeight(svc.weight, 0);
    if (svc.sdom.cap !== 0) {
      svc.budget = 0;
      this.setBudgetQuotas(svc.sdom);
    }
  }

  /** csched2_unit_remove(): runq_deassign(), giving back any budget it holds. */
  protected removeUnit(svc: Csched2Unit): void {
    if (svc.onRunq) this.runqRemove(svc);
    const parked = svc.sdom.parked_units;
    if (parked.includes(svc)) parked.splice(parked.indexOf(svc), 1);
    svc.parked = false;
    this.svcs.splice(this.svcs.indexOf(svc), 1);
    this.updateMaxWeight(0, svc.weight);
    if (this.hasCap(svc) && svc.budget > 0) {
      svc.sdom.budget += svc.budget;
      svc.budget = 0;
    }
    if (svc.sdom.cap !== 0) this.setBudgetQuotas(svc.sdom, svc);
  }

  /** csched2_unit_sleep(). */
  protected sleepUnit(svc: Csched2Unit): void {
    if (this.isCurr(svc)) this.tickleCpu(svc.processor);
    else if (svc.onRunq) this.runqRemove(svc);
  }

  /** csched2_unit_wake(): queue by credit and tickle. */
  protected wakeUnit(svc: Csched2Unit, now: number): void {
    if (this.isCurr(svc) || svc.onRunq) return;
    svc.processor = this.fallbackCpu(svc);
    this.runqInsert(svc);
    this.runqTickle(svc, now);
  }

  protected yieldUnit(svc: Csched2Unit): void {
    svc.yieldFlag = true;
  }

  /** csched2_aff_cntl() plus the core's vcpu_migrate() for a unit now out of its affinity. */
  protected adjustAffinity(svc: Csched2Unit, now: number): void {
    svc.pinned = svc.affinity.length === 1;
    if (this.allowed(svc, svc.processor)) return;
    if (this.isCurr(svc)) {
      this.tickleCpu(svc.processor); // runq_candidate() will not keep it there
    } else {
      svc.processor = this.fallbackCpu(svc);
      if (svc.onRunq) this.runqTickle(svc, now);
    }
  }

  /** Each unit may grab tot_budget / nr_units (at least CSCHED2_MIN_TIMER) at a time. */
  private setBudgetQuotas(sdom: Csched2Dom, leaving?: Csched2Unit): void {
    const members = sdom.units.filter((u) => u !== leaving);
    if (members.length === 0) return;
    const quota = Math.max(Math.floor(sdom.tot_budget / members.length), CSCHED2_MIN_TIMER);
    for (const svc of members) svc.budget_quota = quota;
  }

  /** csched2_dom_cntl(), putinfo (checked by the core). */
  protected adjustDom(sdom: Csched2Dom, p: Partial<SchedParams>, now: number): void {
    if (p.weight !== undefined) {
      const old = sdom.weight;
      sdom.weight = p.weight;
      for (const svc of sdom.units) {
        svc.weight = p.weight;
        this.updateMaxWeight(svc.weight, old);
      }
    }
    if (p.cap === undefined) return;
    if (p.cap !== 0) {
      sdom.tot_budget = Math.floor((CSCHED2_BDGT_REPL_PERIOD * p.cap) / 100);
      this.setBudgetQuotas(sdom);
      if (sdom.cap === 0) {
        sdom.budget = sdom.tot_budget;
        sdom.next_repl = now + CSCHED2_BDGT_REPL_PERIOD;
        for (const svc of sdom.units) {
          if (this.isCurr(svc)) {
            this.burnCredits(svc, now); // charge the past while still uncapped
            this.tickleCpu(svc.processor);
          }
          svc.budget = 0;
        }
      }
      sdom.cap = p.cap;
    } else if (sdom.cap !== 0) {
      for (const svc of sdom.units) {
        svc.budget = NO_BUDGET_LIMIT;
        svc.budget_quota = 0;
      }
      sdom.cap = 0;
      this.unparkParkedUnits(sdom, now);
    }
  }

  protected domParams(sdom: Csched2Dom): SchedParams {
    return { weight: sdom.weight, cap: sdom.cap };
  }

  // ---- schedule -------------------------------------------------------------

  /**
   * runq_candidate(): scurr if it ran less than ratelimit; otherwise the best of
   * scurr and the first eligible unit on the run queue (any unit if scurr yields).
   */
  private runqCandidate(scurr: Csched2Unit | null, cpu: number, now: number): Csched2Unit | null {
    let yieldFlag = false;
    let snext: Csched2Unit | null = null;
    if (scurr) {
      yieldFlag = scurr.yieldFlag;
      scurr.yieldFlag = false;
      const keep = this.runnable(scurr) && this.allowed(scurr, cpu);
      if (!yieldFlag && this.ratelimit > 0 && keep && now - scurr.runstate.state_entry_time < this.ratelimit) {
        return scurr;
      }
      if (keep) snext = scurr;
    }
    const snextCredit = (): number => (snext ? snext.credit : CSCHED2_IDLE_CREDIT);
    for (const svc of [...this.runq]) {
      if (!this.runnable(svc) || !this.allowed(svc, cpu)) continue;
      /* Leave a unit to the pCPU tickled for it, if that one has not scheduled yet. */
      if (svc.tickled_cpu !== -1 && svc.tickled_cpu !== cpu && this.tickled.has(svc.tickled_cpu)) continue;
      /* Don't pull a unit from another pCPU unless it has CSCHED2_MIGRATE_RESIST more credit. */
      if (svc.processor !== cpu && snextCredit() + CSCHED2_MIGRATE_RESIST > svc.credit) continue;
      if ((yieldFlag || svc.credit > snextCredit()) && (!this.hasCap(svc) || this.grabBudget(svc, now))) snext = svc;
      break;
    }
    return snext;
  }

  /**
   * csched2_runtime(): run until snext's credit reaches the next waiter's (or 0),
   * within the budget, between CSCHED2_MIN_TIMER (or what ratelimit leaves)
   * and CSCHED2_MAX_TIMER.
   */
  private runtime(cpu: number, snext: Csched2Unit, now: number): number {
    let min_time = CSCHED2_MIN_TIMER;
    if (this.ratelimit > 0) {
      let ratelimit_min = this.ratelimit;
      if (this.curr[cpu] === snext) ratelimit_min = snext.runstate.state_entry_time + this.ratelimit - now;
      if (ratelimit_min > min_time) min_time = ratelimit_min;
    }
    let rt_credit = snext.credit;
    const swait = this.runq[0];
    if (swait && swait.credit > 0) rt_credit = snext.credit - swait.credit;
    let time = rt_credit > 0 ? c2t(rt_credit, snext, this.max_weight) : 0;
    if (this.hasCap(snext)) time = Math.min(snext.budget, time);
    if (time < min_time) time = min_time;
    else if (time > CSCHED2_MAX_TIMER) time = CSCHED2_MAX_TIMER;
    return time;
  }

  /** csched2_schedule(). */
  protected schedule(cpu: number, now: number): UnitDecision<Csched2Unit> {
    this.tickled.delete(cpu);
    const scurr = this.curr[cpu];
    if (scurr) {
      this.burnCredits(scurr, now);
      /* Capped and out of budget: try to get more, else be parked. */
      if (scurr.budget <= 0) this.grabBudget(scurr, now);
    }
    const snext = this.runqCandidate(scurr, cpu, now);
    let migrated = false;
    if (!snext) {
      this.idle.add(cpu);
      return { next: null, sliceNs: SLICE_NONE, migrated };
    }
    if (snext !== scurr) this.runqRemove(snext);
    this.idle.delete(cpu);
    const top = this.runq.length > 0 ? Math.max(snext.credit, this.runq[0].credit) : snext.credit;
    if (top <= CSCHED2_CREDIT_RESET) this.resetCredit(now, snext);
    snext.start_time = now;
    snext.tickled_cpu = -1;
    if (snext.processor !== cpu) {
      snext.credit += CSCHED2_MIGRATE_COMPENSATION;
      snext.processor = cpu;
      migrated = true;
    }
    return { next: snext, sliceNs: this.runtime(cpu, snext, now), migrated };
  }

  /** csched2_context_saved(): give back unused budget; requeue prev if still runnable. */
  protected override contextSaved(prev: Csched2Unit, now: number): void {
    if (this.hasCap(prev) && prev.budget > 0) this.returnBudget(prev, now);
    if (this.runnable(prev) && !prev.onRunq && !this.isCurr(prev)) {
      prev.processor = this.fallbackCpu(prev);
      this.runqInsert(prev);
      this.runqTickle(prev, now);
    }
  }

  // ---- dump -----------------------------------------------------------------

  /** csched2_dump(). */
  protected dumpSettings(): string[] {
    const lines = [
      'Active queues: 1',
      `\tdefault-weight     = ${CSCHED2_DEFAULT_WEIGHT}`,
      'Runqueue 0:',
      `\tncpus              = ${this.nrPcpus}`,
      `\tmax_weight         = ${this.max_weight}`,
      `\tpick_bias          = ${this.pick_bias}`,
      `\tidlers: ${[...this.idle].sort((a, b) => a - b).join(',')}`,
      `\ttickled: ${[...this.tickled].sort((a, b) => a - b).join(',')}`,
      'Domain info:',
    ];
    let loop = 0;
    for (const sdom of this.doms.values()) {
      lines.push(`\tDomain: ${sdom.domid} w ${sdom.weight} c ${sdom.cap} v ${sdom.units.length}`);
      for (const svc of sdom.units) lines.push(`\t${String(++loop).padStart(3)}: ${this.dumpUnit(svc)}`);
    }
    lines.push('Runqueue 0:', 'RUNQ:');
    this.runq.forEach((svc, i) => lines.push(`\t${String(i).padStart(3)}: ${this.dumpUnit(svc)}`));
    return lines;
  }

  /** dump_pcpu(). */
  protected dumpCpuState(cpu: number): string[] {
    const lines = [`CPU[${String(cpu).padStart(2, '0')}] runq=0`];
    const cur = this.curr[cpu];
    if (cur) lines.push(`\trun: ${this.dumpUnit(cur)}`);
    return lines;
  }

  /** csched2_dump_unit(). */
  private dumpUnit(svc: Csched2Unit): string {
    const flags = (svc.yieldFlag ? 1 << 4 : 0) | (svc.pinned ? 1 << 5 : 0);
    let s = `${Credit2Scheduler.unitName(svc)} flags=${flags.toString(16)} cpu=${svc.processor}`
      + ` credit=${svc.credit} [w=${svc.weight}]`;
    if (this.hasCap(svc)) s += ` budget=${svc.budget}(${svc.budget_quota})`;
    return s;
  }
}
