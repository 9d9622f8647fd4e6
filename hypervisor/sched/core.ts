/**
 * The scheduler core on real threads (Xen: xen/common/sched/core.c, the part
 * around schedule() and vcpu_wake()). It owns the one policy object of the
 * host (credit, credit2 or null, from HostConfig.sched) and runs on ONE
 * thread, the timer thread, so that the policy stays a plain single-threaded
 * JS object: the same code the simulation harness drives.
 *
 * Other threads talk to it only through shared memory:
 *  - in, the request ring (ring.ts): a vCPU wants a pCPU (WAKE), took an idle
 *    one that was left open (CLAIM), gave one back (RELEASE: preempted,
 *    yielding, blocking, going offline); a thread ended (EXIT); domctl stored
 *    new parameters or an affinity (PARAMS, AFFINITY);
 *  - out, the pCPU tokens: pcpuOwner[p] is the vCPU holding pCPU p (granted,
 *    or claimed), or PCPU_CLOSED, PCPU_OPEN_ANY, PCPU_OPEN_FOR(v) when idle;
 *    a grant also goes in the vCPU's GRANT word, with a kick on its futex;
 *  - out, preemption requests: V.preempt asks a holder to give its pCPU back
 *    at its next preemption point.
 *
 * Three rules keep the policy's view and the threads in step:
 *  1. A pCPU changes hands only when its holder gives it back. A tickle (Xen's
 *     SCHEDULE_SOFTIRQ) or an expired slice on a held pCPU becomes a
 *     preemption request; doSchedule() for it runs when the RELEASE comes,
 *     with the release's timestamp, as Xen runs the softirq when the CPU next
 *     checks for it. The policy sees the holder running until it really
 *     stopped and charges it for all of it, overrun included. While no vCPU
 *     waits for a pCPU, doSchedule() runs at once instead, the holder still
 *     on it (Xen's schedule() at a slice's end; continue_running when it
 *     picks the holder again, rule 3 when it does not).
 *  2. An idle pCPU is left open. Under credit and credit2 an idle pCPU runs any
 *     vCPU allowed on it that becomes runnable; under null it runs only the vCPU
 *     assigned to it. That is the policy's decision for a wake-up onto an idle
 *     pCPU, published ahead of time: a waking vCPU takes such a pCPU by
 *     compare-and-swap and runs at once (one cross-thread wake-up instead of
 *     three), and its CLAIM tells the policy after the fact (wake, then
 *     doSchedule on that pCPU, at the claim's time).
 *  3. The policy has the last word. After every change the core reconciles
 *     tokens with the policy's choices (reconcile()): a vCPU holding a pCPU the
 *     policy gave to another is moved to the pCPU the policy chose for it if
 *     that one is free (pCPU numbers are labels: a thread runs on whatever core
 *     the OS gives it), else asked to give it back; a pCPU the policy assigned
 *     and nobody holds is granted.
 *
 * Time is injected: run(now) is given system time and every policy call gets a
 * timestamp (the event's own, kept monotonic), so this class also runs on a
 * test's thread with a fake clock.
 */
import { logger, RateLimiter, limitedWarn, type Logger } from '../../shared/log.ts';
import { vcpuKick } from '../domain.ts';
import {
  D, DOMSTATE_ACTIVE, HvState, PCPU_CLOSED, PCPU_OPEN_ANY, PCPU_OPEN_FOR, SCHED_IDLE_ANY, SCHED_IDLE_ASSIGNED, SQ, SV, V,
} from '../state.ts';
import { createScheduler } from './policy/index.ts';
import { RUNSTATE_blocked, RUNSTATE_offline } from './policy/runstate.ts';
import type { Scheduler, VcpuRef } from './policy/types.ts';
import { DEFAULT_PARAMS, storedAffinity, storedParams } from './params.ts';
import {
  RELEASE_BLOCKED, RELEASE_OFFLINE, RELEASE_PREEMPTED, RELEASE_YIELD, SCHED_EV_AFFINITY, SCHED_EV_CLAIM,
  SCHED_EV_EXIT, SCHED_EV_PARAMS, SCHED_EV_RELEASE, SCHED_EV_WAKE, schedTake, type SchedEvent,
} from './ring.ts';

