/**
 * blkback's request engine for one connected ring (Linux: do_block_io_op,
 * __do_block_io_op, dispatch_rw_block_io, make_response).
 *
 * A kick (the ring's event channel, or the end of a barrier) consumes every
 * request available: each is taken out of its slot as a private copy
 * (BackRing.takeRequest; the slot is never read again), decoded, checked into
 * a private object (validate.ts) and only then acted on. Responses are put as
 * requests finish and pushed once per batch (RING_PUSH_RESPONSES_AND_CHECK_NOTIFY,
 * notifying only when the frontend asked); RING_FINAL_CHECK_FOR_REQUESTS then
 * re-arms req_event and catches requests that raced with it. Served by Dom0's
 * spin instead (`poll`), the engine does not re-arm: while Dom0 looks at the
 * ring anyway, a frontend's pushes need no notification (Linux blkfront then
 * sends none: notify iff req_event lies in the pushed range). The loop arms
 * every polled ring just before Dom0 blocks (`armRing`), so ring.h's
 * guarantee holds: a request pushed after that look is notified.
 *
 * The two common cases are served without allocating: a direct READ/WRITE
 * (DirectRwScratch, checkDirectRw) and an INDIRECT READ/WRITE
 * (IndirectRwScratch, checkIndirectRw; its indirect pages copied per request
 * by IndirectPages, through persistent grants when negotiated). Whatever
 * does not pass their checks goes the general way above, which gives the
 * refusal, its status and its log line; property tests hold each fast path
 * to it (test/dom0/blkback/fast-path*.test.ts).
 *
 * Reads and writes are synchronous (HostDma preadv/pwritev on Dom0's vCPU),
 * except READs handed out as host DMA jobs (BlockStorage.submit,
 * hypervisor/vcpu/dma-jobs.ts): large ones (indirect, ASYNC_MIN_SECTORS and
 * more), ASYNC_DEPTH of a ring's at a time, and direct ones (up to 11
 * segments), ASYNC_DIRECT_DEPTH at a time. The first vCPU to reach an
 * explicit preemption point runs a job (the frontend's, spinning while it
 * waits for its I/O) while Dom0 handles the next requests itself: two
 * preads or copies at once, on two cores, and Dom0's own work overlapping
 * them. Each is answered when reaped (`poll`, or the next READ that finds
 * the jobs' share taken), its mappings held until then. Nothing would wake
 * Dom0 when a job is done, so before it blocks (`armRing`) it finishes what
 * is out, running a job nobody took (without a spin, poll_us=0, that is
 * where its jobs run) and waiting for one being run; a
 * barrier waits for them as for discards; `stop` waits for them (running
 * them itself if nobody has) before answering anything, so that no copy
 * into a frame outlives the connection. Writes stay synchronous: two
 * buffered writes to one file take turns on its inode lock, and handing
 * them out measured no faster.
 * FLUSH_DISKCACHE runs fdatasync in the host's thread pool and is answered
 * when it returns (from work posted to Dom0's loop); other requests go on
 * meanwhile. DISCARD is answered when the storage has punched its hole (a
 * child process, or zeroes written in the thread pool), other requests going
 * on meanwhile too. WRITE_BARRIER stops consumption: earlier writes are done
 * (they were synchronous) and earlier discards are waited for, fdatasync
 * runs, then the barrier's own data is written, it is answered, and
 * consumption resumes.
 *
 * An impossible req_prod halts the ring for good (Linux's "Frontend provided
 * bogus ring requests ... Halting ring processing"); Dom0 is unharmed.
 * `stop` (disconnect) answers every request still in flight with
 * BLKIF_RSP_ERROR, so none is lost.
 *
 * Persistent grants are purged (PersistentGrants.purge, Linux's
 * purge_persistent_gnt) at most every LRU_INTERVAL_MS, after a batch of
 * requests once that much time has passed since the last purge (Linux's
 * kthread checks ring->next_lru after do_block_io_op): no timer, so an idle
 * ring purges nothing until its next request. The clock (`now`, default
 * performance.now) is read once per batch; it stamps the grants' last use.
 *
 * Statistics (VbdCounters, what xentop shows): Linux blkback's per-device
 * statistics/{oo,rd,wr,f,ds}_req and {rd,wr}_sect, counted as Linux's
 * dispatch_rw_block_io / dispatch_discard_io do; see VbdCounters.
 */
import {
  BLKIF_OP_FLUSH_DISKCACHE, BLKIF_OP_READ, BLKIF_OP_WRITE, BLKIF_OP_WRITE_BARRIER, BLKIF_RING_ENTRY_SIZE, BLKIF_RSP_ERROR, BLKIF_RSP_OKAY, BLKIF_SECTOR_SIZE,
} from '../../shared/abi/blkif.ts';
import { BLKIF_REQUEST, BLKIF_RESPONSE } from '../../shared/abi/blkif.ts';
import {
  copyRequestId, decodeIndirectSegments, decodeRequest, DirectRwScratch, IndirectRwScratch, REQUEST_HEAD_BYTES, requestBytes, type BlkifSegment,
} from '../../shared/blkif/proto.ts';
import type { GuestMemory } from '../../shared/guest/api.ts';
import type { GrantTable } from '../../shared/guest/gnttab.ts';
import { limitedWarn, logger, RateLimiter } from '../../shared/log.ts';
import type { BackRing } from '../../shared/ring/ring.ts';
import type { GfnPool } from './gfn-pool.ts';
import { IndirectPages, RequestMappings, type GrantIoStats } from './grant-io.ts';
import type { PersistentGrants } from './persistent.ts';
import { LRU_INTERVAL_MS } from './purge.ts';
import type { BlockStorage } from './storage.ts';
import {
  checkDirectRw, checkIndirectRw, checkRequest, indirectPages, indirectRwPages, type Checked, type CheckedDiscard, type CheckedIo, type DiskLimits,
} from './validate.ts';

