/**
 * blkback's allocation-free indirect path (IndirectRwScratch.decode +
 * indirectRwPages, readSegments + checkIndirectRw) against the general path
 * (decodeRequest + indirectPages, decodeIndirectSegments + checkRequest): on
 * any entry and any indirect page bytes they agree. The fast path accepts
 * exactly the entries the general path checks into an indirect READ/WRITE
 * `io`, with the same operation, sector, sector count, segments and id;
 * everything else (refusals included) it declines, leaving it to the general
 * path. Plus PersistentGrants' lookup table against a plain Map.
 */
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { BLKIF_RESPONSE } from '../../../shared/abi/blkif.ts';
import { copyRequestId, decodeIndirectSegments, decodeRequest, IndirectRwScratch } from '../../../shared/blkif/proto.ts';
import { checkIndirectRw, checkRequest, indirectPages, indirectRwPages, type DiskLimits } from '../../../dom0/blkback/validate.ts';
import { DIRECT_REFS, PersistentGrants } from '../../../dom0/blkback/persistent.ts';
import type { GfnPool } from '../../../dom0/blkback/gfn-pool.ts';
import type { GrantTable } from '../../../shared/guest/gnttab.ts';
import { PAGE_SIZE } from '../../../shared/types.ts';
import { indirectEntry } from '../../helpers/blkif-arb.ts';

/** Indirect page bytes the test provides: two pages (1024 segments). */
const PAGES = 2;

/** 112 bytes, biased toward plausible indirect requests. */
const entry = indirectEntry({ maxSector: 4200 });

/** Indirect page bytes: random, with (mostly) sensible first/last sectors, or a rare bad one. */
const pageBytes = fc.record({
  bytes: fc.uint8Array({ minLength: PAGES * PAGE_SIZE, maxLength: PAGES * PAGE_SIZE }),
  good: fc.oneof({ arbitrary: fc.constant(true), weight: 4 }, { arbitrary: fc.constant(false), weight: 1 }),
  bad: fc.array(fc.tuple(fc.oneof(fc.nat(7), fc.nat(PAGES * 512 - 1)), fc.nat(9), fc.nat(9)), { maxLength: 3 }),
}).map(({ bytes, good, bad }) => {
  const b = bytes.slice();
  if (good) {
    for (let i = 0; i < PAGES * 512; i++) {
      const x = b[8 * i + 4]! & 7;
      const y = b[8 * i + 5]! & 7;
      b[8 * i + 4] = Math.min(x, y);
      b[8 * i + 5] = Math.max(x, y);
    }
    for (const [i, f, l] of bad) { b[8 * i + 4] = f; b[8 * i + 5] = l; }
  }
  return b;
});

const limitsArb = fc.record({
  sectors: fc.oneof(fc.nat(4096), fc.nat(1 << 22), fc.constant(1 << 22)),
  readonly: fc.boolean(),
  discard: fc.boolean(),
  discardSecure: fc.boolean(),
  maxIndirectSegments: fc.oneof(fc.constant(256), fc.nat(PAGES * 512), fc.nat(70000)),
});

