/**
 * Persistent grants (blkif.h "feature-persistent", Linux blkback's
 * persistent_gnts tree): when both ends advertise the feature, a grant mapped
 * for a request stays mapped, keyed by its gref, and later requests naming the
 * same gref use the mapping without a hypercall. At most `max` are kept
 * (Linux's max_persistent_grants, 1056); beyond that, requests map and unmap
 * as without the feature. Persistent mappings are writable (the frontend
 * grants its persistent pages read-write, as Linux's blkfront does), and all
 * of them are unmapped at disconnect (`drain`). Linux also purges unused ones
 * over time (LRU); we do not: the set only grows to `max`.
 *
 * Indirect pages are kept here too, as Linux's xen_blkbk_parse_indirect does
 * (it maps them through xen_blkbk_map, which uses and adds persistent grants
 * like data segments). One departure: a frontend that grants an indirect
 * page read-only under persistent grants (Linux's blkfront never does; a
 * writable map of it fails, and Linux would fail the request) gets it mapped
 * read-only and kept so, flagged: such a mapping serves reads of the page
 * (indirect pages, WRITE segments) but never a segment the disk writes into
 * (a READ), which maps its own writable mapping for that request.
 *
 * Lookup is on the request path, once per segment: grefs below
 * DIRECT_REFS (every gref of a frontend with at most 64 grant frames, v1)
 * are looked up in typed arrays indexed by gref, with no hashing and no
 * object; grefs come from the guest and may be any u32, so those above the
 * bound go to a Map.
 */
import type { GrantTable } from '../../shared/guest/gnttab.ts';
import { GNTST_okay } from '../../shared/abi/grant-table.ts';
import { PAGE_SIZE } from '../../shared/types.ts';
import type { GfnPool } from './gfn-pool.ts';

/** Linux blkback's max_persistent_grants default. */
export const MAX_PERSISTENT_GRANTS = 1056;

/** Grefs below this are looked up by index (64 v1 grant frames of 512 entries: Linux's default max_grant_frames). */
export const DIRECT_REFS = 1 << 15;

export interface GrantMapping {
  readonly handle: number;
  readonly gfn: number;
}

interface Kept extends GrantMapping {
  readonly readonly: boolean;
}

export class PersistentGrants {
  /** Every mapping kept, for `drain` and `size`. */
  private readonly all: Kept[] = [];
  /** gref < DIRECT_REFS: Dom0 gfn + 1 of its mapping, 0 for none (a gfn >= 2^31 - 1 goes to `far`). */
  private readonly nearGfn = new Int32Array(DIRECT_REFS);
  /** gref < DIRECT_REFS: 1 if its mapping is read-only. */
  private readonly nearRo = new Uint8Array(DIRECT_REFS);
  /** Other grefs (and huge gfns). */
  private readonly far = new Map<number, Kept>();

  constructor(readonly max: number = MAX_PERSISTENT_GRANTS) {}

  get size(): number { return this.all.length; }
  get full(): boolean { return this.all.length >= this.max; }

  /** Guest-physical address of gref's persistent mapping in Dom0 (writable or not), or -1. */
  gpa(gref: number): number {
    if (gref < DIRECT_REFS) {
      const g = this.nearGfn[gref]!;
      if (g !== 0) return (g - 1) * PAGE_SIZE;
    }
    const m = this.far.get(gref);
    return m ? m.gfn * PAGE_SIZE : -1;
  }

  /** Guest-physical address of gref's persistent mapping if it is writable, else -1. */
  writableGpa(gref: number): number {
    if (gref < DIRECT_REFS) {
      const g = this.nearGfn[gref]!;
      if (g !== 0) return this.nearRo[gref] === 0 ? (g - 1) * PAGE_SIZE : -1;
    }
    const m = this.far.get(gref);
    return m && !m.readonly ? m.gfn * PAGE_SIZE : -1;
  }

  /**
   * `gpa` (or, `writable`, `writableGpa`) of gref[0..n) into out[0..n), in
   * one loop (the request path's lookup of a whole request): how many had one.
   */
  resolve(gref: Uint32Array, n: number, writable: boolean, out: Float64Array): number {
    const near = this.nearGfn;
    const ro = this.nearRo;
    const farEmpty = this.far.size === 0;
    let hits = 0;
    for (let i = 0; i < n; i++) {
      const g = gref[i]!;
      let at = -1;
      if (g < DIRECT_REFS) {
        const v = near[g]!;
        if (v !== 0) {
          if (!writable || ro[g] === 0) at = (v - 1) * PAGE_SIZE;
        } else if (!farEmpty) {
          at = writable ? this.writableGpa(g) : this.gpa(g);
        }
      } else if (!farEmpty) {
        at = writable ? this.writableGpa(g) : this.gpa(g);
      }
      out[i] = at;
      if (at >= 0) hits++;
    }
    return hits;
  }

  /** Does gref have a persistent mapping? */
  has(gref: number): boolean { return this.gpa(gref) >= 0; }

  /**
   * Keep `m` as gref's mapping (`readonly`: mapped GNTMAP_readonly): false
   * (nothing kept) if full or gref already has one.
   */
  add(gref: number, m: GrantMapping, readonly = false): boolean {
    if (this.full || this.has(gref)) return false;
    const k: Kept = { handle: m.handle, gfn: m.gfn, readonly };
    this.all.push(k);
    if (gref >= 0 && gref < DIRECT_REFS && m.gfn < 0x7fff_ffff) {
      this.nearGfn[gref] = m.gfn + 1;
      this.nearRo[gref] = readonly ? 1 : 0;
    } else {
      this.far.set(gref, k);
    }
    return true;
  }

  /** Unmap all (one batch) and give their gfns back. Returns how many failed to unmap (kept out of the pool). */
  drain(gt: GrantTable, pool: GfnPool): number {
    const all = this.all.splice(0);
    this.far.clear();
    this.nearGfn.fill(0);
    this.nearRo.fill(0);
    if (all.length === 0) return 0;
    const st = gt.unmapBatch(all);
    let bad = 0;
    all.forEach((m, i) => { if (st[i] === GNTST_okay) pool.release(m.gfn); else bad++; });
    return bad;
  }
}
