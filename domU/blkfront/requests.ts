/**
 * Building blkif requests (Linux blkfront's blkif_queue_request): an I/O just
 * submitted, or the head of the driver's queue, becomes one request on the
 * ring, recorded in the shadow of the id it takes. Flush, barrier and
 * discard carry no segments; a read or write covers up to the segment limit,
 * direct (segments in the entry, BLKIF_MAX_SEGMENTS_PER_REQUEST at most) or
 * indirect (segments listed in granted indirect pages, BLKIF_OP_INDIRECT).
 *
 * Every request is encoded in one entry buffer owned by the writer and reused
 * (no allocation per request), then copied into its ring slot: a direct
 * READ/WRITE only as far as its last segment (Linux blkfront too writes the
 * fields it uses into the slot, not the whole entry; the backend reads no
 * segment past nr_segments). Publishing the slot (the push) is the caller's.
 */
import {
  BLKIF_MAX_INDIRECT_PAGES_PER_REQUEST, BLKIF_MAX_SEGMENTS_PER_REQUEST, BLKIF_OP_DISCARD, BLKIF_OP_FLUSH_DISKCACHE,
  BLKIF_OP_INDIRECT, BLKIF_OP_READ, BLKIF_OP_WRITE, BLKIF_OP_WRITE_BARRIER, BLKIF_REQUEST, BLKIF_REQUEST_SEGMENT,
  BLKIF_RING_ENTRY_SIZE, BLKIF_SECTOR_SIZE, SECTORS_PER_PAGE, SEGS_PER_INDIRECT_FRAME,
} from '../../shared/abi/blkif.ts';
import {
  encodeRequest, setIndirectSegment, setRequestIdLow, setRequestSegment, setRwRequestHeader,
} from '../../shared/blkif/proto.ts';
import { GrantTableFullError } from '../../shared/guest/gnttab.ts';
import { XenError, type Xen } from '../../shared/guest/xen.ts';
import { PAGE_SIZE } from '../../shared/types.ts';
import type { DataPages, GrantedPage } from './grants.ts';
import type { BlkRing, IoOp, Shadow } from './ring.ts';
import type { BlkDiskInfo, BlkFeatures, BlkfrontStats } from './types.ts';

const SECTOR = BLKIF_SECTOR_SIZE;
/** The most segments an indirect request can describe. */
export const MAX_INDIRECT_SEGMENTS = BLKIF_MAX_INDIRECT_PAGES_PER_REQUEST * SEGS_PER_INDIRECT_FRAME;

/** A blank request entry. */
const ZERO_ENTRY = new Uint8Array(BLKIF_RING_ENTRY_SIZE);
/** Bytes of a direct request up to the end of its segment array (struct blkif_request's seg[] at its offset). */
const directBytes = (nseg: number): number => BLKIF_REQUEST.fields.seg.offset + nseg * BLKIF_REQUEST_SEGMENT.size;

/**
 * What `issue` returns when it puts nothing on the ring (all negative; a
 * request issued returns the units it covers): the page budget is spent
 * (the caller waits for responses to give pages back), the backend offers
 * no flush / no discard, or the pages could not be granted (the caller
 * fails the I/O).
 */
export const ISSUE_NO_PAGES = -1;
export const ISSUE_NO_FLUSH = -2;
export const ISSUE_NO_DISCARD = -3;
/** The request's pages could not be granted (RequestWriter.grantFailure says why): the caller fails the I/O. */
export const ISSUE_NO_GRANTS = -4;

/**
 * Why `sector`+`count` cannot be done on `d` (outside the disk, or not
 * aligned to its sector size), or undefined if it can.
 */
export function rangeError(d: BlkDiskInfo, sector: number, count: number): string | undefined {
  if (!Number.isSafeInteger(sector) || !Number.isSafeInteger(count) || sector < 0 || count < 0) return `bad range ${sector}+${count}`;
  if (sector + count > d.sectors) return `sectors ${sector}..${sector + count} past the end of the disk (${d.sectors})`;
  const per = d.sectorSize / SECTOR;
  if (per > 1 && (sector % per !== 0 || count % per !== 0)) return `sectors ${sector}+${count} not aligned to the ${d.sectorSize}-byte sector size`;
  return undefined;
}

export class RequestWriter {
  /** The entry a request is encoded in before it is copied into its slot (reused: no allocation per request). */
  private readonly reqBuf = new Uint8Array(BLKIF_RING_ENTRY_SIZE);
  private readonly reqView = new DataView(this.reqBuf.buffer);
  /**
   * An indirect request's segment arrays, its pages end to end (reused): each
   * request writes its segments and zeroes the rest of its last page, and
   * each indirect page is copied from its 4 KiB here.
   */
  private readonly indBuf = new Uint8Array(BLKIF_MAX_INDIRECT_PAGES_PER_REQUEST * PAGE_SIZE);
  private readonly indView = new DataView(this.indBuf.buffer);
  /** reqBuf up to a direct request's last segment, by segment count (made once). */
  private readonly directViews = Array.from({ length: BLKIF_MAX_SEGMENTS_PER_REQUEST + 1 }, (_, n) => this.reqBuf.subarray(0, directBytes(n)));
  /**
   * reqBuf holds only what direct requests write (header, id, segments with
   * their padding zero); false once another kind was encoded in it, which
   * writes other offsets: the next direct request clears it first.
   */
  private directClean = true;
  /** Why the last ISSUE_NO_GRANTS was returned (the grant table's error). */
  grantFailure = '';

