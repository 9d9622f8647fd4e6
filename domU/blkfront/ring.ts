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
 * What the request in flight under an id is for (blk_shadow): one per ring
 * slot, made with the ring and filled in again by every request issued
 * under its id (nothing allocated per request). In flight while `op` is
 * not null.
 */
export interface Shadow {
  readonly id: number;
  /** The I/O the request is a part of; null while the id is free. */
  op: IoOp | null;
  /** Submission order, to re-issue in the same order after a reconnect. */
  seq: number;
  /** The part of `op` the request covers (a Piece's fields): first sector, units, byte offset in op.buf. */
  sector: number;
  count: number;
  offset: number;
  /** The blkif operation sent (BLKIF_OP_INDIRECT for indirect requests). */
  operation: number;
  /** For indirect requests, the operation of its segments; else -1 (no operation). */
  indirectOp: number;
  /** The request's data pages are the first `npages` of `pages` (reused: entries past npages are stale). */
  readonly pages: GrantedPage[];
  npages: number;
  /** Its indirect pages, the first `nind` of `indirectPages` (reused likewise). */
  readonly indirectPages: GrantedPage[];
  nind: number;
}

/** A request in flight when its ring was torn down: its part of the I/O, and every page it held. */
export interface Unanswered {
  readonly piece: Piece;
  readonly pages: readonly GrantedPage[];
}

export class BlkRing {
  readonly front: FrontRing;
  readonly refs: readonly GrantRef[];
  /** One shadow per id (0..size-1). */
  private readonly shadows: readonly Shadow[];
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
    this.shadows = Array.from({ length: this.front.size }, (_, id): Shadow => ({
      id, op: null, seq: 0, sector: 0, count: 0, offset: 0, operation: 0, indirectOp: -1, pages: [], npages: 0, indirectPages: [], nind: 0,
    }));
    for (let id = this.front.size - 1; id >= 0; id--) this.freeIds.push(id);
  }

  readonly pageGfns: readonly number[];

  get size(): number { return this.front.size; }
  get inFlight(): number { return this.size - this.freeIds.length; }
  /** A slot and an id are free for one more request. */
  get canQueue(): boolean { return this.freeIds.length > 0 && this.front.freeRequests() > 0; }

  /**
   * A free id for a request about to be put on the ring (the caller checked
   * canQueue): its shadow, whose `op` and the rest the caller fills in.
   */
  claimShadow(): Shadow {
    const id = this.freeIds.pop();
    if (id === undefined) throw new Error('no free request id: check canQueue first');
    const sh = this.shadows[id]!;
    sh.seq = this.nextSeq++;
    return sh;
  }

  /**
   * The shadow of the request in flight under response id `id` (the u64's
   * low word; `idHigh` its high word: any id >= 2^32 is unknown), or
   * undefined if there is none. It stays in flight until freeShadow.
   */
  shadowOf(id: number, idHigh = 0): Shadow | undefined {
    if (idHigh !== 0 || id < 0 || id >= this.shadows.length) return undefined;
    const sh = this.shadows[id]!;
    return sh.op === null ? undefined : sh;
  }

  /** The request of `sh` is over: its id is free for another. */
  freeShadow(sh: Shadow): void {
    sh.op = null;
    this.freeIds.push(sh.id);
  }

  /** Every request still in flight, in submission order, its id freed. */
  takeAll(): Unanswered[] {
    const all = this.shadows.filter((s) => s.op !== null).sort((a, b) => a.seq - b.seq);
    return all.map((sh) => {
      const piece: Piece = { op: sh.op!, sector: sh.sector, count: sh.count, offset: sh.offset };
      const pages = [...sh.pages.slice(0, sh.npages), ...sh.indirectPages.slice(0, sh.nind)];
      this.freeShadow(sh);
      return { piece, pages };
    });
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
