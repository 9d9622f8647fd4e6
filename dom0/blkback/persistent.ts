/**
 * Persistent grants (blkif.h "feature-persistent", Linux blkback's
 * persistent_gnts tree): when both ends advertise the feature, a grant mapped
 * for a request stays mapped, keyed by its gref, and later requests naming the
 * same gref use the mapping without a hypercall. At most `max` are kept
 * (Linux's max_persistent_grants, 1056); beyond that, requests map and unmap
 * as without the feature. Persistent mappings are writable (the frontend
 * grants its persistent pages read-write, as Linux's blkfront does), and all
 * of them are unmapped at disconnect (`drain`).
 *
 * Purge (Linux's purge_persistent_gnt, choice in purge.ts): each grant
 * records when its last use ended (`lastUsed`, the engine's clock, set in
 * `now` once per batch of requests; Linux's last_used in jiffies) and how
 * many uses of it are under way (`hold` / `unhold` around a request's I/O
 * and an indirect page's copy; Linux's `active`, a flag, since there a grant
 * named twice in one request is mapped again). Our I/O is synchronous and the
 * engine purges between batches, so nothing is held then; the count is kept
 * so a purge can never unmap a page under a request. `purge` removes what
 * choosePurge picks: grants unused for persistent_grant_unused_seconds, and,
 * once the set is full and a mapping could not be kept (`overflow`, Linux's
 * vbd.overflow_max_grants), a share of the least recently used, in one unmap
 * batch, their gfns given back, so that a frontend that moves on to new
 * pages gets persistent grants again.
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
 * bound go to a Map. The arrays grow with the highest gref kept (nearCap).
 */
import type { GrantTable } from '../../shared/guest/gnttab.ts';
import { GNTST_okay } from '../../shared/abi/grant-table.ts';
import { PAGE_SIZE } from '../../shared/types.ts';
import type { GfnPool } from './gfn-pool.ts';
import { choosePurge, PERSISTENT_GRANT_UNUSED_SECONDS, purgeTarget, timedOut, type PurgeCandidate } from './purge.ts';

/** Linux blkback's max_persistent_grants default. */
export const MAX_PERSISTENT_GRANTS = 1056;

/** Grefs below this are looked up by index (64 v1 grant frames of 512 entries: Linux's default max_grant_frames). */
export const DIRECT_REFS = 1 << 15;

/** The near arrays' first size (grefs), doubled as needed (see PersistentGrants.nearCap). */
const NEAR_MIN = 512;

export interface GrantMapping {
  readonly handle: number;
  readonly gfn: number;
}

interface Kept extends GrantMapping {
  readonly gref: number;
  readonly readonly: boolean;
  /** Held in the near arrays (else in `far`, and the two fields below are its use). */
  readonly near: boolean;
  /** (far only) When its last use ended. */
  lastUsed: number;
  /** (far only) Uses under way. */
  active: number;
}

export class PersistentGrants {
  /** Every mapping kept, by gref (in the order kept), for `drain`, `purge` and `size`. */
  private readonly all = new Map<number, Kept>();
  /**
   * The near arrays cover grefs [0, nearCap): they start empty and grow (by
   * doubling, up to DIRECT_REFS) as grants with higher grefs are kept, so a
   * connection whose frontend uses a few hundred grefs holds a few KiB here,
   * not the ~0.5 MiB that arrays for every gref below DIRECT_REFS take.
   * A gref at or above nearCap has no near mapping. (The arrays' length, kept
   * as a number: the lookup loops compare against a local, not a typed
   * array's length, which V8 re-checks on every read.)
   */
  private nearCap = 0;
  /** gref < nearCap: Dom0 gfn + 1 of its mapping, 0 for none (a gfn >= 2^31 - 1 goes to `far`). */
  private nearGfn = new Int32Array(0);
  /** gref < nearCap: 1 if its mapping is read-only. */
  private nearRo = new Uint8Array(0);
  /** gref < nearCap: when its last use ended (valid where nearGfn is not 0). */
  private nearUsed = new Float64Array(0);
  /** gref < nearCap: its uses under way. */
  private nearActive = new Int32Array(0);
  /** Other grefs (and huge gfns). */
  private readonly far = new Map<number, Kept>();
  /**
   * The time (ms, the engine's clock) of the batch of requests being
   * handled: what `add` and `unhold` record as a grant's last use. The
   * engine sets it before each batch (Linux reads jiffies).
   */
  now = 0;
  /**
   * Linux's vbd.overflow_max_grants: since the last purge that removed
   * something, a fresh mapping could not be kept for want of room. Set by
   * `add` (and by IndirectPages, which decides before mapping); cleared by `purge`.
   */
  overflow = false;

