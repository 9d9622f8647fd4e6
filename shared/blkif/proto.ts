/**
 * The blkif wire format, apart from any I/O (the MirageOS blkproto shape):
 * requests and responses to and from the bytes of one ring entry
 * (shared/abi/blkif.ts), used by both blkfront and blkback.
 *
 * Decoding is structural only: it reads a private copy of an entry and never
 * rejects; an operation it does not know decodes to `{ kind: 'unknown' }`.
 * Whether a request is acceptable (segment counts, sector ranges, the
 * device's size and mode) is the back end's check, done on the decoded copy.
 *
 * Sector numbers and counts are u64 on the wire; they decode to numbers,
 * exact below 2^53 (far past any disk) and otherwise some number >= 2^53,
 * which every range check rejects. Request ids are opaque u64 that a back end
 * echoes unchanged: they stay bigint.
 */
import {
  BLKIF_MAX_INDIRECT_PAGES_PER_REQUEST, BLKIF_MAX_SEGMENTS_PER_REQUEST, BLKIF_OP_DISCARD, BLKIF_OP_FLUSH_DISKCACHE,
  BLKIF_OP_INDIRECT, BLKIF_OP_READ, BLKIF_OP_WRITE, BLKIF_OP_WRITE_BARRIER, BLKIF_REQUEST, BLKIF_REQUEST_DISCARD,
  BLKIF_REQUEST_INDIRECT, BLKIF_REQUEST_SEGMENT, BLKIF_RESPONSE, BLKIF_RING_ENTRY_SIZE,
} from '../abi/blkif.ts';

export interface BlkifSegment {
  readonly gref: number;
  /** First 512-byte sector of the page the segment covers (0..7 when valid). */
  readonly firstSect: number;
  /** Last sector, inclusive (firstSect..7 when valid). */
  readonly lastSect: number;
}

/** READ, WRITE, WRITE_BARRIER, FLUSH_DISKCACHE: struct blkif_request. */
export interface BlkifRwRequest {
  readonly kind: 'rw';
  readonly operation: typeof BLKIF_OP_READ | typeof BLKIF_OP_WRITE | typeof BLKIF_OP_WRITE_BARRIER | typeof BLKIF_OP_FLUSH_DISKCACHE;
  /** As sent: may exceed the segments decoded (at most BLKIF_MAX_SEGMENTS_PER_REQUEST are). */
  readonly nrSegments: number;
  readonly handle: number;
  readonly id: bigint;
  readonly sector: number;
  readonly segs: readonly BlkifSegment[];
}

export interface BlkifDiscardRequest {
  readonly kind: 'discard';
  readonly operation: typeof BLKIF_OP_DISCARD;
  readonly flag: number;
  readonly handle: number;
  readonly id: bigint;
  readonly sector: number;
  readonly nrSectors: number;
}

export interface BlkifIndirectRequest {
  readonly kind: 'indirect';
  readonly operation: typeof BLKIF_OP_INDIRECT;
  /** The operation the indirect segments carry (READ or WRITE when valid). */
  readonly indirectOp: number;
  readonly nrSegments: number;
  readonly handle: number;
  readonly id: bigint;
  readonly sector: number;
  /** All BLKIF_MAX_INDIRECT_PAGES_PER_REQUEST slots; those used are the first ceil(nrSegments / SEGS_PER_INDIRECT_FRAME). */
  readonly indirectGrefs: readonly number[];
}

export interface BlkifUnknownRequest {
  readonly kind: 'unknown';
  readonly operation: number;
  readonly id: bigint;
}

export type BlkifRequest = BlkifRwRequest | BlkifDiscardRequest | BlkifIndirectRequest | BlkifUnknownRequest;

export interface BlkifResponse {
  readonly id: bigint;
  readonly operation: number;
  readonly status: number;
}

const RQ = BLKIF_REQUEST.fields;
const RD = BLKIF_REQUEST_DISCARD.fields;
const RI = BLKIF_REQUEST_INDIRECT.fields;
const RS = BLKIF_RESPONSE.fields;
const SEG = BLKIF_REQUEST_SEGMENT.fields;
const SEG_SIZE = BLKIF_REQUEST_SEGMENT.size;

const view = (b: Uint8Array): DataView => new DataView(b.buffer, b.byteOffset, b.byteLength);

/** A u64 as a number: exact below 2^53. */
function u64n(dv: DataView, at: number): number {
  return dv.getUint32(at + 4, true) * 0x1_0000_0000 + dv.getUint32(at, true);
}

function setU64n(dv: DataView, at: number, v: number): void {
  dv.setUint32(at, v >>> 0, true);
  dv.setUint32(at + 4, Math.floor(v / 0x1_0000_0000) >>> 0, true);
}