/** A domain the policy knows, and the slot incarnation it belongs to. */
interface DomRec {
  readonly domid: number;
  readonly slot: number;
  readonly generation: number;
  /** vCPUs 0..nrVcpus-1 are inserted in the policy. */
  nrVcpus: number;
}

/** Counters for tests and benchmarks. */
export interface SchedCoreStats {
  events: number;
  schedules: number;
  grants: number;
  /** Wake-ups that took an open idle pCPU themselves. */
  claims: number;
  /** Claims the policy placed on another free pCPU (label moved). */
  relabels: number;
  preemptRequests: number;
  /** Releases that came more than one tick after the preemption request. */
  overruns: number;
  /** Longest time from a preemption request to the release (ns), first runs excepted. */
  maxOverrunNs: number;
}

export interface SchedCoreOptions {
  /** A policy instance (tests); default createScheduler(hv.cfg.sched, hv.cfg.pcpus). */
  readonly policy?: Scheduler;
  readonly log?: Logger;
}

const NONE = -1;
/** Overrun reports use the policy's tick, or this under a policy without one (null). */
const DEFAULT_TICK_NS = 10_000_000;

/** doSchedule calls in one settle() beyond which the policy is taken to be livelocked. */
const MAX_SCHEDULES_PER_SETTLE = 10_000;

/** Who an idle pCPU runs when a vCPU wakes: any vCPU allowed on it, or only the one assigned to it. */
type IdleRule = 'any' | 'assigned';
const IDLE_RULE: Readonly<Record<Scheduler['opt_name'], IdleRule>> = { credit: 'any', credit2: 'any', null: 'assigned' };

export class SchedCore {
  readonly policy: Scheduler;
  readonly stats: SchedCoreStats = {
    events: 0, schedules: 0, grants: 0, claims: 0, relabels: 0, preemptRequests: 0, overruns: 0, maxOverrunNs: 0,
  };
  private readonly hv: HvState;
  private readonly log: Logger;
  private readonly limiter = new RateLimiter(2, 5);
  private readonly nrPcpus: number;
  private readonly maxVcpus: number;
  private readonly idleRule: IdleRule;
  /** The latest time given to the policy (ns): every call gets at least this. */
  private last = 0;
  private nextTick: number;
  private readonly tickNs: number;
  /** Per pCPU: when its slice ends (Infinity: none). */
  private readonly deadline: number[];
  /** Per pCPU: the vCPU the policy last ran there (null's assignment), NONE. */
  private readonly lastCurr: Int32Array;
  /** Per vCPU index: the pCPU it holds, was granted, or claimed (claim processed), NONE. */
  private readonly held: Int16Array;
  /** Per vCPU index: when it was asked to give its pCPU back, NONE if not asked. */
  private readonly preemptAt: Float64Array;
  /** vCPUs with a preemption request outstanding. */
  private readonly asked = new Set<number>();
  /** Per vCPU index: the overrun of the current request has been reported. */
  private readonly reported: Uint8Array;
  /**
   * Per vCPU index: it has given a pCPU back at least once. Its first run
   * includes loading its kernel (a module import: no preemption point in it),
   * so an overrun then is charged but not reported.
   */
  private readonly started: Uint8Array;
  private readonly doms = new Map<number, DomRec>();
  /**
   * vCPUs runnable (as far as the core knows) and holding no pCPU: they asked
   * (WAKE) or were preempted or yielded, and have no grant yet. Its size is
   * published in SQ.WAITING: while it is 0 a blocking vCPU may open its pCPU
   * itself (pcpu.ts).
   */
  private readonly waiting = new Set<number>();