const log = logger('blkback');
const RSP_ID = BLKIF_RESPONSE.fields.id.offset;
const RSP_OPERATION = BLKIF_RESPONSE.fields.operation.offset;
const RSP_STATUS = BLKIF_RESPONSE.fields.status.offset;
const REQ_ID = BLKIF_REQUEST.fields.id.offset;
const REQ_OPERATION = BLKIF_REQUEST.fields.operation.offset;
/** Lines a frontend can trigger: rate-limited per device. */
const limiter = new RateLimiter();

export interface EngineDeps {
  readonly ring: BackRing;
  /** Dom0's memory (indirect pages are read from their mappings). */
  readonly mem: Pick<GuestMemory, 'readInto'>;
  readonly gt: GrantTable;
  readonly pool: GfnPool;
  readonly storage: BlockStorage;
  readonly limits: DiskLimits;
  readonly frontendId: number;
  /** Persistent grants of this connection, or null when not negotiated. */
  readonly persistent: PersistentGrants | null;
  /** Send an event to the frontend. */
  readonly notify: () => void;
  /** Queue work for Dom0's loop (host callbacks must not act themselves). */
  readonly post: (work: () => void) => void;
  /** The device, for logs ("dev=%04x" in Linux: we print <domid>/<devid>). */
  readonly dev: string;
  /**
   * The device's counters, counted into (the device keeps them across
   * reconnections: VbdBackend passes its own); default a fresh set.
   */
  readonly counters?: VbdCounters;
  /** Dom0's clock in ms (persistent grants' last use, the purge interval and timeout); default performance.now. Tests drive it. */
  readonly now?: () => number;
  /** Hand READs out as host DMA jobs where the storage can (default true; `xen_blkback.dma_jobs=0`: never). */
  readonly dmaJobs?: boolean;
}

/**
 * A device's request counters: Linux blkback's sysfs
 * /sys/bus/xen-backend/devices/vbd-<domid>-<devid>/statistics/ (what xentop
 * reads). Plain numbers, bumped on the request path. Counted as Linux does:
 *  - rdReq / wrReq: READ / WRITE requests, an INDIRECT one by its indirect_op,
 *    counted when decoded, so also those refused afterwards (bad segments,
 *    beyond the disk, read-only); an indirect request with another
 *    indirect_op is refused uncounted (Linux fails it before counting);
 *  - fReq: FLUSH_DISKCACHE and WRITE_BARRIER requests;
 *  - dsReq: DISCARD requests accepted (supported, writable, in range);
 *  - rdSect / wrSect: 512-byte sectors of accepted requests whose data is
 *    moved (segments mapped, or a null device): a READ's to rdSect, the
 *    segments of WRITE, WRITE_BARRIER and FLUSH_DISKCACHE to wrSect (Linux
 *    submits all three as REQ_OP_WRITE);
 *  - ooReq: requests that had to wait for backend resources (Linux: no free
 *    pending_req). This engine never defers a request for lack of resources:
 *    every request is taken, served synchronously or parked as an in-flight
 *    flush, and a mapping that cannot be made is answered ERROR, not retried.
 *    So ooReq stays 0; it is kept for xentop's VBD_OO column. (A barrier's
 *    pause is ordering, not lack of resources: Linux does not count it either.)
 */
export interface VbdCounters {
  ooReq: number;
  rdReq: number;
  wrReq: number;
  fReq: number;
  dsReq: number;
  rdSect: number;
  wrSect: number;
}

export const newVbdCounters = (): VbdCounters => ({ ooReq: 0, rdReq: 0, wrReq: 0, fReq: 0, dsReq: 0, rdSect: 0, wrSect: 0 });

export interface EngineStats extends GrantIoStats {
  requests: number;
  errors: number;
}

type EngineState = 'running' | 'halted' | 'stopped';

interface InFlight { readonly id: bigint; readonly rspOp: number }

/**
 * Responses are made one by one but published (RING_PUSH_RESPONSES_AND_CHECK_NOTIFY)
 * every RSP_PUSH_BATCH of them, or once the requests answered since the last
 * push moved RSP_PUSH_SECTORS sectors, or the request was not a plain READ or
 * WRITE, and whenever no more requests are on hand. Linux's blkback pushes
 * after every response; here the push is a sequentially consistent store to
 * the ring's first cache line (an x86 XCHG that waits for the line while the
 * frontend's core polls it), and pushing every 8 small responses made 4 KiB
 * random reads ~10% faster (measured: ~440 k/s one by one, ~470-500 k/s in
 * eights, same runs). A frontend waits at most 8 small requests (~10-20 µs
 * of file I/O) or one large one for an answer.
 */
