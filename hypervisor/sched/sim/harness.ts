/**
 * A deterministic, event-driven simulation of N pCPUs under a scheduler policy.
 * A virtual clock jumps to the earliest of: a pCPU's slice expiry, the policy's
 * tick, a running vCPU blocking (or yielding), a blocked vCPU waking, a
 * scripted action, the end. At each instant it applies, in this order: actions,
 * blocks and yields, wake-ups, the tick, slice expiries; then it reschedules
 * every pCPU that is due or tickled, lowest number first, until none is.
 *
 * The policy is driven only through the Scheduler interface, as the
 * hypervisor's vCPU threads will drive it; the harness checks after every
 * reschedule that the policy's view of who runs where matches its own.
 */
import { createScheduler } from '../policy/index.ts';
import { RUNSTATE_runnable } from '../policy/runstate.ts';
import type { ScheduleDecision, Scheduler, SchedOptName, VcpuRef } from '../policy/types.ts';
import { attackerNextAction, checkWorkload, type Workload } from './workload.ts';

export type { Workload } from './workload.ts';

export interface SimVcpuSpec {
  readonly workload: Workload;
  /** Hard affinity; default every pCPU. */
  readonly affinity?: readonly number[];
}

export interface SimDomainSpec {
  readonly domid: number;
  readonly weight?: number;
  readonly cap?: number;
  /** vCPU i gets vcpuId i. */
  readonly vcpus: readonly SimVcpuSpec[];
}

/** Something done to the scheduler at a given time. */
export type SimAction =
  | { readonly atNs: number; readonly kind: 'removeVcpu'; readonly domid: number; readonly vcpuId: number }
  | { readonly atNs: number; readonly kind: 'setAffinity'; readonly domid: number; readonly vcpuId: number; readonly pcpus: readonly number[] }
  | { readonly atNs: number; readonly kind: 'putParams'; readonly domid: number; readonly weight?: number; readonly cap?: number };

export interface SimConfig {
  /** A policy name, or a fresh policy instance (its nrPcpus is used). */
  readonly scheduler: SchedOptName | Scheduler;
  readonly nrPcpus: number;
  readonly durationNs: number;
  /**
   * CPU time, idle time and wake-up latencies are counted only from this time
   * on (default 0), so that start-up transients (every vCPU woken, and in
   * credit boosted, at once) stay out of steady-state figures.
   */
  readonly warmupNs?: number;
  readonly domains: readonly SimDomainSpec[];
  readonly actions?: readonly SimAction[];
}

export interface LatencyStats {
  readonly count: number;
  readonly maxNs: number;
  readonly meanNs: number;
}

export interface VcpuResult extends VcpuRef {
  /** CPU time in the measured window (warmupNs..durationNs). */
  readonly cpuNs: number;
  /** cpuNs / the window's length: the fraction of one pCPU it got. */
  readonly share: number;
  /** CPU time on each pCPU, in the window. */
  readonly perPcpuNs: readonly number[];
  /** When it first ran; -1 if never. */
  readonly firstRunNs: number;
  /** From each wake-up (after a block) in the window to the moment it next ran. */
  readonly wakeLatency: LatencyStats;
}

export interface DomainResult {
  readonly domid: number;
  readonly cpuNs: number;
  readonly share: number;
}

export interface PcpuResult {
  readonly pcpu: number;
  readonly busyNs: number;
  readonly idleNs: number;
  /** Idle while some vCPU allowed on it was runnable and not running (RUNSTATE_runnable). */
  readonly idleWhileRunnableNs: number;
}

export interface SimResult {
  readonly scheduler: SchedOptName;
  readonly durationNs: number;
  /** Length of the measured window: durationNs - warmupNs. */
  readonly windowNs: number;
  readonly vcpus: readonly VcpuResult[];
  readonly domains: readonly DomainResult[];
  readonly pcpus: readonly PcpuResult[];
  /** doSchedule calls made. */
  readonly schedules: number;
  /** The policy's dump at the end. */
  readonly dump: string;
}

/** The harness's model of one vCPU. */
interface SimVcpu {
  readonly ref: VcpuRef;
  readonly workload: Workload;
  affinity: readonly number[];
  blocked: boolean;
  wakeAt: number;
  /** io: CPU left in the current burst. */
  burstLeft: number;
  /** attacker: the last tick boundary it has acted on. */
  handledBoundary: number;
  /** When it was woken, until it runs (for the latency). */
  wokenAt: number | null;
  pcpu: number;
  removed: boolean;
  cpuNs: number;
  perPcpuNs: number[];
  firstRunNs: number;
  latCount: number;
  latMax: number;
  latSum: number;
}

