/**
 * blkfront's data path (Linux blkfront's blkif_queue_rq and blkif_interrupt):
 * the driver's queue of I/O pieces, the current ring, and its responses.
 * A new I/O goes on the ring at once (submit) unless something waits before
 * it; queued pieces go on the ring while slots, ids and pages allow
 * (requests.ts), are pushed once per burst (push.ts), and are retired as
 * responses come (completion.ts). The handshake (blkfront.ts) gives it a
 * ring (`attach`) and takes it away (`teardownRing`).
 *
 * Hot path: no allocation per response (read in place from one reused
 * copy) nor per request (each id's shadow is reused); an I/O that finds
 * nothing queued and room on the ring goes on it without a queue entry.
 */
import { BLKIF_RSP_EOPNOTSUPP, BLKIF_RSP_OKAY, BLKIF_SECTOR_SIZE } from '../../shared/abi/blkif.ts';
import type { EventChannels } from '../../shared/guest/evtchn.ts';
import { microtask } from '../../shared/guest/microtask.ts';
import type { XenbusStateName } from '../../shared/xenbus/state.ts';
import { copyOut, ResponseCopy, u64Text, withoutFeature } from './completion.ts';
import type { DataPages } from './grants.ts';
import { PushBatch } from './push.ts';
import { ISSUE_NO_FLUSH, ISSUE_NO_GRANTS, ISSUE_NO_PAGES, RequestWriter } from './requests.ts';
import type { BlkRing, IoOp, Piece, Shadow } from './ring.ts';
import { BlkfrontError, blkifStatusName, type BlkFeatures, type BlkfrontStats } from './types.ts';

const SECTOR = BLKIF_SECTOR_SIZE;

export const NO_FLUSH = 'flush: the backend offers neither feature-flush-cache nor feature-barrier';
export const NO_DISCARD = 'discard: the backend does not offer feature-discard';

/**
 * The error an I/O fails with when `issue` refused it for good: a flush or
 * discard the backend does not offer (ISSUE_NO_FLUSH / ISSUE_NO_DISCARD), or
 * pages that could not be granted (ISSUE_NO_GRANTS, `why` the grant table's
 * error; Linux waits for grant references to free up, but here nothing may
 * ever free one: a persistent grant lasts as long as the connection).
 */
function refusal(r: number, op: IoOp, why: string): BlkfrontError {
  if (r === ISSUE_NO_GRANTS) return new BlkfrontError('grants', `${op.kind}: its pages could not be granted to the backend (${why})`);
  return new BlkfrontError('unsupported', r === ISSUE_NO_FLUSH ? NO_FLUSH : NO_DISCARD);
}

/** What the data path needs of the device (blkfront.ts). */
export interface DataPathHost {
  /** Our XenbusState: requests are issued only while Connected. */
  state(): XenbusStateName;
  /** The device is gone for good. */
  finalised(): boolean;
  backendDomid(): number;
  /** Nothing is in flight any more and we are Closing: run a handshake step. */
  idleWhileClosing(): void;
  /** The backend broke the ring protocol: the ring is torn down and what waited failed with `err`. */
  ringBroken(err: BlkfrontError): void;
}

export class BlkDataPath {
  ring: BlkRing | undefined;
  /** The event channel port of the current ring (0: none). */
  port = 0;
  /** Pieces of I/O waiting for the ring, in order. */
  readonly queue: Piece[] = [];
  /** Features in use on the current connection (set by the handshake; EOPNOTSUPP drops one). */
  feat: BlkFeatures | undefined;
  /** A kernel loop polls our ring (and arms it before sleeping). */
  polled = false;
  /** The ring was stopped because the backend misbehaved (permanent). */
  broken = false;
  /** Rings torn down while the backend still mapped a page: retried at finalise. */
  private staleRings: BlkRing[] = [];
  private drainWaiters: Array<() => void> = [];
  private warnedHostile = false;
  /** Requests put on the ring and not yet pushed, and the microtask push. */
  private readonly batch = new PushBatch(() => this.pushRequests());
  private readonly writer: RequestWriter;
  /** Our private copy of a response, taken from its slot before it is looked at (reused). */
  private readonly rsp = new ResponseCopy();
  /** Settled callback I/Os whose `done` has not run yet (see settle), and the spare list swapped in. */
  private doneQueue: IoOp[] = [];
  private doneSpare: IoOp[] = [];