  /**
   * `max`: Linux's max_persistent_grants; `unusedSeconds`: Linux's
   * persistent_grant_unused_seconds (0: grants never time out).
   */
  constructor(readonly max: number = MAX_PERSISTENT_GRANTS, readonly unusedSeconds: number = PERSISTENT_GRANT_UNUSED_SECONDS) {}

  get size(): number { return this.all.size; }
  /** How many grefs the near arrays cover now (tests: memory held per connection). */
  get nearCapacity(): number { return this.nearCap; }

  /** Grow the near arrays to cover `gref` (< DIRECT_REFS), keeping what they hold. */
  private growNear(gref: number): void {
    let cap = this.nearCap > 0 ? this.nearCap : NEAR_MIN;
    while (cap <= gref) cap *= 2;
    if (cap > DIRECT_REFS) cap = DIRECT_REFS;
    const widen = <T extends Int32Array | Uint8Array | Float64Array>(old: T, made: T): T => { made.set(old); return made; };
    this.nearGfn = widen(this.nearGfn, new Int32Array(cap));
    this.nearRo = widen(this.nearRo, new Uint8Array(cap));
    this.nearUsed = widen(this.nearUsed, new Float64Array(cap));
    this.nearActive = widen(this.nearActive, new Int32Array(cap));
    this.nearCap = cap;
  }
  get full(): boolean { return this.all.size >= this.max; }

  /** Guest-physical address of gref's persistent mapping in Dom0 (writable or not), or -1. */
  gpa(gref: number): number {
    if (gref >= 0 && gref < this.nearCap) {
      const g = this.nearGfn[gref]!;
      if (g !== 0) return (g - 1) * PAGE_SIZE;
    }
    const m = this.far.get(gref);
    return m ? m.gfn * PAGE_SIZE : -1;
  }