/** Segment `i` of a segment array starting at byte `at`. */
function segmentAt(dv: DataView, at: number): BlkifSegment {
  return {
    gref: dv.getUint32(at + SEG.gref.offset, true),
    firstSect: dv.getUint8(at + SEG.first_sect.offset),
    lastSect: dv.getUint8(at + SEG.last_sect.offset),
  };
}

/**
 * A request's first bytes, copied first when a back end copies only what a
 * request uses (REQUEST_HEAD_BYTES and requestBytes): the header, which names
 * the operation and segment count, and the first segment.
 */
export const REQUEST_HEAD_BYTES = RQ.seg.offset + SEG_SIZE;

/**
 * How many bytes of its entry a request uses, from the private copy of its
 * first REQUEST_HEAD_BYTES: a direct READ or WRITE its header and segments
 * (at least one; BLKIF_MAX_SEGMENTS_PER_REQUEST at most), any other the whole
 * entry. decodeRequest and DirectRwScratch.decode read no byte past it.
 */
export function requestBytes(head: Uint8Array): number {
  const op = head[RQ.operation.offset]!;
  if (op !== BLKIF_OP_READ && op !== BLKIF_OP_WRITE) return BLKIF_RING_ENTRY_SIZE;
  const n = head[RQ.nr_segments.offset]!;
  return RQ.seg.offset + (n === 0 ? 1 : n < BLKIF_MAX_SEGMENTS_PER_REQUEST ? n : BLKIF_MAX_SEGMENTS_PER_REQUEST) * SEG_SIZE;
}

/** Decode a private copy of one request entry (at least BLKIF_RING_ENTRY_SIZE bytes). */
export function decodeRequest(entry: Uint8Array): BlkifRequest {
  if (entry.length < BLKIF_RING_ENTRY_SIZE) throw new RangeError(`a blkif request entry is ${BLKIF_RING_ENTRY_SIZE} bytes, got ${entry.length}`);
  const dv = view(entry);
  const operation = dv.getUint8(RQ.operation.offset);
  const id = dv.getBigUint64(RQ.id.offset, true);
  switch (operation) {
    case BLKIF_OP_READ:
    case BLKIF_OP_WRITE:
    case BLKIF_OP_WRITE_BARRIER:
    case BLKIF_OP_FLUSH_DISKCACHE: {
      const nrSegments = dv.getUint8(RQ.nr_segments.offset);
      const segs: BlkifSegment[] = [];
      const n = Math.min(nrSegments, BLKIF_MAX_SEGMENTS_PER_REQUEST);
      for (let i = 0; i < n; i++) segs.push(segmentAt(dv, RQ.seg.offset + i * SEG_SIZE));
      return {
        kind: 'rw', operation, nrSegments, handle: dv.getUint16(RQ.handle.offset, true), id,
        sector: u64n(dv, RQ.sector_number.offset), segs,
      };
    }
    case BLKIF_OP_DISCARD:
      return {
        kind: 'discard', operation, flag: dv.getUint8(RD.flag.offset), handle: dv.getUint16(RD.handle.offset, true), id,
        sector: u64n(dv, RD.sector_number.offset), nrSectors: u64n(dv, RD.nr_sectors.offset),
      };
    case BLKIF_OP_INDIRECT: {
      const indirectGrefs: number[] = [];
      for (let i = 0; i < BLKIF_MAX_INDIRECT_PAGES_PER_REQUEST; i++) indirectGrefs.push(dv.getUint32(RI.indirect_grefs.offset + 4 * i, true));
      return {
        kind: 'indirect', operation, indirectOp: dv.getUint8(RI.indirect_op.offset), nrSegments: dv.getUint16(RI.nr_segments.offset, true),
        handle: dv.getUint16(RI.handle.offset, true), id, sector: u64n(dv, RI.sector_number.offset), indirectGrefs,
      };
    }
    default:
      return { kind: 'unknown', operation, id };
  }
}

/**
 * Encode `req` into `out` (BLKIF_RING_ENTRY_SIZE bytes, zeroed first: no
 * stale bytes of an earlier request leak into the ring). Returns `out`.
 */