const RSP_PUSH_BATCH = 8;
/**
 * Direct READs and WRITEs are handled in stages, up to a push batch at a
 * time: each is taken, decoded, checked and mapped as it comes; then their
 * I/O runs back to back, in ring order; then they are answered. Any other
 * request runs the staged ones first. Interleaving the host's pread path with
 * blkback's own code evicted each other's instructions and data from the
 * core's caches; in stages each stays warm across the batch (measured in one
 * thread, 4 KiB random reads: ~2.15 -> ~1.93 µs a request, the pread ~1.62 ->
 * ~1.52 µs and blkback's own part ~0.53 -> ~0.41 µs; in the pipeline ~+5-20%).
 */
const STAGE_MAX = RSP_PUSH_BATCH;
const RSP_PUSH_SECTORS = 64;
/**
 * An INDIRECT READ of at least this many sectors (128 KiB) may become a host
 * DMA job (see the top of this file); smaller ones cost less done at once
 * than handed over.
 */
export const ASYNC_MIN_SECTORS = 256;
/**
 * A ring's READs out as host DMA jobs at once. One: Dom0's vCPU takes every
 * other large READ itself, and the two copies alternate (measured, 1 MiB
 * reads 4 in flight: one and two out gave the same throughput).
 */
export const ASYNC_DEPTH = 1;
/**
 * A ring's direct READs out as host DMA jobs at once (the rest are staged and
 * done by Dom0). A 4 KiB pread costs ~1.3-1.5 µs, about three times blkback's
 * own work per request, so Dom0 alone is the bottleneck of small random reads
 * and the frontend's vCPU spins; with jobs it does ~40% of the preads
 * (measured, 4 KiB random reads QD 32 against fs.readSync of the same file,
 * interleaved: 97-110% with jobs, 66-85% without; depths 2, 4 and 8 within
 * the spread). Half the host's DMA_SLOTS: another ring, or this one's large
 * READ, finds slots free.
 */
export const ASYNC_DIRECT_DEPTH = 4;
/** What `dataIndirect` returns for a READ handed out as a job (answered when it is done). */
const IN_FLIGHT = 1;
export class BlkifEngine {
  readonly stats: EngineStats = { requests: 0, errors: 0, mapCalls: 0, grantsMapped: 0, persistentHits: 0 };
  /** xentop's counters (VbdCounters): the device's, shared across its connections. */
  readonly counters: VbdCounters;
  private state: EngineState = 'running';
  /** A WRITE_BARRIER waiting for its sync: no request is consumed meanwhile. */
  private barrier = false;
  private readonly inFlight = new Set<InFlight>();
  /** Discards not finished (their storage callback not yet run), answered or not. */
  private discards = 0;
  /** What waits for every discard and every READ out as a job to finish (a barrier's sync). */
  private afterDiscards: Array<() => void> = [];
  /** READs out as host DMA jobs, of them large ones (at most ASYNC_DEPTH), and the mappings free for more. */
  private asyncIo = 0;
  private asyncLarge = 0;
  private readonly asyncMaps: RequestMappings[];
  /** READs may become host DMA jobs (EngineDeps.dmaJobs, and the storage can). */
  private readonly asyncOn: boolean;
  private readonly rsp = new Uint8Array(BLKIF_RESPONSE.size);
  private readonly rspView = new DataView(this.rsp.buffer);
  /** The private copy of the request being handled (BLKIF_RING_ENTRY_SIZE bytes; see takeRequest). */
  private readonly entry = new Uint8Array(BLKIF_RING_ENTRY_SIZE);
  private readonly entryView = new DataView(this.entry.buffer);
  /**
   * `entry`'s first REQUEST_HEAD_BYTES, and its bytes from there to each end
   * requestBytes can give: made once (a subarray per request would allocate,
   * and miss GuestMemory.readInto's word views, which are kept per array).
   */
  private readonly entryHead = this.entry.subarray(0, REQUEST_HEAD_BYTES);
  private readonly entryRest = Array.from({ length: BLKIF_RING_ENTRY_SIZE + 1 }, (_, end) => this.entry.subarray(REQUEST_HEAD_BYTES, Math.max(REQUEST_HEAD_BYTES, end)));
  /** The common case (direct READ/WRITE) decoded from `entry` without allocating. */
  private readonly direct = new DirectRwScratch();
  /** An INDIRECT READ/WRITE decoded from `entry` and its indirect pages without allocating. */
  private readonly indirect = new IndirectRwScratch();
  private readonly maps: RequestMappings;
  /**
   * Staged direct READs/WRITEs (see STAGE_MAX): each one's mappings, operation,
   * byte position and length, id (two u32 words, as in the entry) and, once
   * done, status.
   */
  private readonly stageMaps: RequestMappings[];
  private staged = 0;
  private readonly stOp = new Uint8Array(STAGE_MAX);
  private readonly stPos = new Float64Array(STAGE_MAX);
  private readonly stWant = new Float64Array(STAGE_MAX);
  private readonly stId = new Uint32Array(2 * STAGE_MAX);
  private readonly stStatus = new Int32Array(STAGE_MAX);
  /** The private copy of the indirect pages of the request being handled. */
  private readonly indirectPages: IndirectPages;
  private kicking = false;
  private readonly clock: () => number;
  /** Linux's ring->next_lru: no purge of persistent grants before this time (ms). */
  private nextLru: number;

