/**
 * Mapping a request's grants into Dom0 for the length of one request (or for
 * good, as persistent grants): data segments and indirect pages. One
 * GNTTABOP_map_grant_ref batch per request (GrantTable.mapBatch with explicit
 * gfns from the driver's pool) and one unmap batch after it.
 *
 * Both work on segments as three parallel typed arrays (gref, first_sect,
 * last_sect) and reuse their buffers from request to request: under
 * persistent grants a request whose grants are all mapped already costs no
 * hypercall and allocates nothing.
 */
import { GNTST_okay } from '../../shared/abi/grant-table.ts';
import { BLKIF_MAX_INDIRECT_PAGES_PER_REQUEST, BLKIF_SECTOR_SIZE } from '../../shared/abi/blkif.ts';
import type { GuestRange } from '../../shared/guest/api.ts';
import type { GrantTable } from '../../shared/guest/gnttab.ts';
import type { BlkifSegment } from '../../shared/blkif/proto.ts';
import { PAGE_SIZE } from '../../shared/types.ts';
import type { GfnPool } from './gfn-pool.ts';
import type { GrantMapping, PersistentGrants } from './persistent.ts';

/** Counters a test or a benchmark reads. */
export interface GrantIoStats {
  /** map_grant_ref batches issued (hypercalls, one per request that needed any). */
  mapCalls: number;
  /** Grants mapped in those batches. */
  grantsMapped: number;
  /** Segments and indirect pages served by a persistent mapping (no hypercall). */
  persistentHits: number;
}

const SECTOR = BLKIF_SECTOR_SIZE;

interface MapReq { domid: number; ref: number; readonly: boolean; gfn: number }

/** A range RequestMappings rewrites in place (the I/O reads it once, synchronously). */
interface MutableRange { gpa: number; len: number }

/**
 * The mappings of one request. `map` / `mapArrays` fill `ranges` (the
 * segments' data in order, adjacent segments in one range) or return false,
 * having unmapped what they mapped; `release` unmaps the non-persistent
 * mappings. Reused from request to request.
 */
export class RequestMappings {
  readonly ranges: GuestRange[] = [];
  /** The range objects `ranges` holds (ranges[i] is always rangePool[i]). */
  private readonly rangePool: MutableRange[] = [];
  /** Per-request mappings to unmap after the I/O. */
  private readonly temp: GrantMapping[] = [];
  private readonly reqs: MapReq[] = [];
  /** Segment index of each entry of `reqs`. */
  private readonly segOf: number[] = [];
  /** Dom0 gpa of each segment's page. */
  private gpas = new Float64Array(16);
  /** `map`'s copy of its segment objects as arrays. */
  private segGref = new Uint32Array(16);
  private segFirst = new Uint8Array(16);
  private segLast = new Uint8Array(16);
  /**
   * The grefs of the request whose persistent mappings are held
   * (PersistentGrants.hold) until `release`; heldN 0: none. Our own copy: a
   * caller's arrays (the engine's indirect scratch) are reused by the next
   * request before a READ out as a job is released.
   */
  private heldGref = new Uint32Array(16);
  private heldN = 0;

  constructor(
    private readonly gt: GrantTable,
    private readonly pool: GfnPool,
    private readonly domid: number,
    private readonly persistent: PersistentGrants | null,
    readonly stats: GrantIoStats,
  ) {}

  /** `mapArrays` for segments as objects (a direct request's, or the general path's). */
  map(segs: readonly BlkifSegment[], readonly: boolean): boolean {
    const n = segs.length;
    if (this.segGref.length < n) {
      this.segGref = new Uint32Array(n);
      this.segFirst = new Uint8Array(n);
      this.segLast = new Uint8Array(n);
    }
    for (let i = 0; i < n; i++) {
      const s = segs[i]!;
      this.segGref[i] = s.gref;
      this.segFirst[i] = s.firstSect;
      this.segLast[i] = s.lastSect;
    }
    return this.mapArrays(this.segGref, this.segFirst, this.segLast, n, readonly);
  }