export function encodeRequest(req: Exclude<BlkifRequest, BlkifUnknownRequest>, out: Uint8Array = new Uint8Array(BLKIF_RING_ENTRY_SIZE)): Uint8Array {
  if (out.length < BLKIF_RING_ENTRY_SIZE) throw new RangeError(`a blkif request entry is ${BLKIF_RING_ENTRY_SIZE} bytes`);
  out.fill(0, 0, BLKIF_RING_ENTRY_SIZE);
  const dv = view(out);
  dv.setUint8(RQ.operation.offset, req.operation);
  dv.setBigUint64(RQ.id.offset, BigInt.asUintN(64, req.id), true);
  switch (req.kind) {
    case 'rw':
      if (req.segs.length > BLKIF_MAX_SEGMENTS_PER_REQUEST) throw new RangeError(`${req.segs.length} segments in a direct request (max ${BLKIF_MAX_SEGMENTS_PER_REQUEST})`);
      req.segs.forEach((s, i) => setRequestSegment(dv, i, s.gref, s.firstSect, s.lastSect));
      setRwRequestHeader(dv, req.operation, req.nrSegments, req.handle, req.sector);
      return out;
    case 'discard':
      dv.setUint8(RD.flag.offset, req.flag);
      dv.setUint16(RD.handle.offset, req.handle, true);
      setU64n(dv, RD.sector_number.offset, req.sector);
      setU64n(dv, RD.nr_sectors.offset, req.nrSectors);
      return out;
    case 'indirect':
      if (req.indirectGrefs.length > BLKIF_MAX_INDIRECT_PAGES_PER_REQUEST) throw new RangeError(`${req.indirectGrefs.length} indirect pages (max ${BLKIF_MAX_INDIRECT_PAGES_PER_REQUEST})`);
      dv.setUint8(RI.indirect_op.offset, req.indirectOp);
      dv.setUint16(RI.nr_segments.offset, req.nrSegments, true);
      setU64n(dv, RI.sector_number.offset, req.sector);
      dv.setUint16(RI.handle.offset, req.handle, true);
      req.indirectGrefs.forEach((g, i) => dv.setUint32(RI.indirect_grefs.offset + 4 * i, g >>> 0, true));
      return out;
  }
}

/**
 * The allocation-free pieces of encodeRequest for a front end's hot path, on
 * an entry it zeroed itself: segment `i` of a direct request (struct
 * blkif_request seg[i])...
 */
export function setRequestSegment(dv: DataView, i: number, gref: number, firstSect: number, lastSect: number): void {
  setSegmentAt(dv, RQ.seg.offset + i * SEG_SIZE, gref, firstSect, lastSect);
}

/**
 * ...and segment `i` of an indirect segment array (struct
 * blkif_request_segment[], SEGS_PER_INDIRECT_FRAME a page: segment i at byte
 * i * 8 of the pages laid end to end). Padding is left as it is.
 */
export function setIndirectSegment(dv: DataView, i: number, gref: number, firstSect: number, lastSect: number): void {
  setSegmentAt(dv, i * SEG_SIZE, gref, firstSect, lastSect);
}

function setSegmentAt(dv: DataView, at: number, gref: number, firstSect: number, lastSect: number): void {
  dv.setUint32(at + SEG.gref.offset, gref >>> 0, true);
  dv.setUint8(at + SEG.first_sect.offset, firstSect);
  dv.setUint8(at + SEG.last_sect.offset, lastSect);
}

/**
 * ...and the header of a READ/WRITE/BARRIER/FLUSH request; the id is left as
 * it is (encodeRequest writes the bigint; `setRequestIdLow` writes an id
 * below 2^32 without one).
 */
export function setRwRequestHeader(dv: DataView, operation: number, nrSegments: number, handle: number, sector: number): void {
  dv.setUint8(RQ.operation.offset, operation);
  dv.setUint8(RQ.nr_segments.offset, nrSegments);
  dv.setUint16(RQ.handle.offset, handle, true);
  setU64n(dv, RQ.sector_number.offset, sector);
}

/** A request id below 2^32 (a front end's shadow index), as the u64 at BLKIF_REQUEST id. */
export function setRequestIdLow(dv: DataView, id: number): void {
  dv.setUint32(RQ.id.offset, id >>> 0, true);
  dv.setUint32(RQ.id.offset + 4, 0, true);
}

function writeSegment(dv: DataView, at: number, s: BlkifSegment): void {
  setSegmentAt(dv, at, s.gref, s.firstSect, s.lastSect);
}

/** The first `count` segments of a private copy of indirect pages' bytes (struct blkif_request_segment[]). */
export function decodeIndirectSegments(pages: Uint8Array, count: number): BlkifSegment[] {
  if (count * SEG_SIZE > pages.length) throw new RangeError(`${count} indirect segments need ${count * SEG_SIZE} bytes, got ${pages.length}`);
  const dv = view(pages);
  const segs: BlkifSegment[] = [];
  for (let i = 0; i < count; i++) segs.push(segmentAt(dv, i * SEG_SIZE));
  return segs;
}