  constructor(private readonly d: EngineDeps) {
    this.maps = new RequestMappings(d.gt, d.pool, d.frontendId, d.persistent, this.stats);
    this.stageMaps = Array.from({ length: STAGE_MAX }, () => new RequestMappings(d.gt, d.pool, d.frontendId, d.persistent, this.stats));
    const async = d.dmaJobs !== false && d.storage.submit !== undefined;
    this.asyncOn = async;
    this.asyncMaps = Array.from({ length: async ? ASYNC_DEPTH + ASYNC_DIRECT_DEPTH : 0 }, () => new RequestMappings(d.gt, d.pool, d.frontendId, d.persistent, this.stats));
    this.indirectPages = new IndirectPages(d.gt, d.pool, (gpa, into) => d.mem.readInto(gpa, into), d.frontendId, d.persistent, this.stats);
    this.counters = d.counters ?? newVbdCounters();
    this.clock = d.now ?? (() => performance.now());
    const t = this.clock();
    if (d.persistent) d.persistent.now = t;
    this.nextLru = t + LRU_INTERVAL_MS;
  }

  get halted(): boolean { return this.state === 'halted'; }
  /** Flushes, barriers and discards not yet answered. */
  get pending(): number { return this.inFlight.size; }

  /**
   * Consume and serve every request available (the event channel's handler);
   * returns how many were taken. `arm`: end with RING_FINAL_CHECK_FOR_REQUESTS
   * (req_event set, so the frontend notifies its next push); false: stop when
   * none is left, req_event as it was (`poll`).
   */
  kick(arm = true): number {
    if (this.state !== 'running' || this.kicking) return 0;
    const before = this.stats.requests;
    this.kicking = true;
    try {
      this.serve(arm);
    } finally {
      this.kicking = false;
    }
    return this.stats.requests - before;
  }

  /**
   * Dom0's spin (loop.ts) and the port's handler under it: serve the ring if
   * requests wait on it, without re-arming req_event (see the top of this
   * file); otherwise only one look at req_prod. Returns how many were taken.
   */
  poll(): number {
    // (Dom0's spin calls this every round: the common case first, as cheap as it can be.)
    if (this.asyncIo !== 0) return this.pollReaping();
    if (this.state !== 'running' || this.barrier || this.kicking) return 0;
    return this.d.ring.unconsumedRequests() !== 0 ? this.kick(false) : 0;
  }

  /** `poll` while READs are out as jobs: answer those done, then serve the ring as `poll` does. */
  private pollReaping(): number {
    const reaped = this.reapAsync();
    if (this.state !== 'running' || this.barrier || this.kicking) return reaped;
    return reaped + (this.d.ring.unconsumedRequests() !== 0 ? this.kick(false) : 0);
  }

  /** Answer the READs whose jobs are done (every device's callbacks run: one HostDma); returns how many of any device's. */
  private reapAsync(): number {
    return this.asyncIo > 0 ? this.d.storage.reap!() : 0;
  }

  /**
   * Dom0's last look before it blocks (loop.ts): RING_FINAL_CHECK_FOR_REQUESTS,
   * and serve what raced with it (as a kick, which re-arms). Returns how many
   * requests were taken (0: armed, nothing waits; Dom0 may block). READs out
   * as host DMA jobs are finished and answered first (HostDma.drain). A
   * halted, stopped or barrier-held ring is not armed: a barrier re-kicks
   * when it ends.
   */
  armRing(): number {
    // Nothing wakes Dom0 when a job is done: before it blocks, it finishes
    // what is out (runs a job no vCPU took, waits for one being run) and
    // answers it. Dom0's spin usually got there first (its preemption points
    // run queued jobs); without a spin (poll_us=0) this is where they run.
    if (this.asyncIo > 0 && this.reapAsync() === 0 && this.asyncIo > 0) this.d.storage.drain!();
    if (this.state !== 'running' || this.barrier || this.kicking) return 0;
    const more = this.d.ring.finalCheckForRequests();
    if (more < 0) {
      this.halt();
      return 0;
    }
    return more > 0 ? this.kick() : 0;
  }

  /**
   * Copy the next request out of its slot into `entry` and take it: its head,
   * then only what the head's copy says the request uses (requestBytes: a
   * one-segment READ copies 32 of the entry's 112 bytes). Each byte of the
   * slot is read once; `entry`'s bytes past what was copied are stale and
   * read by nothing (requestBytes).
   */
  private takeRequest(ring: BackRing): Uint8Array {
    ring.copyRequestPart(0, this.entryHead);
    const end = requestBytes(this.entryHead);
    if (end > REQUEST_HEAD_BYTES) ring.copyRequestPart(REQUEST_HEAD_BYTES, this.entryRest[end]!);
    ring.consumeRequest();
    return this.entry;
  }