  constructor(hv: HvState, opts: SchedCoreOptions = {}) {
    this.hv = hv;
    this.nrPcpus = hv.cfg.pcpus;
    this.maxVcpus = hv.cfg.maxVcpus;
    if (opts.policy) {
      this.policy = opts.policy;
    } else {
      const r = createScheduler(hv.cfg.sched, hv.cfg.pcpus);
      if (!r.ok) throw new Error(r.reason);
      this.policy = r.scheduler;
    }
    if (this.policy.nrPcpus !== this.nrPcpus) throw new Error(`policy has ${this.policy.nrPcpus} pCPUs, host ${this.nrPcpus}`);
    this.idleRule = IDLE_RULE[this.policy.opt_name];
    this.log = opts.log ?? logger('sched');
    this.tickNs = this.policy.tickPeriodNs > 0 ? this.policy.tickPeriodNs : DEFAULT_TICK_NS;
    this.nextTick = this.policy.tickPeriodNs > 0 ? this.policy.tickPeriodNs : Number.POSITIVE_INFINITY;
    this.deadline = new Array<number>(this.nrPcpus).fill(Number.POSITIVE_INFINITY);
    this.lastCurr = new Int32Array(this.nrPcpus).fill(NONE);
    const nv = hv.cfg.maxDomains * hv.cfg.maxVcpus;
    this.held = new Int16Array(nv).fill(NONE);
    this.preemptAt = new Float64Array(nv).fill(NONE);
    this.reported = new Uint8Array(nv);
    this.started = new Uint8Array(nv);
    Atomics.store(hv.schedRing, SQ.IDLE_RULE, this.idleRule === 'any' ? SCHED_IDLE_ANY : SCHED_IDLE_ASSIGNED);
    // Every pCPU starts idle; open the ones the policy would give a waker.
    this.reconcile(0);
  }

  /**
   * Everything due at system time `now`: every event in the ring (each at its
   * own timestamp), the tick if due, slices that have run out.
   */
  run(now: bigint): void {
    for (let ev = schedTake(this.hv); ev; ev = schedTake(this.hv)) this.handle(ev);
    const t = this.at(now);
    if (t >= this.nextTick) {
      // Ticks missed while late are not replayed: the policy charges by timestamp.
      this.policy.tick(t);
      while (this.nextTick <= t) this.nextTick += this.policy.tickPeriodNs;
      this.reportOverruns(t);
      this.collectDeadDomains(t);
      this.settle(t, []);
    }
    const due: number[] = [];
    for (let p = 0; p < this.nrPcpus; p++) if (this.deadline[p] <= t) due.push(p);
    if (due.length > 0) this.settle(t, due);
    this.publishStats();
  }

  private publishStats(): void {
    const r = this.hv.schedRing;
    const s = this.stats;
    Atomics.store(r, SQ.STAT_EVENTS, s.events);
    Atomics.store(r, SQ.STAT_SCHEDULES, s.schedules);
    Atomics.store(r, SQ.STAT_GRANTS, s.grants);
    Atomics.store(r, SQ.STAT_CLAIMS, s.claims);
    Atomics.store(r, SQ.STAT_RELABELS, s.relabels);
    Atomics.store(r, SQ.STAT_PREEMPTS, s.preemptRequests);
    Atomics.store(r, SQ.STAT_OVERRUNS, s.overruns);
  }

  /** System time (ns) by which run() must be called again, barring new events; Infinity if never. */
  nextDue(): number {
    let t = this.nextTick;
    for (let p = 0; p < this.nrPcpus; p++) t = Math.min(t, this.deadline[p]);
    return t;
  }

  /** The vCPU index physically holding pCPU p (granted or claimed), NONE if idle. */
  holder(p: number): number {
    const v = Atomics.load(this.hv.pcpuOwner, p);
    return v >= 0 ? v : NONE;
  }

  // ---- events -----------------------------------------------------------------

  private at(ts: bigint): number {
    this.last = Math.max(this.last, Number(ts));
    return this.last;
  }