/** Encode segments as an indirect page array (8 bytes each) into `out` (zeroed first). */
export function encodeIndirectSegments(segs: readonly BlkifSegment[], out: Uint8Array = new Uint8Array(segs.length * SEG_SIZE)): Uint8Array {
  if (segs.length * SEG_SIZE > out.length) throw new RangeError(`${segs.length} indirect segments need ${segs.length * SEG_SIZE} bytes`);
  out.fill(0);
  const dv = view(out);
  segs.forEach((s, i) => writeSegment(dv, i * SEG_SIZE, s));
  return out;
}

/** Decode a private copy of one response (at least 16 bytes). */
export function decodeResponse(entry: Uint8Array): BlkifResponse {
  if (entry.length < BLKIF_RESPONSE.size) throw new RangeError(`a blkif response is ${BLKIF_RESPONSE.size} bytes, got ${entry.length}`);
  const dv = view(entry);
  return { id: dv.getBigUint64(RS.id.offset, true), operation: dv.getUint8(RS.operation.offset), status: dv.getInt16(RS.status.offset, true) };
}

/** Encode a response into `out` (16 bytes, zeroed first). */
export function encodeResponse(rsp: BlkifResponse, out: Uint8Array = new Uint8Array(BLKIF_RESPONSE.size)): Uint8Array {
  out.fill(0, 0, BLKIF_RESPONSE.size);
  const dv = view(out);
  dv.setBigUint64(RS.id.offset, BigInt.asUintN(64, rsp.id), true);
  dv.setUint8(RS.operation.offset, rsp.operation & 0xff);
  dv.setInt16(RS.status.offset, rsp.status, true);
  return out;
}

// Module-local offsets for the scratch path (read once: an imported binding
// read per access costs more under tsx than the field itself).
const DQ_OPERATION = RQ.operation.offset;
const DQ_NR_SEGMENTS = RQ.nr_segments.offset;
const DQ_HANDLE = RQ.handle.offset;
const DQ_ID = RQ.id.offset;
const DQ_SECTOR = RQ.sector_number.offset;
const DQ_SEG = RQ.seg.offset;
const DQ_SEG_SIZE = SEG_SIZE;
const DQ_SEG_GREF = SEG.gref.offset;
const DQ_SEG_FIRST = SEG.first_sect.offset;
const DQ_SEG_LAST = SEG.last_sect.offset;
const DS_ID = RS.id.offset;

/** A segment a scratch decoder rewrites in place (reused from request to request). */
export class MutableSegment implements BlkifSegment {
  gref = 0;
  firstSect = 0;
  lastSect = 0;
}

/**
 * A reusable decoding of one direct READ or WRITE (struct blkif_request), for
 * a back end's allocation-free common path: the fields of BlkifRwRequest but
 * the id, which stays in the entry's bytes (a back end copies them back
 * unchanged: `copyRequestId`). Only valid until the next decode into it.
 */
export class DirectRwScratch {
  operation = 0;
  /** As sent (0..255); `segs` holds the first min(nrSegments, BLKIF_MAX_SEGMENTS_PER_REQUEST). */
  nrSegments = 0;
  handle = 0;
  sector = 0;
  readonly segs: BlkifSegment[] = [];
  private readonly pool: MutableSegment[] = Array.from({ length: BLKIF_MAX_SEGMENTS_PER_REQUEST }, () => new MutableSegment());

  /**
   * Decode the private copy behind `dv` (at least BLKIF_RING_ENTRY_SIZE
   * bytes) if its operation is READ or WRITE, exactly as decodeRequest would
   * (but the id): true then; false (scratch unspecified) for any other
   * operation. Allocates nothing.
   */
  decode(dv: DataView): boolean {
    const operation = dv.getUint8(DQ_OPERATION);
    if (operation !== BLKIF_OP_READ && operation !== BLKIF_OP_WRITE) return false;
    const nrSegments = dv.getUint8(DQ_NR_SEGMENTS);
    const n = nrSegments < BLKIF_MAX_SEGMENTS_PER_REQUEST ? nrSegments : BLKIF_MAX_SEGMENTS_PER_REQUEST;
    const segs = this.segs;
    if (segs.length !== n) segs.length = n;
    for (let i = 0; i < n; i++) {
      const s = this.pool[i]!;
      const at = DQ_SEG + i * DQ_SEG_SIZE;
      s.gref = dv.getUint32(at + DQ_SEG_GREF, true);
      s.firstSect = dv.getUint8(at + DQ_SEG_FIRST);
      s.lastSect = dv.getUint8(at + DQ_SEG_LAST);
      segs[i] = s;
    }
    this.operation = operation;
    this.nrSegments = nrSegments;
    this.handle = dv.getUint16(DQ_HANDLE, true);
    this.sector = dv.getUint32(DQ_SECTOR + 4, true) * 0x1_0000_0000 + dv.getUint32(DQ_SECTOR, true);
    return true;
  }
}

