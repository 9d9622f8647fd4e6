/**
 * blkfront: the DomU block frontend (Linux xen-blkfront's role), a block
 * device with a queue over an io/ring.h blkif ring to the backend named in
 * our frontend directory.
 *
 *   const dev = await xs.wait(BlockFront.connect({ ev, gnttab, xs: xs.client, devid: 51712 }));
 *   const data = await xs.wait(dev.read(0, 8));      // 8 sectors of 512 bytes
 *
 * Contracts:
 *  - Sectors are 512-byte units (blkif's, and the backend's `sectors`); I/O
 *    must be aligned to the disk's sector-size. `read`, `readInto`, `write`,
 *    `flush`, `discard` return promises that settle exactly once: resolved
 *    when the backend answered OKAY for every request the I/O was split into,
 *    rejected with BlkfrontError otherwise (`status` carries a blkif status
 *    other than OKAY). None is left hanging: hot-unplug, `close()` and a
 *    hostile backend reject what is not answered.
 *  - Up to the ring's size of requests are in flight at once; more wait in
 *    the driver's queue, in order, and go out as responses free slots.
 *  - Nothing here blocks: events reach the driver through its port's handler
 *    (EventChannels.dispatch), the kernel loop's poller, or `kick()`. A kernel
 *    waits with KernelLoop.run / GuestXenbus.wait; a test dispatches events.
 *  - Requests are put on the ring as they are submitted and pushed (one
 *    RING_PUSH_REQUESTS_AND_CHECK_NOTIFY, one notification at most) at the
 *    end of the burst: by the kernel loop's flusher before it spins or
 *    sleeps, the poller, `kick()`, or a microtask fallback; at once when
 *    nothing more fits on the ring.
 *  - The backend is untrusted: a response with an unknown id or the wrong
 *    operation, or an impossible rsp_prod, stops the ring (logged once) and
 *    fails what was in flight.
 *  - A backend that goes Closed while `online` stays 1 and later returns to
 *    InitWait gets a new ring, and every request it left unanswered is issued
 *    again (blkif_recover). One that goes away (`online` 0, or its directory
 *    removed) is a hot-unplug: what it did not answer fails with 'removed'.
 */
import {
  BLKIF_MAX_SEGMENTS_PER_REQUEST, BLKIF_OP_DISCARD, BLKIF_OP_FLUSH_DISKCACHE, BLKIF_OP_INDIRECT,
  BLKIF_OP_READ, BLKIF_OP_WRITE, BLKIF_OP_WRITE_BARRIER, BLKIF_REQUEST, BLKIF_REQUEST_SEGMENT, BLKIF_RESPONSE, BLKIF_RING_ENTRY_SIZE,
  BLKIF_RSP_EOPNOTSUPP, BLKIF_RSP_OKAY,
  BLKIF_SECTOR_SIZE, BLKIF_MAX_INDIRECT_PAGES_PER_REQUEST, SECTORS_PER_PAGE, SEGS_PER_INDIRECT_FRAME, VDISK_READONLY,
  XEN_IO_PROTO_ABI_X86_64,
} from '../../shared/abi/blkif.ts';
import { encodeIndirectSegments, encodeRequest, type BlkifSegment } from '../../shared/blkif/proto.ts';
import type { EventChannels } from '../../shared/guest/evtchn.ts';
import type { GrantTable } from '../../shared/guest/gnttab.ts';
import { KernelLoop } from '../../shared/guest/kloop.ts';
import { XenbusError, type TxId, type WatchHandle, type XenbusClient } from '../../shared/xenbus/client.ts';
import { parseXenbusState, switchState, XenbusStateMachine, type XenbusStateName } from '../../shared/xenbus/state.ts';
import { PAGE_SIZE } from '../../shared/types.ts';
import { DataPages, type GrantedPage } from './grants.ts';
import { handshakeAction, type BackendState, type HandshakeAction } from './handshake.ts';
import { BlkRing, type IoOp, type Piece, type Shadow } from './ring.ts';
import { BlkfrontError, blkifStatusName, type BlkDiskInfo, type BlkFeatures, type BlkfrontOptions } from './types.ts';

export interface BlockFrontArgs {
  /** This domain's event channels. */
  readonly ev: EventChannels;
  /** This domain's grant table. */
  readonly gnttab: GrantTable;
  /** Our xenbus client (GuestXenbus.client). */
  readonly xs: XenbusClient;
  /** The virtual device number: the frontend is /local/domain/<me>/device/vbd/<devid>. */
  readonly devid: number;
  readonly options?: BlkfrontOptions;
  /** Where to register the ring poller (default KernelLoop.of(ev); null: none). */
  readonly loop?: KernelLoop | null;
}

/** Counters, for tests and benchmarks. */
export interface BlkfrontStats {
  /** Requests put on the ring, by blkif operation (indirect ones under 'indirect'). */
  readonly requests: Record<'read' | 'write' | 'flush' | 'barrier' | 'discard' | 'indirect', number>;
  /** Segments sent (direct and indirect). */
  segments: number;
  /** Event channel notifications sent to the backend. */
  notifies: number;
  responses: number;
  /** Requests issued again on a new ring after a backend came back. */
  reissued: number;
  /** Rings set up (1 + reconnections). */
  rings: number;
}