  /**
   * Map the first `n` segments (gref[i], first[i]..last[i], already checked:
   * first <= last <= 7) and compute each one's range in Dom0's memory:
   * a persistent mapping if there is one that will do (any for a write, whose
   * pages are only read; a writable one for a read), else one map batch for
   * the rest (read-only for a write without persistent grants; under
   * persistent grants writable, and kept while there is room). False if any
   * grant could not be mapped (or no gfn was left): nothing stays mapped for
   * this request then, except mappings that became persistent (good ones).
   */
  mapArrays(gref: Uint32Array, first: Uint8Array, last: Uint8Array, n: number, readonly: boolean): boolean {
    if (this.heldN !== 0) this.unhold();
    if (this.reqs.length !== 0) this.reqs.length = 0;
    if (this.segOf.length !== 0) this.segOf.length = 0;
    if (this.gpas.length < n) this.gpas = new Float64Array(Math.max(n, 2 * this.gpas.length));
    const gpas = this.gpas;
    const persistent = this.persistent;
    // A write's pages are only read: any persistent mapping will do; a read needs a writable one.
    const hits = persistent !== null ? persistent.resolve(gref, n, !readonly, gpas) : 0;
    if (hits < n) {
      for (let i = 0; i < n; i++) {
        if (persistent !== null && gpas[i]! >= 0) continue;
        const gfn = this.pool.take();
        if (gfn < 0) {
          for (const r of this.reqs) this.pool.release(r.gfn);
          this.stats.persistentHits += hits;
          return false;
        }
        // Persistent mappings are writable whatever the request (blkfront grants them read-write).
        this.reqs.push({ domid: this.domid, ref: gref[i]!, readonly: readonly && !persistent, gfn });
        this.segOf.push(i);
      }
    }
    this.stats.persistentHits += hits;
    let ok = true;
    if (this.reqs.length > 0) {
      this.stats.mapCalls++;
      this.stats.grantsMapped += this.reqs.length;
      const res = this.gt.mapBatch(this.reqs);
      for (let k = 0; k < res.length; k++) {
        const r = res[k]!;
        const gfn = this.reqs[k]!.gfn;
        if (r.status !== GNTST_okay) {
          this.pool.release(gfn);
          ok = false;
          continue;
        }
        const m = { handle: r.handle, gfn };
        if (!(persistent && persistent.add(this.reqs[k]!.ref, m))) this.temp.push(m);
        gpas[this.segOf[k]!] = gfn * PAGE_SIZE;
      }
    }
    if (!ok) {
      this.release();
      return false;
    }
    if (persistent !== null) {
      // In use until `release` (Linux: active from get_persistent_gnt to put_persistent_gnt): no purge unmaps them meanwhile.
      persistent.hold(gref, n);
      if (this.heldGref.length < n) this.heldGref = new Uint32Array(Math.max(n, 2 * this.heldGref.length));
      const held = this.heldGref;
      for (let i = 0; i < n; i++) held[i] = gref[i]!;
      this.heldN = n;
    }
    // Segments whose data is adjacent in Dom0's memory make one range (a
    // request's fresh mappings take consecutive gfns, and later requests find
    // them again): HostDma would merge them into one iovec anyway, and each
    // range it is given costs it checks of its own (256 segments of 1 MiB:
    // one range instead of 256).
    const pool = this.rangePool;
    while (pool.length < n) pool.push({ gpa: 0, len: 0 });
    // The range being extended is kept in locals and written out when the
    // next segment does not follow on from it.
    let m = 0;
    let curGpa = 0;
    let curLen = 0;
    for (let i = 0; i < n; i++) {
      const f = first[i]!;
      const gpa = gpas[i]! + f * SECTOR;
      const len = (last[i]! - f + 1) * SECTOR;
      if (curLen > 0 && curGpa + curLen === gpa) {
        curLen += len;
        continue;
      }
      if (curLen > 0) {
        const r = pool[m++]!;
        r.gpa = curGpa;
        r.len = curLen;
      }
      curGpa = gpa;
      curLen = len;
    }
    if (curLen > 0) {
      const r = pool[m++]!;
      r.gpa = curGpa;
      r.len = curLen;
    }
    // (Lengths are set only when they change: each set is a runtime call.)
    const ranges = this.ranges;
    if (ranges.length > m) ranges.length = m;
    while (ranges.length < m) ranges.push(pool[ranges.length]!);
    return true;
  }

  /** The request is done with its persistent mappings (each one's last use is now). */
  private unhold(): void {
    this.persistent?.unhold(this.heldGref, this.heldN);
    this.heldN = 0;
  }

  /** Unmap this request's non-persistent mappings (one batch); its persistent ones are no longer in use. */
  release(): void {
    if (this.heldN !== 0) this.unhold();
    if (this.temp.length === 0) return;
    const st = this.gt.unmapBatch(this.temp);
    for (let i = 0; i < this.temp.length; i++) if (st[i] === GNTST_okay) this.pool.release(this.temp[i]!.gfn);
    this.temp.length = 0;
  }
}

/**
 * The indirect pages of a request, copied into a private buffer (Linux's
 * xen_blkbk_parse_indirect: map the pages through xen_blkbk_map, read the
 * segment arrays, unmap those not persistent). Every request's pages are
 * read afresh, persistent mapping or not: the frontend may rewrite a page
 * between requests, and each request's segments are those in its page at the
 * time it is handled.
 *
 * Without persistent grants a page is mapped read-only for the copy and
 * unmapped right after (one map and one unmap batch per request). With them,
 * a page already persistently mapped is read from that mapping (no
 * hypercall); one that is not is mapped writable and kept while there is
 * room (Linux maps indirect pages like data segments: persistent mappings
 * are writable, and blkfront grants its persistent pages read-write). A page
 * the frontend granted read-only, so that the writable map fails, is mapped
 * again read-only in a second batch and kept flagged read-only (see
 * persistent.ts); one for which there is no room is mapped read-only and
 * unmapped after the copy, as without persistent grants.
 */