/** Reschedules at one instant beyond which the policy is taken to be livelocked. */
const MAX_SCHEDULES_PER_INSTANT = 10_000;

export class Simulation {
  readonly sched: Scheduler;
  private readonly vcpus: SimVcpu[] = [];
  private readonly byKey = new Map<string, SimVcpu>();
  private readonly running: (SimVcpu | null)[];
  private readonly deadline: number[];
  private readonly busy: number[];
  private readonly idle: number[];
  private readonly idleRunnable: number[];
  private readonly actions: SimAction[];
  private now = 0;
  private nextTick: number;
  private schedules = 0;

  constructor(private readonly cfg: SimConfig) {
    const w = cfg.warmupNs ?? 0;
    if (!(Number.isInteger(cfg.durationNs) && cfg.durationNs > 0 && Number.isInteger(w) && w >= 0 && w < cfg.durationNs)) {
      throw new Error('simulation: durationNs must be a positive integer above warmupNs');
    }
    this.sched = Simulation.makeScheduler(cfg);
    const n = this.sched.nrPcpus;
    this.running = new Array<SimVcpu | null>(n).fill(null);
    this.deadline = new Array<number>(n).fill(Number.POSITIVE_INFINITY);
    this.busy = new Array<number>(n).fill(0);
    this.idle = new Array<number>(n).fill(0);
    this.idleRunnable = new Array<number>(n).fill(0);
    this.actions = [...(cfg.actions ?? [])].sort((a, b) => a.atNs - b.atNs);
    this.nextTick = this.sched.tickPeriodNs > 0 ? this.sched.tickPeriodNs : Number.POSITIVE_INFINITY;
    this.setUp();
  }

  private static makeScheduler(cfg: SimConfig): Scheduler {
    if (typeof cfg.scheduler !== 'string') return cfg.scheduler;
    const r = createScheduler(cfg.scheduler, cfg.nrPcpus);
    if (!r.ok) throw new Error(r.reason);
    return r.scheduler;
  }

  private static check(rc: number, what: string): void {
    if (rc !== 0) throw new Error(`simulation set-up: ${what} failed with ${rc}`);
  }

  /** Domains and vCPUs in, parameters and affinities set, every vCPU woken (or blocked until firstWakeNs). */
  private setUp(): void {
    const s = this.sched;
    for (const d of this.cfg.domains) {
      Simulation.check(s.insertDomain(d.domid), `insertDomain(${d.domid})`);
      d.vcpus.forEach((spec, vcpuId) => {
        const err = checkWorkload(spec.workload);
        if (err) throw new Error(`d${d.domid}v${vcpuId}: ${err}`);
        const ref = { domid: d.domid, vcpuId };
        Simulation.check(s.insertVcpu(ref, 0), `insertVcpu(d${d.domid}v${vcpuId})`);
        if (spec.affinity) Simulation.check(s.setAffinity(ref, spec.affinity, 0), `setAffinity(d${d.domid}v${vcpuId})`);
        const v: SimVcpu = {
          ref, workload: spec.workload, affinity: s.getAffinity(ref) ?? [], blocked: false,
          wakeAt: Number.POSITIVE_INFINITY, burstLeft: spec.workload.kind === 'io' ? spec.workload.runNs : 0,
          handledBoundary: 0, wokenAt: null, pcpu: -1, removed: false, cpuNs: 0,
          perPcpuNs: new Array<number>(s.nrPcpus).fill(0), firstRunNs: -1, latCount: 0, latMax: 0, latSum: 0,
        };
        this.vcpus.push(v);
        this.byKey.set(`${d.domid}.${vcpuId}`, v);
      });
      if (d.weight !== undefined || d.cap !== undefined) {
        Simulation.check(s.putParams(d.domid, { weight: d.weight, cap: d.cap }, 0), `putParams(${d.domid})`);
      }
    }
    for (const v of this.vcpus) {
      const first = v.workload.kind === 'io' ? v.workload.firstWakeNs ?? 0 : 0;
      if (first > 0) {
        v.blocked = true;
        v.wakeAt = first;
      } else {
        s.wake(v.ref, 0);
      }
    }
    this.reschedule(new Set(Array.from({ length: s.nrPcpus }, (_, i) => i)));
  }

  /** Run to cfg.durationNs and report. */
  run(): SimResult {
    const end = this.cfg.durationNs;
    while (this.now < end) {
      const t = Math.min(end, this.nextEventTime());
      this.advance(t);
      if (this.now >= end) break;
      this.step();
    }
    return this.result();
  }