  private serve(arm: boolean): void {
    const ring = this.d.ring;
    for (;;) {
      if (this.barrier) break;
      let n = ring.unconsumedRequests();
      if (n < 0) return this.halt();
      const persistent = this.d.persistent;
      const now = persistent !== null ? this.clock() : 0;
      if (persistent !== null) persistent.now = now;
      // Responses are published in small batches (see RSP_PUSH_BATCH): after
      // a few small requests, after any request that moved much data or was
      // not a READ or WRITE, and when the requests on hand run out.
      const c = this.counters;
      let unpushed = 0;
      let sectorsAtPush = c.rdSect + c.wrSect;
      while (n-- > 0 && !this.barrier) {
        const entry = this.takeRequest(ring);
        const op = entry[REQ_OPERATION];
        this.handle(entry);
        const sectors = c.rdSect + c.wrSect;
        if (++unpushed >= RSP_PUSH_BATCH || sectors - sectorsAtPush >= RSP_PUSH_SECTORS ||
            (op !== BLKIF_OP_READ && op !== BLKIF_OP_WRITE)) {
          this.runStaged();
          this.push();
          unpushed = 0;
          sectorsAtPush = sectors;
        }
      }
      // The requests on hand are done (or a barrier stopped them): publish the rest.
      this.runStaged();
      if (unpushed > 0) this.push();
      // Between batches only READs out as jobs hold grants (I/O is otherwise synchronous; a
      // flush or barrier holds none): held until answered, the purge leaves them (`active`).
      if (persistent !== null && now >= this.nextLru) {
        persistent.purge(this.d.gt, this.d.pool, now);
        this.nextLru = now + LRU_INTERVAL_MS;
      }
      if (this.barrier) break;
      const more = arm ? ring.finalCheckForRequests() : ring.unconsumedRequests();
      if (more < 0) return this.halt();
      if (more === 0) break;
    }
  }

  /**
   * Map the direct READ/WRITE decoded into `direct` (checked: `nrSectors`
   * sectors) and stage it: its I/O and its answer wait for `runStaged`. Its
   * id is kept as the entry's bytes. A mapping that fails is answered ERROR
   * at once (as `io` does).
   */
  private stage(op: number, nrSectors: number): void {
    const read = op === BLKIF_OP_READ;
    if (read && this.asyncOn) {
      if (this.asyncIo - this.asyncLarge >= ASYNC_DIRECT_DEPTH) this.reapAsync();
      if (this.asyncIo - this.asyncLarge < ASYNC_DIRECT_DEPTH) {
        const maps = this.asyncMaps.pop()!;
        // A READ's pages are written: writable mappings (readonly false).
        const status = this.startReadJob(maps, maps.map(this.direct.segs, false), false, this.direct.sector, nrSectors);
        if (status !== IN_FLIGHT) this.respondToEntry(op, status);
        return;
      }
    }
    const k = this.staged;
    const maps = this.stageMaps[k]!;
    if (!maps.map(this.direct.segs, !read)) return this.respondToEntry(op, this.unmappable(null));
    this.countSectors(read, nrSectors);
    this.stOp[k] = op;
    this.stPos[k] = this.direct.sector * BLKIF_SECTOR_SIZE;
    this.stWant[k] = nrSectors * BLKIF_SECTOR_SIZE;
    const ev = this.entryView;
    this.stId[2 * k] = ev.getUint32(REQ_ID, true);
    this.stId[2 * k + 1] = ev.getUint32(REQ_ID + 4, true);
    this.staged = k + 1;
    // serve's push point runs a full batch first (it counts every request, staged ones among
    // them); this keeps the stage arrays bounded whoever calls.
    if (this.staged === STAGE_MAX) this.runStaged();
  }

  /**
   * The staged requests' I/O, one after another in ring order, then their
   * answers (see STAGE_MAX): a no-op when none is staged.
   */
  private runStaged(): void {
    const n = this.staged;
    if (n === 0) return;
    this.staged = 0;
    const st = this.d.storage;
    const status = this.stStatus;
    for (let k = 0; k < n; k++) {
      const ranges = this.stageMaps[k]!.ranges;
      const pos = this.stPos[k]!;
      try {
        const done = this.stOp[k] === BLKIF_OP_READ ? st.read(ranges, pos) : st.write(ranges, pos);
        status[k] = done === this.stWant[k] ? BLKIF_RSP_OKAY : BLKIF_RSP_ERROR;
      } catch (e) {
        limitedWarn(limiter, log, this.d.dev, { dev: this.d.dev, err: String(e) }, 'I/O error');
        status[k] = BLKIF_RSP_ERROR;
      }
    }
    const dv = this.rspView;
    for (let k = 0; k < n; k++) {
      this.stageMaps[k]!.release();
      dv.setUint32(RSP_ID, this.stId[2 * k]!, true);
      dv.setUint32(RSP_ID + 4, this.stId[2 * k + 1]!, true);
      this.put(this.stOp[k]!, status[k]!);
    }
  }

  /** RING_REQUEST_PROD_OVERFLOW: stop this ring for good; the device stays until disconnected. */
  private halt(): void {
    const ring = this.d.ring;
    const rp = ring.reqProd;
    const rc = ring.rspProdPvt;
    this.state = 'halted';
    this.push();
    limitedWarn(limiter, log, this.d.dev, { dev: this.d.dev },
      `Frontend provided bogus ring requests (${rp} - ${rc} = ${(rp - rc) | 0}). Halting ring processing on dev=${this.d.dev}`);
  }