  constructor(
    private readonly ev: EventChannels,
    private readonly pages: DataPages,
    handle: number,
    private readonly stats: BlkfrontStats,
    private readonly warn: (msg: string, data?: Record<string, unknown>) => void,
    private readonly host: DataPathHost,
  ) {
    this.writer = new RequestWriter(ev.xen, pages, handle, stats);
  }

  /** Requests on the ring now. */
  get inFlight(): number { return this.ring?.inFlight ?? 0; }

  private get features(): BlkFeatures {
    if (this.feat === undefined) throw new Error('blkfront: not connected yet');
    return this.feat;
  }

  /** Use `ring`, notified on `port` (the handshake published both). */
  attach(ring: BlkRing, port: number): void {
    this.ring = ring;
    this.port = port;
    this.ev.on(port, () => this.kick());
  }

  /** Resolves when nothing is queued or in flight (or at finalise). */
  drained(): Promise<void> {
    return new Promise<void>((r) => this.drainWaiters.push(r));
  }

  /** Wake every drained() waiter. */
  wakeDrainWaiters(): void {
    for (const w of this.drainWaiters.splice(0)) w();
  }

  /** Retry ending the grants of rings the backend still mapped. */
  retryStaleRings(): void {
    this.staleRings = this.staleRings.filter((r) => r.release() > 0);
  }

  /**
   * Handle the backend's notification (the port's handler): consume every
   * response (RING_FINAL_CHECK_FOR_RESPONSES loop), then issue what waits.
   */
  kick(): void {
    // With a kernel loop, the ring's rsp_event is armed only by the loop's
    // last look before it sleeps (armRing); without one, here.
    if (this.ring && !this.broken) this.consume(this.ring, !this.polled);
    this.dispatch();
    this.pushRequests();
  }

  /**
   * The kernel loop's poller: true if responses were waiting (and were
   * handled). It does not re-arm rsp_event: while the vCPU spins, the backend
   * can push responses without notifying us.
   */
  pollRing(): boolean {
    const r = this.ring;
    if (this.batch.unpushed > 0) this.pushRequests();
    if (!r || this.broken || r.front.unconsumedResponses() === 0) return false;
    this.consume(r, false);
    this.dispatch();
    this.pushRequests();
    return true;
  }

  /**
   * The kernel loop's last look before the vCPU sleeps: set rsp_event
   * (RING_FINAL_CHECK_FOR_RESPONSES) and handle what arrived meanwhile. True
   * if there was anything (the loop then does not sleep).
   */
  armRing(): boolean {
    const r = this.ring;
    if (!r || this.broken) return false;
    if (r.front.finalCheckForResponses() === 0) return false;
    this.kick();
    return true;
  }

  /**
   * Publish the requests put on the ring since the last push
   * (RING_PUSH_REQUESTS_AND_CHECK_NOTIFY) and notify the backend if it asked.
   * Called at the end of a burst: by the kernel loop before it spins or
   * sleeps, by the poller, by kick(), by the microtask queued when a burst
   * begins, and at once when the ring is full.
   */
  pushRequests(): void {
    const ring = this.ring;
    if (this.batch.unpushed === 0 || !ring) return;
    this.batch.unpushed = 0;
    if (ring.front.pushRequestsAndCheckNotify()) {
      this.ev.send(this.port);
      this.stats.notifies++;
    }
  }

  /**
   * Take every response waiting. `arm`: RING_FINAL_CHECK_FOR_RESPONSES (ask
   * to be notified of the next one once none is left); otherwise only
   * RING_HAS_UNCONSUMED_RESPONSES (the kernel loop arms before it sleeps).
   */
  consume(ring: BlkRing, arm: boolean): void {
    for (;;) {
      const n = arm ? ring.front.finalCheckForResponses() : ring.front.unconsumedResponses();
      if (n < 0) {
        this.hostile('impossible response producer index', { rspProd: ring.front.rspProd, rspCons: ring.front.rspCons, reqProdPvt: ring.front.reqProdPvt });
        return;
      }
      if (n === 0) return;
      const rsp = this.rsp;
      // Copy, then validate, then act: the n slots are copied out at once and not read again.
      rsp.takeBatch(ring, n);
      for (let i = 0; i < n; i++) {
        rsp.select(i);
        this.stats.responses++;
        if (!this.complete(ring, rsp.id, rsp.idHigh, rsp.operation, rsp.status)) return;
      }
    }
  }

