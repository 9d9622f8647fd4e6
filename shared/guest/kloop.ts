/**
 * The PV guest kernel's event loop. A PV kernel has no upcalls: its drivers
 * hear from their peers only when it scans its event channels. `run(p)` is
 * what a kernel does while it needs `p`:
 *
 *   1. let promise continuations run (`microtaskTurns` turns of the
 *      microtask queue; only `polledTurns` after a poller found ring work,
 *      whose completions need a turn or two);
 *   2. when nothing is left to run, run the flushers (drivers publish what
 *      they batched: requests put on a ring but not pushed), then call the
 *      registered pollers while none finds work, for up to `spinNs` of
 *      time (a bounded spin: a frontend looking at its ring before the vCPU
 *      sleeps, since a cross-thread wake-up costs ~25-35 µs one way and a
 *      sleep that ends in one costs far more, DESIGN.md §2); `busySpinNs`
 *      (1 ms) instead while a poller says it expects an answer soon
 *      (requests in flight), offering the pCPU back as it goes. Every
 *      `yieldNs` of fruitless spinning the loop goes back to step 1 for
 *      `microtaskTurns` turns (a continuation chain longer than the turns it
 *      was given goes on within that), then spins on within the same bound;
 *   3. sleep until ANY port with a handler is pending (SCHEDOP_poll on those
 *      ports, a slice at a time so that a handler added meanwhile is soon
 *      seen), or SCHEDOP_block when there are more ports than one poll takes;
 *      never straight after the fewer turns of step 1;
 *   4. dispatch the events (each port's handler runs), and start again,
 *
 * until `p` settles; then it returns p's value or throws its error.
 *
 * SCHEDOP_poll wakes on a pending port even if it is masked, so masked ports
 * are left out of the poll (they would make it return at once, forever).
 *
 * One loop per EventChannels (`KernelLoop.of(ev)`): GuestXenbus.wait and the
 * frontends share it, so a kernel waiting for a block read still serves its
 * xenstore watches, and the other way round.
 */
import type { EventChannels } from './evtchn.ts';

/** A driver's look at its shared memory: true if it found (and handled) work. */
export type Poller = () => boolean;

export interface KernelLoopOptions {
  /** How long one sleep lasts before the loop looks again (ns of Xen system time). Default 10 ms. */
  readonly sliceNs?: bigint;
  /**
   * How long the loop spins on its pollers before sleeping, in ns (0: sleep
   * at once). Default 50 µs: about two one-way cross-thread wake-ups.
   */
  readonly spinNs?: number;
  /**
   * The spin bound while a poller expects an answer (see addPoller), in ns.
   * Default 1 ms: with I/O in flight the vCPU polls its rings (as Linux's
   * blk-mq polling does) rather than sleep and be woken, which costs the
   * pipeline far more than the wake-up itself (measured on the block
   * benchmark: 4 KiB random reads ~260 k/s with 50 µs, ~290 k/s with 1 ms,
   * and the guest's sleeps from ~1000 to ~30 per run). The spin offers the
   * pCPU back (k.preempt) as it goes, so a vCPU waiting for it is not held up.
   */
  readonly busySpinNs?: number;
  /** At most this many rounds of pollers per spin as well (0: sleep at once). Default: no limit. */
  readonly spins?: number;
  /** Microtask turns between looks (a reply resolves through a few continuations). Default 16. */
  readonly microtaskTurns?: number;
  /**
   * Microtask turns after a poller found work (ring responses: a promise
   * resolved or a completion callback queued, a turn or two each). Default 4.
   */
  readonly polledTurns?: number;
  /** Fruitless spinning between goes at the microtask queue (ns). Default 5 µs. */
  readonly yieldNs?: number;
}

/**
 * The default polledTurns. The turns cost ~40 ns each whether or not anything
 * runs in them, and with I/O in flight the loop comes back after every batch
 * of responses. Measured on the null block benchmark (QD 32, completion
 * callbacks, interleaved runs): 4 turns after a poll instead of 16, +5-10% on
 * the request rate; 1 or 2, ~10% less than 4.
 */
export const POLLED_TURNS = 4;
/** The default yieldNs. */
export const YIELD_NS = 5_000;

/** What one spin found (see `spin`). */
type SpinResult = 'polled' | 'event' | 'yield' | 'idle';

/** The default spin bound while an answer is due (busySpinNs). */
export const BUSY_SPIN_NS = 1_000_000;

/** Xen's limit on ports per SCHEDOP_poll (sched.h). */
const SCHED_POLL_MAX_PORTS = 128;

const loops = new WeakMap<EventChannels, KernelLoop>();

