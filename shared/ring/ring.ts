/**
 * Shared I/O rings, as xen/include/public/io/ring.h defines them
 * (DEFINE_RING_TYPES, FRONT_RING_INIT, BACK_RING_INIT, RING_PUSH_*,
 * RING_FINAL_CHECK_FOR_*, RING_*_OVERFLOW), for any entry size.
 *
 * A shared ring is `pages` contiguous guest-physical pages (2^ring-page-order)
 * at `base`: the 64-byte header (shared/abi/ring.ts) then `size` entries, each
 * the union of a request and a response. `size` is a power of two; the slot of
 * free-running index `i` is `i & (size - 1)`.
 *
 * The indexes are free-running u32: they are compared and subtracted only
 * modulo 2^32 (`(a - b) >>> 0`), and read and written in shared memory only by
 * single 32-bit atomic loads and stores. Each end also keeps private state
 * that the peer never sees (front: req_prod_pvt, rsp_cons; back:
 * rsp_prod_pvt, req_cons), so a hostile peer can rewrite the shared indexes
 * but never ours.
 *
 * Ordering: JavaScript's atomics are sequentially consistent, so
 *  - an atomic store of a producer index is the write barrier (wmb) that
 *    publishes the entries written before it, and also the full barrier (mb)
 *    that orders it before the event index load that follows;
 *  - an atomic load of a producer index is the read barrier (rmb) before the
 *    entries are read.
 */
import type { GuestMemory } from '../guest/api.ts';
import { SRING_HEADER } from '../abi/ring.ts';

/**
 * What a ring needs of memory: GuestMemory satisfies it (and so does a foreign
 * mapping). `readInto`, where the memory has it, copies without allocating
 * (allocating a typed array costs V8 ~0.3 µs, more than the copy).
 */
export type RingMemory = Pick<GuestMemory, 'read' | 'write' | 'atomicLoad32' | 'atomicStore32'> & {
  readInto?(gpa: number, dst: Uint8Array): void;
};

const REQ_PROD = SRING_HEADER.fields.req_prod.offset;
const REQ_EVENT = SRING_HEADER.fields.req_event.offset;
const RSP_PROD = SRING_HEADER.fields.rsp_prod.offset;
const RSP_EVENT = SRING_HEADER.fields.rsp_event.offset;
const ENTRIES = SRING_HEADER.size;

/** `(a - b) mod 2^32`: how far index `a` is ahead of `b`. */
export const idxDiff = (a: number, b: number): number => (a - b) >>> 0;

/**
 * RING_PUSH_*_AND_CHECK_NOTIFY's test: the peer asked to be told (its event
 * index) at an index in (old, new]. True iff (new - event) < (new - old), as u32.
 */
export function needsNotify(oldProd: number, newProd: number, event: number): boolean {
  return idxDiff(newProd, event) < idxDiff(newProd, oldProd);
}

/** SHARED_RING_INIT: both producers 0, both events 1, the rest of the header zeroed. */
export function sharedRingInit(mem: RingMemory, base: number): void {
  mem.write(base, new Uint8Array(ENTRIES));
  mem.atomicStore32(base + REQ_EVENT, 1);
  mem.atomicStore32(base + RSP_EVENT, 1);
}

/** What both ends share: where the ring is and how its entries are laid out. */
export interface RingGeometry {
  /** Guest-physical address of the shared ring's first page (in this end's own address space). */
  readonly base: number;
  /** Number of entries: a power of two. */
  readonly size: number;
  /** Bytes per entry: the size of the request/response union. */
  readonly entrySize: number;
}

/** The ring geometry for `pageBytes` of ring with `entrySize` entries (__CONST_RING_SIZE). */
export function ringGeometry(base: number, pageBytes: number, entrySize: number): RingGeometry {
  const raw = Math.floor((pageBytes - ENTRIES) / entrySize);
  if (raw < 1) throw new RangeError(`a ring of ${pageBytes} bytes has no room for ${entrySize}-byte entries`);
  return { base, size: 2 ** Math.floor(Math.log2(raw)), entrySize };
}

