/**
 * The purge of persistent grants (Linux's purge_persistent_gnt), as the pure
 * choice (choosePurge, purge.ts) and as PersistentGrants applies it: which
 * grants go below, at and over the bound, with and without overflow, with
 * the timeout and without (0); never one in use; a property test holds the
 * choice to the rule for any set. Then PersistentGrants.purge on a stub grant
 * table: one unmap batch, gfns back to the pool, lookups forget the grefs,
 * held grants stay, the overflow flag as Linux keeps it.
 */
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { GNTST_okay } from '../../../shared/abi/grant-table.ts';
import type { GrantTable } from '../../../shared/guest/gnttab.ts';
import { PAGE_SIZE } from '../../../shared/types.ts';
import { GfnPool } from '../../../dom0/blkback/gfn-pool.ts';
import { PersistentGrants } from '../../../dom0/blkback/persistent.ts';
import {
  choosePurge, LRU_INTERVAL_MS, LRU_PERCENT_CLEAN, PERSISTENT_GRANT_UNUSED_SECONDS, purgeTarget, timedOut, type PurgeCandidate,
} from '../../../dom0/blkback/purge.ts';

const S = 1000;
/** n grants, gref i last used at times[i] (ms), none active. */
const grants = (times: readonly number[], active: readonly number[] = []): PurgeCandidate[] =>
  times.map((lastUsed, gref) => ({ gref, lastUsed, active: active.includes(gref) }));
const range = (n: number, f: (i: number) => number = (i) => i): number[] => Array.from({ length: n }, (_, i) => f(i));

