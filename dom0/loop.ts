/**
 * The shape of Dom0's kernel loop: who runs when, and on what it sleeps.
 *
 * Dom0's vCPU runs Dom0's code only while it holds a pCPU. Two kinds of
 * input reach it:
 *  - events (guests' xenstore and console rings, VIRQ_DOM_EXC): pending bits
 *    in shared_info, seen by `ev.dispatch()`; an event also ends SCHEDOP_block.
 *  - host I/O (xenstored's socket, later xl's control socket): Node callbacks
 *    on Dom0's thread, which run only while its JS is not busy, and must not
 *    do daemon work themselves (that can mean hypercalls). They `post` the
 *    work; the loop runs it in its next turn, holding the pCPU.
 *
 * A turn (the kernel's `for (;;)`): dispatch events, `runPosted()`, do the
 * daemons' work, then `settle()` (let promise continuations and pending host
 * I/O callbacks run, still holding the pCPU: a continuation may make
 * hypercalls), then, with nothing left to do, `idle(ms)`: SCHEDOP_block with a
 * one-shot VIRQ_TIMER `ms` ahead, which gives the pCPU back and returns on
 * the first event or at the deadline. Host I/O that arrives while Dom0 sleeps
 * in SCHEDOP_block waits for the deadline (the thread's Node loop is not
 * running), hence short deadlines while host tools are connected.
 */
import { setImmediate as nextMacrotask } from 'node:timers/promises';
import { VIRQ_TIMER } from '../shared/abi/event-channel.ts';
import { VCPU_INFO, vcpuInfoOffset } from '../shared/abi/shared-info.ts';
import type { EventChannels } from '../shared/guest/evtchn.ts';

/** How long Dom0 sleeps without an event: short while host tools are connected (their I/O waits for it). */
export const IDLE_MS = 20;
export const IDLE_MS_HOST_TOOLS = 2;

/**
 * Spin this long (µs) after the last ring work found before blocking. 1 ms:
 * a frontend with I/O in flight refills the ring within that (a 50 µs bound
 * let Dom0 block between a guest's bursts: ~860 k null requests/s and
 * ~170-260 k 4 KiB reads/s, against ~1.0 M and ~290 k with 1 ms, same runs).
 */
export const SPIN_US = 1000;
/** Spin only if a poller served work within this many ms (an idle host never spins). */
export const SPIN_RECENT_MS = 2;
/** Longest one spin may last (µs) before returning to the loop's turn (host I/O callbacks, daemons). */
export const SPIN_TURN_MAX_US = 1000;
/**
 * The same while no host client is connected and no host I/O is pending
 * (watchHostClients): nothing but Node timers waits for the turn then, and a
 * turn costs ~45-130 µs (mostly the event-loop hop of settle()). Measured on
 * 4 KiB random reads: ~487 k/s with 1 ms, ~493 k/s with 5 ms (same runs).
 */
export const SPIN_TURN_MAX_QUIET_US = 5000;

/**
 * A ring served by polling: `serve` handles what is waiting and returns how
 * many requests it took (0: none); `arm`, if given, is the ring's last look
 * before Dom0 blocks (set its event index, RING_FINAL_CHECK_FOR_*; serve what
 * raced with it and return how many were taken).
 */
interface Poller {
  readonly port: number;
  readonly serve: () => number;
  readonly arm: (() => number) | undefined;
}

const UPCALL = VCPU_INFO.fields.evtchn_upcall_pending.offset;

export interface Dom0LoopOptions {
  /** SPIN_US by default; 0: never spin. */
  readonly spinUs?: number;
  /** SPIN_RECENT_MS by default: spin only if a poller served work within this many ms. */
  readonly spinRecentMs?: number;
}

export class Dom0Loop {
  private posted: Array<() => void> = [];
  private readonly hostClients: Array<() => number> = [];
  readonly timerPort: number;
  private pollers: Poller[] = [];
  /** performance.now() when a poller last served work. */
  private lastWorkMs = Number.NEGATIVE_INFINITY;
  /** Events dispatched to pollers' ports (the spin tells them from others'). */
  private polledEvents = 0;
  /** performance.now() deadline of the one-shot timer armed last; 0 when none is armed (or it fired). */
  private armedUntilMs = 0;
  private readonly spinUs: number;
  private readonly spinRecentMs: number;
  /** Counters (tests, benchmarks). */
  readonly stats = { spins: 0, spinServed: 0, spinMs: 0, blocks: 0, blockedMs: 0, timerArms: 0 };

  /** Binds VIRQ_TIMER on `ev` (the deadline of `idle`). */
  constructor(private readonly ev: EventChannels, private readonly onError: (e: unknown) => void = () => {}, o: Dom0LoopOptions = {}) {
    this.timerPort = ev.bindVirq(VIRQ_TIMER);
    ev.on(this.timerPort, () => { this.armedUntilMs = 0; });
    this.spinUs = o.spinUs ?? SPIN_US;
    this.spinRecentMs = o.spinRecentMs ?? SPIN_RECENT_MS;
  }

  /**
   * Serve the ring behind `port` by polling too: `serve` becomes the port's
   * event handler and is called by `idle`'s spin (it must be cheap when
   * nothing waits). A `serve` that leaves its ring's event index alone (no
   * notifications while Dom0 polls) must give `arm`, which `idle` calls
   * before it blocks; if any arm finds work, Dom0 does not block. Returns the
   * function that removes the poller (closing the port removes its handler).
   */
  addPoller(port: number, serve: () => number, arm?: () => number): () => void {
    const p: Poller = { port, serve, arm };
    this.pollers.push(p);
    this.ev.on(port, () => {
      this.polledEvents++;
      if (serve() > 0) this.lastWorkMs = performance.now();
    });
    return () => {
      this.pollers = this.pollers.filter((q) => q !== p);
    };
  }