  private handle(ev: SchedEvent): void {
    this.stats.events++;
    const t = this.at(ev.ts);
    switch (ev.kind) {
      case SCHED_EV_WAKE: return this.onWake(ev.vidx, t);
      case SCHED_EV_CLAIM: return this.onClaim(ev.vidx, ev.pcpu, t);
      case SCHED_EV_RELEASE: return this.onRelease(ev.vidx, ev.reason, t);
      case SCHED_EV_EXIT: return this.onExit(ev.vidx, t);
      case SCHED_EV_PARAMS: return this.onParams(ev.slot, ev.generation, t);
      case SCHED_EV_AFFINITY: return this.onAffinity(ev.vidx, ev.generation, t);
      default:
        this.log.error({ kind: ev.raw }, 'unknown scheduler event');
    }
  }

  private slotOf(vidx: number): number { return Math.floor(vidx / this.maxVcpus); }
  private vcpuOf(vidx: number): number { return vidx % this.maxVcpus; }

  /** The policy's reference for vidx, inserting its domain and the vCPU if needed; null if the domain is not alive. */
  private refOf(vidx: number, t: number): VcpuRef | null {
    const vcpu = this.vcpuOf(vidx);
    const rec = this.ensureDomain(this.slotOf(vidx), t);
    if (!rec) return null;
    while (rec.nrVcpus <= vcpu) this.insertVcpu(rec, rec.nrVcpus++, t);
    return { domid: rec.domid, vcpuId: vcpu };
  }

  /** The policy's reference for vidx if its domain and vCPU are in the policy. */
  private knownRef(vidx: number): VcpuRef | null {
    const slot = this.slotOf(vidx);
    const rec = this.doms.get(Atomics.load(this.hv.dom, this.hv.d(slot, D.domid)));
    const vcpu = this.vcpuOf(vidx);
    return rec && rec.slot === slot && vcpu < rec.nrVcpus ? { domid: rec.domid, vcpuId: vcpu } : null;
  }

  private vidxOf(ref: VcpuRef): number {
    const rec = this.doms.get(ref.domid);
    if (!rec) throw new Error(`sched: policy runs d${ref.domid}v${ref.vcpuId}, unknown domain`);
    return rec.slot * this.maxVcpus + ref.vcpuId;
  }

  /** The vCPU index the policy runs on p, NONE if idle. */
  private currOf(p: number): number {
    const ref = this.policy.current(p);
    return ref ? this.vidxOf(ref) : NONE;
  }

  /** The live domain in `slot` in the policy (Xen: sched_init_domain + a unit per vCPU at creation). */
  private ensureDomain(slot: number, t: number): DomRec | null {
    const hv = this.hv;
    if (Atomics.load(hv.dom, hv.d(slot, D.state)) !== DOMSTATE_ACTIVE) return null;
    const domid = Atomics.load(hv.dom, hv.d(slot, D.domid));
    const generation = Atomics.load(hv.dom, hv.d(slot, D.generation));
    let rec = this.doms.get(domid);
    if (rec && (rec.slot !== slot || rec.generation !== generation)) {
      this.purge(rec, t);
      rec = undefined;
    }
    if (rec) return rec;
    const rc = this.policy.insertDomain(domid);
    if (rc !== 0) throw new Error(`sched: insertDomain(${domid}) = ${rc}`);
    rec = { domid, slot, generation, nrVcpus: 0 };
    this.doms.set(domid, rec);
    const max = Atomics.load(hv.dom, hv.d(slot, D.max_vcpus));
    while (rec.nrVcpus < max) this.insertVcpu(rec, rec.nrVcpus++, t);
    const p = storedParams(hv, slot);
    if (p.weight !== DEFAULT_PARAMS.weight || p.cap !== DEFAULT_PARAMS.cap) this.policy.putParams(domid, p, t);
    return rec;
  }