  private nextEventTime(): number {
    let t = Math.min(this.nextTick, ...this.deadline);
    if (this.actions.length > 0) t = Math.min(t, this.actions[0].atNs);
    for (const v of this.vcpus) {
      if (v.removed) continue;
      if (v.blocked) t = Math.min(t, v.wakeAt);
      else if (v.pcpu >= 0) t = Math.min(t, this.blockTime(v));
    }
    return Math.max(t, this.now);
  }

  /** When the running vCPU v next blocks or yields (Infinity: never). */
  private blockTime(v: SimVcpu): number {
    const w = v.workload;
    switch (w.kind) {
      case 'cpu': return Number.POSITIVE_INFINITY;
      case 'io': return this.now + v.burstLeft;
      case 'attacker': return attackerNextAction(w, this.now, v.handledBoundary).at;
    }
  }

  /** Let time pass to t with nothing changing: run the workloads; count CPU and idle time in the window. */
  private advance(t: number): void {
    const dt = t - this.now;
    for (const v of this.running) if (v && v.workload.kind === 'io') v.burstLeft -= dt;
    const counted = t - Math.max(this.now, this.cfg.warmupNs ?? 0);
    if (counted > 0) {
      const waiting = this.vcpus.filter((v) => !v.removed && v.pcpu < 0
        && this.sched.runstate(v.ref, this.now)?.state === RUNSTATE_runnable);
      for (let p = 0; p < this.running.length; p++) {
        const v = this.running[p];
        if (v) {
          v.cpuNs += counted;
          v.perPcpuNs[p] += counted;
          this.busy[p] += counted;
        } else {
          this.idle[p] += counted;
          if (waiting.some((w) => w.affinity.includes(p))) this.idleRunnable[p] += counted;
        }
      }
    }
    this.now = t;
  }

  /** Everything due at this instant, then the reschedules. */
  private step(): void {
    const now = this.now;
    const s = this.sched;
    while (this.actions.length > 0 && this.actions[0].atNs <= now) this.apply(this.actions.shift()!);
    for (const v of this.vcpus) {
      if (v.removed || v.blocked || v.pcpu < 0 || this.blockTime(v) > now) continue;
      this.blockOrYield(v);
    }
    for (const v of this.vcpus) {
      if (v.removed || !v.blocked || v.wakeAt > now) continue;
      v.blocked = false;
      v.wakeAt = Number.POSITIVE_INFINITY;
      if (v.workload.kind === 'io') v.burstLeft = v.workload.runNs;
      v.wokenAt = now >= (this.cfg.warmupNs ?? 0) ? now : null;
      s.wake(v.ref, now);
    }
    if (now >= this.nextTick) {
      s.tick(now);
      this.nextTick += s.tickPeriodNs;
    }
    const due = new Set<number>();
    this.deadline.forEach((d, p) => { if (d <= now) due.add(p); });
    this.reschedule(due);
  }

  private blockOrYield(v: SimVcpu): void {
    const now = this.now;
    const w = v.workload;
    if (w.kind === 'io') {
      this.sched.sleep(v.ref, now);
      v.blocked = true;
      v.wakeAt = now + w.blockNs;
    } else if (w.kind === 'attacker') {
      const { boundary } = attackerNextAction(w, now, v.handledBoundary);
      v.handledBoundary = boundary;
      if (w.mode === 'yield') {
        this.sched.yield(v.ref, now);
      } else {
        this.sched.sleep(v.ref, now);
        v.blocked = true;
        v.wakeAt = boundary + w.wakeDelayNs;
      }
    }
  }

  private apply(a: SimAction): void {
    const s = this.sched;
    const now = this.now;
    switch (a.kind) {
      case 'removeVcpu': {
        const v = this.byKey.get(`${a.domid}.${a.vcpuId}`);
        Simulation.check(s.removeVcpu({ domid: a.domid, vcpuId: a.vcpuId }, now), 'removeVcpu');
        if (v) {
          if (v.pcpu >= 0) this.running[v.pcpu] = null;
          v.pcpu = -1;
          v.removed = true;
        }
        return;
      }
      case 'setAffinity': {
        const ref = { domid: a.domid, vcpuId: a.vcpuId };
        Simulation.check(s.setAffinity(ref, a.pcpus, now), 'setAffinity');
        const v = this.byKey.get(`${a.domid}.${a.vcpuId}`);
        if (v) v.affinity = s.getAffinity(ref) ?? [];
        return;
      }
      case 'putParams':
        Simulation.check(s.putParams(a.domid, { weight: a.weight, cap: a.cap }, now), 'putParams');
        return;
    }
  }

