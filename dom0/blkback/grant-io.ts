/**
 * Mapping a request's grants into Dom0 for the length of one request (or for
 * good, as persistent grants): data segments and indirect pages. One
 * GNTTABOP_map_grant_ref batch per request (GrantTable.mapBatch with explicit
 * gfns from the driver's pool) and one unmap batch after it.
 */
import { GNTST_okay } from '../../shared/abi/grant-table.ts';
import { BLKIF_SECTOR_SIZE } from '../../shared/abi/blkif.ts';
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
  /** Segments served by a persistent mapping (no hypercall). */
  persistentHits: number;
}

const SECTOR = BLKIF_SECTOR_SIZE;

interface MapReq { domid: number; ref: number; readonly: boolean; gfn: number }

/**
 * The mappings of one request. `map` fills `ranges` (one per segment, in
 * order) or returns false, having unmapped what it mapped; `release` unmaps
 * the non-persistent mappings. Reused from request to request.
 */
export class RequestMappings {
  readonly ranges: GuestRange[] = [];
  /** The range objects `ranges` holds, rewritten per request (the I/O reads them once, synchronously). */
  private readonly rangePool: { gpa: number; len: number }[] = [];
  /** Per-request mappings to unmap after the I/O. */
  private readonly temp: GrantMapping[] = [];
  private readonly reqs: MapReq[] = [];
  /** Segment index of each entry of `reqs`. */
  private readonly segOf: number[] = [];
  /** Dom0 gpa of each segment's page. */
  private readonly gpas: number[] = [];

  constructor(
    private readonly gt: GrantTable,
    private readonly pool: GfnPool,
    private readonly domid: number,
    private readonly persistent: PersistentGrants | null,
    readonly stats: GrantIoStats,
  ) {}

  /**
   * Map `segs` (readonly for a write without persistent grants) and compute
   * each segment's range in Dom0's memory. False if any grant could not be
   * mapped (or no gfn was left): nothing stays mapped for this request then,
   * except mappings that became persistent (they are good ones).
   */
  map(segs: readonly BlkifSegment[], readonly: boolean): boolean {
    // (Lengths are set only when they change: each set is a runtime call.)
    if (this.ranges.length !== 0) this.ranges.length = 0;
    if (this.reqs.length !== 0) this.reqs.length = 0;
    if (this.segOf.length !== 0) this.segOf.length = 0;
    const gpas = this.gpas;
    while (gpas.length < segs.length) gpas.push(0);
    const persistent = this.persistent;
    const nsegs = segs.length;
    let hits = 0;
    for (let i = 0; i < nsegs; i++) {
      const s = segs[i]!;
      const p = persistent !== null ? persistent.gpa(s.gref) : -1;
      if (p >= 0) {
        gpas[i] = p;
        hits++;
        continue;
      }
      const gfn = this.pool.take();
      if (gfn < 0) {
        for (const r of this.reqs) this.pool.release(r.gfn);
        this.stats.persistentHits += hits;
        return false;
      }
      // Persistent mappings are writable whatever the request (blkfront grants them read-write).
      this.reqs.push({ domid: this.domid, ref: s.gref, readonly: readonly && !this.persistent, gfn });
      this.segOf.push(i);
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
        if (!(this.persistent && this.persistent.add(this.reqs[k]!.ref, m))) this.temp.push(m);
        gpas[this.segOf[k]!] = gfn * PAGE_SIZE;
      }
    }
    if (!ok) {
      this.release();
      return false;
    }
    const ranges = this.ranges;
    const pool = this.rangePool;
    for (let i = 0; i < nsegs; i++) {
      const s = segs[i]!;
      let r = pool[i];
      if (r === undefined) {
        r = { gpa: 0, len: 0 };
        pool.push(r);
      }
      r.gpa = gpas[i]! + s.firstSect * SECTOR;
      r.len = (s.lastSect - s.firstSect + 1) * SECTOR;
      ranges.push(r);
    }
    return true;
  }

  /** Unmap this request's non-persistent mappings (one batch). */
  release(): void {
    if (this.temp.length === 0) return;
    const st = this.gt.unmapBatch(this.temp);
    for (let i = 0; i < this.temp.length; i++) if (st[i] === GNTST_okay) this.pool.release(this.temp[i]!.gfn);
    this.temp.length = 0;
  }
}

/**
 * Copy the first `bytes` of indirect pages `grefs` (mapped read-only for the
 * copy, then unmapped): a private copy of the segment arrays, or null if a
 * page could not be mapped.
 */
export function copyIndirectPages(
  gt: GrantTable, pool: GfnPool, read: (gpa: number, into: Uint8Array) => void, domid: number, grefs: readonly number[], bytes: number, stats: GrantIoStats,
): Uint8Array | null {
  const reqs: MapReq[] = [];
  for (const ref of grefs) {
    const gfn = pool.take();
    if (gfn < 0) {
      for (const r of reqs) pool.release(r.gfn);
      return null;
    }
    reqs.push({ domid, ref, readonly: true, gfn });
  }
  stats.mapCalls++;
  stats.grantsMapped += reqs.length;
  const res = gt.mapBatch(reqs);
  const ok = res.every((r) => r.status === GNTST_okay);
  const out = ok ? new Uint8Array(bytes) : null;
  if (out) {
    for (let p = 0; p * PAGE_SIZE < bytes; p++) {
      read(reqs[p]!.gfn * PAGE_SIZE, out.subarray(p * PAGE_SIZE, Math.min(bytes, (p + 1) * PAGE_SIZE)));
    }
  }
  const mapped = res.map((r, i) => ({ r, gfn: reqs[i]!.gfn }));
  for (const { r, gfn } of mapped) if (r.status !== GNTST_okay) pool.release(gfn);
  const good = mapped.filter(({ r }) => r.status === GNTST_okay).map(({ r, gfn }) => ({ handle: r.handle, gfn }));
  if (good.length > 0) {
    const st = gt.unmapBatch(good);
    good.forEach((m, i) => { if (st[i] === GNTST_okay) pool.release(m.gfn); });
  }
  return out;
}
