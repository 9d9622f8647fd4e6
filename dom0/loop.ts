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
import type { EventChannels } from '../shared/guest/evtchn.ts';

/** How long Dom0 sleeps without an event: short while host tools are connected (their I/O waits for it). */
export const IDLE_MS = 20;
export const IDLE_MS_HOST_TOOLS = 2;

export class Dom0Loop {
  private posted: Array<() => void> = [];
  private readonly hostClients: Array<() => number> = [];
  readonly timerPort: number;

  /** Binds VIRQ_TIMER on `ev` (the deadline of `idle`). */
  constructor(private readonly ev: EventChannels, private readonly onError: (e: unknown) => void = () => {}) {
    this.timerPort = ev.bindVirq(VIRQ_TIMER);
    ev.on(this.timerPort, () => {});
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
    return this.hostClients.some((c) => c() > 0) ? IDLE_MS_HOST_TOOLS : IDLE_MS;
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
   * posted or an event is already waiting.
   */
  idle(ms: number = this.idleMs()): void {
    if (this.posted.length === 0) {
      this.ev.setTimer(this.ev.systemTime() + BigInt(Math.max(1, Math.round(ms * 1e6))));
      this.ev.xen.block();
    }
    this.ev.dispatch();
  }
}