  private insertVcpu(rec: DomRec, vcpu: number, t: number): void {
    const ref = { domid: rec.domid, vcpuId: vcpu };
    const rc = this.policy.insertVcpu(ref, t);
    if (rc !== 0) throw new Error(`sched: insertVcpu(d${rec.domid}v${vcpu}) = ${rc}`);
    const a = storedAffinity(this.hv, rec.slot, vcpu);
    if (a.hard.length < this.nrPcpus) this.policy.setAffinity(ref, a.hard, t);
  }

  /** Take a domain out of the policy (its slot was freed or reused). */
  private purge(rec: DomRec, t: number): void {
    const base = rec.slot * this.maxVcpus;
    for (let v = 0; v < rec.nrVcpus; v++) {
      this.forget(base + v);
      this.policy.removeVcpu({ domid: rec.domid, vcpuId: v }, t);
    }
    this.policy.removeDomain(rec.domid);
    this.doms.delete(rec.domid);
    this.settle(t, []);
  }

  /** Domains whose slot is no longer theirs and none of whose vCPUs holds a pCPU. */
  private collectDeadDomains(t: number): void {
    const hv = this.hv;
    for (const rec of [...this.doms.values()]) {
      const alive = Atomics.load(hv.dom, hv.d(rec.slot, D.state)) === DOMSTATE_ACTIVE
        && Atomics.load(hv.dom, hv.d(rec.slot, D.generation)) === rec.generation;
      if (alive) continue;
      const base = rec.slot * this.maxVcpus;
      let busy = false;
      for (let v = 0; v < rec.nrVcpus; v++) if (this.tokensOf(base + v).length > 0) busy = true;
      if (!busy) this.purge(rec, t);
    }
  }

  private onWake(vidx: number, t: number): void {
    if (this.held[vidx] !== NONE) return; // already has one
    const ref = this.refOf(vidx, t);
    if (!ref) return; // dying domain: its thread is on its way out
    this.waiting.add(vidx);
    this.policy.wake(ref, t);
    this.settle(t, []);
  }

  /**
   * vidx woke and took the open pCPU p at t: the policy hears of the wake now
   * and schedules p first, as of t. Claims are posted lazily, so by now the
   * vCPU may have given p back again (its RELEASE is further down the ring)
   * and another vCPU may hold it: the policy still sees the run, at its times.
   */
  private onClaim(vidx: number, p: number, t: number): void {
    if (p < 0 || p >= this.nrPcpus || this.held[vidx] !== NONE) {
      this.log.error({ vidx, pcpu: p, held: this.held[vidx] }, 'bad claim');
      return;
    }
    this.stats.claims++;
    this.held[vidx] = p;
    this.waiting.delete(vidx);
    // A request that raced with its last release is stale (the vCPU cleared its flag when it claimed).
    this.preemptAt[vidx] = NONE;
    this.asked.delete(vidx);
    const ref = this.refOf(vidx, t);
    if (!ref) {
      this.requestPreempt(vidx, t); // dying domain: its thread leaves at its next preemption point
      return;
    }
    this.policy.wake(ref, t);
    this.settle(t, [p], p, vidx);
  }

  private onRelease(vidx: number, reason: number, t: number): void {
    const p = this.held[vidx];
    if (p === NONE) {
      this.log.error({ vidx }, 'release by a vCPU that holds no pCPU');
      return;
    }
    const wasCurr = this.currOf(p) === vidx;
    this.held[vidx] = NONE;
    // Still ours unless the vCPU opened it on its way out (and someone may have claimed it since).
    Atomics.compareExchange(this.hv.pcpuOwner, p, vidx, PCPU_CLOSED);
    if (reason === RELEASE_PREEMPTED || reason === RELEASE_YIELD) this.waiting.add(vidx);
    else this.waiting.delete(vidx);
    this.noteRelease(vidx, p, t);
    this.started[vidx] = 1;
    const ref = this.knownRef(vidx);
    if (ref) {
      switch (reason) {
        case RELEASE_PREEMPTED: break;
        case RELEASE_YIELD: this.policy.yield(ref, t); break;
        case RELEASE_BLOCKED: this.policy.sleep(ref, t, RUNSTATE_blocked); break;
        case RELEASE_OFFLINE: this.policy.sleep(ref, t, RUNSTATE_offline); break;
        default: this.log.error({ vidx, reason }, 'unknown release reason');
      }
    }
    // The policy's context switch on p happens now, unless p was never the policy's for this vCPU.
    this.settle(t, wasCurr ? [p] : []);
  }

