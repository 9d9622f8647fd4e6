/**
 * blkfront's shared ring and its shadow table (Linux blkfront's
 * blkfront_ring_info and blk_shadow): 2^order pages of our memory holding an
 * io/ring.h ring of blkif entries, each page granted to the backend, and one
 * shadow per ring slot remembering what the request in flight under that id
 * was for (which piece of which I/O, which pages), so that a response is
 * matched to it and so that unanswered requests can be issued again on a new
 * ring (blkif_recover).
 *
 * Request ids are shadow indexes 0..size-1. A response naming an id with no
 * request in flight is the backend's fault (the caller stops the ring).
 */
import { BLKIF_RING_ENTRY_SIZE } from '../../shared/abi/blkif.ts';
import type { GrantTable } from '../../shared/guest/gnttab.ts';
import type { Xen } from '../../shared/guest/xen.ts';
import { FrontRing, ringGeometry, sharedRingInit } from '../../shared/ring/ring.ts';
import { PAGE_SIZE, type GrantRef } from '../../shared/types.ts';
import type { BlkBuffer } from './buffer.ts';
import type { GrantedPage } from './grants.ts';
import { pagedRingMemory } from './paged-memory.ts';

/**
 * Where an I/O's data is: a Uint8Array, copied through pool pages (in for a
 * write when each request goes out, out for a read when it is answered), or
 * a BlkBuffer, whose own pages are granted (zero-copy: nothing is copied).
 */
export type IoData = Uint8Array | BlkBuffer;

/**
 * The completion of an I/O queued without a promise (BlockFront.queuePages):
 * called once, with undefined if the backend answered OKAY for all of it, else
 * the BlkfrontError it failed with.
 */
export type IoDone = (err: Error | undefined) => void;

/**
 * One I/O a caller asked for; it completes when all its sectors are answered.
 * Its completion is a promise's (`resolve`/`reject`) or a callback (`done`):
 * exactly one of the two is set.
 */
export interface IoOp {
  readonly kind: 'read' | 'write' | 'flush' | 'discard';
  /** read: where the data goes; write: where it comes from (512-byte sectors, in order). */
  readonly buf: IoData | undefined;
  /**
   * `buf` when it is a BlkBuffer (zero-copy), else null: given by the entry
   * point (readPages / writePages), so no `instanceof` of an imported class
   * is asked per I/O (V8 runs its generic check for it: ~5% of the guest's
   * vCPU in the null benchmark, profiled).
   */
  readonly blk: BlkBuffer | null;
  /** Units not yet answered: sectors for read/write/discard, 1 for flush. */
  left: number;
  error: Error | undefined;
  settled: boolean;
  readonly resolve: (() => void) | null;
  readonly reject: ((e: Error) => void) | null;
  readonly done: IoDone | null;
}

/** A contiguous part of an IoOp still to send (a request covers one, or the head of one). */
export interface Piece {
  readonly op: IoOp;
  readonly sector: number;
  /** Units (see IoOp.left). */
  readonly count: number;
  /** Byte offset of the piece's data in op.buf (a multiple of the page size for a BlkBuffer). */
  readonly offset: number;
}

/**
 * What a request in flight under an id was for (blk_shadow). A plain object
 * (one per request): a class with these as fields defines each one before
 * its constructor sets it (ES2022 class fields), ~1% of the null
 * benchmark's guest vCPU (profiled).
 */
export interface Shadow {
  readonly id: number;
  /** Submission order, to re-issue in the same order after a reconnect. */
  readonly seq: number;
  readonly piece: Piece;
  /** The blkif operation sent (BLKIF_OP_INDIRECT for indirect requests). */
  readonly operation: number;
  /** For indirect requests, the operation of its segments. */
  readonly indirectOp: number | undefined;
  readonly pages: readonly GrantedPage[];
  readonly indirectPages: readonly GrantedPage[];
}