describe('choosePurge (purge_persistent_gnt)', () => {
  it("has Linux's constants", () => {
    expect(LRU_INTERVAL_MS).toBe(100);
    expect(LRU_PERCENT_CLEAN).toBe(5);
    expect(PERSISTENT_GRANT_UNUSED_SECONDS).toBe(60);
  });

  it('below the bound: only grants unused for the timeout go, never one in use', () => {
    const e = grants([0, 10 * S, 59_999, 60 * S, 70 * S], [0]);
    // now 120 s: unused for 120, 110, 60.001, 60, 50 s; gref 0 is in use.
    const c = choosePurge(e, { max: 1056, overflow: true, now: 120 * S, unusedSeconds: 60 });
    expect(c.remove).toEqual([1, 2, 3]);
    expect(c.clearOverflow).toBe(true);
    expect(choosePurge(e, { max: 1056, overflow: false, now: 60 * S, unusedSeconds: 60 })).toEqual({ remove: [], clearOverflow: false });
  });

  it('0 seconds: nothing ever times out', () => {
    const e = grants([0, 1, 2]);
    expect(choosePurge(e, { max: 1056, overflow: false, now: 1e12, unusedSeconds: 0 }).remove).toEqual([]);
    expect(timedOut(0, 1e12, 0)).toBe(false);
    expect(timedOut(0, 60 * S, 60)).toBe(true);
    expect(timedOut(1, 60 * S, 60)).toBe(false);
  });

  it('at the bound without overflow: only timeouts', () => {
    const e = grants(range(200, (i) => i * S));
    const c = choosePurge(e, { max: 200, overflow: false, now: 100 * S, unusedSeconds: 60 });
    expect(c.remove).toEqual(range(41)); // used at 0..40 s: unused >= 60 s
  });

  it('full with overflow: num_clean = floor(max/100)*5, least recently used first, after the timed-out ones', () => {
    expect(purgeTarget(1056, 1056, true)).toBe(50);
    expect(purgeTarget(1056, 1056, false)).toBe(0);
    expect(purgeTarget(1000, 1056, true)).toBe(0);
    expect(purgeTarget(1100, 1056, false)).toBe(94); // over the bound (max lowered): 50 + 44
    expect(purgeTarget(10, 8, true)).toBe(2);
    expect(purgeTarget(16, 16, true)).toBe(0); // under 100: no LRU share, as Linux
    // 200 grants, max 200: 10 to go. Times shuffled so LRU order is not gref order.
    const times = range(200, (i) => ((i * 37) % 200) * S);
    const e = grants(times);
    const c = choosePurge(e, { max: 200, overflow: true, now: 1000 * S, unusedSeconds: 0 });
    expect(c.remove).toHaveLength(10);
    expect(c.remove.map((g) => times[g]!).sort((a, b) => a - b)).toEqual(range(10, (i) => i * S));
    expect(c.clearOverflow).toBe(true);
    // Three timed out (and one in use among the oldest): those, then the LRU rest to 10.
    const t2 = range(200, (i) => (i < 3 ? 0 : 500 + i) * S);
    const c2 = choosePurge(grants(t2, [3]), { max: 200, overflow: true, now: 510 * S, unusedSeconds: 60 });
    expect(c2.remove).toEqual([0, 1, 2, 4, 5, 6, 7, 8, 9, 10]);
    // More timed out than num_clean: all of them.
    const c3 = choosePurge(grants(range(200, (i) => (i < 30 ? 0 : 500) * S)), { max: 200, overflow: true, now: 100 * S, unusedSeconds: 60 });
    expect(c3.remove).toEqual(range(30));
  });

  it('gives up when more are in use than may stay: nothing removed, overflow kept', () => {
    const e = grants(range(200, () => 0), range(195, (i) => i));
    expect(choosePurge(e, { max: 200, overflow: true, now: 1e9, unusedSeconds: 60 })).toEqual({ remove: [], clearOverflow: false });
    // Exactly num_clean idle: those.
    const e2 = grants(range(200, () => 0), range(190, (i) => i));
    expect(choosePurge(e2, { max: 200, overflow: true, now: 0, unusedSeconds: 60 }).remove).toEqual(range(10, (i) => 190 + i));
  });

  it('property: never an active grant; every timed-out idle one; max(num_clean, timed out) when it can; never more than count', () => {
    const arb = fc.record({
      entries: fc.uniqueArray(fc.record({ gref: fc.nat(70_000), lastUsed: fc.nat(200_000), active: fc.boolean() }),
        { selector: (e) => e.gref, maxLength: 300 }),
      max: fc.oneof(fc.nat(300), fc.constantFrom(16, 100, 200, 1056)),
      overflow: fc.boolean(),
      now: fc.nat(300_000),
      unusedSeconds: fc.oneof(fc.constant(0), fc.nat(200)),
      activeBias: fc.nat(3),
    });
    fc.assert(fc.property(arb, ({ entries: raw, max, overflow, now, unusedSeconds, activeBias }) => {
      // Mostly idle sets (as between requests), some with many in use.
      const entries = raw.map((e, i) => ({ ...e, active: e.active && i % 4 < activeBias }));
      const count = entries.length;
      const c = choosePurge(entries, { max, overflow, now, unusedSeconds });
      const byGref = new Map(entries.map((e) => [e.gref, e]));
      const removed = new Set(c.remove);
      expect(removed.size).toBe(c.remove.length);
      expect(c.remove.length).toBeLessThanOrEqual(count);
      for (const g of c.remove) {
        expect(byGref.has(g)).toBe(true);
        expect(byGref.get(g)!.active).toBe(false);
      }
      expect(c.clearOverflow).toBe(c.remove.length > 0);
      const numClean = count < max || (count === max && !overflow) ? 0 : Math.min(count, Math.floor(max / 100) * 5 + count - max);
      const idle = entries.filter((e) => !e.active);
      const expired = idle.filter((e) => unusedSeconds > 0 && now - e.lastUsed >= unusedSeconds * 1000);
      if (numClean > idle.length) {
        expect(c.remove).toEqual([]);
        return;
      }
      for (const e of expired) expect(removed.has(e.gref)).toBe(true);
      expect(c.remove.length).toBe(Math.max(numClean, expired.length));
      // Beyond the timed-out ones, the least recently used went.
      const expiredSet = new Set(expired.map((e) => e.gref));
      const lru = idle.filter((e) => !expiredSet.has(e.gref));
      const newestGone = Math.max(-Infinity, ...lru.filter((e) => removed.has(e.gref)).map((e) => e.lastUsed));
      const oldestKept = Math.min(Infinity, ...lru.filter((e) => !removed.has(e.gref)).map((e) => e.lastUsed));
      expect(newestGone).toBeLessThanOrEqual(oldestKept);
    }), { numRuns: 500 });
  });
});

/** A grant table that records unmap batches (every unmap succeeds). */
function stubGt(): { gt: GrantTable; batches: number[][] } {
  const batches: number[][] = [];
  const gt = { unmapBatch: (ms: ReadonlyArray<{ handle: number; gfn: number }>) => { batches.push(ms.map((m) => m.handle)); return ms.map(() => GNTST_okay); } };
  return { gt: gt as unknown as GrantTable, batches };
}

