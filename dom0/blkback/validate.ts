/**
 * blkback's request check, apart from any I/O (STYLE.md rule 3: copy, then
 * validate, then act). Input is a request already decoded from a private copy
 * of its ring slot (shared/blkif/proto.ts); output is either a checked request
 * the engine may act on, or the status to answer with. Never throws for any
 * decoded request.
 *
 * The rules follow Linux's xen-blkback (blkback.c dispatch_rw_block_io,
 * xen_blkbk_parse_indirect, dispatch_discard_io, xen_vbd_translate,
 * dispatch_other_io):
 *  - an operation blkif.h does not define (4 = RESERVED_1, 7..255) is answered
 *    BLKIF_RSP_EOPNOTSUPP with the operation echoed;
 *  - READ/WRITE carry 1..BLKIF_MAX_SEGMENTS_PER_REQUEST segments; WRITE_BARRIER
 *    and FLUSH_DISKCACHE may carry 0 (a pure flush) up to the same maximum;
 *  - INDIRECT: indirect_op READ or WRITE, else ERROR answered with that
 *    indirect_op as the response's operation (Linux answers with req_operation);
 *    1..maxIndirectSegments segments, in ceil(n / 512) indirect pages;
 *  - every segment: first_sect <= last_sect <= 7 (within its 4 KiB page);
 *  - the sector range [sector, sector + n) lies inside the disk, without
 *    overflow (u64 sector numbers decode to >= 2^53 when huge: refused);
 *  - anything but READ on a read-only disk: ERROR (Linux's xen_vbd_translate
 *    treats flush and barrier as writes too);
 *  - DISCARD: EOPNOTSUPP unless the disk does discard, and for the secure flag
 *    unless it does secure discard; then the write and range checks.
 * A failed check names the rule broken in `reason` (for rate-limited logs).
 */
import {
  BLKIF_MAX_SEGMENTS_PER_REQUEST, BLKIF_OP_DISCARD, BLKIF_OP_FLUSH_DISKCACHE, BLKIF_OP_READ, BLKIF_OP_WRITE,
  BLKIF_OP_WRITE_BARRIER, BLKIF_DISCARD_SECURE, BLKIF_RSP_EOPNOTSUPP, BLKIF_RSP_ERROR, SECTORS_PER_PAGE,
  SEGS_PER_INDIRECT_FRAME,
} from '../../shared/abi/blkif.ts';
import type { BlkifIndirectRequest, BlkifRequest, BlkifSegment, DirectRwScratch, IndirectRwScratch } from '../../shared/blkif/proto.ts';

/** What the check needs to know of the device. */
export interface DiskLimits {
  /** Disk size in 512-byte sectors. */
  readonly sectors: number;
  readonly readonly: boolean;
  /** feature-discard advertised. */
  readonly discard: boolean;
  /** discard-secure advertised. */
  readonly discardSecure: boolean;
  /** feature-max-indirect-segments advertised (0: indirect requests are refused). */
  readonly maxIndirectSegments: number;
}

/** A data or flush request the engine may act on. */
export interface CheckedIo {
  readonly kind: 'io';
  /** READ, WRITE, WRITE_BARRIER or FLUSH_DISKCACHE (an indirect request's indirect_op). */
  readonly op: number;
  /** The operation to answer with. */
  readonly rspOp: number;
  readonly id: bigint;
  /** First sector (512-byte units). */
  readonly sector: number;
  /** Sum of the segments' sectors. */
  readonly nrSectors: number;
  readonly segs: readonly BlkifSegment[];
}

export interface CheckedDiscard {
  readonly kind: 'discard';
  readonly rspOp: number;
  readonly id: bigint;
  readonly sector: number;
  readonly nrSectors: number;
  readonly secure: boolean;
}

/** A request refused: answer `status` with `id` and `rspOp`. */
export interface Refusal {
  readonly kind: 'refuse';
  readonly rspOp: number;
  readonly id: bigint;
  readonly status: number;
  readonly reason: string;
}

export type Checked = CheckedIo | CheckedDiscard | Refusal;