export class BlkRing {
  readonly front: FrontRing;
  readonly refs: readonly GrantRef[];
  private readonly shadows: Array<Shadow | undefined>;
  private readonly freeIds: number[] = [];
  private nextSeq = 0;
  private ended = false;

  /** Allocate 2^order pages, SHARED_RING_INIT, FRONT_RING_INIT, and grant every page to `backend`. */
  constructor(private readonly xen: Xen, private readonly gnttab: GrantTable, backend: number, readonly order: number) {
    this.pageGfns = Array.from({ length: 1 << order }, () => xen.allocGfn());
    // Pages that are adjacent in our physmap (always for one page) are used
    // directly; others through a view that presents them as one range.
    const g0 = this.pageGfns[0]!;
    const adjacent = this.pageGfns.every((g, i) => g === g0 + i);
    const mem = adjacent ? xen.k.mem : pagedRingMemory(xen.k.mem, this.pageGfns.map((g) => g * PAGE_SIZE));
    const base = adjacent ? g0 * PAGE_SIZE : 0;
    for (let i = 1; i < this.pageGfns.length; i++) mem.write(base + i * PAGE_SIZE, new Uint8Array(PAGE_SIZE));
    sharedRingInit(mem, base);
    this.front = new FrontRing(mem, ringGeometry(base, PAGE_SIZE << order, BLKIF_RING_ENTRY_SIZE));
    this.refs = this.pageGfns.map((g) => gnttab.grantAccess(backend, g));
    this.shadows = new Array<Shadow | undefined>(this.front.size).fill(undefined);
    for (let id = this.front.size - 1; id >= 0; id--) this.freeIds.push(id);
  }

  readonly pageGfns: readonly number[];

  get size(): number { return this.front.size; }
  get inFlight(): number { return this.size - this.freeIds.length; }
  /** A slot and an id are free for one more request. */
  get canQueue(): boolean { return this.freeIds.length > 0 && this.front.freeRequests() > 0; }

  /** Record a request about to be put on the ring; returns its shadow (whose id the request carries). */
  addShadow(piece: Piece, operation: number, indirectOp: number | undefined, pages: readonly GrantedPage[], indirectPages: readonly GrantedPage[]): Shadow {
    const id = this.freeIds.pop();
    if (id === undefined) throw new Error('no free request id: check canQueue first');
    const sh: Shadow = { id, seq: this.nextSeq++, piece, operation, indirectOp, pages, indirectPages };
    this.shadows[id] = sh;
    return sh;
  }

  /**
   * The shadow of response id `id` (removed from the table), or undefined if
   * no such request is in flight. `id` is the u64's low word; `idHigh` its
   * high word (any id >= 2^32 is unknown).
   */
  takeShadow(id: number, idHigh = 0): Shadow | undefined {
    if (idHigh !== 0 || id < 0 || id >= this.size) return undefined;
    const n = id;
    const sh = this.shadows[n];
    if (!sh) return undefined;
    this.shadows[n] = undefined;
    this.freeIds.push(n);
    return sh;
  }

  /** Every request still in flight, in submission order, removed from the table. */
  takeAll(): Shadow[] {
    const all = this.shadows.filter((s): s is Shadow => s !== undefined).sort((a, b) => a.seq - b.seq);
    for (const s of all) this.takeShadow(s.id);
    return all;
  }

  /**
   * End the ring's grants and give back its pages. A page the backend still
   * maps cannot be reused: it is leaked (returns how many).
   */
  release(): number {
    if (!this.ended) {
      this.ended = true;
      this.pending = this.refs.map((_, i) => i);
    }
    this.pending = this.pending.filter((i) => {
      if (!this.gnttab.endAccess(this.refs[i]!)) return true;
      this.xen.releaseGfn(this.pageGfns[i]!);
      return false;
    });
    return this.pending.length;
  }

  /** Ring pages whose grant could not end yet (the backend still maps them). */
  private pending: number[] = [];
}