  /** Is an event waiting for this vCPU (evtchn_upcall_pending)? One load. */
  private upcallPending(): boolean {
    const at = this.ev.sharedInfo + vcpuInfoOffset(this.ev.xen.k.vcpuId) + UPCALL;
    return ((this.ev.xen.k.mem.atomicLoad32(at & ~3) >>> ((at & 3) * 8)) & 0xff) !== 0;
  }

  /**
   * The bounded spin before blocking (see the top of this file). Returns
   * true if the loop should not block: work was served, work was posted, or
   * an event for another port was dispatched (its daemon's work is the turn's).
   */
  private spin(): boolean {
    if (this.spinUs <= 0 || this.pollers.length === 0) return false;
    const start = performance.now();
    if (start - this.lastWorkMs > this.spinRecentMs) return false;
    this.stats.spins++;
    const k = this.ev.xen.k;
    let until = start + this.spinUs / 1000;
    const end = start + (this.hostWaiting() ? SPIN_TURN_MAX_US : SPIN_TURN_MAX_QUIET_US) / 1000;
    let served = false;
    for (let round = 1; ; round++) {
      if (this.posted.length > 0) return true;
      let did = 0;
      if (this.upcallPending()) {
        const before = this.polledEvents;
        const n = this.ev.dispatch();
        const polled = this.polledEvents - before;
        // Some other port's handler ran: its daemon's work is the turn's to do.
        if (n > polled) return true;
        if (polled > 0) did++;
      }
      const ps = this.pollers;
      for (let i = 0; i < ps.length; i++) did += ps[i]!.serve();
      // The clock and the preemption point every 4th idle round (each costs
      // about as much as a round), and after every round that found work.
      const tick = (round & 3) === 0;
      if (did === 0 && !tick) continue;
      const now = performance.now();
      if (did > 0) {
        served = true;
        this.stats.spinServed++;
        this.lastWorkMs = now;
        until = now + this.spinUs / 1000;
      }
      if (now >= until || now >= end) return served;
      if (tick) k.preempt?.();
    }
  }

  /**
   * Queue work to run in the loop (holding Dom0's pCPU), in order. Safe to
   * call from any context: host I/O callbacks use it.
   */
  readonly post = (work: () => void): void => {
    this.posted.push(work);
  };

  /**
   * Count `clients` (a socket server's connected host tools) in deciding how
   * long to sleep: while any is connected, `idle` sleeps IDLE_MS_HOST_TOOLS.
   */
  watchHostClients(clients: () => number): void {
    this.hostClients.push(clients);
  }

  /** The sleep `idle` uses by default: IDLE_MS, or IDLE_MS_HOST_TOOLS while host tools are connected. */
  idleMs(): number {
    return this.hostWaiting() ? IDLE_MS_HOST_TOOLS : IDLE_MS;
  }

  /** A host client is connected or host I/O is pending (watchHostClients): its callbacks wait for the loop's turn. */
  private hostWaiting(): boolean {
    return this.hostClients.some((c) => c() > 0);
  }

  /** Work is waiting. */
  get hasPosted(): boolean { return this.posted.length > 0; }

  /** Run the work posted so far (and what it posts meanwhile). An exception goes to onError; the rest still runs. */
  runPosted(): void {
    while (this.posted.length > 0) {
      const batch = this.posted;
      this.posted = [];
      for (const w of batch) {
        try {
          w();
        } catch (e) {
          this.onError(e);
        }
      }
    }
  }

  /** Let promise continuations and ready host I/O callbacks run (one macrotask hop), still holding the pCPU. */
  async settle(): Promise<void> {
    await nextMacrotask();
  }

  /**
   * Sleep until an event arrives or `ms` pass (SCHEDOP_block; the pCPU is
   * given back meanwhile), then dispatch events. Returns at once if work is
   * posted or an event is already waiting. While a polled ring was busy in
   * the last SPIN_RECENT_MS, spins first (`spin`) and returns without
   * blocking if the spin served work or saw another port's event; then arms
   * the polled rings (addPoller) and returns without blocking if that found
   * work.
   */
  idle(ms: number = this.idleMs()): void {
    if (this.posted.length === 0) {
      const t0 = performance.now();
      const busy = this.spin();
      const t1 = performance.now();
      this.stats.spinMs += t1 - t0;
      if (!busy && !this.armAll()) {
        this.armTimer(ms);
        this.stats.blocks++;
        this.ev.xen.block();
        this.stats.blockedMs += performance.now() - t1;
      }
    }
    this.ev.dispatch();
  }

  /** Every poller's last look before Dom0 blocks (addPoller); true if one found work (then Dom0 must not block). */
  private armAll(): boolean {
    let did = 0;
    const ps = this.pollers;
    for (let i = 0; i < ps.length; i++) did += ps[i]!.arm?.() ?? 0;
    if (did > 0) this.lastWorkMs = performance.now();
    return did > 0;
  }

  /**
   * The one-shot VIRQ_TIMER `ms` ahead, unless the one armed last has not
   * fired and fires between ms/2 and ms from now (a turn sooner is harmless;
   * a set_timer_op per turn is not free: it wakes the timer thread).
   */
  private armTimer(ms: number): void {
    const now = performance.now();
    const left = this.armedUntilMs - now;
    if (this.armedUntilMs > 0 && left <= ms && left >= ms / 2) return;
    const t = Math.max(1e-3, ms);
    this.ev.setTimer(this.ev.systemTime() + BigInt(Math.round(t * 1e6)));
    this.armedUntilMs = now + t;
    this.stats.timerArms++;
  }
}