const refuse = (id: bigint, rspOp: number, status: number, reason: string): Refusal => ({ kind: 'refuse', rspOp, id, status, reason });

/** [sector, sector + n) inside a disk of `sectors`, all safe integers, no overflow. */
export function rangeInside(sector: number, n: number, sectors: number): boolean {
  if (!Number.isSafeInteger(sector) || !Number.isSafeInteger(n) || sector < 0 || n < 0) return false;
  if (n === 0) return sector <= sectors;
  const end = sector + n;
  return Number.isSafeInteger(end) && end <= sectors;
}

/** Sum of the segments' sectors, or -1 if a segment leaves its page (first_sect > last_sect or last_sect > 7). */
export function segmentSectors(segs: readonly BlkifSegment[]): number {
  let n = 0;
  for (let i = 0; i < segs.length; i++) {
    const s = segs[i]!;
    if (s.lastSect >= SECTORS_PER_PAGE || s.firstSect > s.lastSect) return -1;
    n += s.lastSect - s.firstSect + 1;
  }
  return n;
}

/**
 * The first check of an indirect request, before its indirect pages are
 * mapped: how many indirect pages to map (> 0), or the refusal.
 */
export function indirectPages(req: BlkifIndirectRequest, limits: DiskLimits): number | Refusal {
  const op = req.indirectOp;
  if (op !== BLKIF_OP_READ && op !== BLKIF_OP_WRITE) return refuse(req.id, op, BLKIF_RSP_ERROR, `invalid indirect operation ${op}`);
  const n = req.nrSegments;
  if (n < 1 || n > limits.maxIndirectSegments) return refuse(req.id, op, BLKIF_RSP_ERROR, `bad number of indirect segments ${n}`);
  return Math.ceil(n / SEGS_PER_INDIRECT_FRAME);
}

/** Check segments and range of a data request; `op` is what is done, `rspOp` what is answered. */
function checkData(id: bigint, op: number, rspOp: number, sector: number, segs: readonly BlkifSegment[], limits: DiskLimits): Checked {
  const nrSectors = segmentSectors(segs);
  if (nrSectors < 0) return refuse(id, rspOp, BLKIF_RSP_ERROR, 'segment outside its page');
  if (op !== BLKIF_OP_READ && limits.readonly) return refuse(id, rspOp, BLKIF_RSP_ERROR, 'write to a read-only disk');
  if (nrSectors > 0 && !rangeInside(sector, nrSectors, limits.sectors)) return refuse(id, rspOp, BLKIF_RSP_ERROR, 'access beyond the end of the disk');
  return { kind: 'io', op, rspOp, id, sector, nrSectors, segs };
}

/**
 * Check a decoded request. For an INDIRECT request `indirectSegs` are the
 * segments copied out of its indirect pages (exactly nrSegments of them);
 * without them an indirect request is refused (the caller could not read its
 * pages: a bad indirect gref).
 */
export function checkRequest(req: BlkifRequest, limits: DiskLimits, indirectSegs?: readonly BlkifSegment[] | null): Checked {
  switch (req.kind) {
    case 'rw': {
      const n = req.nrSegments;
      const flushy = req.operation === BLKIF_OP_WRITE_BARRIER || req.operation === BLKIF_OP_FLUSH_DISKCACHE;
      if ((n === 0 && !flushy) || n > BLKIF_MAX_SEGMENTS_PER_REQUEST) {
        return refuse(req.id, req.operation, BLKIF_RSP_ERROR, `bad number of segments ${n}`);
      }
      return checkData(req.id, req.operation, req.operation, req.sector, req.segs, limits);
    }
    case 'indirect': {
      const pages = indirectPages(req, limits);
      if (typeof pages !== 'number') return pages;
      if (!indirectSegs || indirectSegs.length !== req.nrSegments) {
        return refuse(req.id, req.indirectOp, BLKIF_RSP_ERROR, 'indirect segments unreadable');
      }
      return checkData(req.id, req.indirectOp, req.indirectOp, req.sector, indirectSegs, limits);
    }
    case 'discard': {
      const secure = (req.flag & BLKIF_DISCARD_SECURE) !== 0;
      if (!limits.discard) return refuse(req.id, BLKIF_OP_DISCARD, BLKIF_RSP_EOPNOTSUPP, 'discard not supported');
      if (secure && !limits.discardSecure) return refuse(req.id, BLKIF_OP_DISCARD, BLKIF_RSP_EOPNOTSUPP, 'secure discard not supported');
      if (limits.readonly) return refuse(req.id, BLKIF_OP_DISCARD, BLKIF_RSP_ERROR, 'discard on a read-only disk');
      if (!rangeInside(req.sector, req.nrSectors, limits.sectors)) return refuse(req.id, BLKIF_OP_DISCARD, BLKIF_RSP_ERROR, 'discard beyond the end of the disk');
      return { kind: 'discard', rspOp: BLKIF_OP_DISCARD, id: req.id, sector: req.sector, nrSectors: req.nrSectors, secure };
    }
    case 'unknown':
      return refuse(req.id, req.operation, BLKIF_RSP_EOPNOTSUPP, `unknown operation ${req.operation}`);
  }
}