  /** One response (its u64 id as two words). False if it was hostile (the ring is stopped). */
  private complete(ring: BlkRing, id: number, idHigh: number, operation: number, status: number): boolean {
    const sh = ring.shadowOf(id, idHigh);
    if (!sh) {
      this.hostile('response with an unknown id', { id: u64Text(id, idHigh) });
      return false;
    }
    const op = sh.op!;
    if (operation !== sh.operation && operation !== sh.indirectOp) {
      const expected = sh.operation;
      this.retire(ring, sh, new BlkfrontError('ring-broken', `response of operation ${operation} to a request of operation ${expected}`));
      this.hostile('response with the wrong operation', { id: u64Text(id, idHigh), operation, expected });
      return false;
    }
    let err: BlkfrontError | undefined;
    if (status !== BLKIF_RSP_OKAY) {
      err = new BlkfrontError('status', `${op.kind} of sectors ${sh.sector}+${sh.count}: ${blkifStatusName(status)}`, status);
      // Linux turns a feature off when the backend says EOPNOTSUPP to it.
      if (status === BLKIF_RSP_EOPNOTSUPP && this.feat) this.feat = withoutFeature(this.feat, sh.operation);
    } else if (op.kind === 'read') {
      copyOut(this.ev.xen, sh);
    }
    this.retire(ring, sh, err);
    return true;
  }

  /** A request is over: its pages go back (grants ended unless persistent), its id is freed and its part of the I/O accounted. */
  private retire(ring: BlkRing, sh: Shadow, err: Error | undefined): void {
    this.pages.giveRequestPages(sh);
    const op = sh.op!;
    const count = sh.count;
    ring.freeShadow(sh);
    this.finishPiece(op, count, err);
  }

  /** `count` units of `op` are over (answered, failed, or never sent), with `err` if they failed. */
  private finishPiece(op: IoOp, count: number, err: Error | undefined): void {
    if (err && !op.error) {
      op.error = err;
      // The I/O has failed: what of it is still queued is not sent.
      for (let i = this.queue.length - 1; i >= 0; i--) {
        if (this.queue[i]!.op === op) op.left -= this.queue.splice(i, 1)[0]!.count;
      }
    }
    op.left -= count;
    if (op.left <= 0 && !op.settled) this.settle(op);
    // (Looked at once: inFlight is two property reads and a getter's.)
    if (this.inFlight > 0) return;
    if (this.queue.length === 0) this.wakeDrainWaiters();
    if (this.host.state() === 'Closing' && !this.host.finalised()) this.host.idleWhileClosing();
  }

  /**
   * The I/O is over. A promise settles (its continuations run later, as
   * microtasks); a callback I/O's `done` is queued and run from one
   * microtask for all settled meanwhile, in order (runDone): never inside
   * the driver's own loops, which it may re-enter by queueing more I/O.
   */
  settle(op: IoOp): void {
    op.settled = true;
    if (op.blk !== null) op.blk.pending--;
    if (op.done !== null) {
      if (this.doneQueue.push(op) === 1) microtask(this.runDone);
    } else if (op.error) {
      op.reject!(op.error);
    } else {
      op.resolve!();
    }
  }

  /**
   * Run the queued `done` callbacks (settle). One that throws is reported
   * through the warn hook and the rest still run: the driver's state is not
   * the caller's to break.
   */
  private readonly runDone = (): void => {
    const list = this.doneQueue;
    this.doneQueue = this.doneSpare;
    for (let i = 0; i < list.length; i++) {
      const op = list[i]!;
      try {
        op.done!(op.error);
      } catch (e) {
        this.warn('blkfront: an I/O completion callback threw', { error: String(e) });
      }
    }
    list.length = 0;
    this.doneSpare = list;
  };