export class KernelLoop {
  /** The pollers, as an array rebuilt on add/remove (a spin round allocates nothing). */
  private pollers: Poller[] = [];
  /** Called before the loop spins or sleeps (see addFlusher). */
  private flushers: Array<() => void> = [];
  private armers: Array<() => boolean> = [];
  readonly sliceNs: bigint;
  readonly spins: number;
  /** The spin bounds in force (ns): see KernelLoopOptions.spinNs and busySpinNs, and setSpins. */
  private spinBoundNs: number;
  private busySpinBoundNs: number;
  readonly microtaskTurns: number;
  readonly polledTurns: number;
  readonly yieldNs: number;
  /** Pollers' "an answer is due" tests (see addPoller). */
  private expecting: Array<() => boolean> = [];
  /** Times the loop went to sleep (for tests and benchmarks). */
  sleeps = 0;
  /**
   * Xen system time (ns) spent asleep, and in spins that ended without
   * finding work (for benchmarks). A fruitless spin is timed from its first
   * look at the clock (after 4 rounds) to its end, so these cost no clock
   * read beyond what the spin does anyway.
   */
  sleptNs = 0;
  fruitlessSpinNs = 0;

  /** A spin bound in `o` that is not a finite number >= 0 throws RangeError (as setSpins). */
  constructor(readonly ev: EventChannels, o: KernelLoopOptions = {}) {
    this.sliceNs = o.sliceNs ?? 10_000_000n;
    this.spins = o.spins ?? Infinity;
    this.spinBoundNs = 50_000;
    this.busySpinBoundNs = BUSY_SPIN_NS;
    // The options' bounds by the same rule as later changes (setSpins: RangeError for a bad one).
    this.setSpins({ spinNs: o.spinNs, busySpinNs: o.busySpinNs });
    this.microtaskTurns = o.microtaskTurns ?? 16;
    this.polledTurns = Math.min(o.polledTurns ?? POLLED_TURNS, this.microtaskTurns);
    this.yieldNs = Math.max(0, o.yieldNs ?? YIELD_NS);
  }

  /** The spin bound while no poller expects an answer (ns). */
  get spinNs(): number { return this.spinBoundNs; }
  /** The spin bound while a poller expects an answer (ns). */
  get busySpinNs(): number { return this.busySpinBoundNs; }

  /**
   * Change the spin bounds (ns) from the next spin on; an omitted one stays.
   * The spins pay on a host whose cores the pipeline has to itself and cost
   * several times what they save on one where other processes are busy
   * (docs/block.md, "On a busy host"): a kernel that knows its host is
   * shared may turn both off (0: sleep as soon as nothing is left to run).
   * A bound that is not a finite number >= 0 throws RangeError, changing
   * nothing.
   */
  setSpins(o: { readonly spinNs?: number; readonly busySpinNs?: number }): void {
    for (const [name, v] of Object.entries(o)) {
      if (v !== undefined && !(typeof v === 'number' && Number.isFinite(v) && v >= 0)) throw new RangeError(`KernelLoop.setSpins: ${name} must be a finite number >= 0, not ${String(v)}`);
    }
    if (o.spinNs !== undefined) this.spinBoundNs = o.spinNs;
    if (o.busySpinNs !== undefined) this.busySpinBoundNs = o.busySpinNs;
  }

  /** The loop of this domain's event channels (made on first use). */
  static of(ev: EventChannels): KernelLoop {
    let l = loops.get(ev);
    if (!l) {
      l = new KernelLoop(ev);
      loops.set(ev, l);
    }
    return l;
  }

  /**
   * Register a poller; returns the function that removes it. `expecting`,
   * if given, says whether the driver awaits an answer soon (requests in
   * flight): while one does, the loop spins up to busySpinNs.
   */
  addPoller(p: Poller, expecting?: () => boolean): () => void {
    this.pollers = [...this.pollers, p];
    if (expecting) this.expecting = [...this.expecting, expecting];
    return () => {
      this.pollers = this.pollers.filter((q) => q !== p);
      if (expecting) this.expecting = this.expecting.filter((e) => e !== expecting);
    };
  }

  /**
   * Register a flusher: work a driver batched while the kernel ran (requests
   * put on a ring but not yet pushed) that must be published before the
   * vCPU idles. Every flusher runs before each spin and each sleep. Returns
   * the function that removes it.
   */
  addFlusher(f: () => void): () => void {
    this.flushers = [...this.flushers, f];
    return () => { this.flushers = this.flushers.filter((g) => g !== f); };
  }

  /**
   * Register an armer: a driver's last look before the vCPU sleeps. While the
   * loop spins, drivers poll their rings without asking to be notified (so a
   * peer that keeps producing sends no events to a vCPU that is looking
   * anyway); just before sleeping, each armer sets its ring's event index and
   * looks once more (RING_FINAL_CHECK_FOR_*), returning true if work arrived
   * meanwhile, in which case the loop does not sleep. This keeps ring.h's
   * guarantee: no notification is lost. Returns the function that removes it.
   */
  addArmer(a: () => boolean): () => void {
    this.armers = [...this.armers, a];
    return () => { this.armers = this.armers.filter((b) => b !== a); };
  }

