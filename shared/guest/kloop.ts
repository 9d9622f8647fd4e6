/**
 * The PV guest kernel's event loop. A PV kernel has no upcalls: its drivers
 * hear from their peers only when it scans its event channels. `run(p)` is
 * what a kernel does while it needs `p`:
 *
 *   1. let promise continuations run (a few turns of the microtask queue);
 *   2. when nothing is left to run, call the registered pollers, up to
 *      `spins` rounds, while none finds work (a bounded spin: a frontend
 *      looking at its ring before the vCPU sleeps, since a cross-thread
 *      wake-up costs ~25 µs one way, DESIGN.md §2);
 *   3. sleep until ANY port with a handler is pending (SCHEDOP_poll on those
 *      ports, a slice at a time so that a handler added meanwhile is soon
 *      seen), or SCHEDOP_block when there are more ports than one poll takes;
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
  /** Rounds of pollers before sleeping (0: sleep at once). Default 64. */
  readonly spins?: number;
  /** Microtask turns between looks (a reply resolves through a few continuations). Default 16. */
  readonly microtaskTurns?: number;
}

/** Xen's limit on ports per SCHEDOP_poll (sched.h). */
const SCHED_POLL_MAX_PORTS = 128;

const loops = new WeakMap<EventChannels, KernelLoop>();

export class KernelLoop {
  private readonly pollers = new Set<Poller>();
  readonly sliceNs: bigint;
  readonly spins: number;
  readonly microtaskTurns: number;
  /** Times the loop went to sleep (for tests and benchmarks). */
  sleeps = 0;

  constructor(readonly ev: EventChannels, o: KernelLoopOptions = {}) {
    this.sliceNs = o.sliceNs ?? 10_000_000n;
    this.spins = o.spins ?? 64;
    this.microtaskTurns = o.microtaskTurns ?? 16;
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

  /** Register a poller; returns the function that removes it. */
  addPoller(p: Poller): () => void {
    this.pollers.add(p);
    return () => { this.pollers.delete(p); };
  }

  /** One round of every poller: true if any found work. */
  poll(): boolean {
    let found = false;
    for (const p of [...this.pollers]) if (p()) found = true;
    return found;
  }

  /** Sleep until a handled port is pending (or the slice ends), then dispatch. Returns ports handled. */
  sleep(): number {
    const ev = this.ev;
    const ports = ev.handledPorts().filter((p) => !ev.isMasked(p));
    this.sleeps++;
    if (ports.length > SCHED_POLL_MAX_PORTS) ev.xen.block();
    else ev.poll(ports, ev.systemTime() + this.sliceNs);
    return ev.dispatch();
  }

  /** Run this kernel's event loop until `p` settles; its value, or its error thrown. */
  async run<T>(p: Promise<T>): Promise<T> {
    let settled = false;
    p.then(() => { settled = true; }, () => { settled = true; });
    while (!settled) {
      for (let i = 0; i < this.microtaskTurns && !settled; i++) await undefined;
      if (settled) break;
      if (this.spin()) continue;
      this.sleep();
    }
    return p;
  }

  /** Up to `spins` rounds of pollers and event scans; true as soon as one finds work. */
  private spin(): boolean {
    if (this.pollers.size === 0) return this.ev.dispatch() > 0;
    for (let i = 0; i < this.spins; i++) {
      if (this.poll()) return true;
      if (this.ev.dispatch() > 0) return true;
    }
    return false;
  }
}