abstract class RingEnd {
  readonly base: number;
  readonly size: number;
  readonly entrySize: number;
  protected readonly mask: number;
  constructor(protected readonly mem: RingMemory, g: RingGeometry) {
    if (!Number.isInteger(g.size) || g.size < 1 || (g.size & (g.size - 1)) !== 0) throw new RangeError(`ring size ${g.size} is not a power of two`);
    this.base = g.base;
    this.size = g.size;
    this.entrySize = g.entrySize;
    this.mask = g.size - 1;
  }
  /** Guest-physical address of the entry slot of free-running index `idx` (RING_GET_REQUEST/RESPONSE). */
  slotAddr(idx: number): number {
    return this.base + ENTRIES + (idx & this.mask) * this.entrySize;
  }
  /** A private copy of the first `len` bytes of the entry at `idx`. */
  copyEntry(idx: number, len: number = this.entrySize): Uint8Array {
    return this.mem.read(this.slotAddr(idx), len);
  }
  /** Copy the first `dst.length` bytes of the entry at `idx` into the caller's private buffer. */
  copyEntryInto(idx: number, dst: Uint8Array): Uint8Array {
    if (dst.length > this.entrySize) throw new RangeError(`${dst.length}-byte copy of a ${this.entrySize}-byte entry`);
    this.readRun(this.slotAddr(idx), dst);
    return dst;
  }
  /**
   * Copy the `n` (<= size) entries from free-running index `idx` on, slot
   * by slot in index order, into the caller's private buffer `dst` (n *
   * entrySize bytes): at most two reads, the second after the ring wraps.
   */
  copyEntriesInto(idx: number, n: number, dst: Uint8Array): void {
    const es = this.entrySize;
    if (!Number.isInteger(n) || n < 0 || n > this.size || dst.length < n * es) {
      throw new RangeError(`${n} entries of ${es} bytes into ${dst.length} bytes (ring of ${this.size})`);
    }
    const first = idx & this.mask;
    const k = Math.min(n, this.size - first);
    this.readRun(this.slotAddr(idx), k * es === dst.length ? dst : dst.subarray(0, k * es));
    if (k < n) this.readRun(this.slotAddr(0), dst.subarray(k * es, n * es));
  }
  /** Fill `dst` from `at` on (readInto where the memory has it). */
  protected readRun(at: number, dst: Uint8Array): void {
    if (this.mem.readInto) this.mem.readInto(at, dst);
    else dst.set(this.mem.read(at, dst.length));
  }
  /** Write `data` (at most one entry) into the slot of `idx`. */
  writeEntry(idx: number, data: Uint8Array): void {
    if (data.length > this.entrySize) throw new RangeError(`${data.length}-byte entry in a ring of ${this.entrySize}-byte entries`);
    this.mem.write(this.slotAddr(idx), data);
  }
  protected load(off: number): number { return this.mem.atomicLoad32(this.base + off); }
  protected store(off: number, v: number): void { this.mem.atomicStore32(this.base + off, v >>> 0); }
}

/**
 * The front end (the side that produces requests): FRONT_RING_INIT /
 * FRONT_RING_ATTACH state plus the request/response macros.
 */
export class FrontRing extends RingEnd {
  /** Private: the next request index to fill (req_prod_pvt). */
  reqProdPvt: number;
  /** Private: the next response index to consume (rsp_cons). */
  rspCons: number;
  /** Private: req_prod as we last published it (see pushRequestsAndCheckNotify). */
  reqPushed: number;

  /**
   * FRONT_RING_INIT over a ring the caller has just initialised
   * (`sharedRingInit`), or FRONT_RING_ATTACH at index `start` (reattaching
   * to a ring whose producers are at `start`).
   */
  constructor(mem: RingMemory, g: RingGeometry, start = 0) {
    super(mem, g);
    this.reqProdPvt = start >>> 0;
    this.rspCons = start >>> 0;
    this.reqPushed = start >>> 0;
  }

  /** RING_FREE_REQUESTS: slots not holding an unanswered request. */
  freeRequests(): number {
    return this.size - idxDiff(this.reqProdPvt, this.rspCons);
  }

  /** RING_FULL. */
  get full(): boolean { return this.freeRequests() === 0; }

  /** Requests filled in privately, not yet pushed. */
  get unpushed(): number { return idxDiff(this.reqProdPvt, this.load(REQ_PROD)); }

  /**
   * Fill the next request slot with `data` and advance req_prod_pvt; not
   * visible to the back end until pushed. Throws if the ring is full (a
   * caller bug: check freeRequests first).
   */
  putRequest(data: Uint8Array): number {
    if (this.full) throw new RangeError('request ring full');
    const idx = this.reqProdPvt;
    this.writeEntry(idx, data);
    this.reqProdPvt = (idx + 1) >>> 0;
    return idx;
  }