  private onExit(vidx: number, t: number): void {
    const freed = this.forget(vidx);
    const ref = this.knownRef(vidx);
    if (ref) this.policy.sleep(ref, t, RUNSTATE_offline);
    this.settle(t, freed);
    // Threads end when their domain is destroyed: forget it once none of its vCPUs holds a pCPU.
    this.collectDeadDomains(t);
  }

  private onParams(slot: number, generation: number, t: number): void {
    const rec = this.doms.get(Atomics.load(this.hv.dom, this.hv.d(slot, D.domid)));
    if (!rec || rec.slot !== slot || rec.generation !== generation) return; // applied when it joins
    this.policy.putParams(rec.domid, storedParams(this.hv, slot), t);
    this.settle(t, []);
  }

  private onAffinity(vidx: number, generation: number, t: number): void {
    const slot = this.slotOf(vidx);
    const vcpu = this.vcpuOf(vidx);
    const rec = this.doms.get(Atomics.load(this.hv.dom, this.hv.d(slot, D.domid)));
    if (!rec || rec.slot !== slot || rec.generation !== generation || vcpu >= rec.nrVcpus) return;
    this.policy.setAffinity({ domid: rec.domid, vcpuId: vcpu }, storedAffinity(this.hv, slot, vcpu).hard, t);
    this.settle(t, []);
  }

  // ---- scheduling ---------------------------------------------------------------

  /**
   * Reschedule every pCPU in `due` (`first` before the others) and every pCPU
   * the policy tickles, until none is left; then reconcile tokens. A pCPU held
   * by the vCPU the policy runs there is not rescheduled: its holder is asked
   * to give it back, and its RELEASE brings it here again. A pCPU claimed by a
   * vCPU whose CLAIM is still in the ring waits for that CLAIM. `claimant`
   * is taken to hold `first` (the CLAIM being processed).
   */
  private settle(t: number, due: readonly number[], first = NONE, claimant = NONE): void {
    const pending = new Set<number>(due);
    for (const c of this.policy.takeTickled()) pending.add(c);
    let next = first;
    let rounds = 0;
    while (pending.size > 0) {
      if (++rounds > MAX_SCHEDULES_PER_SETTLE) {
        // A policy that keeps tickling: a bug in it. Leave the rest to the next event or tick.
        this.log.error({ policy: this.policy.opt_name, pending: [...pending] }, 'scheduler livelock');
        break;
      }
      const p = next !== NONE && pending.has(next) ? next : Math.min(...pending);
      const h = p === next && claimant !== NONE ? claimant : this.holder(p);
      next = NONE;
      pending.delete(p);
      const c = this.currOf(p);
      if (h !== NONE && this.held[h] === p && h === c && this.waiting.size > 0) {
        // Running as the policy wants, and another vCPU waits for a pCPU: the
        // holder gives p back at its next preemption point, and its RELEASE
        // brings p here again.
        this.deadline[p] = Number.POSITIVE_INFINITY;
        this.requestPreempt(h, t);
        continue;
      }
      // With nobody waiting, a held p is rescheduled now, its holder still on
      // it, as Xen's schedule() runs on the pCPU at the slice's end: the policy
      // charges the holder up to t and, finding nobody else runnable, picks it
      // again (continue_running: no release, no grant, no wake-up). Should it
      // pick otherwise (a cap parks the holder), reconcile() below asks the
      // holder to give p back.
      // A claim in flight onto a pCPU the policy has idle: its CLAIM brings p back.
      if (h !== NONE && this.held[h] !== p && c === NONE) continue;
      // Free, or held against the policy's choice (reconcile() deals with the holder).
      const d = this.policy.doSchedule(p, t);
      this.stats.schedules++;
      this.deadline[p] = d.sliceNs > 0 ? t + d.sliceNs : Number.POSITIVE_INFINITY;
      if (d.next) this.lastCurr[p] = this.vidxOf(d.next);
      for (const c of this.policy.takeTickled()) pending.add(c);
    }
    this.reconcile(t);
  }