const SECTOR = BLKIF_SECTOR_SIZE;
/** Linux's default max_indirect_segments. */
const DEFAULT_MAX_INDIRECT = 32;
/** The most segments an indirect request can describe. */
const MAX_INDIRECT_SEGMENTS = BLKIF_MAX_INDIRECT_PAGES_PER_REQUEST * SEGS_PER_INDIRECT_FRAME;
/** Field offsets of the request and response entries (shared/abi/blkif.ts). */
const RQ = BLKIF_REQUEST.fields;
const SEG = BLKIF_REQUEST_SEGMENT.fields;
const SEG_SIZE = BLKIF_REQUEST_SEGMENT.size;
const RS = BLKIF_RESPONSE.fields;
/** Handshake steps taken per backend state change before looking again. */
const MAX_STEPS = 8;

/** The pages of a request that has none (shared; frozen). */
const NO_PAGES: readonly GrantedPage[] = Object.freeze([]);

/** A u64 given as two words, in decimal (for messages). */
const u64Text = (lo: number, hi: number): string => ((BigInt(hi >>> 0) << 32n) | BigInt(lo >>> 0)).toString();

function noWarn(): void { /* dropped */ }

function deferred<T>(): { promise: Promise<T>; resolve(v: T): void; reject(e: Error): void } {
  let resolve!: (v: T) => void;
  let reject!: (e: Error) => void;
  const promise = new Promise<T>((res, rej) => { resolve = res; reject = rej; });
  promise.catch(() => undefined);
  return { promise, resolve, reject };
}

export class BlockFront {
  readonly frontPath: string;
  private backPath = '';
  private backendId = -1;
  private readonly sm = new XenbusStateMachine('Initialising');
  private readonly opts: Required<Omit<BlkfrontOptions, 'warn' | 'maxPages'>>;
  private readonly warn: (msg: string, data?: Record<string, unknown>) => void;
  private readonly pages: DataPages;
  private ring: BlkRing | undefined;
  /** Rings torn down while the backend still mapped a page: retried at finalise. */
  private staleRings: BlkRing[] = [];
  private port = 0;
  private readonly queue: Piece[] = [];
  private diskInfo: BlkDiskInfo | undefined;
  private feat: BlkFeatures | undefined;
  private chain: Promise<void> = Promise.resolve();
  private watch: WatchHandle | undefined;
  private removePoller: (() => void) | undefined;
  private removeArmer: (() => void) | undefined;
  /** A kernel loop polls our ring (and arms it before sleeping). */
  private polled = false;
  private removeFlusher: (() => void) | undefined;
  /** Requests put on the current ring and not yet pushed (req_prod_pvt - req_prod). */
  private unpushed = 0;
  /** The microtask push (pushTask) is queued. */
  private pushQueued = false;
  /** Requests were put since pushTask was queued: the burst is still growing. */
  private putSinceQueued = false;
  private readonly firstConnect = deferred<void>();
  private readonly done = deferred<void>();
  private drainWaiters: Array<() => void> = [];
  /** The ring was stopped because the backend misbehaved (permanent). */
  private broken = false;
  /** close() was called. */
  private closing = false;
  /** Everything released: the device is gone for good. */
  private finalised = false;
  private endReason: BlkfrontError | undefined;
  private warnedHostile = false;
  /** The entry a request is encoded in before it is copied into its slot (reused: no allocation per request). */
  private readonly reqBuf = new Uint8Array(BLKIF_RING_ENTRY_SIZE);
  private readonly reqView = new DataView(this.reqBuf.buffer);
  /** Our private copy of a response, taken from its slot before it is looked at (reused). */
  private readonly rspBuf = new Uint8Array(BLKIF_RESPONSE.size);
  private readonly rspView = new DataView(this.rspBuf.buffer);
  readonly stats: BlkfrontStats = {
    requests: { read: 0, write: 0, flush: 0, barrier: 0, discard: 0, indirect: 0 },
    segments: 0, notifies: 0, responses: 0, reissued: 0, rings: 0,
  };

  private constructor(private readonly a: BlockFrontArgs, readonly domid: number) {
    const o = a.options ?? {};
    this.opts = {
      persistent: o.persistent ?? true,
      maxIndirectSegments: Math.min(Math.max(0, Math.floor(o.maxIndirectSegments ?? DEFAULT_MAX_INDIRECT)), MAX_INDIRECT_SEGMENTS),
      ringPageOrder: Math.max(0, Math.floor(o.ringPageOrder ?? 0)),
    };
    this.warn = o.warn ?? noWarn;
    const largest = Math.max(BLKIF_MAX_SEGMENTS_PER_REQUEST, this.opts.maxIndirectSegments + Math.ceil(this.opts.maxIndirectSegments / SEGS_PER_INDIRECT_FRAME));
    this.pages = new DataPages(a.ev.xen, a.gnttab, 0, false, Math.max(o.maxPages ?? 256, largest), this.warn);
    this.frontPath = `/local/domain/${domid}/device/vbd/${a.devid}`;
  }