  /** RING_PUSH_REQUESTS: publish the requests filled in so far. */
  pushRequests(): void {
    this.store(REQ_PROD, this.reqProdPvt); // wmb: entries before the index
    this.reqPushed = this.reqProdPvt;
  }

  /**
   * RING_PUSH_REQUESTS_AND_CHECK_NOTIFY: publish, and say whether the back
   * end asked to be notified of an index now published (its req_event).
   * ring.h reads the old req_prod back from the shared page; only this end
   * writes it, so we keep the value we last published instead: the same
   * number whenever the back end leaves our index alone (one that scribbles
   * on it changes nothing here), and one access fewer to the ring's first
   * cache line, which the other core is polling (measured: 4 KiB reads ~6%
   * faster with both ends doing so, same runs).
   */
  pushRequestsAndCheckNotify(): boolean {
    const old = this.reqPushed;
    const now = this.reqProdPvt;
    this.store(REQ_PROD, now); // wmb, then mb: the index before the req_event load
    this.reqPushed = now;
    return needsNotify(old, now, this.load(REQ_EVENT));
  }

  /** The back end's response producer (shared; a hostile back end may write anything). */
  get rspProd(): number { return this.load(RSP_PROD); }

  /**
   * RING_RESPONSE_PROD_OVERFLOW: a response producer more than `size` past
   * rsp_cons (or past what we requested) is impossible.
   */
  responseProdOverflow(prod: number): boolean {
    return idxDiff(prod, this.rspCons) > idxDiff(this.reqProdPvt, this.rspCons);
  }

  /**
   * RING_HAS_UNCONSUMED_RESPONSES: responses waiting, or -1 if the back end's
   * producer index is impossible (the caller stops using the ring).
   */
  unconsumedResponses(): number {
    const prod = this.rspProd; // rmb: the index before the entries
    if (this.responseProdOverflow(prod)) return -1;
    return idxDiff(prod, this.rspCons);
  }

  /** Copy the next response out of the ring and advance rsp_cons. */
  takeResponse(len: number = this.entrySize): Uint8Array {
    const b = this.copyEntry(this.rspCons, len);
    this.rspCons = (this.rspCons + 1) >>> 0;
    return b;
  }

  /**
   * Copy the next `n` responses (n <= unconsumedResponses(): the caller
   * looked) into `dst`, whole entries one after another (copyEntriesInto),
   * and advance rsp_cons past them: one copy for a batch, where one per
   * response cost a guest-memory call each.
   */
  takeResponsesInto(dst: Uint8Array, n: number): void {
    this.copyEntriesInto(this.rspCons, n, dst);
    this.rspCons = (this.rspCons + n) >>> 0;
  }

  /** Copy the next response into `dst` (a private buffer) and advance rsp_cons. */
  takeResponseInto(dst: Uint8Array): Uint8Array {
    this.copyEntryInto(this.rspCons, dst);
    this.rspCons = (this.rspCons + 1) >>> 0;
    return dst;
  }

  /**
   * RING_FINAL_CHECK_FOR_RESPONSES: responses waiting (> 0), none (0: and
   * rsp_event now asks for a notification of the next one), or -1 if the back
   * end's producer is impossible.
   */
  finalCheckForResponses(): number {
    const n = this.unconsumedResponses();
    if (n !== 0) return n;
    this.store(RSP_EVENT, this.rspCons + 1); // mb: the event index before the re-check
    return this.unconsumedResponses();
  }
}

/**
 * The back end (the side that consumes requests): BACK_RING_INIT /
 * BACK_RING_ATTACH state plus the request/response macros.
 */
export class BackRing extends RingEnd {
  /** Private: the next response index to fill (rsp_prod_pvt). */
  rspProdPvt: number;
  /** Private: the next request index to consume (req_cons). */
  reqCons: number;
  /** Private: rsp_prod as we last published it (see pushResponsesAndCheckNotify). */
  rspPushed: number;

  /** BACK_RING_INIT (indexes 0), or BACK_RING_ATTACH at index `start`. */
  constructor(mem: RingMemory, g: RingGeometry, start = 0) {
    super(mem, g);
    this.rspProdPvt = start >>> 0;
    this.reqCons = start >>> 0;
    this.rspPushed = start >>> 0;
  }

  /** The front end's request producer (shared; a hostile front end may write anything). */
  get reqProd(): number { return this.load(REQ_PROD); }