  /**
   * Disconnect: stop consuming, answer what is in flight with ERROR, push.
   * Late completions (an fdatasync returning afterwards) are ignored.
   */
  stop(): void {
    if (this.state === 'stopped') return;
    // READs out as jobs finish first (run here if nobody has), answered as they do.
    if (this.asyncIo > 0) this.d.storage.drain!();
    this.state = 'stopped';
    this.barrier = false;
    this.afterDiscards = [];
    for (const f of this.inFlight) this.respond(f.id, f.rspOp, BLKIF_RSP_ERROR);
    this.inFlight.clear();
    this.push();
  }

  /** Serve what the ring holds now (toolstack removal: requests pushed before the unplug are not lost). */
  drain(): void { this.kick(); }

  /** RING_PUSH_RESPONSES_AND_CHECK_NOTIFY; an event only if the frontend asked (rsp_event). */
  private push(): void {
    if (this.d.ring.pushResponsesAndCheckNotify()) this.d.notify();
  }

  private respond(id: bigint, op: number, status: number): void {
    // encodeResponse's layout (BLKIF_RESPONSE), into our one buffer through one DataView: no allocation.
    this.rspView.setBigUint64(RSP_ID, id, true);
    this.put(op, status);
  }

  /** Answer the request in `entry` (being handled now), its id copied from the private copy as bytes. */
  private respondToEntry(op: number, status: number): void {
    copyRequestId(this.entryView, this.rspView);
    this.put(op, status);
  }

  /** Put the response whose id is already in `rsp`. */
  private put(op: number, status: number): void {
    if (status !== BLKIF_RSP_OKAY) this.stats.errors++;
    const dv = this.rspView;
    dv.setUint8(RSP_OPERATION, op & 0xff);
    dv.setInt16(RSP_STATUS, status, true);
    this.d.ring.putResponse(this.rsp);
  }

  /** One request, from its private copy. */
  private handle(entry: Uint8Array): void {
    this.stats.requests++;
    // The common case: a direct READ/WRITE that passes every check, decoded
    // and checked from the same private copy without allocating (anything
    // else, refusals included, takes the general path below).
    const direct = this.direct;
    if (entry === this.entry) {
      if (direct.decode(this.entryView)) {
        const nrSectors = checkDirectRw(direct, this.d.limits);
        if (nrSectors > 0) {
          const op = direct.operation;
          if (op === BLKIF_OP_READ) this.counters.rdReq++;
          else this.counters.wrReq++;
          if (!this.d.storage.isNull) return this.stage(op, nrSectors);
          return this.respondToEntry(op, this.data(op, direct.sector, nrSectors, direct.segs, null));
        }
      } else if (this.indirect.decode(this.entryView)) {
        // Staged requests came first in the ring: their I/O goes first.
        this.runStaged();
        return this.handleIndirectRw();
      }
    }
    this.runStaged();
    const req = decodeRequest(entry);
    // Linux's dispatch_rw_block_io counts by req_operation before any check.
    const k = this.counters;
    switch (req.kind === 'indirect' ? req.indirectOp : req.kind === 'rw' ? req.operation : -1) {
      case BLKIF_OP_READ: k.rdReq++; break;
      case BLKIF_OP_WRITE: k.wrReq++; break;
      case BLKIF_OP_WRITE_BARRIER:
      case BLKIF_OP_FLUSH_DISKCACHE:
        // An indirect request with these is refused before counting, as in Linux.
        if (req.kind === 'rw') k.fReq++;
        break;
    }
    // (An indirect READ/WRITE in `entry` went to handleIndirectRw; others are
    // refused by checkRequest before their pages would be read.)
    let segs: BlkifSegment[] | null = null;
    if (req.kind === 'indirect') {
      const pages = indirectPages(req, this.d.limits);
      if (typeof pages === 'number' && this.indirectPages.copy(req.indirectGrefs, pages)) segs = decodeIndirectSegments(this.indirectPages.bytes, req.nrSegments);
    }
    this.act(checkRequest(req, this.d.limits, segs));
  }

  /** Answer or start a checked request (the general path). */
  private act(c: Checked): void {
    switch (c.kind) {
      case 'refuse':
        limitedWarn(limiter, log, this.d.dev, { dev: this.d.dev, id: String(c.id), op: c.rspOp }, `bad request: ${c.reason}`);
        return this.respond(c.id, c.rspOp, c.status);
      case 'discard':
        this.counters.dsReq++;
        return this.startDiscard(c);
      case 'io':
        if (c.op === BLKIF_OP_WRITE_BARRIER) return this.startBarrier(c);
        if (c.op === BLKIF_OP_FLUSH_DISKCACHE) return this.startFlush(c);
        return this.respond(c.id, c.rspOp, this.dataOf(c));
    }
  }