describe('indirect READ/WRITE fast path', () => {
  it('agrees with decodeRequest + decodeIndirectSegments + checkRequest on any entry and page bytes', () => {
    const sc = new IndirectRwScratch();
    // How often each side of the verdict came up (the generators must reach both).
    let accepted = 0;
    let declinedAfterRead = 0;
    fc.assert(fc.property(entry, pageBytes, limitsArb, (bytes, page, limits: DiskLimits) => {
      const dv = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
      const pdv = new DataView(page.buffer, page.byteOffset, page.byteLength);
      // The fast path, as the engine runs it (pages beyond what we hold: unreadable, as beyond 8 pages).
      let fast = -1;
      if (sc.decode(dv)) {
        const pages = indirectRwPages(sc, limits);
        if (pages > 0 && pages <= PAGES) {
          sc.readSegments(pdv, sc.nrSegments);
          fast = checkIndirectRw(sc, limits);
          if (fast < 0) declinedAfterRead++;
        }
      }
      // The general path.
      const req = decodeRequest(bytes);
      let segs = null;
      if (req.kind === 'indirect') {
        const p = indirectPages(req, limits);
        if (typeof p === 'number' && p <= PAGES) segs = decodeIndirectSegments(page, req.nrSegments);
      }
      const c = checkRequest(req, limits, segs);
      const generalAccepts = req.kind === 'indirect' && c.kind === 'io' && (c.op === 0 || c.op === 1);
      expect(fast > 0).toBe(generalAccepts);
      if (!generalAccepts || req.kind !== 'indirect' || c.kind !== 'io') return;
      accepted++;
      expect(sc.indirectOp).toBe(c.op);
      expect(c.rspOp).toBe(c.op);
      expect(sc.nrSegments).toBe(req.nrSegments);
      expect(sc.handle).toBe(req.handle);
      expect(sc.sector).toBe(c.sector);
      expect(fast).toBe(c.nrSectors);
      expect(sc.count).toBe(c.segs.length);
      const fastSegs = Array.from({ length: sc.count }, (_, i) => ({ gref: sc.gref[i], firstSect: sc.firstSect[i], lastSect: sc.lastSect[i] }));
      expect(fastSegs).toEqual(c.segs.map((s) => ({ ...s })));
      const rsp = new DataView(new ArrayBuffer(BLKIF_RESPONSE.size));
      copyRequestId(dv, rsp);
      expect(rsp.getBigUint64(BLKIF_RESPONSE.fields.id.offset, true)).toBe(c.id);
    }), { numRuns: 3000 });
    expect(accepted).toBeGreaterThan(100);
    expect(declinedAfterRead).toBeGreaterThan(100);
  });

  it('decodes any indirect READ/WRITE header as decodeRequest does, whatever its checks say', () => {
    const sc = new IndirectRwScratch();
    fc.assert(fc.property(entry, (bytes) => {
      const req = decodeRequest(bytes);
      const took = sc.decode(new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength));
      expect(took).toBe(req.kind === 'indirect' && (req.indirectOp === 0 || req.indirectOp === 1));
      if (!took || req.kind !== 'indirect') return;
      expect({ op: sc.indirectOp, n: sc.nrSegments, h: sc.handle, sector: sc.sector, grefs: [...sc.indirectGrefs] })
        .toEqual({ op: req.indirectOp, n: req.nrSegments, h: req.handle, sector: req.sector, grefs: [...req.indirectGrefs] });
    }), { numRuns: 3000 });
  });

  it('reads segments as decodeIndirectSegments does, reusing its arrays', () => {
    const sc = new IndirectRwScratch();
    fc.assert(fc.property(pageBytes, fc.nat(PAGES * 512), (page, n) => {
      sc.readSegments(new DataView(page.buffer), n);
      const got = Array.from({ length: sc.count }, (_, i) => ({ gref: sc.gref[i], firstSect: sc.firstSect[i], lastSect: sc.lastSect[i] }));
      expect(got).toEqual(decodeIndirectSegments(page, n).map((s) => ({ ...s })));
    }), { numRuns: 300 });
    expect(() => sc.readSegments(new DataView(new ArrayBuffer(15)), 2)).toThrow(RangeError);
  });
});