  /** Bring the tokens in line with the policy's choices (rule 3 above). */
  private reconcile(t: number): void {
    for (let pass = 0; pass <= this.nrPcpus; pass++) {
      let changed = false;
      for (let p = 0; p < this.nrPcpus; p++) {
        const c = this.currOf(p);
        const h = this.holder(p);
        if (h !== NONE) {
          if (this.held[h] !== p || h === c) continue; // claim in flight, or as the policy wants
          // h holds p but the policy runs it elsewhere, or not at all.
          const q = this.pcpuRunning(h);
          if (q === NONE || !this.close(q)) {
            this.requestPreempt(h, t);
            continue;
          }
          this.relabel(h, p, q);
          changed = true;
        }
        if (c === NONE) {
          this.open(p);
        } else if (this.held[c] === NONE) {
          // Not while c still holds a pCPU it claimed (its CLAIM is in the ring): that brings it here.
          if (this.tokensOf(c).length === 0 && this.grant(p, c)) changed = true;
        } else if (this.held[c] !== p && this.holder(this.held[c]) === c && this.close(p)) {
          // c holds another pCPU against the policy's wish: the policy wants it here.
          this.relabel(c, this.held[c], p);
          changed = true;
        }
      }
      if (!changed) break;
    }
    Atomics.store(this.hv.schedRing, SQ.WAITING, this.waiting.size);
  }

  /** The pCPU the policy runs vidx on, NONE. */
  private pcpuRunning(vidx: number): number {
    for (let q = 0; q < this.nrPcpus; q++) if (this.currOf(q) === vidx) return q;
    return NONE;
  }

  /** Make an idle pCPU closed (only the core hands it out). False if a vCPU holds it. */
  private close(p: number): boolean {
    const v = Atomics.load(this.hv.pcpuOwner, p);
    if (v >= 0) return false;
    return v === PCPU_CLOSED || Atomics.compareExchange(this.hv.pcpuOwner, p, v, PCPU_CLOSED) === v;
  }

  /** Leave an idle pCPU open to the vCPUs the policy would run on it if they woke (rule 2). */
  private open(p: number): void {
    const v = Atomics.load(this.hv.pcpuOwner, p);
    if (v >= 0) return;
    let want = PCPU_OPEN_ANY;
    if (this.idleRule === 'assigned') want = this.lastCurr[p] === NONE ? PCPU_CLOSED : PCPU_OPEN_FOR(this.lastCurr[p]);
    if (v !== want) Atomics.compareExchange(this.hv.pcpuOwner, p, v, want);
  }

  /** Hand idle pCPU p to vidx. False if a waker claimed p first. */
  private grant(p: number, vidx: number): boolean {
    const hv = this.hv;
    const v = Atomics.load(hv.pcpuOwner, p);
    if (v >= 0 || Atomics.compareExchange(hv.pcpuOwner, p, v, vidx) !== v) return false;
    this.held[vidx] = p;
    this.waiting.delete(vidx);
    this.cancelPreempt(vidx);
    // Publish the grant, then wake the vCPU (it re-reads GRANT after every kick).
    Atomics.store(hv.schedVcpu, vidx * SV.WORDS + SV.GRANT, p + 1);
    vcpuKick(hv, this.slotOf(vidx), this.vcpuOf(vidx));
    this.stats.grants++;
    return true;
  }