  /**
   * An INDIRECT request with indirect_op READ or WRITE, decoded into
   * `indirect` (Linux: dispatch_rw_block_io, xen_blkbk_parse_indirect).
   * Counted by its indirect_op, as Linux does before any check. Then, if its
   * segment count is acceptable, its indirect pages are copied (IndirectPages:
   * from persistent mappings where there are some) and the copy's segments
   * read into typed arrays and checked (checkIndirectRw): a request that
   * passes is served with no object made. Any other goes the general way,
   * from the same copy (its pages are not mapped again): decodeRequest,
   * decodeIndirectSegments (or none if the pages could not be read), and
   * checkRequest, which finds the refusal, its reason and its log line.
   */
  private handleIndirectRw(): void {
    const sc = this.indirect;
    const limits = this.d.limits;
    const op = sc.indirectOp;
    if (op === BLKIF_OP_READ) this.counters.rdReq++;
    else this.counters.wrReq++;
    const pages = indirectRwPages(sc, limits);
    const copy = this.indirectPages;
    const read = pages > 0 && copy.copy(sc.indirectGrefs, pages);
    if (read) {
      sc.readSegments(copy.view, sc.nrSegments);
      const nrSectors = checkIndirectRw(sc, limits);
      if (nrSectors > 0) {
        const status = this.dataIndirect(op, sc, nrSectors);
        if (status !== IN_FLIGHT) this.respondToEntry(op, status);
        return;
      }
    }
    const req = decodeRequest(this.entry);
    const segs = read && req.kind === 'indirect' ? decodeIndirectSegments(copy.bytes, req.nrSegments) : null;
    this.act(checkRequest(req, limits, segs));
  }

  /**
   * Move the data of an indirect READ/WRITE that passed checkIndirectRw: a
   * status, or IN_FLIGHT if it is out as a host DMA job (answered by readJobDone).
   */
  private dataIndirect(op: number, sc: IndirectRwScratch, nrSectors: number): number {
    const read = op === BLKIF_OP_READ;
    if (this.d.storage.isNull) {
      this.countSectors(read, nrSectors);
      return BLKIF_RSP_OKAY;
    }
    if (read && nrSectors >= ASYNC_MIN_SECTORS && this.asyncOn) {
      if (this.asyncLarge === ASYNC_DEPTH) this.reapAsync();
      if (this.asyncLarge < ASYNC_DEPTH) {
        const maps = this.asyncMaps.pop()!;
        return this.startReadJob(maps, maps.mapArrays(sc.gref, sc.firstSect, sc.lastSect, sc.count, false), true, sc.sector, nrSectors);
      }
    }
    return this.io(read, sc.sector, nrSectors, this.maps.mapArrays(sc.gref, sc.firstSect, sc.lastSect, sc.count, !read), null);
  }

  /**
   * Hand the READ in `entry`, whose segments `maps` (taken from asyncMaps)
   * has just mapped writable (`mapped` false: it could not), out as a host
   * DMA job: IN_FLIGHT; or, if no job can be queued now, do it here: a
   * status. `large`: it counts against ASYNC_DEPTH.
   */
  private startReadJob(maps: RequestMappings, mapped: boolean, large: boolean, sector: number, nrSectors: number): number {
    if (!mapped) {
      this.asyncMaps.push(maps);
      return this.unmappable(null);
    }
    const ev = this.entryView;
    const idLo = ev.getUint32(REQ_ID, true);
    const idHi = ev.getUint32(REQ_ID + 4, true);
    const want = nrSectors * BLKIF_SECTOR_SIZE;
    let started = false;
    try {
      started = this.d.storage.submit!(maps.ranges, sector * BLKIF_SECTOR_SIZE, false,
        (result) => this.readJobDone(maps, large, idLo, idHi, want, result));
    } catch {
      // Refused before anything was queued: the synchronous path below meets the same refusal, and logs it.
    }
    if (!started) {
      this.asyncMaps.push(maps);
      return this.io(true, sector, nrSectors, true, null, maps);
    }
    this.countSectors(true, nrSectors);
    this.asyncIo++;
    if (large) this.asyncLarge++;
    return IN_FLIGHT;
  }

  /** A READ whose job is done (`result`: bytes, or a negative errno): released, answered, pushed. */
  private readJobDone(maps: RequestMappings, large: boolean, idLo: number, idHi: number, want: number, result: number): void {
    maps.release();
    this.asyncMaps.push(maps);
    this.asyncIo--;
    if (large) this.asyncLarge--;
    if (result < 0) limitedWarn(limiter, log, this.d.dev, { dev: this.d.dev, errno: result }, 'I/O error');
    const dv = this.rspView;
    dv.setUint32(RSP_ID, idLo, true);
    dv.setUint32(RSP_ID + 4, idHi, true);
    this.put(BLKIF_OP_READ, result === want ? BLKIF_RSP_OKAY : BLKIF_RSP_ERROR);
    this.push();
    this.runIfQuiet();
  }

  /** No discard runs and no READ is out as a job (what a barrier's sync waits for). */
  private get quiet(): boolean { return this.discards === 0 && this.asyncIo === 0; }

  /** Run what waits for `quiet` (afterDiscards), if it now holds. */
  private runIfQuiet(): void {
    if (!this.quiet || this.afterDiscards.length === 0) return;
    for (const w of this.afterDiscards.splice(0)) w();
  }

  /** Move a checked request's data: a status. */
  private dataOf(c: CheckedIo): number { return this.data(c.op, c.sector, c.nrSectors, c.segs, c.id); }

