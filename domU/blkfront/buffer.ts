/**
 * Zero-copy I/O buffers (BlockFront.allocBuffer): guest pages of the
 * caller's data that blkfront grants to the backend as they are, so the
 * backend's DMA lands in them (reads) or is taken from them (writes) and the
 * guest copies nothing, as Linux blkfront grants a bio's own pages
 * (blkif_queue_rw_req's gnttab_foreach_grant over the bio's segments).
 *
 * The pages come from the kernel's allocator, adjacent in gfn order when a
 * run is free (Xen.allocGfnRun): adjacent guest pages are usually
 * machine-contiguous, which lets the backend do one iovec per request. The
 * guest reaches the bytes through GuestMemory (`readInto`, `write`) or by
 * address (`gpa`). Grants are the driver's (grants.ts); the buffer only
 * knows its pages and whether I/O on it is pending.
 */
import type { GuestMemory } from '../../shared/guest/api.ts';
import { PAGE_SIZE } from '../../shared/types.ts';
import type { BufferPage } from './grants.ts';

export class BlkBuffer {
  /** The pages, in buffer order (page i holds bytes [i * 4096, (i + 1) * 4096)). */
  readonly pages: readonly BufferPage[];
  /** Reads and writes on the buffer not yet settled (freeBuffer refuses while any is). */
  pending = 0;
  /** The device that allocated it, until freed (see `isOf`): a private field, so no other code can set it. */
  #owner: object | undefined;

  /** `gfns`: the buffer's pages, in order (owned by the buffer until freed); `owner`: the allocating device. */
  constructor(private readonly mem: GuestMemory, gfns: readonly number[], owner: object) {
    this.#owner = owner;
    this.pages = gfns.map((gfn) => ({ gfn, gpa: gfn * PAGE_SIZE, persistent: undefined, stuck: 0, freed: false }));
    this.contiguous = gfns.every((g, i) => g === gfns[0]! + i);
  }

  /**
   * Is `buf` a BlkBuffer allocated by `owner` and not freed since? (The
   * device's check on every readPages/writePages: a brand check and a
   * compare, where a set of its buffers cost a hash lookup per I/O.)
   */
  static isOf(buf: unknown, owner: object): boolean {
    return typeof buf === 'object' && buf !== null && #owner in buf && buf.#owner === owner;
  }

  /** The buffer is no longer `owner`'s (freed): isOf is false from now on. */
  disown(owner: object): void {
    if (this.#owner === owner) this.#owner = undefined;
  }

  /** Freed (BlockFront.freeBuffer): its pages may belong to someone else now. Read-only: nothing brings a buffer back. */
  get freed(): boolean { return this.#owner === undefined; }

  /** Size in bytes (a whole number of pages). */
  get bytes(): number { return this.pages.length * PAGE_SIZE; }

  /** Its pages are adjacent in our physmap (one guest-physical range from gpa(0)). */
  readonly contiguous: boolean;

  /** Guest-physical address of byte `offset`. */
  gpa(offset: number): number {
    this.check(offset, 1);
    return this.pages[Math.floor(offset / PAGE_SIZE)]!.gpa + (offset % PAGE_SIZE);
  }

  /** Copy bytes [offset, offset + dst.length) of the buffer into `dst`. */
  readInto(offset: number, dst: Uint8Array): void {
    this.check(offset, dst.length);
    this.each(offset, dst.length, (gpa, at, n) => this.mem.readInto(gpa, n === dst.length ? dst : dst.subarray(at, at + n)));
  }

  /** Copy `data` into the buffer at byte `offset`. */
  write(offset: number, data: Uint8Array): void {
    this.check(offset, data.length);
    this.each(offset, data.length, (gpa, at, n) => this.mem.write(gpa, n === data.length ? data : data.subarray(at, at + n)));
  }

  /** Call fn(gpa, byte index from `offset`, length) for each page-sized part of [offset, offset + len). */
  private each(offset: number, len: number, fn: (gpa: number, at: number, n: number) => void): void {
    if (this.contiguous) {
      if (len > 0) fn(this.pages[0]!.gpa + offset, 0, len);
      return;
    }
    for (let at = 0; at < len;) {
      const o = offset + at;
      const n = Math.min(len - at, PAGE_SIZE - (o % PAGE_SIZE));
      fn(this.pages[Math.floor(o / PAGE_SIZE)]!.gpa + (o % PAGE_SIZE), at, n);
      at += n;
    }
  }

  private check(offset: number, len: number): void {
    if (this.freed) throw new Error('BlkBuffer: used after freeBuffer');
    if (!Number.isSafeInteger(offset) || offset < 0 || offset + len > this.bytes) {
      throw new RangeError(`BlkBuffer: bytes ${offset}+${len} outside the ${this.bytes}-byte buffer`);
    }
  }
}