/**
 * The common case's check, without allocating: for a direct READ or WRITE
 * decoded into `req` (DirectRwScratch.decode returned true), its number of
 * sectors (>= 1) if checkRequest would accept it as `io`, else -1: then the
 * caller takes the general path (decodeRequest, checkRequest), which finds
 * the refusal and its reason. The same rules as checkRequest's 'rw' case.
 */
export function checkDirectRw(req: DirectRwScratch, limits: DiskLimits): number {
  const n = req.nrSegments;
  if (n === 0 || n > BLKIF_MAX_SEGMENTS_PER_REQUEST) return -1;
  const nrSectors = segmentSectors(req.segs);
  if (nrSectors <= 0) return -1;
  if (req.operation !== BLKIF_OP_READ && limits.readonly) return -1;
  return rangeInside(req.sector, nrSectors, limits.sectors) ? nrSectors : -1;
}

/**
 * The first check of an indirect READ/WRITE decoded into `req`
 * (IndirectRwScratch.decode returned true), without allocating: how many
 * indirect pages to read (> 0), or -1 where indirectPages refuses.
 */
export function indirectRwPages(req: IndirectRwScratch, limits: DiskLimits): number {
  const n = req.nrSegments;
  if (n < 1 || n > limits.maxIndirectSegments) return -1;
  return Math.ceil(n / SEGS_PER_INDIRECT_FRAME);
}

/**
 * The indirect common path's check, without allocating: for an indirect
 * READ or WRITE decoded into `req` whose segments were read
 * (IndirectRwScratch.readSegments), its number of sectors (>= 1) if
 * checkRequest would accept it as `io` with those segments, else -1: then
 * the caller takes the general path (decodeRequest, decodeIndirectSegments,
 * checkRequest), which finds the refusal and its reason. The same rules as
 * checkRequest's 'indirect' case (indirectPages, then checkData).
 */
export function checkIndirectRw(req: IndirectRwScratch, limits: DiskLimits): number {
  const n = req.nrSegments;
  if (n < 1 || n > limits.maxIndirectSegments || req.count !== n) return -1;
  const first = req.firstSect;
  const last = req.lastSect;
  let nrSectors = 0;
  for (let i = 0; i < n; i++) {
    const f = first[i]!;
    const l = last[i]!;
    if (l >= SECTORS_PER_PAGE || f > l) return -1;
    nrSectors += l - f + 1;
  }
  if (req.indirectOp !== BLKIF_OP_READ && limits.readonly) return -1;
  return rangeInside(req.sector, nrSectors, limits.sectors) ? nrSectors : -1;
}

/** True for the two operations that ask for durability (Linux: REQ_PREFLUSH). */
export const isFlushOp = (op: number): boolean => op === BLKIF_OP_FLUSH_DISKCACHE || op === BLKIF_OP_WRITE_BARRIER;
/** True for operations whose segments are written to the disk. */
export const writesData = (op: number): boolean => op === BLKIF_OP_WRITE || op === BLKIF_OP_WRITE_BARRIER;