  /** doSchedule every pCPU in `due` and every tickled one, until none is left. */
  private reschedule(due: Set<number>): void {
    const s = this.sched;
    const pending = new Set<number>([...due, ...s.takeTickled()]);
    let n = 0;
    while (pending.size > 0) {
      const p = Math.min(...pending);
      pending.delete(p);
      this.dispatch(p, s.doSchedule(p, this.now));
      for (const c of s.takeTickled()) pending.add(c);
      if (++n > MAX_SCHEDULES_PER_INSTANT) throw new Error(`${s.opt_name}: livelock at ${this.now} ns`);
    }
    this.schedules += n;
    for (let p = 0; p < this.running.length; p++) {
      const mine = this.running[p]?.ref ?? null;
      const theirs = s.current(p);
      if (mine?.domid !== theirs?.domid || mine?.vcpuId !== theirs?.vcpuId) {
        throw new Error(`pCPU ${p}: harness runs ${JSON.stringify(mine)}, policy ${JSON.stringify(theirs)}`);
      }
    }
  }

  /** Record the policy's decision for pCPU p. */
  private dispatch(p: number, d: ScheduleDecision): void {
    const now = this.now;
    const prev = this.running[p];
    const next = d.next ? this.byKey.get(`${d.next.domid}.${d.next.vcpuId}`) ?? null : null;
    if (d.next && !next) throw new Error(`pCPU ${p}: policy picked unknown vCPU ${JSON.stringify(d.next)}`);
    if (prev && prev !== next) prev.pcpu = -1;
    this.running[p] = next;
    if (next) {
      next.pcpu = p;
      if (next.firstRunNs < 0) next.firstRunNs = now;
      if (next.wokenAt !== null) {
        const lat = now - next.wokenAt;
        next.latCount++;
        next.latSum += lat;
        next.latMax = Math.max(next.latMax, lat);
        next.wokenAt = null;
      }
    }
    if (!(d.sliceNs > 0 || d.sliceNs === -1)) throw new Error(`pCPU ${p}: bad slice ${d.sliceNs}`);
    this.deadline[p] = d.sliceNs > 0 ? now + d.sliceNs : Number.POSITIVE_INFINITY;
  }

  private result(): SimResult {
    const dur = this.cfg.durationNs - (this.cfg.warmupNs ?? 0);
    const vcpus: VcpuResult[] = this.vcpus.map((v) => ({
      domid: v.ref.domid, vcpuId: v.ref.vcpuId, cpuNs: v.cpuNs, share: v.cpuNs / dur,
      perPcpuNs: [...v.perPcpuNs], firstRunNs: v.firstRunNs,
      wakeLatency: { count: v.latCount, maxNs: v.latMax, meanNs: v.latCount > 0 ? v.latSum / v.latCount : 0 },
    }));
    const domains: DomainResult[] = this.cfg.domains.map((d) => {
      const cpuNs = vcpus.filter((v) => v.domid === d.domid).reduce((a, v) => a + v.cpuNs, 0);
      return { domid: d.domid, cpuNs, share: cpuNs / dur };
    });
    const pcpus: PcpuResult[] = this.running.map((_, p) => ({
      pcpu: p, busyNs: this.busy[p], idleNs: this.idle[p], idleWhileRunnableNs: this.idleRunnable[p],
    }));
    return {
      scheduler: this.sched.opt_name, durationNs: this.cfg.durationNs, windowNs: dur, vcpus, domains, pcpus,
      schedules: this.schedules, dump: this.sched.dump(this.now),
    };
  }
}

/** Build, run and report one simulation. */
export function simulate(cfg: SimConfig): SimResult {
  return new Simulation(cfg).run();
}

/** A fixed-width table of a result, one line per vCPU then per pCPU. */
export function formatResult(r: SimResult): string {
  const ms = (ns: number): string => (ns / 1e6).toFixed(3);
  const lines = [`${r.scheduler}: ${ms(r.windowNs)} ms measured of ${ms(r.durationNs)}, ${r.schedules} schedules`,
    'vcpu      share   cpu_ms      wakeups  lat_max_ms  lat_mean_ms'];
  for (const v of r.vcpus) {
    lines.push(`d${v.domid}v${v.vcpuId}`.padEnd(8) + `${(v.share * 100).toFixed(2)}%`.padStart(8)
      + ms(v.cpuNs).padStart(12) + String(v.wakeLatency.count).padStart(9)
      + ms(v.wakeLatency.maxNs).padStart(12) + ms(v.wakeLatency.meanNs).padStart(13));
  }
  for (const p of r.pcpus) {
    lines.push(`pCPU${p.pcpu}: busy ${ms(p.busyNs)} ms, idle ${ms(p.idleNs)} ms, idle while runnable ${ms(p.idleWhileRunnableNs)} ms`);
  }
  return lines.join('\n');
}