  constructor(
    private readonly xen: Xen,
    private readonly pages: DataPages,
    /** The blkif handle (the virtual device number's low 16 bits). */
    private readonly handle: number,
    private readonly stats: BlkfrontStats,
  ) {}

  /**
   * Put on `ring` (the caller checked canQueue) one request for the first
   * units of `count` from `sector` of `op`, whose data is at byte `offset`
   * of op.buf. Returns how many units it covers (all of them but for a
   * read or write longer than one request takes), or ISSUE_NO_PAGES /
   * ISSUE_NO_FLUSH / ISSUE_NO_DISCARD / ISSUE_NO_GRANTS (nothing done).
   */
  issue(ring: BlkRing, op: IoOp, sector: number, count: number, offset: number, f: BlkFeatures): number {
    const kind = op.kind;
    if (kind === 'flush' || kind === 'discard') return this.issueNoData(ring, op, sector, count, f);
    return this.issueReadWrite(ring, op, sector, count, offset, f);
  }

  /** BLKIF_OP_DISCARD, BLKIF_OP_FLUSH_DISKCACHE or (else) BLKIF_OP_WRITE_BARRIER. */
  private issueNoData(ring: BlkRing, op: IoOp, sector: number, count: number, f: BlkFeatures): number {
    const kind = op.kind;
    let operation: number;
    if (kind === 'discard') operation = BLKIF_OP_DISCARD;
    else if (f.flushCache) operation = BLKIF_OP_FLUSH_DISKCACHE;
    else if (f.barrier) operation = BLKIF_OP_WRITE_BARRIER;
    else return ISSUE_NO_FLUSH;
    if (kind === 'discard' && !f.discard) return ISSUE_NO_DISCARD;
    const sh = ring.claimShadow();
    fillShadow(sh, op, sector, count, 0, operation, -1);
    const id = BigInt(sh.id);
    this.directClean = false;
    const handle = this.handle;
    ring.front.putRequest(kind === 'discard'
      ? encodeRequest({ kind: 'discard', operation: BLKIF_OP_DISCARD, flag: 0, handle, id, sector, nrSectors: count }, this.reqBuf)
      : encodeRequest({ kind: 'rw', operation: operation as typeof BLKIF_OP_FLUSH_DISKCACHE, nrSegments: 0, handle, id, sector: 0, segs: [] }, this.reqBuf));
    this.stats.requests[kind === 'discard' ? 'discard' : operation === BLKIF_OP_FLUSH_DISKCACHE ? 'flush' : 'barrier']++;
    return count;
  }

  /** BLKIF_OP_READ / BLKIF_OP_WRITE of the first sectors asked for, direct or indirect. */
  private issueReadWrite(ring: BlkRing, op: IoOp, sector: number, count: number, offset: number, f: BlkFeatures): number {
    const maxSegs = f.maxIndirectSegments > BLKIF_MAX_SEGMENTS_PER_REQUEST ? f.maxIndirectSegments : BLKIF_MAX_SEGMENTS_PER_REQUEST;
    const n = Math.min(count, maxSegs * SECTORS_PER_PAGE);
    const nseg = Math.ceil(n / SECTORS_PER_PAGE);
    const indirect = nseg > BLKIF_MAX_SEGMENTS_PER_REQUEST;
    const nind = indirect ? Math.ceil(nseg / SEGS_PER_INDIRECT_FRAME) : 0;
    // Zero-copy I/O grants the caller's pages: only indirect pages come from the pool.
    const need = (op.blk === null ? nseg : 0) + nind;
    if (need > 0 && !this.pages.available(need)) return ISSUE_NO_PAGES;

    const write = op.kind === 'write';
    // Direct requests write their segments straight into the request entry; indirect ones into indBuf.
    // Cleared by copying zeroes in (fill() is a call into the runtime).
    if (!indirect && !this.directClean) {
      this.reqBuf.set(ZERO_ENTRY);
      this.directClean = true;
    }
    const rwOp = write ? BLKIF_OP_WRITE : BLKIF_OP_READ;
    // The request covers the first n sectors; the caller keeps the rest.
    const sh = ring.claimShadow();
    fillShadow(sh, op, sector, n, offset, indirect ? BLKIF_OP_INDIRECT : rwOp, indirect ? rwOp : -1);
    try {
      this.takeDataPages(sh, nseg, write, indirect);
      if (indirect) this.writeIndirectPages(sh, nind);
    } catch (e) {
      // Its pages could not be granted (our grant table is full, or the
      // hypervisor would not let it grow): nothing goes on the ring, the pages
      // granted so far go back, the id is free again, and the caller fails
      // the I/O with `grantFailure`. Anything else is our bug: thrown on.
      this.dropShadow(ring, sh);
      if (!(e instanceof GrantTableFullError) && !(e instanceof XenError)) throw e;
      this.grantFailure = e.message;
      return ISSUE_NO_GRANTS;
    }
    if (indirect) {
      const indirectGrefs = sh.indirectPages.slice(0, nind).map((p) => p.ref!);
      encodeRequest({ kind: 'indirect', operation: BLKIF_OP_INDIRECT, indirectOp: rwOp, nrSegments: nseg, handle: this.handle, id: BigInt(sh.id), sector, indirectGrefs }, this.reqBuf);
      this.directClean = false;
      ring.front.putRequest(this.reqBuf);
    } else {
      // struct blkif_request as encodeRequest writes it (the segments are in already).
      setRwRequestHeader(this.reqView, rwOp, nseg, this.handle, sector);
      setRequestIdLow(this.reqView, sh.id);
      ring.front.putRequest(this.directViews[nseg]!);
    }
    // (Named, not computed, keys: a keyed store per request is a generic IC.)
    const counts = this.stats.requests;
    if (indirect) counts.indirect++;
    else if (write) counts.write++;
    else counts.read++;
    this.stats.segments += nseg;
    return n;
  }