  /**
   * Move the data of a checked request (`op` on [sector, sector + nrSectors)
   * through `segs`): a status. `id` only names it in logs; null: the request
   * in `entry`, being handled now.
   */
  private data(op: number, sector: number, nrSectors: number, segs: readonly BlkifSegment[], id: bigint | null): number {
    if (segs.length === 0) return BLKIF_RSP_OKAY;
    const read = op === BLKIF_OP_READ;
    if (this.d.storage.isNull) {
      this.countSectors(read, nrSectors);
      return BLKIF_RSP_OKAY;
    }
    return this.io(read, sector, nrSectors, this.maps.map(segs, !read), id);
  }

  /**
   * The I/O of a request whose segments `maps` has just mapped (`mapped`
   * false: it could not, nothing is left mapped): a status; the request's
   * mappings are released after it.
   */
  private io(read: boolean, sector: number, nrSectors: number, mapped: boolean, id: bigint | null, maps = this.maps): number {
    if (!mapped) return this.unmappable(id);
    // Submitted (Linux counts sectors once the bios are submitted, before they complete).
    this.countSectors(read, nrSectors);
    try {
      const pos = sector * BLKIF_SECTOR_SIZE;
      const want = nrSectors * BLKIF_SECTOR_SIZE;
      const done = read ? this.d.storage.read(maps.ranges, pos) : this.d.storage.write(maps.ranges, pos);
      return done === want ? BLKIF_RSP_OKAY : BLKIF_RSP_ERROR;
    } catch (e) {
      limitedWarn(limiter, log, this.d.dev, { dev: this.d.dev, err: String(e) }, 'I/O error');
      return BLKIF_RSP_ERROR;
    } finally {
      maps.release();
    }
  }

  /** A request whose segments could not be mapped (`id` null: the one in `entry`): logged, ERROR. */
  private unmappable(id: bigint | null): number {
    const idText = String(id ?? this.entryView.getBigUint64(REQ_ID, true));
    limitedWarn(limiter, log, this.d.dev, { dev: this.d.dev, id: idText }, 'cannot map a segment grant');
    return BLKIF_RSP_ERROR;
  }

  private countSectors(read: boolean, n: number): void {
    if (read) this.counters.rdSect += n;
    else this.counters.wrSect += n;
  }

  /**
   * DISCARD: the storage punches the hole (or writes zeroes) off Dom0's vCPU;
   * answered when it is done (at once for a null device). Other requests are
   * served meanwhile; a barrier waits for it (see startBarrier).
   */
  private startDiscard(c: CheckedDiscard): void {
    const f: InFlight = { id: c.id, rspOp: c.rspOp };
    this.inFlight.add(f);
    this.discards++;
    let inline = true;
    const finish = (err: Error | null): void => {
      this.discards--;
      if (this.inFlight.delete(f)) {
        if (err) limitedWarn(limiter, log, this.d.dev, { dev: this.d.dev, err: String(err) }, 'discard failed');
        this.respond(f.id, f.rspOp, err ? BLKIF_RSP_ERROR : BLKIF_RSP_OKAY);
        // (Answered inline, the batch's push publishes it.)
        if (!inline) this.push();
      }
      this.runIfQuiet();
    };
    try {
      this.d.storage.discard(c.sector, c.nrSectors, (err) => (inline ? finish(err) : this.d.post(() => finish(err))));
    } catch (e) {
      finish(e instanceof Error ? e : new Error(String(e)));
    }
    inline = false;
  }

  /**
   * FLUSH_DISKCACHE: writes before it are done (synchronous), so fdatasync
   * now covers them; answered OKAY only when it has returned. A flush with
   * segments writes them first.
   */
  private startFlush(c: CheckedIo): void {
    const pre = this.dataOf(c);
    if (pre !== BLKIF_RSP_OKAY) return this.respond(c.id, c.rspOp, pre);
    if (this.d.storage.isNull) return this.respond(c.id, c.rspOp, BLKIF_RSP_OKAY);
    const f: InFlight = { id: c.id, rspOp: c.rspOp };
    this.inFlight.add(f);
    this.d.storage.flush((err) => this.d.post(() => {
      if (!this.inFlight.delete(f)) return; // answered at disconnect already
      if (err) limitedWarn(limiter, log, this.d.dev, { dev: this.d.dev, err: String(err) }, 'flush failed');
      this.respond(f.id, f.rspOp, err ? BLKIF_RSP_ERROR : BLKIF_RSP_OKAY);
      this.push();
    }));
  }

  /**
   * WRITE_BARRIER: what came before finishes (writes are synchronous; a
   * discard still running and READs out as jobs are waited for),
   * fdatasync, then its own data, then later requests.
   */
  private startBarrier(c: CheckedIo): void {
    if (this.d.storage.isNull) return this.respond(c.id, c.rspOp, this.dataOf(c));
    const f: InFlight = { id: c.id, rspOp: c.rspOp };
    this.inFlight.add(f);
    this.barrier = true;
    const sync = (): void => this.d.storage.flush((err) => this.d.post(() => {
      if (!this.inFlight.delete(f)) return;
      this.barrier = false;
      this.respond(f.id, f.rspOp, err ? BLKIF_RSP_ERROR : this.dataOf(c));
      this.push();
      this.kick();
    }));
    if (this.quiet) sync();
    else this.afterDiscards.push(sync);
  }
}