describe('PersistentGrants lookup', () => {
  it('holds near arrays only as large as the grefs kept need (doubling), keeps what they hold as they grow, and gives them up at drain', () => {
    const pg = new PersistentGrants(100);
    expect(pg.nearCapacity).toBe(0);
    expect(pg.gpa(7)).toBe(-1);
    expect(pg.add(7, { handle: 1, gfn: 70 })).toBe(true);
    expect(pg.nearCapacity).toBe(512);
    pg.now = 5;
    pg.hold([7], 1);
    expect(pg.add(5000, { handle: 2, gfn: 71 }, true)).toBe(true);
    expect(pg.nearCapacity).toBe(8192);
    // Kept across the growth: the mapping, its use under way and its read-only flag.
    expect([pg.gpa(7), pg.writableGpa(7), pg.gpa(5000), pg.writableGpa(5000)]).toEqual([70 * PAGE_SIZE, 70 * PAGE_SIZE, 71 * PAGE_SIZE, -1]);
    expect(pg.candidates().find((c) => c.gref === 7)!.active).toBe(true);
    // A gref past the arrays' end (but below DIRECT_REFS) has no mapping; one at or above DIRECT_REFS goes to the Map.
    expect([pg.gpa(9000), pg.writableGpa(DIRECT_REFS - 1)]).toEqual([-1, -1]);
    expect(pg.add(DIRECT_REFS, { handle: 3, gfn: 72 })).toBe(true);
    expect(pg.nearCapacity).toBe(8192);
    const out = new Float64Array(3);
    expect(pg.resolve(Uint32Array.from([7, 9000, DIRECT_REFS]), 3, false, out)).toBe(2);
    expect(Array.from(out)).toEqual([70 * PAGE_SIZE, -1, 72 * PAGE_SIZE]);
    pg.unhold([7, 9000], 2); // a gref with no mapping is skipped
    expect(pg.lastUsed(7)).toBe(5);
    const unmapped: number[] = [];
    const gt = { unmapBatch: (ms: readonly { handle: number }[]) => ms.map((m) => { unmapped.push(m.handle); return 0; }) } as unknown as GrantTable;
    const pool = { release: () => {} } as unknown as GfnPool;
    expect(pg.drain(gt, pool)).toBe(0);
    expect(unmapped.sort()).toEqual([1, 2, 3]);
    expect([pg.size, pg.nearCapacity, pg.gpa(7)]).toEqual([0, 0, -1]);
  });

  it('agrees with a Map on any u32 grefs, near and far, writable and read-only', () => {
    // Small grefs, grefs about where the near arrays double (512, 1024, 2048...), the DIRECT_REFS bound, and any u32.
    const gref = fc.oneof(fc.nat(64), fc.integer({ min: 500, max: 4200 }), fc.integer({ min: DIRECT_REFS - 4, max: DIRECT_REFS + 4 }), fc.nat(0xffff_ffff));
    fc.assert(fc.property(fc.array(fc.tuple(gref, fc.boolean()), { maxLength: 40 }), fc.array(gref, { maxLength: 40 }), fc.nat(50), (adds, probes, max) => {
      const pg = new PersistentGrants(max);
      const model = new Map<number, { gfn: number; ro: boolean }>();
      adds.forEach(([g, ro], i) => {
        const gfn = 1000 + i;
        const want = model.size < max && !model.has(g);
        expect(pg.add(g, { handle: i, gfn }, ro)).toBe(want);
        if (want) model.set(g, { gfn, ro });
      });
      expect(pg.size).toBe(model.size);
      const all = [...probes, ...adds.map(([g]) => g)];
      const out = new Float64Array(all.length);
      const outW = new Float64Array(all.length);
      const hits = pg.resolve(Uint32Array.from(all), all.length, false, out);
      const hitsW = pg.resolve(Uint32Array.from(all), all.length, true, outW);
      let h = 0;
      let hw = 0;
      all.forEach((g, i) => {
        const m = model.get(g);
        const any = m ? m.gfn * PAGE_SIZE : -1;
        const w = m && !m.ro ? m.gfn * PAGE_SIZE : -1;
        expect([pg.gpa(g), pg.writableGpa(g), out[i], outW[i]]).toEqual([any, w, any, w]);
        if (any >= 0) h++;
        if (w >= 0) hw++;
      });
      expect([hits, hitsW]).toEqual([h, hw]);
    }), { numRuns: 500 });
  });
});
