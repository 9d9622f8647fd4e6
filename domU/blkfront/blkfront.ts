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
 *    RING_PUSH_REQUESTS_AND_CHECK_NOTIFY, one notification at most) every
 *    PUSH_EARLY (8) of a burst and at its end: by the kernel loop's flusher
 *    before it spins or sleeps, the poller, `kick()`, or a microtask
 *    fallback; at once when nothing more fits on the ring.
 *  - The backend is untrusted: a response with an unknown id or the wrong
 *    operation, or an impossible rsp_prod, stops the ring (logged once) and
 *    fails what was in flight.
 *  - Zero-copy I/O: `allocBuffer(bytes)` gives a BlkBuffer of guest pages
 *    that `readPages` / `writePages` grant to the backend as they are (no
 *    copy in the guest); with persistent grants each page is granted once and
 *    keeps its grant until disconnect or `freeBuffer`.
 *  - A backend that goes Closed while `online` stays 1 and later returns to
 *    InitWait gets a new ring, and every request it left unanswered is issued
 *    again (blkif_recover). One that goes away (`online` 0, or its directory
 *    removed) is a hot-unplug: what it did not answer fails with 'removed'.
 */
import { BLKIF_MAX_SEGMENTS_PER_REQUEST, BLKIF_SECTOR_SIZE, SEGS_PER_INDIRECT_FRAME } from '../../shared/abi/blkif.ts';
import { PAGE_SIZE } from '../../shared/types.ts';
import type { EventChannels } from '../../shared/guest/evtchn.ts';
import type { GrantTable } from '../../shared/guest/gnttab.ts';
import { KernelLoop } from '../../shared/guest/kloop.ts';
import { XenbusError, type WatchHandle, type XenbusClient } from '../../shared/xenbus/client.ts';
import { switchState, XenbusStateMachine, type XenbusStateName } from '../../shared/xenbus/state.ts';
import { BlkBuffer } from './buffer.ts';
import { BackendDir } from './connect.ts';
import { BlkDataPath, NO_DISCARD, NO_FLUSH } from './datapath.ts';
import { DataPages } from './grants.ts';
import { handshakeAction, type BackendState, type HandshakeAction } from './handshake.ts';
import { MAX_INDIRECT_SEGMENTS, rangeError } from './requests.ts';
import { BlkRing, type IoData, type IoDone, type IoOp } from './ring.ts';
import { BlkfrontError, type BlkDiskInfo, type BlkFeatures, type BlkfrontOptions, type BlkfrontStats } from './types.ts';

export type { BlkfrontStats } from './types.ts';
export { BlkBuffer } from './buffer.ts';

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