  /**
   * Find the device, run the handshake, and resolve with the device once it
   * is Connected. Rejects if the backend closes (or the device is removed)
   * before that, or on a xenstore error.
   */
  static async connect(a: BlockFrontArgs): Promise<BlockFront> {
    const domid = Number(await a.xs.read('domid'));
    const bf = new BlockFront(a, domid);
    const loop = a.loop === undefined ? KernelLoop.of(a.ev) : a.loop;
    if (loop) {
      bf.polled = true;
      bf.removePoller = loop.addPoller(() => bf.pollRing(), () => bf.inFlight > 0);
      bf.removeArmer = loop.addArmer(() => bf.armRing());
      bf.removeFlusher = loop.addFlusher(() => bf.pushRequests());
    }
    bf.watch = await a.xs.watch(`${await bf.readBackendPath()}/state`, () => bf.schedule());
    await bf.firstConnect.promise;
    return bf;
  }

  // ---------------------------------------------------------------------------
  // What the device is.

  /** Our own XenbusState. */
  get state(): XenbusStateName { return this.sm.state; }
  get backendPath(): string { return this.backPath; }
  get backendDomid(): number { return this.backendId; }
  get disk(): BlkDiskInfo { return this.need(this.diskInfo); }
  get features(): BlkFeatures { return this.need(this.feat); }
  get sectors(): number { return this.disk.sectors; }
  get sectorSize(): number { return this.disk.sectorSize; }
  get readOnly(): boolean { return this.disk.readOnly; }
  /** Requests on the ring now. */
  get inFlight(): number { return this.ring?.inFlight ?? 0; }
  /** Pieces of I/O waiting in the driver's queue. */
  get queued(): number { return this.queue.length; }
  /** Grant counters of data and indirect pages. */
  get grantStats(): Readonly<{ granted: number; ended: number; leaked: number }> { return this.pages.stats; }
  /** Data pages held by requests in flight. */
  get pagesInUse(): number { return this.pages.pagesInUse; }
  /** Persistent grants alive in the pool. */
  get pooledGrants(): number { return this.pages.pooledGrants; }
  /** The event channel port of the current ring (0: none). */
  get eventChannel(): number { return this.port; }
  /** True once the device is gone (unplugged, closed, or its ring stopped) and everything is released. */
  get isFinalised(): boolean { return this.finalised; }
  /** Settles when the device is finalised. */
  get closed(): Promise<void> { return this.done.promise; }

  private need<T>(v: T | undefined): T {
    if (v === undefined) throw new Error('blkfront: not connected yet');
    return v;
  }

  // ---------------------------------------------------------------------------
  // Block I/O.

  /** Read `count` sectors from `sector`. */
  async read(sector: number, count: number): Promise<Uint8Array> {
    const buf = new Uint8Array(count * SECTOR);
    await this.submit('read', sector, count, buf);
    return buf;
  }

  /** Read dst.length bytes (a whole number of sectors) from `sector` into `dst`. */
  readInto(sector: number, dst: Uint8Array): Promise<void> {
    if (dst.length % SECTOR !== 0) return Promise.reject(new BlkfrontError('range', `readInto: ${dst.length} bytes is not a whole number of sectors`));
    return this.submit('read', sector, dst.length / SECTOR, dst);
  }

  /**
   * Write `data` (a whole number of sectors) at `sector`. The driver copies
   * from `data` when each request goes out (and again if it is re-issued
   * after a reconnection): leave it unchanged until the promise settles.
   */
  write(sector: number, data: Uint8Array): Promise<void> {
    if (data.length % SECTOR !== 0) return Promise.reject(new BlkfrontError('range', `write: ${data.length} bytes is not a whole number of sectors`));
    if (this.diskInfo?.readOnly) return Promise.reject(new BlkfrontError('unsupported', 'write: the disk is read-only'));
    return this.submit('write', sector, data.length / SECTOR, data);
  }

  /**
   * Make earlier writes durable: BLKIF_OP_FLUSH_DISKCACHE if the backend
   * offers it, else BLKIF_OP_WRITE_BARRIER, else rejected ('unsupported').
   */
  flush(): Promise<void> {
    const f = this.feat;
    if (f && !f.flushCache && !f.barrier) return Promise.reject(new BlkfrontError('unsupported', 'flush: the backend offers neither feature-flush-cache nor feature-barrier'));
    return this.submit('flush', 0, 1, undefined);
  }

  /** BLKIF_OP_DISCARD of `count` sectors from `sector`; rejected ('unsupported') without feature-discard. */
  discard(sector: number, count: number): Promise<void> {
    if (this.feat && !this.feat.discard) return Promise.reject(new BlkfrontError('unsupported', 'discard: the backend does not offer feature-discard'));
    if (this.diskInfo?.readOnly) return Promise.reject(new BlkfrontError('unsupported', 'discard: the disk is read-only'));
    return this.submit('discard', sector, count, undefined);
  }

  private submit(kind: IoOp['kind'], sector: number, count: number, buf: Uint8Array | undefined): Promise<void> {
    if (this.closing || this.finalised || this.broken) return Promise.reject(this.endReason ?? new BlkfrontError('closed', `${kind}: the device is closed`));
    if (kind !== 'flush') {
      const bad = this.rangeError(sector, count);
      if (bad) return Promise.reject(new BlkfrontError('range', `${kind}: ${bad}`));
      if (count === 0) return Promise.resolve();
    }
    return new Promise<void>((resolve, reject) => {
      const op: IoOp = { kind, buf, left: count, error: undefined, settled: false, resolve, reject };
      this.queue.push({ op, sector, count, offset: 0 });
      this.dispatch();
    });
  }

