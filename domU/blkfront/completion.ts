/**
 * Reading blkif responses (Linux blkfront's blkif_interrupt side): a private
 * copy of each response taken from its slot before it is looked at (rule 3),
 * the copy of a read's data out of its pages, and the feature a backend's
 * BLKIF_RSP_EOPNOTSUPP turns off. Matching a response to its request and
 * settling the I/O are the device's (blkfront.ts).
 */
import { BLKIF_OP_DISCARD, BLKIF_OP_FLUSH_DISKCACHE, BLKIF_OP_WRITE_BARRIER, BLKIF_RESPONSE, BLKIF_SECTOR_SIZE } from '../../shared/abi/blkif.ts';
import type { Xen } from '../../shared/guest/xen.ts';
import { PAGE_SIZE } from '../../shared/types.ts';
import type { BlkRing, Shadow } from './ring.ts';
import type { BlkFeatures } from './types.ts';

/** Field offsets of the response entry (shared/abi/blkif.ts). */
const RS = BLKIF_RESPONSE.fields;

/** A u64 given as two words, in decimal (for messages). */
export const u64Text = (lo: number, hi: number): string => ((BigInt(hi >>> 0) << 32n) | BigInt(lo >>> 0)).toString();

/**
 * Our private copy of the last batch of responses taken (whole ring entries,
 * each starting with a struct blkif_response), read in place: one buffer,
 * reused (no allocation per response).
 */
export class ResponseCopy {
  private buf = new Uint8Array(0);
  private view = new DataView(this.buf.buffer);
  /** Where the response being looked at starts in `buf`, and the ring's entry size. */
  private at = 0;
  private entrySize = 0;

  /**
   * Copy the next `n` responses out of their slots (the caller knows they are
   * there) in one go; the slots are not read again. Then `select(i)` each.
   */
  takeBatch(ring: BlkRing, n: number): void {
    const es = ring.front.entrySize;
    const need = ring.front.size * es;
    if (this.buf.length < need) {
      this.buf = new Uint8Array(need);
      this.view = new DataView(this.buf.buffer);
    }
    this.entrySize = es;
    ring.front.takeResponsesInto(this.buf, n);
    this.at = 0;
  }
  /** Look at the i-th response of the batch taken last. */
  select(i: number): void { this.at = i * this.entrySize; }
  /** The u64 id's low word. */
  get id(): number { return this.view.getUint32(this.at + RS.id.offset, true); }
  /** The u64 id's high word. */
  get idHigh(): number { return this.view.getUint32(this.at + RS.id.offset + 4, true); }
  get operation(): number { return this.view.getUint8(this.at + RS.operation.offset); }
  get status(): number { return this.view.getInt16(this.at + RS.status.offset, true); }
}

/**
 * Copy a read's data from its pages into the caller's Uint8Array, at the
 * piece's offset. A BlkBuffer's read needs nothing: the backend wrote into
 * the buffer's own pages (zero-copy).
 */
export function copyOut(xen: Xen, sh: Shadow): void {
  const op = sh.op!;
  if (op.blk !== null) return;
  const count = sh.count;
  const offset = sh.offset;
  const buf = op.buf as Uint8Array;
  const mem = xen.k.mem;
  const bytes = count * BLKIF_SECTOR_SIZE;
  const pages = sh.pages;
  // One page filling the caller's whole buffer (a 4 KiB read, or less): no view to make.
  if (sh.npages === 1 && offset === 0 && bytes === buf.length) {
    mem.readInto(pages[0]!.gpa, buf);
    return;
  }
  for (let k = 0; k < sh.npages; k++) {
    const at = offset + k * PAGE_SIZE;
    mem.readInto(pages[k]!.gpa, buf.subarray(at, at + Math.min(PAGE_SIZE, bytes - k * PAGE_SIZE)));
  }
}

/** The features once the backend said EOPNOTSUPP to `operation` (Linux turns that feature off). */
export function withoutFeature(f: BlkFeatures, operation: number): BlkFeatures {
  if (operation === BLKIF_OP_FLUSH_DISKCACHE) return { ...f, flushCache: false };
  if (operation === BLKIF_OP_WRITE_BARRIER) return { ...f, barrier: false };
  if (operation === BLKIF_OP_DISCARD) return { ...f, discard: false };
  return f;
}
