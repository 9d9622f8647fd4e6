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
 */
import type { GrantTable } from '../../shared/guest/gnttab.ts';
import { GNTST_okay } from '../../shared/abi/grant-table.ts';
import { PAGE_SIZE } from '../../shared/types.ts';
import type { GfnPool } from './gfn-pool.ts';

/** Linux blkback's max_persistent_grants default. */
export const MAX_PERSISTENT_GRANTS = 1056;

export interface GrantMapping {
  readonly handle: number;
  readonly gfn: number;
}

export class PersistentGrants {
  private readonly byRef = new Map<number, GrantMapping>();

  constructor(readonly max: number = MAX_PERSISTENT_GRANTS) {}

  get size(): number { return this.byRef.size; }
  get full(): boolean { return this.byRef.size >= this.max; }

  /** Guest-physical address of gref's persistent mapping in Dom0, or -1. */
  gpa(gref: number): number {
    const m = this.byRef.get(gref);
    return m ? m.gfn * PAGE_SIZE : -1;
  }

  /** Keep `m` as gref's mapping: false (nothing kept) if full or gref already has one. */
  add(gref: number, m: GrantMapping): boolean {
    if (this.full || this.byRef.has(gref)) return false;
    this.byRef.set(gref, m);
    return true;
  }

  /** Unmap all (one batch) and give their gfns back. Returns how many failed to unmap (kept out of the pool). */
  drain(gt: GrantTable, pool: GfnPool): number {
    const all = [...this.byRef.values()];
    this.byRef.clear();
    if (all.length === 0) return 0;
    const st = gt.unmapBatch(all);
    let bad = 0;
    all.forEach((m, i) => { if (st[i] === GNTST_okay) pool.release(m.gfn); else bad++; });
    return bad;
  }
}