  /**
   * A new I/O's `count` units from `sector`, its data at byte `offset` of
   * op.buf: on the ring at once if nothing waits before it and the ring has
   * room (no queue entry made), else queued and issued in order.
   */
  submit(op: IoOp, sector: number, count: number, offset: number): void {
    const ring = this.ring;
    if (this.queue.length === 0 && ring !== undefined && !this.broken && ring.canQueue && this.host.state() === 'Connected') {
      const r = this.writer.issue(ring, op, sector, count, offset, this.features);
      if (r === count) {
        this.batch.added(1, !ring.canQueue);
        return;
      }
      if (r > 0) {
        // Longer than one request: the rest waits at the queue's head.
        this.batch.added(1, false);
        sector += r;
        count -= r;
        offset += r * SECTOR;
      }
      // Refused (no pages, no grants, no flush or discard): queued, where
      // dispatch waits for pages or fails it as it does any piece.
    }
    this.queue.push({ op, sector, count, offset });
    this.dispatch();
  }

  /**
   * Put queued pieces on the ring while there are slots, ids and pages. They
   * are pushed (and the backend notified if it asked) once at the end of the
   * burst (pushRequests), or at once if nothing more fits.
   */
  dispatch(): void {
    const ring = this.ring;
    if (!ring || this.broken || this.host.state() !== 'Connected') return;
    let put = 0;
    while (this.queue.length > 0 && ring.canQueue) {
      const p = this.queue[0]!;
      const r = this.writer.issue(ring, p.op, p.sector, p.count, p.offset, this.features);
      if (r === ISSUE_NO_PAGES) break;
      if (r === p.count) {
        this.queue.shift();
      } else if (r > 0) {
        this.queue[0] = { op: p.op, sector: p.sector + r, count: p.count - r, offset: p.offset + r * SECTOR };
      } else {
        // A flush or discard the backend does not offer, or pages that cannot be granted:
        // the I/O fails without a request (it still counts as put).
        this.queue.shift();
        this.finishPiece(p.op, p.count, refusal(r, p.op, this.writer.grantFailure));
      }
      put++;
    }
    if (put === 0) return;
    // Nothing more can go on the ring until responses come (slots, ids or pages spent): push now.
    this.batch.added(put, this.queue.length > 0 || !ring.canQueue);
  }

  /** The backend broke the ring protocol: log once, stop the ring, fail everything; the device goes Closing. */
  private hostile(what: string, data: Record<string, unknown>): void {
    if (!this.warnedHostile) {
      this.warnedHostile = true;
      this.warn(`blkfront: backend d${this.host.backendDomid()}: ${what}; ring stopped`, data);
    }
    this.broken = true;
    const err = new BlkfrontError('ring-broken', `blkfront: the backend misbehaved (${what}); the ring is stopped`);
    this.teardownRing(err);
    this.failQueued(err);
    this.host.ringBroken(err);
  }

  /**
   * Stop using the ring: every request on it goes back to the queue's head
   * in submission order (to be issued on the next ring), or fails with `err`.
   * Then end the ring's and pool's grants and close the port.
   */
  teardownRing(err: Error | undefined): void {
    const ring = this.ring;
    if (!ring) return;
    this.ring = undefined;
    this.batch.unpushed = 0;
    const unanswered = ring.takeAll();
    for (const u of unanswered) for (const p of u.pages) this.pages.give(p);
    if (err) {
      for (const u of unanswered) this.finishPiece(u.piece.op, u.piece.count, err);
    } else {
      const again = unanswered.filter((u) => !u.piece.op.error);
      for (const u of unanswered) if (u.piece.op.error) this.finishPiece(u.piece.op, u.piece.count, undefined);
      this.queue.unshift(...again.map((u) => u.piece));
      this.stats.reissued += again.length;
    }
    this.pages.revokeAll();
    const leaked = ring.release();
    if (leaked > 0) {
      this.staleRings.push(ring);
      this.warn(`blkfront: backend d${this.host.backendDomid()} still maps ${leaked} ring page(s): not reused`);
    }
    this.ev.close(this.port);
    this.port = 0;
  }

  failQueued(err: Error): void {
    while (this.queue.length > 0) {
      const p = this.queue.shift()!;
      this.finishPiece(p.op, p.count, err);
    }
  }
}