  /** Run every armer; true if any found work (then the vCPU must not sleep). */
  arm(): boolean {
    let found = false;
    const as = this.armers;
    for (let i = 0; i < as.length; i++) if (as[i]!()) found = true;
    return found;
  }

  /** Run every flusher (the loop does before it spins or sleeps). */
  flush(): void {
    const fs = this.flushers;
    for (let i = 0; i < fs.length; i++) fs[i]!();
  }

  /** One round of every poller: true if any found work. */
  poll(): boolean {
    let found = false;
    const ps = this.pollers;
    for (let i = 0; i < ps.length; i++) if (ps[i]!()) found = true;
    return found;
  }

  /** Sleep until a handled port is pending (or the slice ends), then dispatch. Returns ports handled. */
  sleep(): number {
    this.flush();
    const ev = this.ev;
    if (this.arm()) return ev.dispatch();
    const ports = ev.handledPorts().filter((p) => !ev.isMasked(p));
    this.sleeps++;
    const k = ev.xen.k;
    const t0 = k.rdtsc();
    if (ports.length > SCHED_POLL_MAX_PORTS) ev.xen.block();
    else ev.poll(ports, ev.systemTime() + this.sliceNs);
    this.sleptNs += Number(k.rdtsc() - t0);
    return ev.dispatch();
  }

  /** Run this kernel's event loop until `p` settles; its value, or its error thrown. */
  async run<T>(p: Promise<T>): Promise<T> {
    let settled = false;
    p.then(() => { settled = true; }, () => { settled = true; });
    let turns = this.microtaskTurns;
    const sp: SpinState = { start: 0n, end: 0n };
    while (!settled) {
      for (let i = 0; i < turns && !settled; i++) await undefined;
      if (settled) break;
      this.flush();
      const found = this.spin(sp);
      if (found === 'polled') {
        turns = this.polledTurns;
        continue;
      }
      const fewTurns = turns < this.microtaskTurns;
      turns = this.microtaskTurns;
      // Found an event, or time to let continuations run; or never sleep straight after few turns.
      if (found !== 'idle' || fewTurns) continue;
      this.sleep();
    }
    return p;
  }

  /**
   * Rounds of pollers and event scans for up to the spin bound: 'polled' or
   * 'event' as soon as a poller found work or a handler ran; 'yield' after
   * yieldNs of nothing (the bound goes on at the next call); 'idle' when the
   * bound is spent (or there is none).
   */
  private spin(sp: SpinState): SpinResult {
    if (this.pollers.length === 0) return this.ev.dispatch() > 0 ? 'event' : 'idle';
    let bound = this.spinBoundNs;
    const ex = this.expecting;
    for (let i = 0; i < ex.length; i++) if (ex[i]!()) { bound = this.busySpinBoundNs; break; }
    if (bound <= 0 || this.spins <= 0) return 'idle';
    const k = this.ev.xen.k;
    // The clock is first read at the 4th round: a spin that finds work
    // sooner (the usual case with I/O in flight) reads it not at all. The
    // bound then runs from there (4 rounds longer: well under a µs).
    let sliceEnd = 0n;
    for (let i = 0; i < this.spins;) {
      if (this.poll()) return found(sp, 'polled');
      if (this.ev.dispatch() > 0) return found(sp, 'event');
      // Look at the clock every 4th round (it costs about as much as a round).
      if ((++i & 3) === 0) {
        const now = k.rdtsc();
        if (sp.end === 0n) {
          sp.start = now;
          sp.end = now + BigInt(bound);
        }
        if (sliceEnd === 0n) {
          sliceEnd = now + BigInt(this.yieldNs);
        } else if (now >= sp.end) {
          this.fruitlessSpinNs += Number(now - sp.start);
          sp.end = 0n;
          return 'idle';
        } else if (now >= sliceEnd) {
          return 'yield';
        }
        k.preempt?.(); // a preemption point: the scheduler may want this pCPU for another vCPU
      }
    }
    if (sp.end !== 0n) this.fruitlessSpinNs += Number(k.rdtsc() - sp.start);
    sp.end = 0n;
    return 'idle';
  }
}

/** The spin in progress across yields (system time ns; end 0n: none): where it started and where its bound ends. */
interface SpinState { start: bigint; end: bigint }

/** The spin in progress found work: it is over (no fruitless time to count). */
function found(sp: SpinState, r: 'polled' | 'event'): SpinResult {
  sp.end = 0n;
  return r;
}