  /**
   * RING_REQUEST_PROD_OVERFLOW: a request producer more than `size` ahead of
   * our responses is bogus; the back end stops the ring (Linux blkback:
   * "Frontend provided bogus ring requests"). So is one behind the requests
   * we already consumed (a producer that moved backwards): ring.h does not
   * name that case, and a back end that trusted it would consume slots the
   * front end never published.
   */
  requestProdOverflow(prod: number): boolean {
    const ahead = idxDiff(prod, this.rspProdPvt);
    return ahead > this.size || idxDiff(this.reqCons, this.rspProdPvt) > ahead;
  }

  /**
   * RING_REQUEST_CONS_OVERFLOW: `size` requests up to `cons` are taken but
   * unanswered, so the slot of `cons` may still be needed for a response:
   * consume no more until responses are produced.
   */
  requestConsOverflow(cons: number = this.reqCons): boolean {
    return idxDiff(cons, this.rspProdPvt) >= this.size;
  }

  /**
   * RING_HAS_UNCONSUMED_REQUESTS: requests that may be consumed now, or -1 if
   * the front end's producer index is impossible (stop the ring).
   */
  unconsumedRequests(): number {
    const prod = this.reqProd; // rmb: the index before the entries
    if (this.requestProdOverflow(prod)) return -1;
    const req = idxDiff(prod, this.reqCons);
    const rsp = this.size - idxDiff(this.reqCons, this.rspProdPvt);
    return Math.min(req, rsp);
  }

  /** Copy the next request out of the ring (the slot is never read again) and advance req_cons. */
  takeRequest(len: number = this.entrySize): Uint8Array {
    const b = this.copyEntry(this.reqCons, len);
    this.reqCons = (this.reqCons + 1) >>> 0;
    return b;
  }

  /** Copy the next request into `dst` (a private buffer, never the slot again) and advance req_cons. */
  takeRequestInto(dst: Uint8Array): Uint8Array {
    this.copyEntryInto(this.reqCons, dst);
    this.reqCons = (this.reqCons + 1) >>> 0;
    return dst;
  }

  /**
   * Copy bytes [from, from + dst.length) of the next request's slot into
   * `dst` (a private buffer), without taking the request: a back end that
   * copies only what a request uses copies its header, then the part the
   * header's private copy names, each byte once; consumeRequest takes it.
   */
  copyRequestPart(from: number, dst: Uint8Array): void {
    if (!Number.isInteger(from) || from < 0 || from + dst.length > this.entrySize) {
      throw new RangeError(`bytes ${from}..${from + dst.length} of a ${this.entrySize}-byte entry`);
    }
    this.readRun(this.slotAddr(this.reqCons) + from, dst);
  }

  /** Advance req_cons past the request copied out by copyRequestPart (its slot is not read again). */
  consumeRequest(): void {
    this.reqCons = (this.reqCons + 1) >>> 0;
  }

  /** Fill the next response slot and advance rsp_prod_pvt; not visible until pushed. */
  putResponse(data: Uint8Array): number {
    const idx = this.rspProdPvt;
    this.writeEntry(idx, data);
    this.rspProdPvt = (idx + 1) >>> 0;
    return idx;
  }

  /** RING_PUSH_RESPONSES. */
  pushResponses(): void {
    this.store(RSP_PROD, this.rspProdPvt); // wmb: entries before the index
    this.rspPushed = this.rspProdPvt;
  }

  /**
   * RING_PUSH_RESPONSES_AND_CHECK_NOTIFY, the old rsp_prod being the one we
   * last published (see FrontRing.pushRequestsAndCheckNotify).
   */
  pushResponsesAndCheckNotify(): boolean {
    const old = this.rspPushed;
    const now = this.rspProdPvt;
    this.store(RSP_PROD, now); // wmb, then mb: the index before the rsp_event load
    this.rspPushed = now;
    return needsNotify(old, now, this.load(RSP_EVENT));
  }

  /**
   * RING_FINAL_CHECK_FOR_REQUESTS: requests waiting (> 0), none (0: and
   * req_event now asks for a notification of the next one), or -1 if the
   * front end's producer is impossible.
   */
  finalCheckForRequests(): number {
    const n = this.unconsumedRequests();
    if (n !== 0) return n;
    this.store(REQ_EVENT, this.reqCons + 1); // mb: the event index before the re-check
    return this.unconsumedRequests();
  }
}