  private rangeError(sector: number, count: number): string | undefined {
    const d = this.disk;
    if (!Number.isSafeInteger(sector) || !Number.isSafeInteger(count) || sector < 0 || count < 0) return `bad range ${sector}+${count}`;
    if (sector + count > d.sectors) return `sectors ${sector}..${sector + count} past the end of the disk (${d.sectors})`;
    const per = d.sectorSize / SECTOR;
    if (per > 1 && (sector % per !== 0 || count % per !== 0)) return `sectors ${sector}+${count} not aligned to the ${d.sectorSize}-byte sector size`;
    return undefined;
  }

  // ---------------------------------------------------------------------------
  // The data path: queue -> ring -> responses.

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
  private pollRing(): boolean {
    const r = this.ring;
    if (this.unpushed > 0) this.pushRequests();
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
  private armRing(): boolean {
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
  private pushRequests(): void {
    const ring = this.ring;
    if (this.unpushed === 0 || !ring) return;
    this.unpushed = 0;
    if (ring.front.pushRequestsAndCheckNotify()) {
      this.a.ev.send(this.port);
      this.stats.notifies++;
    }
  }

  /**
   * The microtask fallback (a driver used without a kernel loop still
   * pushes): it waits, a microtask turn at a time, until a turn in which
   * nothing more was put on the ring (each completion's continuation
   * re-submits in its own turn), then pushes once for the whole burst. A
   * burst is bounded by the ring's size (a full ring is pushed at once).
   */
  private readonly pushTask = (): void => {
    if (this.putSinceQueued && this.unpushed > 0) {
      this.putSinceQueued = false;
      queueMicrotask(this.pushTask);
      return;
    }
    this.pushQueued = false;
    this.putSinceQueued = false;
    this.pushRequests();
  };

  /**
   * Take every response waiting. `arm`: RING_FINAL_CHECK_FOR_RESPONSES (ask
   * to be notified of the next one once none is left); otherwise only
   * RING_HAS_UNCONSUMED_RESPONSES (the kernel loop arms before it sleeps).
   */
  private consume(ring: BlkRing, arm: boolean): void {
    for (;;) {
      const n = arm ? ring.front.finalCheckForResponses() : ring.front.unconsumedResponses();
      if (n < 0) {
        this.hostile('impossible response producer index', { rspProd: ring.front.rspProd, rspCons: ring.front.rspCons, reqProdPvt: ring.front.reqProdPvt });
        return;
      }
      if (n === 0) return;
      const dv = this.rspView;
      for (let i = 0; i < n; i++) {
        // Copy, then validate, then act: the slot is not read again.
        ring.front.takeResponseInto(this.rspBuf);
        this.stats.responses++;
        const ok = this.complete(ring, dv.getUint32(RS.id.offset, true), dv.getUint32(RS.id.offset + 4, true),
          dv.getUint8(RS.operation.offset), dv.getInt16(RS.status.offset, true));
        if (!ok) return;
      }
    }
  }

  /** One response (its u64 id as two words). False if it was hostile (the ring is stopped). */
  private complete(ring: BlkRing, id: number, idHigh: number, operation: number, status: number): boolean {
    const sh = ring.takeShadow(id, idHigh);
    if (!sh) {
      this.hostile('response with an unknown id', { id: u64Text(id, idHigh) });
      return false;
    }
    if (operation !== sh.operation && operation !== sh.indirectOp) {
      this.retire(sh, new BlkfrontError('ring-broken', `response of operation ${operation} to a request of operation ${sh.operation}`));
      this.hostile('response with the wrong operation', { id: u64Text(id, idHigh), operation, expected: sh.operation });
      return false;
    }
    let err: BlkfrontError | undefined;
    if (status !== BLKIF_RSP_OKAY) {
      err = new BlkfrontError('status', `${sh.piece.op.kind} of sectors ${sh.piece.sector}+${sh.piece.count}: ${blkifStatusName(status)}`, status);
      if (status === BLKIF_RSP_EOPNOTSUPP) this.dropFeature(sh.operation);
    } else if (sh.piece.op.kind === 'read') {
      this.copyOut(sh);
    }
    this.retire(sh, err);
    return true;
  }

  /** Linux turns a feature off when the backend says EOPNOTSUPP to it. */
  private dropFeature(operation: number): void {
    const f = this.feat;
    if (!f) return;
    if (operation === BLKIF_OP_FLUSH_DISKCACHE) this.feat = { ...f, flushCache: false };
    else if (operation === BLKIF_OP_WRITE_BARRIER) this.feat = { ...f, barrier: false };
    else if (operation === BLKIF_OP_DISCARD) this.feat = { ...f, discard: false };
  }

  private copyOut(sh: Shadow): void {
    const { op, count, offset } = sh.piece;
    const mem = this.a.ev.xen.k.mem;
    const bytes = count * SECTOR;
    const buf = op.buf!;
    const pages = sh.pages;
    // One page filling the caller's whole buffer (a 4 KiB read, or less): no view to make.
    if (pages.length === 1 && offset === 0 && bytes === buf.length) {
      mem.readInto(pages[0]!.gpa, buf);
      return;
    }
    for (let k = 0; k < pages.length; k++) {
      const at = offset + k * PAGE_SIZE;
      mem.readInto(pages[k]!.gpa, buf.subarray(at, at + Math.min(PAGE_SIZE, bytes - k * PAGE_SIZE)));
    }
  }

  /** A request is over: its pages go back (grants ended unless persistent) and its piece is accounted. */
  private retire(sh: Shadow, err: Error | undefined): void {
    for (const p of sh.pages) this.pages.give(p);
    for (const p of sh.indirectPages) this.pages.give(p);
    this.finishPiece(sh.piece, err);
  }

  private finishPiece(piece: Piece, err: Error | undefined): void {
    const op = piece.op;
    if (err && !op.error) {
      op.error = err;
      // The I/O has failed: what of it is still queued is not sent.
      for (let i = this.queue.length - 1; i >= 0; i--) {
        if (this.queue[i]!.op === op) op.left -= this.queue.splice(i, 1)[0]!.count;
      }
    }
    op.left -= piece.count;
    if (op.left <= 0 && !op.settled) {
      op.settled = true;
      if (op.error) op.reject(op.error);
      else op.resolve();
    }
    if (this.queue.length === 0 && this.inFlight === 0) for (const w of this.drainWaiters.splice(0)) w();
    if (this.inFlight === 0 && this.sm.state === 'Closing' && !this.finalised) this.schedule();
  }

  /**
   * Put queued pieces on the ring while there are slots, ids and pages. They
   * are pushed (and the backend notified if it asked) once at the end of the
   * burst (pushRequests), or at once if nothing more fits.
   */
  private dispatch(): void {
    const ring = this.ring;
    if (!ring || this.broken || this.sm.state !== 'Connected') return;
    let put = 0;
    while (this.queue.length > 0 && ring.canQueue) {
      if (!this.issue(ring, this.queue[0]!)) break;
      put++;
    }
    if (put === 0) return;
    this.unpushed += put;
    // Nothing more can go on the ring until responses come (slots, ids or pages spent): push now.
    if (this.queue.length > 0 || !ring.canQueue) {
      this.pushRequests();
      return;
    }
    if (this.pushQueued) {
      this.putSinceQueued = true;
    } else {
      this.pushQueued = true;
      this.putSinceQueued = false;
      queueMicrotask(this.pushTask);
    }
  }

  /** Put the head of `piece` (the queue's head) on the ring as one request. False if pages ran out. */
  private issue(ring: BlkRing, piece: Piece): boolean {
    const f = this.features;
    const op = piece.op;
    const handle = this.a.devid & 0xffff;
    if (op.kind === 'flush' || op.kind === 'discard') {
      let operation: number;
      if (op.kind === 'discard') operation = BLKIF_OP_DISCARD;
      else if (f.flushCache) operation = BLKIF_OP_FLUSH_DISKCACHE;
      else if (f.barrier) operation = BLKIF_OP_WRITE_BARRIER;
      else {
        this.queue.shift();
        this.finishPiece(piece, new BlkfrontError('unsupported', 'flush: the backend offers neither feature-flush-cache nor feature-barrier'));
        return true;
      }
      if (op.kind === 'discard' && !f.discard) {
        this.queue.shift();
        this.finishPiece(piece, new BlkfrontError('unsupported', 'discard: the backend does not offer feature-discard'));
        return true;
      }
      this.queue.shift();
      const sh = ring.addShadow(piece, operation, undefined, NO_PAGES, NO_PAGES);
      const id = BigInt(sh.id);
      ring.front.putRequest(op.kind === 'discard'
        ? encodeRequest({ kind: 'discard', operation: BLKIF_OP_DISCARD, flag: 0, handle, id, sector: piece.sector, nrSectors: piece.count }, this.reqBuf)
        : encodeRequest({ kind: 'rw', operation: operation as typeof BLKIF_OP_FLUSH_DISKCACHE, nrSegments: 0, handle, id, sector: 0, segs: [] }, this.reqBuf));
      this.stats.requests[op.kind === 'discard' ? 'discard' : operation === BLKIF_OP_FLUSH_DISKCACHE ? 'flush' : 'barrier']++;
      return true;
    }

    const maxSegs = f.maxIndirectSegments > BLKIF_MAX_SEGMENTS_PER_REQUEST ? f.maxIndirectSegments : BLKIF_MAX_SEGMENTS_PER_REQUEST;
    const n = Math.min(piece.count, maxSegs * SECTORS_PER_PAGE);
    const nseg = Math.ceil(n / SECTORS_PER_PAGE);
    const indirect = nseg > BLKIF_MAX_SEGMENTS_PER_REQUEST;
    const nind = indirect ? Math.ceil(nseg / SEGS_PER_INDIRECT_FRAME) : 0;
    if (!this.pages.available(nseg + nind)) return false;

    const write = op.kind === 'write';
    const mem = this.a.ev.xen.k.mem;
    const pages: GrantedPage[] = [];
    // Direct requests write their segments straight into the request entry; indirect ones list them.
    const segs: BlkifSegment[] | undefined = indirect ? [] : undefined;
    const dv = this.reqView;
    if (!indirect) this.reqBuf.fill(0);
    for (let k = 0; k < nseg; k++) {
      const p = this.pages.take(write)!;
      const sectors = Math.min(SECTORS_PER_PAGE, n - k * SECTORS_PER_PAGE);
      if (write) {
        const at = piece.offset + k * PAGE_SIZE;
        const buf = op.buf!;
        mem.write(p.gpa, at === 0 && sectors * SECTOR === buf.length ? buf : buf.subarray(at, at + sectors * SECTOR));
      }
      pages.push(p);
      if (segs) {
        segs.push({ gref: p.ref!, firstSect: 0, lastSect: sectors - 1 });
      } else {
        const s = RQ.seg.offset + k * SEG_SIZE;
        dv.setUint32(s + SEG.gref.offset, p.ref! >>> 0, true);
        dv.setUint8(s + SEG.first_sect.offset, 0);
        dv.setUint8(s + SEG.last_sect.offset, sectors - 1);
      }
    }
    // (NO_PAGES is frozen: only pushed to when nind > 0, i.e. never.)
    const indirectPages = nind > 0 ? [] : (NO_PAGES as GrantedPage[]);
    for (let i = 0; i < nind; i++) {
      const p = this.pages.take(true)!;
      const part = segs!.slice(i * SEGS_PER_INDIRECT_FRAME, (i + 1) * SEGS_PER_INDIRECT_FRAME);
      const bytes = new Uint8Array(PAGE_SIZE);
      encodeIndirectSegments(part, bytes);
      mem.write(p.gpa, bytes);
      indirectPages.push(p);
    }

    // The request covers the first n sectors; the rest of the piece stays at the queue's head.
    const head: Piece = n === piece.count ? piece : { op, sector: piece.sector, count: n, offset: piece.offset };
    if (n === piece.count) this.queue.shift();
    else this.queue[0] = { op, sector: piece.sector + n, count: piece.count - n, offset: piece.offset + n * SECTOR };

    const rwOp = write ? BLKIF_OP_WRITE : BLKIF_OP_READ;
    const sh = ring.addShadow(head, indirect ? BLKIF_OP_INDIRECT : rwOp, indirect ? rwOp : undefined, pages, indirectPages);
    if (indirect) {
      const id = BigInt(sh.id);
      encodeRequest({ kind: 'indirect', operation: BLKIF_OP_INDIRECT, indirectOp: rwOp, nrSegments: nseg, handle, id, sector: piece.sector, indirectGrefs: indirectPages.map((p) => p.ref!) }, this.reqBuf);
    } else {
      // struct blkif_request (as encodeRequest writes it; the segments are in already).
      dv.setUint8(RQ.operation.offset, rwOp);
      dv.setUint8(RQ.nr_segments.offset, nseg);
      dv.setUint16(RQ.handle.offset, handle, true);
      dv.setUint32(RQ.id.offset, sh.id, true);
      dv.setUint32(RQ.id.offset + 4, 0, true);
      dv.setUint32(RQ.sector_number.offset, piece.sector >>> 0, true);
      dv.setUint32(RQ.sector_number.offset + 4, Math.floor(piece.sector / 0x1_0000_0000) >>> 0, true);
    }
    ring.front.putRequest(this.reqBuf);
    this.stats.requests[indirect ? 'indirect' : write ? 'write' : 'read']++;
    this.stats.segments += nseg;
    return true;
  }

  /** The backend broke the ring protocol: log once, stop the ring, fail everything, go Closing. */
  private hostile(what: string, data: Record<string, unknown>): void {
    if (!this.warnedHostile) {
      this.warnedHostile = true;
      this.warn(`blkfront: backend d${this.backendId}: ${what}; ring stopped`, data);
    }
    this.broken = true;
    const err = new BlkfrontError('ring-broken', `blkfront: the backend misbehaved (${what}); the ring is stopped`);
    this.endReason = err;
    this.teardownRing(err);
    this.failQueued(err);
    this.schedule(() => this.goState('Closing'));
  }

  // ---------------------------------------------------------------------------
  // The handshake (handshake.ts): one step at a time, each reading the backend's state afresh.

  /** Queue `extra` (if any) then a handshake step, after whatever runs now. */
  private schedule(extra?: () => Promise<void>): void {
    this.chain = this.chain
      .then(async () => {
        if (extra) await extra();
        await this.step();
      })
      .catch((e: unknown) => this.fatal(e));
  }

  private async step(): Promise<void> {
    for (let i = 0; i < MAX_STEPS && !this.finalised; i++) {
      const back = await this.readBackendState();
      const action = handshakeAction(this.sm.state, back);
      if (action === 'none' || !(await this.act(action, back))) return;
    }
  }

  /** Run one action; false to stop looking (waiting for something other than the backend's state). */
  private async act(action: Exclude<HandshakeAction, 'none'>, back: BackendState): Promise<boolean> {
    const xs = this.a.xs;
    switch (action) {
      case 'talk':
        if (this.broken || this.closing) await this.goState('Closing');
        else await this.talkToBackend();
        return true;
      case 'connect':
        await this.connectDisk();
        return true;
      case 'front-close':
        // Issue nothing more (dispatch needs Connected); keep consuming what the backend answers.
        await switchState(xs, this.frontPath, this.sm, 'Closing');
        this.kick();
        return true;
      case 'close-when-drained':
        // finishPiece looks again when the last one is answered. The ring stays
        // granted until the backend is Closed: it unmaps only after we go Closed.
        if (this.inFlight > 0) return false;
        await this.goState('Closed');
        return true;
      case 'backend-closed':
        if (this.ring && !this.broken) this.consume(this.ring, false);
        this.teardownRing(undefined);
        await this.goState('Closed');
        return true;
      case 'check-unplug':
        this.teardownRing(undefined);
        await this.checkUnplug(back);
        return false;
      case 'restart':
        if (this.broken || this.closing) {
          await this.finalise();
          return false;
        }
        this.teardownRing(undefined);
        await switchState(xs, this.frontPath, this.sm, 'Initialising');
        return true;
    }
  }

  /** Move our state and publish it; if our node cannot be written (the toolstack removed it), move it locally. */
  private async goState(to: XenbusStateName): Promise<void> {
    if (!this.sm.canGo(to)) return;
    try {
      await switchState(this.a.xs, this.frontPath, this.sm, to);
    } catch (e) {
      if (!(e instanceof XenbusError)) throw e;
      this.sm.go(to);
    }
  }

  /**
   * The backend is Closed (or gone) and we are Closed or Initialising: closed
   * by us, or the ring broken -> finalise; unplugged (`online` 0 or no
   * backend) -> fail what is left and finalise; else keep what was
   * unanswered and go Initialising, ready for the backend's InitWait.
   */
  private async checkUnplug(back: BackendState): Promise<void> {
    if (this.broken || this.closing) return this.finalise();
    const online = back === 'gone' ? undefined : await this.backendKey('online');
    if (online === undefined || online.trim() === '0') {
      const err = new BlkfrontError('removed', `blkfront: device vbd/${this.a.devid} was removed`);
      this.endReason = err;
      this.failQueued(err);
      return this.finalise();
    }
    if (this.sm.state === 'Closed') await this.goState('Initialising');
  }

  private async readBackendPath(): Promise<string> {
    this.backPath = await this.a.xs.read(`${this.frontPath}/backend`);
    this.backendId = Number(await this.a.xs.read(`${this.frontPath}/backend-id`));
    return this.backPath;
  }

  private async readBackendState(): Promise<BackendState> {
    const v = await this.a.xs.tryRead(`${this.backPath}/state`);
    return v === undefined ? 'gone' : parseXenbusState(v);
  }

  private async backendKey(key: string): Promise<string | undefined> {
    return this.a.xs.tryRead(`${this.backPath}/${key}`);
  }

  private async backendNumber(key: string, dflt: number): Promise<number> {
    const v = await this.backendKey(key);
    const n = v === undefined ? NaN : Number(v.trim());
    return Number.isSafeInteger(n) && n >= 0 ? n : dflt;
  }

  /**
   * talk_to_blkback: read the backend's offers, set up a ring of 2^order
   * pages, grant it, allocate an unbound port for the backend, publish them
   * in one transaction, and go Initialised.
   */
  private async talkToBackend(): Promise<void> {
    await this.readBackendPath();
    const maxOrder = await this.backendNumber('max-ring-page-order', 0);
    const backPersistent = (await this.backendNumber('feature-persistent', 0)) === 1;
    const order = Math.min(this.opts.ringPageOrder, maxOrder);
    const persistent = this.opts.persistent && backPersistent;
    this.pages.reset(this.backendId, persistent);
    const xen = this.a.ev.xen;
    const ring = new BlkRing(xen, this.a.gnttab, this.backendId, order);
    const port = this.a.ev.allocUnbound(this.backendId);
    try {
      await this.a.xs.transaction(async (tx) => {
        await this.rmQuiet(`${this.frontPath}/ring-ref`, tx);
        await this.rmQuiet(`${this.frontPath}/ring-page-order`, tx);
        for (let i = 0; i < 1 << 4; i++) await this.rmQuiet(`${this.frontPath}/ring-ref${i}`, tx);
        if (order === 0) {
          await this.a.xs.write(`${this.frontPath}/ring-ref`, String(ring.refs[0]), tx);
        } else {
          await this.a.xs.write(`${this.frontPath}/ring-page-order`, String(order), tx);
          for (let i = 0; i < ring.refs.length; i++) await this.a.xs.write(`${this.frontPath}/ring-ref${i}`, String(ring.refs[i]), tx);
        }
        await this.a.xs.write(`${this.frontPath}/event-channel`, String(port), tx);
        await this.a.xs.write(`${this.frontPath}/protocol`, XEN_IO_PROTO_ABI_X86_64, tx);
        await this.a.xs.write(`${this.frontPath}/feature-persistent`, this.opts.persistent ? '1' : '0', tx);
      });
    } catch (e) {
      ring.release();
      this.a.ev.close(port);
      throw e;
    }
    this.ring = ring;
    this.port = port;
    this.a.ev.on(port, () => this.kick());
    this.feat = {
      flushCache: false, barrier: false, discard: false, persistent, maxIndirectSegments: 0, ringPageOrder: order, ringSize: ring.size,
    };
    this.stats.rings++;
    await switchState(this.a.xs, this.frontPath, this.sm, 'Initialised');
  }

  private async rmQuiet(path: string, tx: TxId): Promise<void> {
    try {
      await this.a.xs.rm(path, tx);
    } catch (e) {
      if (!(e instanceof XenbusError && e.errno === 'ENOENT')) throw e;
    }
  }

  /** blkfront_connect: read the disk and the features, go Connected, issue what waits (re-issued requests first). */
  private async connectDisk(): Promise<void> {
    const sectors = await this.backendNumber('sectors', 0);
    const info = await this.backendNumber('info', 0);
    const sectorSize = await this.backendNumber('sector-size', SECTOR);
    const physicalSectorSize = await this.backendNumber('physical-sector-size', sectorSize);
    const flushCache = (await this.backendNumber('feature-flush-cache', 0)) === 1;
    const barrier = (await this.backendNumber('feature-barrier', 0)) === 1;
    const discard = (await this.backendNumber('feature-discard', 0)) === 1;
    const backIndirect = await this.backendNumber('feature-max-indirect-segments', 0);
    let indirect = Math.min(this.opts.maxIndirectSegments, backIndirect, MAX_INDIRECT_SEGMENTS);
    if (indirect <= BLKIF_MAX_SEGMENTS_PER_REQUEST) indirect = 0;
    const validSize = sectorSize >= SECTOR && sectorSize % SECTOR === 0 && sectorSize <= PAGE_SIZE;
    this.diskInfo = { sectors, sectorSize: validSize ? sectorSize : SECTOR, physicalSectorSize, info, readOnly: (info & VDISK_READONLY) !== 0 };
    this.feat = { ...this.features, flushCache, barrier, discard, maxIndirectSegments: indirect };
    await switchState(this.a.xs, this.frontPath, this.sm, 'Connected');
    this.firstConnect.resolve();
    this.kick();
  }

  /**
   * Stop using the ring: every request on it goes back to the queue's head
   * in submission order (to be issued on the next ring), or fails with `err`.
   * Then end the ring's and pool's grants and close the port.
   */
  private teardownRing(err: Error | undefined): void {
    const ring = this.ring;
    if (!ring) return;
    this.ring = undefined;
    this.unpushed = 0;
    const shadows = ring.takeAll();
    for (const sh of shadows) {
      for (const p of sh.pages) this.pages.give(p);
      for (const p of sh.indirectPages) this.pages.give(p);
    }
    if (err) {
      for (const sh of shadows) this.finishPiece(sh.piece, err);
    } else {
      const again = shadows.filter((sh) => !sh.piece.op.error);
      for (const sh of shadows) if (sh.piece.op.error) this.finishPiece(sh.piece, undefined);
      this.queue.unshift(...again.map((sh) => sh.piece));
      this.stats.reissued += again.length;
    }
    this.pages.revokeAll();
    const leaked = ring.release();
    if (leaked > 0) {
      this.staleRings.push(ring);
      this.warn(`blkfront: backend d${this.backendId} still maps ${leaked} ring page(s): not reused`);
    }
    this.a.ev.close(this.port);
    this.port = 0;
  }

  private failQueued(err: Error): void {
    while (this.queue.length > 0) this.finishPiece(this.queue.shift()!, err);
  }

  /** Release everything this driver holds; settle every promise. Idempotent. */
  private async finalise(): Promise<void> {
    if (this.finalised) return;
    const err = this.endReason ?? new BlkfrontError('closed', `blkfront: device vbd/${this.a.devid} is closed`);
    this.teardownRing(err);
    this.failQueued(err);
    this.pages.revokeAll();
    this.pages.releaseAll();
    this.staleRings = this.staleRings.filter((r) => r.release() > 0);
    this.removePoller?.();
    this.removeArmer?.();
    this.removeFlusher?.();
    this.finalised = true;
    this.firstConnect.reject(err);
    for (const w of this.drainWaiters.splice(0)) w();
    const w = this.watch;
    this.watch = undefined;
    await w?.unwatch().catch(() => undefined);
    await this.goState('Closed').catch(() => undefined);
    this.done.resolve();
  }

  private fatal(e: unknown): void {
    this.warn('blkfront: handshake failed', { error: String(e) });
    this.endReason ??= new BlkfrontError('removed', `blkfront: handshake failed: ${String(e)}`);
    void this.finalise();
  }

  /**
   * Orderly shutdown: refuse new I/O, let what is queued and in flight
   * finish, go Closing, and when the backend is Closed go Closed and release
   * the ring, grants, port and pages. If the device is not connected (waiting
   * for a backend to return), what waits fails with 'closed' at once.
   * Resolves when everything is released.
   */
  async close(): Promise<void> {
    if (this.finalised) return;
    this.closing = true;
    if (this.sm.state === 'Closed' || !this.ring) {
      this.schedule(() => this.finalise());
      return this.done.promise;
    }
    if (this.queue.length > 0 || this.inFlight > 0) await new Promise<void>((r) => this.drainWaiters.push(r));
    this.schedule(() => this.goState('Closing'));
    return this.done.promise;
  }
}