const SECTOR = BLKIF_SECTOR_SIZE;
/** Linux's default max_indirect_segments. */
const DEFAULT_MAX_INDIRECT = 32;
/** Handshake steps taken per backend state change before looking again. */
const MAX_STEPS = 8;

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
  /** The backend's directory in xenstore (connect.ts). */
  private readonly be: BackendDir;
  private readonly sm = new XenbusStateMachine('Initialising');
  private readonly opts: Required<Omit<BlkfrontOptions, 'warn' | 'maxPages'>>;
  private readonly warn: (msg: string, data?: Record<string, unknown>) => void;
  private readonly pages: DataPages;
  /** The queue, the ring and its responses (datapath.ts). */
  private readonly dp: BlkDataPath;
  private diskInfo: BlkDiskInfo | undefined;
  private chain: Promise<void> = Promise.resolve();
  private watch: WatchHandle | undefined;
  private removePoller: (() => void) | undefined;
  private removeArmer: (() => void) | undefined;
  private removeFlusher: (() => void) | undefined;
  private readonly firstConnect = deferred<void>();
  private readonly done = deferred<void>();
  /** close() was called. */
  private closing = false;
  /** Everything released: the device is gone for good. */
  private finalised = false;
  private endReason: BlkfrontError | undefined;
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
    this.be = new BackendDir(a.xs, this.frontPath);
    this.dp = new BlkDataPath(a.ev, this.pages, a.devid & 0xffff, this.stats, this.warn, {
      state: () => this.sm.state,
      finalised: () => this.finalised,
      backendDomid: () => this.be.id,
      idleWhileClosing: () => this.schedule(),
      ringBroken: (err) => {
        this.endReason = err;
        this.schedule(() => this.goState('Closing'));
      },
    });
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
      bf.dp.polled = true;
      bf.removePoller = loop.addPoller(() => bf.dp.pollRing(), () => bf.inFlight > 0);
      bf.removeArmer = loop.addArmer(() => bf.dp.armRing());
      bf.removeFlusher = loop.addFlusher(() => bf.dp.pushRequests());
    }
    bf.watch = await a.xs.watch(`${await bf.be.readPath()}/state`, () => bf.schedule());
    await bf.firstConnect.promise;
    return bf;
  }

  // ---------------------------------------------------------------------------
  // What the device is.

  /** Our own XenbusState. */
  get state(): XenbusStateName { return this.sm.state; }
  get backendPath(): string { return this.be.path; }
  get backendDomid(): number { return this.be.id; }
  get disk(): BlkDiskInfo { return this.need(this.diskInfo); }
  get features(): BlkFeatures { return this.need(this.dp.feat); }
  get sectors(): number { return this.disk.sectors; }
  get sectorSize(): number { return this.disk.sectorSize; }
  get readOnly(): boolean { return this.disk.readOnly; }
  /** Requests on the ring now. */
  get inFlight(): number { return this.dp.inFlight; }
  /** Pieces of I/O waiting in the driver's queue. */
  get queued(): number { return this.dp.queue.length; }
  /** Grant counters of data and indirect pages. */
  get grantStats(): Readonly<{ granted: number; ended: number; leaked: number }> { return this.pages.stats; }
  /** Data pages held by requests in flight. */
  get pagesInUse(): number { return this.pages.pagesInUse; }
  /** Persistent grants alive in the pool. */
  get pooledGrants(): number { return this.pages.pooledGrants; }
  /** Persistent grants of BlkBuffer pages alive (zero-copy I/O). */
  get bufferGrants(): number { return this.pages.bufferGrants; }
  /** The event channel port of the current ring (0: none). */
  get eventChannel(): number { return this.dp.port; }
  /** True once the device is gone (unplugged, closed, or its ring stopped) and everything is released. */
  get isFinalised(): boolean { return this.finalised; }
  /** Settles when the device is finalised. */
  get closed(): Promise<void> { return this.done.promise; }
  /** The current ring (test/domU/blkfront/batching.test.ts reads it by this name). */
  private get ring(): BlkRing | undefined { return this.dp.ring; }

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
    const f = this.dp.feat;
    if (f && !f.flushCache && !f.barrier) return Promise.reject(new BlkfrontError('unsupported', NO_FLUSH));
    return this.submit('flush', 0, 1, undefined);
  }

  /** BLKIF_OP_DISCARD of `count` sectors from `sector`; rejected ('unsupported') without feature-discard. */
  discard(sector: number, count: number): Promise<void> {
    if (this.dp.feat && !this.dp.feat.discard) return Promise.reject(new BlkfrontError('unsupported', NO_DISCARD));
    if (this.diskInfo?.readOnly) return Promise.reject(new BlkfrontError('unsupported', 'discard: the disk is read-only'));
    return this.submit('discard', sector, count, undefined);
  }

  // ---------------------------------------------------------------------------
  // Zero-copy I/O (buffer.ts): the caller's data in guest pages granted as they are.

  /**
   * A buffer of `bytes` (a positive multiple of 4096) in guest pages from the
   * kernel's allocator, adjacent in gfn order when such a run is free (then
   * usually machine-contiguous: Dom0 moves a request's data in one iovec).
   * Throws BlkfrontError 'range' for a bad size (nothing allocated), and the
   * allocator's error when it has too few pages. Give it back with freeBuffer.
   */
  allocBuffer(bytes: number): BlkBuffer {
    if (!Number.isSafeInteger(bytes) || bytes <= 0 || bytes % PAGE_SIZE !== 0) {
      throw new BlkfrontError('range', `allocBuffer: ${bytes} bytes is not a positive multiple of ${PAGE_SIZE}`);
    }
    const xen = this.a.ev.xen;
    return new BlkBuffer(xen.k.mem, xen.allocGfnRun(bytes / PAGE_SIZE), this);
  }

  /**
   * Free a buffer of ours on which no readPages/writePages is pending (else
   * it throws, changing nothing): its pages' grants end and the pages go back
   * to the kernel's allocator. A page whose grant the backend still maps
   * (with persistent grants, until it disconnects) goes back once it unmaps.
   * The buffer must not be used afterwards.
   */
  freeBuffer(buf: BlkBuffer): void {
    if (!BlkBuffer.isOf(buf, this)) throw new Error('freeBuffer: not a buffer of this device, or freed already');
    if (buf.pending > 0) throw new Error(`freeBuffer: ${buf.pending} I/O(s) on the buffer still pending`);
    buf.disown(this);
    this.pages.freeBufferPages(buf.pages);
  }

  /**
   * Read `count` sectors from `sector` into `buf` at byte `offset` (a
   * multiple of 4096), zero-copy: the buffer's pages are granted to the
   * backend, which writes into them. `count` defaults to the sectors that fit
   * in the rest of the buffer. Same contract as `read` otherwise.
   */
  readPages(sector: number, buf: BlkBuffer, offset = 0, count?: number): Promise<void> {
    return this.submitPages('read', sector, buf, offset, count);
  }

  /**
   * Write `count` sectors at `sector` from `buf` at byte `offset` (a multiple
   * of 4096), zero-copy: the backend reads the buffer's pages. Leave those
   * bytes unchanged until the promise settles (a request re-issued after a
   * reconnection reads them again). Same contract as `write` otherwise.
   */
  writePages(sector: number, buf: BlkBuffer, offset = 0, count?: number): Promise<void> {
    return this.submitPages('write', sector, buf, offset, count);
  }

  /**
   * Zero-copy I/O without a promise (Linux's submit_bio and its bi_end_io):
   * `readPages` (kind 'read') or `writePages` ('write') of `count` sectors
   * from `sector` at byte `offset` of `buf`, whose completion is `done(err)`,
   * called once: `err` undefined when the backend answered OKAY for all of
   * it, else the BlkfrontError it failed with (as the promise would be
   * rejected). `done` runs from a microtask after the response is consumed,
   * never inside this call, and may queue more I/O. It saves the promise and
   * the continuation per I/O (~0.1 µs here: a tenth to a quarter of a null
   * request's guest time). Returns the error an I/O is refused with at once
   * (a bad range or buffer, a closed device; `done` is then never called),
   * else undefined.
   */
  queuePages(kind: 'read' | 'write', sector: number, buf: BlkBuffer, offset: number, count: number | undefined, done: IoDone): BlkfrontError | undefined {
    const n = this.pagesCount(kind, buf, offset, count);
    if (typeof n !== 'number') return n;
    return this.enqueue(kind, sector, n, buf, offset, buf, null, null, done);
  }

  private submitPages(kind: 'read' | 'write', sector: number, buf: BlkBuffer, offset: number, count: number | undefined): Promise<void> {
    const n = this.pagesCount(kind, buf, offset, count);
    if (typeof n !== 'number') return Promise.reject(n);
    return this.submit(kind, sector, n, buf, offset, buf);
  }

  /**
   * The sectors of a readPages/writePages (`count`, or what fits after
   * `offset`), or why it is refused: the buffer, the offset, or a write to a
   * read-only disk.
   */
  private pagesCount(kind: 'read' | 'write', buf: BlkBuffer, offset: number, count: number | undefined): number | BlkfrontError {
    const what = kind === 'read' ? 'readPages' : 'writePages';
    if (kind === 'write' && this.diskInfo?.readOnly) return new BlkfrontError('unsupported', 'writePages: the disk is read-only');
    if (!BlkBuffer.isOf(buf, this)) return new BlkfrontError('range', `${what}: not a buffer of this device, or freed`);
    if (!Number.isSafeInteger(offset) || offset < 0 || offset % PAGE_SIZE !== 0 || offset >= buf.bytes) {
      return new BlkfrontError('range', `${what}: offset ${offset} is not a multiple of ${PAGE_SIZE} inside the ${buf.bytes}-byte buffer`);
    }
    const n = count ?? (buf.bytes - offset) / SECTOR;
    if (Number.isSafeInteger(n) && n * SECTOR > buf.bytes - offset) {
      return new BlkfrontError('range', `${what}: ${n} sectors from byte ${offset} do not fit in the ${buf.bytes}-byte buffer`);
    }
    return n;
  }

  /**
   * Queue an I/O of `count` units whose data is at byte `offset` of `buf`, and
   * issue what fits. `blk`: `buf` if it is a BlkBuffer (the caller knows; see IoOp.blk).
   */
  private submit(kind: IoOp['kind'], sector: number, count: number, buf: IoData | undefined, offset = 0, blk: BlkBuffer | null = null): Promise<void> {
    return new Promise<void>((resolve, reject) => {
      const refused = this.enqueue(kind, sector, count, buf, offset, blk, resolve, reject, null);
      if (refused) reject(refused);
    });
  }

  /**
   * The I/O as an IoOp on the driver's queue, and what fits issued; its
   * completion is `resolve`/`reject` or `done` (IoOp). Returns the error it
   * is refused with (nothing queued), else undefined. A zero-length I/O is
   * complete at once (settled through the data path, so a `done` still runs
   * from a microtask).
   */
  private enqueue(kind: IoOp['kind'], sector: number, count: number, buf: IoData | undefined, offset: number, blk: BlkBuffer | null,
    resolve: (() => void) | null, reject: ((e: Error) => void) | null, done: IoDone | null): BlkfrontError | undefined {
    if (this.closing || this.finalised || this.dp.broken) return this.endReason ?? new BlkfrontError('closed', `${kind}: the device is closed`);
    if (kind !== 'flush') {
      const bad = rangeError(this.disk, sector, count);
      if (bad) return new BlkfrontError('range', `${kind}: ${bad}`);
    }
    const op: IoOp = { kind, buf, blk, left: count, error: undefined, settled: false, resolve, reject, done };
    // A buffer's I/O is pending until the op settles (BlkDataPath.settle).
    if (blk !== null) blk.pending++;
    if (count === 0) {
      this.dp.settle(op);
      return undefined;
    }
    this.dp.submit(op, sector, count, offset);
    return undefined;
  }

  /**
   * Handle the backend's notification (the port's handler): consume every
   * response (RING_FINAL_CHECK_FOR_RESPONSES loop), then issue what waits.
   */
  kick(): void {
    this.dp.kick();
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
      const back = await this.be.readState();
      const action = handshakeAction(this.sm.state, back);
      if (action === 'none' || !(await this.act(action, back))) return;
    }
  }

  /** Run one action; false to stop looking (waiting for something other than the backend's state). */
  private async act(action: Exclude<HandshakeAction, 'none'>, back: BackendState): Promise<boolean> {
    const xs = this.a.xs;
    switch (action) {
      case 'talk':
        if (this.dp.broken || this.closing) await this.goState('Closing');
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
        if (this.dp.ring && !this.dp.broken) this.dp.consume(this.dp.ring, false);
        this.dp.teardownRing(undefined);
        await this.goState('Closed');
        return true;
      case 'check-unplug':
        this.dp.teardownRing(undefined);
        await this.checkUnplug(back);
        return false;
      case 'restart':
        if (this.dp.broken || this.closing) {
          await this.finalise();
          return false;
        }
        this.dp.teardownRing(undefined);
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
    if (this.dp.broken || this.closing) return this.finalise();
    const online = back === 'gone' ? undefined : await this.be.key('online');
    if (online === undefined || online.trim() === '0') {
      const err = new BlkfrontError('removed', `blkfront: device vbd/${this.a.devid} was removed`);
      this.endReason = err;
      this.dp.failQueued(err);
      return this.finalise();
    }
    if (this.sm.state === 'Closed') await this.goState('Initialising');
  }

  /**
   * talk_to_blkback: read the backend's offers, set up a ring of 2^order
   * pages, grant it, allocate an unbound port for the backend, publish them
   * in one transaction, and go Initialised.
   */
  private async talkToBackend(): Promise<void> {
    const be = this.be;
    await be.readPath();
    const maxOrder = await be.number('max-ring-page-order', 0);
    const backPersistent = (await be.number('feature-persistent', 0)) === 1;
    const order = Math.min(this.opts.ringPageOrder, maxOrder);
    const persistent = this.opts.persistent && backPersistent;
    this.pages.reset(be.id, persistent);
    const ring = new BlkRing(this.a.ev.xen, this.a.gnttab, be.id, order);
    const port = this.a.ev.allocUnbound(be.id);
    try {
      await be.publishRing(ring.refs, order, port, this.opts.persistent);
    } catch (e) {
      ring.release();
      this.a.ev.close(port);
      throw e;
    }
    this.dp.attach(ring, port);
    this.dp.feat = {
      flushCache: false, barrier: false, discard: false, persistent, maxIndirectSegments: 0, ringPageOrder: order, ringSize: ring.size,
    };
    this.stats.rings++;
    await switchState(this.a.xs, this.frontPath, this.sm, 'Initialised');
  }

  /** blkfront_connect: read the disk and the features, go Connected, issue what waits (re-issued requests first). */
  private async connectDisk(): Promise<void> {
    const d = await this.be.readDisk(this.opts.maxIndirectSegments);
    this.diskInfo = d.disk;
    this.dp.feat = { ...this.features, flushCache: d.flushCache, barrier: d.barrier, discard: d.discard, maxIndirectSegments: d.maxIndirectSegments };
    await switchState(this.a.xs, this.frontPath, this.sm, 'Connected');
    this.firstConnect.resolve();
    this.kick();
  }

  /** Release everything this driver holds; settle every promise. Idempotent. */
  private async finalise(): Promise<void> {
    if (this.finalised) return;
    const err = this.endReason ?? new BlkfrontError('closed', `blkfront: device vbd/${this.a.devid} is closed`);
    this.dp.teardownRing(err);
    this.dp.failQueued(err);
    this.pages.revokeAll();
    this.pages.releaseAll();
    this.dp.retryStaleRings();
    this.removePoller?.();
    this.removeArmer?.();
    this.removeFlusher?.();
    this.finalised = true;
    this.firstConnect.reject(err);
    this.dp.wakeDrainWaiters();
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
    if (this.sm.state === 'Closed' || !this.dp.ring) {
      this.schedule(() => this.finalise());
      return this.done.promise;
    }
    if (this.dp.queue.length > 0 || this.inFlight > 0) await this.dp.drained();
    this.schedule(() => this.goState('Closing'));
    return this.done.promise;
  }
}