  /**
   * Grant the `nseg` data pages of the request of `sh` (its count sectors
   * from its offset in the I/O's buffer) into sh.pages, sh.npages counting
   * them as they are taken (so that a throw leaves it exact): pool
   * pages (the data copied in for a write) for a Uint8Array, the buffer's
   * own pages for a BlkBuffer (nothing copied; the offset is page-aligned).
   * Each segment goes into indBuf if `indirect`, else straight into the
   * request entry (direct).
   */
  private takeDataPages(sh: Shadow, nseg: number, write: boolean, indirect: boolean): void {
    const mem = this.xen.k.mem;
    const dv = this.reqView;
    const op = sh.op!;
    const blk = op.blk;
    const buf = op.buf as Uint8Array;
    const n = sh.count;
    const first = sh.offset / PAGE_SIZE;
    const pages = sh.pages;
    for (let k = 0; k < nseg; k++) {
      const sectors = Math.min(SECTORS_PER_PAGE, n - k * SECTORS_PER_PAGE);
      let p: GrantedPage;
      if (blk !== null) {
        p = this.pages.grantBufferPage(blk.pages[first + k]!, write);
      } else {
        p = this.pages.take(write)!;
        if (write) {
          const at = sh.offset + k * PAGE_SIZE;
          mem.write(p.gpa, at === 0 && sectors * SECTOR === buf.length ? buf : buf.subarray(at, at + sectors * SECTOR));
        }
      }
      // The shadow's list is reused: it grows only to the most pages a request of its id has had.
      if (k < pages.length) pages[k] = p;
      else pages.push(p);
      sh.npages = k + 1;
      if (indirect) {
        setIndirectSegment(this.indView, k, p.ref!, 0, sectors - 1);
      } else {
        setRequestSegment(dv, k, p.ref!, 0, sectors - 1);
      }
    }
  }

  /**
   * Take and grant `nind` indirect pages for `sh` (read-only) into
   * sh.indirectPages (sh.nind counting them) and write into them its npages
   * segments in indBuf, SEGS_PER_INDIRECT_FRAME a page, the rest of the last
   * page zero.
   */
  private writeIndirectPages(sh: Shadow, nind: number): void {
    const mem = this.xen.k.mem;
    this.indBuf.fill(0, sh.npages * BLKIF_REQUEST_SEGMENT.size, nind * PAGE_SIZE);
    const pages = sh.indirectPages;
    for (let i = 0; i < nind; i++) {
      const p = this.pages.take(true)!;
      mem.write(p.gpa, this.indBuf.subarray(i * PAGE_SIZE, (i + 1) * PAGE_SIZE));
      if (i < pages.length) pages[i] = p;
      else pages.push(p);
      sh.nind = i + 1;
    }
  }

  /** A request that could not be built: its pages go back (grants ended unless persistent) and its id is freed. */
  private dropShadow(ring: BlkRing, sh: Shadow): void {
    this.pages.giveRequestPages(sh);
    ring.freeShadow(sh);
  }
}

/** Fill in a claimed shadow for the request about to go on the ring (no pages yet: they are counted as they are taken). */
function fillShadow(sh: Shadow, op: IoOp, sector: number, count: number, offset: number, operation: number, indirectOp: number): void {
  sh.op = op;
  sh.sector = sector;
  sh.count = count;
  sh.offset = offset;
  sh.operation = operation;
  sh.indirectOp = indirectOp;
  sh.npages = 0;
  sh.nind = 0;
}