/**
 * Copy a request's id (u64 at BLKIF_REQUEST id) from the private copy behind
 * `req` into a response's id (BLKIF_RESPONSE id) behind `rsp`, as bytes: what
 * echoing the decoded bigint does, without allocating it.
 */
export function copyRequestId(req: DataView, rsp: DataView): void {
  rsp.setUint32(DS_ID, req.getUint32(DQ_ID, true), true);
  rsp.setUint32(DS_ID + 4, req.getUint32(DQ_ID + 4, true), true);
}

// struct blkif_request_indirect offsets for the scratch path.
const DI_OP = RI.indirect_op.offset;
const DI_NR_SEGMENTS = RI.nr_segments.offset;
const DI_HANDLE = RI.handle.offset;
const DI_SECTOR = RI.sector_number.offset;
const DI_GREFS = RI.indirect_grefs.offset;

/**
 * A reusable decoding of one INDIRECT request whose indirect_op is READ or
 * WRITE (struct blkif_request_indirect), and of the segment arrays of its
 * indirect pages (struct blkif_request_segment[]), for a back end's
 * allocation-free path: the fields of BlkifIndirectRequest but the id (left
 * in the entry's bytes: `copyRequestId`), and the segments as three parallel
 * typed arrays instead of objects. Only valid until the next decode into it.
 */
export class IndirectRwScratch {
  /** indirect_op: READ or WRITE after a successful `decode`. */
  indirectOp = 0;
  /** As sent (0..65535). */
  nrSegments = 0;
  handle = 0;
  sector = 0;
  /** All BLKIF_MAX_INDIRECT_PAGES_PER_REQUEST indirect_grefs slots. */
  readonly indirectGrefs = new Uint32Array(BLKIF_MAX_INDIRECT_PAGES_PER_REQUEST);
  /** Segments read by `readSegments`: the first `count` entries of each array. */
  count = 0;
  gref = new Uint32Array(0);
  firstSect = new Uint8Array(0);
  lastSect = new Uint8Array(0);

  /**
   * Decode the private copy behind `dv` (at least BLKIF_RING_ENTRY_SIZE
   * bytes) if it is an INDIRECT request with indirect_op READ or WRITE,
   * exactly as decodeRequest would (but the id): true then; false (scratch
   * unspecified) otherwise. Allocates nothing; `count` is reset to 0.
   */
  decode(dv: DataView): boolean {
    if (dv.getUint8(DQ_OPERATION) !== BLKIF_OP_INDIRECT) return false;
    const op = dv.getUint8(DI_OP);
    if (op !== BLKIF_OP_READ && op !== BLKIF_OP_WRITE) return false;
    this.indirectOp = op;
    this.nrSegments = dv.getUint16(DI_NR_SEGMENTS, true);
    this.handle = dv.getUint16(DI_HANDLE, true);
    this.sector = dv.getUint32(DI_SECTOR + 4, true) * 0x1_0000_0000 + dv.getUint32(DI_SECTOR, true);
    const g = this.indirectGrefs;
    for (let i = 0; i < BLKIF_MAX_INDIRECT_PAGES_PER_REQUEST; i++) g[i] = dv.getUint32(DI_GREFS + 4 * i, true);
    this.count = 0;
    return true;
  }

  /**
   * Read the first `count` segments of a private copy of indirect pages'
   * bytes behind `pages` (as decodeIndirectSegments does, into the typed
   * arrays; they grow once if too small, else nothing is allocated).
   */
  readSegments(pages: DataView, count: number): void {
    if (count * SEG_SIZE > pages.byteLength) throw new RangeError(`${count} indirect segments need ${count * SEG_SIZE} bytes, got ${pages.byteLength}`);
    if (this.gref.length < count) {
      this.gref = new Uint32Array(count);
      this.firstSect = new Uint8Array(count);
      this.lastSect = new Uint8Array(count);
    }
    const gref = this.gref;
    const first = this.firstSect;
    const last = this.lastSect;
    for (let i = 0, at = 0; i < count; i++, at += DQ_SEG_SIZE) {
      gref[i] = pages.getUint32(at + DQ_SEG_GREF, true);
      first[i] = pages.getUint8(at + DQ_SEG_FIRST);
      last[i] = pages.getUint8(at + DQ_SEG_LAST);
    }
    this.count = count;
  }
}