export class IndirectPages {
  /** The private copy: page p at [p * PAGE_SIZE, (p + 1) * PAGE_SIZE). */
  readonly bytes = new Uint8Array(BLKIF_MAX_INDIRECT_PAGES_PER_REQUEST * PAGE_SIZE);
  readonly view = new DataView(this.bytes.buffer);
  private readonly pageViews: Uint8Array[] = Array.from({ length: BLKIF_MAX_INDIRECT_PAGES_PER_REQUEST }, (_, p) => this.bytes.subarray(p * PAGE_SIZE, (p + 1) * PAGE_SIZE));
  private readonly gpas = new Float64Array(BLKIF_MAX_INDIRECT_PAGES_PER_REQUEST);
  private readonly temp: GrantMapping[] = [];

  constructor(
    private readonly gt: GrantTable,
    private readonly pool: GfnPool,
    private readonly read: (gpa: number, into: Uint8Array) => void,
    private readonly domid: number,
    private readonly persistent: PersistentGrants | null,
    private readonly stats: GrantIoStats,
  ) {}

  /**
   * Copy indirect pages grefs[0..pages) (pages <= BLKIF_MAX_INDIRECT_PAGES_PER_REQUEST)
   * into `bytes`: false if a page could not be mapped (or no gfn was left),
   * nothing then staying mapped but mappings that became persistent.
   */
  copy(grefs: ArrayLike<number>, pages: number): boolean {
    if (pages > BLKIF_MAX_INDIRECT_PAGES_PER_REQUEST) return false;
    const persistent = this.persistent;
    const gpas = this.gpas;
    let misses: MapReq[] | null = null;
    let missPage: number[] | null = null;
    let planned = 0;
    let hits = 0;
    for (let p = 0; p < pages; p++) {
      const g = grefs[p]!;
      if (persistent !== null) {
        const at = persistent.gpa(g);
        if (at >= 0) {
          gpas[p] = at;
          hits++;
          continue;
        }
      }
      const gfn = this.pool.take();
      if (gfn < 0) {
        if (misses) for (const r of misses) this.pool.release(r.gfn);
        this.stats.persistentHits += hits;
        return false;
      }
      // Kept persistently (so mapped writable) only while there is room.
      const keep = persistent !== null && persistent.size + planned < persistent.max;
      if (keep) planned++;
      // No room: Linux's xen_blkbk_map sets vbd.overflow_max_grants (the next purge makes room).
      else if (persistent !== null) persistent.overflow = true;
      (misses ??= []).push({ domid: this.domid, ref: g, readonly: !keep, gfn });
      (missPage ??= []).push(p);
    }
    this.stats.persistentHits += hits;
    let ok = true;
    if (misses !== null && missPage !== null) {
      this.stats.mapCalls++;
      this.stats.grantsMapped += misses.length;
      const res = this.gt.mapBatch(misses);
      let again: MapReq[] | null = null;
      let againPage: number[] | null = null;
      for (let k = 0; k < res.length; k++) {
        const r = res[k]!;
        const q = misses[k]!;
        if (r.status !== GNTST_okay) {
          if (!q.readonly) {
            // Perhaps granted read-only: try that (same gfn: nothing was mapped there).
            (again ??= []).push({ domid: q.domid, ref: q.ref, readonly: true, gfn: q.gfn });
            (againPage ??= []).push(missPage[k]!);
          } else {
            this.pool.release(q.gfn);
            ok = false;
          }
          continue;
        }
        this.keepOrTemp(q, r.handle, !q.readonly, false);
        gpas[missPage[k]!] = q.gfn * PAGE_SIZE;
      }
      if (again !== null && againPage !== null) {
        this.stats.mapCalls++;
        this.stats.grantsMapped += again.length;
        const res2 = this.gt.mapBatch(again);
        for (let k = 0; k < res2.length; k++) {
          const r = res2[k]!;
          const q = again[k]!;
          if (r.status !== GNTST_okay) {
            this.pool.release(q.gfn);
            ok = false;
            continue;
          }
          this.keepOrTemp(q, r.handle, true, true);
          gpas[againPage[k]!] = q.gfn * PAGE_SIZE;
        }
      }
    }
    if (ok) {
      // The persistent ones are in use for the copy (Linux: until put_persistent_gnts after parsing).
      persistent?.hold(grefs, pages);
      try {
        for (let p = 0; p < pages; p++) this.read(gpas[p]!, this.pageViews[p]!);
      } finally {
        persistent?.unhold(grefs, pages);
      }
    }
    this.release();
    return ok;
  }

  /** A fresh mapping of q.ref (`readonly`: GNTMAP_readonly): persistent if `keep` and it fits, else unmapped after the copy. */
  private keepOrTemp(q: MapReq, handle: number, keep: boolean, readonly: boolean): void {
    const m = { handle, gfn: q.gfn };
    if (!(keep && this.persistent !== null && this.persistent.add(q.ref, m, readonly))) this.temp.push(m);
  }

  private release(): void {
    if (this.temp.length === 0) return;
    const st = this.gt.unmapBatch(this.temp);
    for (let i = 0; i < this.temp.length; i++) if (st[i] === GNTST_okay) this.pool.release(this.temp[i]!.gfn);
    this.temp.length = 0;
  }
}