  /** vidx holds `from`; the policy runs it on `to`, which is free and closed: move the label. */
  private relabel(vidx: number, from: number, to: number): void {
    const hv = this.hv;
    this.held[vidx] = to;
    Atomics.store(hv.pcpuOwner, to, vidx);
    Atomics.store(hv.pcpuOwner, from, PCPU_CLOSED);
    // The thread reports V.pcpu; it may be releasing right now, so only move a label it still shows.
    Atomics.compareExchange(hv.vcpu, hv.v(this.slotOf(vidx), this.vcpuOf(vidx), V.pcpu), from, to);
    const g = vidx * SV.WORDS + SV.GRANT;
    if (Atomics.load(hv.schedVcpu, g) !== 0) Atomics.store(hv.schedVcpu, g, to + 1);
    this.cancelPreempt(vidx);
    this.stats.relabels++;
  }

  private requestPreempt(vidx: number, t: number): void {
    if (this.preemptAt[vidx] !== NONE) return;
    this.preemptAt[vidx] = t;
    this.reported[vidx] = 0;
    this.asked.add(vidx);
    Atomics.store(this.hv.vcpu, this.hv.v(this.slotOf(vidx), this.vcpuOf(vidx), V.preempt), 1);
    this.stats.preemptRequests++;
  }

  private cancelPreempt(vidx: number): void {
    this.preemptAt[vidx] = NONE;
    this.asked.delete(vidx);
    Atomics.store(this.hv.vcpu, this.hv.v(this.slotOf(vidx), this.vcpuOf(vidx), V.preempt), 0);
  }

  /** The pCPUs whose token vidx has (held, granted, or claimed). */
  private tokensOf(vidx: number): number[] {
    const out: number[] = [];
    for (let p = 0; p < this.nrPcpus; p++) if (this.holder(p) === vidx) out.push(p);
    return out;
  }

  /** vidx's thread is gone (or its domain is): free its tokens and bookkeeping; returns the pCPUs freed. */
  private forget(vidx: number): number[] {
    const freed = this.tokensOf(vidx);
    for (const p of freed) Atomics.store(this.hv.pcpuOwner, p, PCPU_CLOSED);
    this.held[vidx] = NONE;
    this.preemptAt[vidx] = NONE;
    this.asked.delete(vidx);
    this.waiting.delete(vidx);
    this.started[vidx] = 0;
    Atomics.store(this.hv.schedVcpu, vidx * SV.WORDS + SV.GRANT, 0);
    for (let p = 0; p < this.nrPcpus; p++) if (this.lastCurr[p] === vidx) this.lastCurr[p] = NONE;
    return freed;
  }

  // ---- overruns -------------------------------------------------------------------

  /** A holder gave its pCPU back: was it late? */
  private noteRelease(vidx: number, p: number, t: number): void {
    const asked = this.preemptAt[vidx];
    this.preemptAt[vidx] = NONE;
    this.asked.delete(vidx);
    if (asked === NONE || !this.started[vidx]) return;
    const late = t - asked;
    this.stats.maxOverrunNs = Math.max(this.stats.maxOverrunNs, late);
    if (late <= this.tickNs) return;
    this.stats.overruns++;
    if (!this.reported[vidx]) this.warnOverrun(vidx, p, late, 'gave its pCPU back late: charged for the overrun');
  }

  /** At each tick: report, once per request, holders still running more than a tick after being asked to stop. */
  private reportOverruns(t: number): void {
    for (const vidx of this.asked) {
      const asked = this.preemptAt[vidx];
      if (this.reported[vidx] || !this.started[vidx] || t - asked <= this.tickNs) continue;
      this.reported[vidx] = 1;
      this.warnOverrun(vidx, this.held[vidx], t - asked, 'has not reached a preemption point; it is charged for the overrun');
    }
  }

  private warnOverrun(vidx: number, p: number, lateNs: number, msg: string): void {
    const domid = Atomics.load(this.hv.dom, this.hv.d(this.slotOf(vidx), D.domid));
    limitedWarn(this.limiter, this.log, `d${domid}`,
      { domid, vcpu: this.vcpuOf(vidx), pcpu: p, overrunMs: +(lateNs / 1e6).toFixed(3) }, `d${domid}v${this.vcpuOf(vidx)} ${msg}`);
  }
}