describe('PersistentGrants.purge', () => {
  it('unmaps the chosen grants in one batch, gives their gfns back, forgets their grefs (near and far)', () => {
    const pool = new GfnPool(1000, 64);
    const pg = new PersistentGrants(8, 60);
    const { gt, batches } = stubGt();
    const grefs = [1, 2, 3, 40_000, 5];
    pg.now = 0;
    for (const g of grefs.slice(0, 4)) expect(pg.add(g, { handle: 100 + g, gfn: pool.take() })).toBe(true);
    pg.now = 30 * S;
    expect(pg.add(5, { handle: 105, gfn: pool.take() })).toBe(true);
    // gref 2 used at 50 s: it stays.
    pg.now = 50 * S;
    pg.hold([2], 1);
    pg.unhold([2], 1);
    expect(pg.lastUsed(2)).toBe(50 * S);
    expect(pg.purge(gt, pool, 60 * S)).toBe(3); // 1, 3, 40000 unused for 60 s
    expect(batches).toEqual([[101, 103, 40_100]]);
    expect(pool.inUse).toBe(2);
    expect(pg.size).toBe(2);
    for (const g of [1, 3, 40_000]) expect(pg.gpa(g)).toBe(-1);
    expect(pg.gpa(2)).toBeGreaterThanOrEqual(0);
    const out = new Float64Array(3);
    expect(pg.resolve(Uint32Array.from([1, 2, 5]), 3, true, out)).toBe(2);
    expect(out[0]).toBe(-1);
    // A gref purged can be kept again.
    expect(pg.add(1, { handle: 201, gfn: pool.take() })).toBe(true);
    expect(pg.gpa(1)).toBeGreaterThanOrEqual(0);
    expect(pg.drain(gt, pool)).toBe(0);
    expect(pool.inUse).toBe(0);
  });

  it('property: purge removes exactly what choosePurge picks from candidates() (near and far grefs, held ones, timeouts, overflow; the shortcut when nothing is due included)', () => {
    fc.assert(fc.property(
      fc.integer({ min: 1, max: 40 }), fc.constantFrom(0, 1, 60),
      fc.array(fc.record({ gref: fc.oneof(fc.integer({ min: 0, max: 300 }), fc.integer({ min: 70_000, max: 70_100 })), dt: fc.integer({ min: 0, max: 90_000 }), hold: fc.boolean() }), { maxLength: 60 }),
      fc.integer({ min: 0, max: 200_000 }),
      (max, unused, ops, later) => {
        const pool = new GfnPool(0, 4096);
        const pg = new PersistentGrants(max, unused);
        const { gt } = stubGt();
        const held: number[] = [];
        let t = 1_000;
        for (const o of ops) {
          t += o.dt;
          pg.now = t;
          if (!pg.has(o.gref)) {
            const gfn = pool.take();
            if (!pg.add(o.gref, { handle: o.gref, gfn })) pool.release(gfn);
          }
          pg.hold([o.gref], 1);
          if (o.hold) held.push(o.gref);
          else pg.unhold([o.gref], 1);
        }
        const now = t + later;
        const want = choosePurge(pg.candidates(), { max, overflow: pg.overflow, now, unusedSeconds: unused });
        const before = new Set(pg.candidates().map((c) => c.gref));
        expect(pg.purge(gt, pool, now)).toBe(want.remove.length);
        const after = new Set(pg.candidates().map((c) => c.gref));
        expect([...before].filter((g) => !after.has(g)).sort((a, b) => a - b)).toEqual([...want.remove].sort((a, b) => a - b));
        for (const g of held) if (before.has(g)) expect(pg.has(g)).toBe(true);
      }), { numRuns: 300 });
  });

  it('a held grant is never purged; overflow makes room (num_clean), then is cleared', () => {
    const pool = new GfnPool(0, 512);
    const pg = new PersistentGrants(200, 0);
    const { gt } = stubGt();
    for (let g = 0; g < 200; g++) {
      pg.now = g;
      pg.add(g, { handle: g, gfn: pool.take() });
    }
    expect(pg.purge(gt, pool, 1e9)).toBe(0); // full, no overflow, no timeout
    expect(pg.add(999, { handle: 999, gfn: 511 })).toBe(false);
    expect(pg.overflow).toBe(true);
    pg.hold(Uint32Array.from([0, 1, 2]), 3);
    expect(pg.purge(gt, pool, 1e9)).toBe(10);
    expect(pg.overflow).toBe(false);
    for (const g of [0, 1, 2]) expect(pg.has(g)).toBe(true);
    for (let g = 3; g < 13; g++) expect(pg.has(g)).toBe(false);
    expect(pg.size).toBe(190);
    expect(pool.inUse).toBe(190);
    // No overflow since: below the bound, nothing more goes.
    expect(pg.purge(gt, pool, 2e9)).toBe(0);
    pg.unhold(Uint32Array.from([0, 1, 2]), 3);
    expect(pg.candidates().filter((c) => c.active)).toEqual([]);
    expect(pg.gpa(13)).toBe(13 * PAGE_SIZE); // gref g was given gfn g
  });
});