  /** Guest-physical address of gref's persistent mapping if it is writable, else -1. */
  writableGpa(gref: number): number {
    if (gref >= 0 && gref < this.nearCap) {
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
    const cap = this.nearCap;
    const farEmpty = this.far.size === 0;
    let hits = 0;
    for (let i = 0; i < n; i++) {
      const g = gref[i]!;
      let at = -1;
      if (g < cap) {
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
    if (this.has(gref)) return false;
    if (this.full) {
      this.overflow = true;
      return false;
    }
    const near = gref >= 0 && gref < DIRECT_REFS && m.gfn < 0x7fff_ffff;
    const k: Kept = { handle: m.handle, gfn: m.gfn, gref, readonly, near, lastUsed: this.now, active: 0 };
    this.all.set(gref, k);
    if (near) {
      if (gref >= this.nearCap) this.growNear(gref);
      this.nearGfn[gref] = m.gfn + 1;
      this.nearRo[gref] = readonly ? 1 : 0;
      this.nearUsed[gref] = this.now;
      this.nearActive[gref] = 0;
    } else {
      this.far.set(gref, k);
    }
    return true;
  }

  /**
   * A use of the persistent mappings of gref[0..n) begins (Linux's
   * get_persistent_gnt marks them active): grefs without one are skipped.
   * Each `hold` is matched by an `unhold` of the same grefs.
   */
  hold(gref: ArrayLike<number>, n: number): void {
    const near = this.nearGfn;
    const act = this.nearActive;
    const cap = this.nearCap;
    for (let i = 0; i < n; i++) {
      const g = gref[i]!;
      if (g >= 0 && g < cap && near[g] !== 0) act[g] = act[g]! + 1;
      else if (this.far.size !== 0) {
        const k = this.far.get(g);
        if (k) k.active++;
      }
    }
  }

  /** That use has ended (Linux's put_persistent_gnt): each one's last use is `now`. */
  unhold(gref: ArrayLike<number>, n: number): void {
    const near = this.nearGfn;
    const act = this.nearActive;
    const used = this.nearUsed;
    const cap = this.nearCap;
    const now = this.now;
    for (let i = 0; i < n; i++) {
      const g = gref[i]!;
      if (g >= 0 && g < cap && near[g] !== 0) {
        if (act[g]! > 0) act[g] = act[g]! - 1;
        used[g] = now;
      } else if (this.far.size !== 0) {
        const k = this.far.get(g);
        if (k) {
          if (k.active > 0) k.active--;
          k.lastUsed = now;
        }
      }
    }
  }

  /** When gref's last use ended, or -1 if it has no persistent mapping (tests). */
  lastUsed(gref: number): number {
    const k = this.all.get(gref);
    if (!k) return -1;
    return k.near ? this.nearUsed[gref]! : k.lastUsed;
  }

  /** Every grant kept, as the purge sees it. */
  candidates(): PurgeCandidate[] {
    const out: PurgeCandidate[] = [];
    for (const k of this.all.values()) {
      out.push(k.near
        ? { gref: k.gref, lastUsed: this.nearUsed[k.gref]!, active: this.nearActive[k.gref]! > 0 }
        : { gref: k.gref, lastUsed: k.lastUsed, active: k.active > 0 });
    }
    return out;
  }

  /**
   * purge_persistent_gnt at time `now`: remove what choosePurge picks
   * (purge.ts), unmap them in one batch and give their gfns back (Linux
   * defers the unmap to a work item, unmap_purged_grants; ours is done at
   * once). Returns how many were removed; those that failed to unmap are
   * kept out of the pool, as `drain` does.
   */
  purge(gt: GrantTable, pool: GfnPool, now: number): number {
    if (this.all.size === 0) return 0;
    // The usual case, every LRU_INTERVAL_MS under I/O: no share to clean and nothing
    // timed out, so choosePurge would remove nothing. Seen from the typed arrays
    // without making a candidate per grant (~1 ms for a full set, measured).
    if (purgeTarget(this.all.size, this.max, this.overflow) === 0 && !this.anyTimedOut(now)) return 0;
    const c = choosePurge(this.candidates(), { max: this.max, overflow: this.overflow, now, unusedSeconds: this.unusedSeconds });
    if (c.clearOverflow) this.overflow = false;
    if (c.remove.length === 0) return 0;
    const gone: Kept[] = [];
    for (const g of c.remove) {
      const k = this.all.get(g);
      if (!k) continue;
      this.all.delete(g);
      if (k.near) {
        this.nearGfn[g] = 0;
        this.nearRo[g] = 0;
        this.nearUsed[g] = 0;
        this.nearActive[g] = 0;
      } else {
        this.far.delete(g);
      }
      gone.push(k);
    }
    this.unmap(gt, pool, gone);
    return gone.length;
  }

  /** Is any grant not in use unused for unusedSeconds at `now` (timedOut)? */
  private anyTimedOut(now: number): boolean {
    if (this.unusedSeconds <= 0) return false;
    const near = this.nearGfn;
    const used = this.nearUsed;
    const act = this.nearActive;
    for (let g = 0; g < this.nearCap; g++) {
      if (near[g] !== 0 && act[g] === 0 && timedOut(used[g]!, now, this.unusedSeconds)) return true;
    }
    for (const k of this.far.values()) if (k.active === 0 && timedOut(k.lastUsed, now, this.unusedSeconds)) return true;
    return false;
  }

  /** Unmap all (one batch) and give their gfns back. Returns how many failed to unmap (kept out of the pool). */
  drain(gt: GrantTable, pool: GfnPool): number {
    const all = [...this.all.values()];
    this.all.clear();
    this.far.clear();
    this.nearCap = 0;
    this.nearGfn = new Int32Array(0);
    this.nearRo = new Uint8Array(0);
    this.nearUsed = new Float64Array(0);
    this.nearActive = new Int32Array(0);
    this.overflow = false;
    return this.unmap(gt, pool, all);
  }

  /** One unmap batch of `ms`, their gfns back to the pool: how many failed. */
  private unmap(gt: GrantTable, pool: GfnPool, ms: readonly Kept[]): number {
    if (ms.length === 0) return 0;
    const st = gt.unmapBatch(ms);
    let bad = 0;
    ms.forEach((m, i) => { if (st[i] === GNTST_okay) pool.release(m.gfn); else bad++; });
    return bad;
  }
}
