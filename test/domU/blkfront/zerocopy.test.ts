/**
 * blkfront's zero-copy data path (BlkBuffer: allocBuffer, readPages,
 * writePages, freeBuffer) against the fake blkback: the buffer's own pages
 * are granted, no pool page carries data, persistent grants are made once
 * per page, per-request grants end at completion, and reconnection, unplug
 * and freeing behave as for the copying path.
 */
import { describe, expect, it } from 'vitest';
import fc from 'fast-check';
import { bench, outcome, pattern, sameBytes, unplugWithHeld } from './setup.ts';
import { BLKIF_OP_INDIRECT, BLKIF_OP_READ, BLKIF_OP_WRITE } from '../../../shared/abi/blkif.ts';
import { GTF_readonly } from '../../../shared/abi/grant-table.ts';
import { BlkBuffer } from '../../../domU/blkfront/blkfront.ts';
import { BlkfrontError } from '../../../domU/blkfront/types.ts';
import { GrantTableFullError } from '../../../shared/guest/gnttab.ts';
import type { GrantRef } from '../../../shared/types.ts';

const PAGE = 4096;

/** The buffer's bytes [offset, offset + len). */
function bytesOf(buf: BlkBuffer, offset: number, len: number): Uint8Array {
  const out = new Uint8Array(len);
  buf.readInto(offset, out);
  return out;
}

describe('blkfront zero-copy buffers', () => {
  it('allocBuffer takes adjacent pages; the buffer reads and writes its bytes; bad sizes are refused', async () => {
    const t = await bench();
    const dev = await t.connect();
    const free = t.v.xen.freePageCount;
    const buf = dev.allocBuffer(4 * PAGE);
    expect(buf).toBeInstanceOf(BlkBuffer);
    expect(buf.bytes).toBe(4 * PAGE);
    expect(buf.contiguous).toBe(true);
    expect(t.v.xen.freePageCount).toBe(free - 4);
    expect(buf.gpa(PAGE + 5)).toBe(buf.gpa(0) + PAGE + 5);
    const data = pattern(0, 20, 4);
    buf.write(100, data);
    expect(sameBytes(bytesOf(buf, 100, data.length), data)).toBe(true);
    expect(() => buf.readInto(4 * PAGE - 1, new Uint8Array(2))).toThrow(RangeError);
    for (const bad of [0, 100, PAGE + 1, -PAGE, 1.5 * PAGE, NaN]) {
      let err: unknown;
      try { dev.allocBuffer(bad); } catch (e) { err = e; }
      expect(err).toMatchObject({ name: 'BlkfrontError', reason: 'range' });
    }
    expect(t.v.xen.freePageCount).toBe(free - 4);
    dev.freeBuffer(buf);
    expect(t.v.xen.freePageCount).toBe(free);
    expect(() => buf.readInto(0, new Uint8Array(1))).toThrow(/freeBuffer/);
    expect(() => dev.freeBuffer(buf)).toThrow(/freed already/);
  });

  it('Xen.allocGfnRun takes a run of adjacent free gfns, or any pages when there is none', async () => {
    const t = await bench();
    const xen = t.v.xen;
    const free = xen.freePageCount;
    const run = xen.allocGfnRun(8);
    expect(run).toEqual(Array.from({ length: 8 }, (_, i) => run[0]! + i));
    // Leave only isolated free pages (even gfns: no two adjacent).
    const held = Array.from({ length: xen.freePageCount }, () => xen.allocGfn());
    const back = held.filter((g) => g % 2 === 0).slice(0, 6);
    for (const g of back) xen.releaseGfn(g);
    const got = xen.allocGfnRun(3);
    expect(got).toHaveLength(3);
    expect(new Set(got).size).toBe(3);
    expect(got.every((g) => back.includes(g))).toBe(true);
    expect(() => xen.allocGfnRun(4)).toThrow(/out of guest pages/);
    expect(xen.freePageCount).toBe(3);
    for (const g of [...got, ...run, ...held.filter((g) => !back.includes(g))]) xen.releaseGfn(g);
    expect(xen.freePageCount).toBe(free);
  });

  it('data written with writePages reads back through read(), and read data lands in the buffer', async () => {
    for (const persistent of [true, false]) {
      const t = await bench();
      const dev = await t.connect({ persistent });
      const buf = dev.allocBuffer(8 * PAGE);
      const data = pattern(16, 64, 2);
      buf.write(0, data);
      await t.run(dev.writePages(16, buf));
      expect(sameBytes(t.back.disk.subarray(16 * 512, 80 * 512), data)).toBe(true);
      expect(sameBytes(await t.run(dev.read(16, 64)), data)).toBe(true);
      // Partial: 5 sectors from the buffer's third page.
      await t.run(dev.writePages(200, buf, 2 * PAGE, 5));
      expect(sameBytes(t.back.disk.subarray(200 * 512, 205 * 512), data.subarray(2 * PAGE, 2 * PAGE + 5 * 512))).toBe(true);

      const other = pattern(300, 24, 7);
      await t.run(dev.write(300, other));
      const rb = dev.allocBuffer(4 * PAGE);
      await t.run(dev.readPages(300, rb, PAGE, 24));
      expect(sameBytes(bytesOf(rb, PAGE, 24 * 512), other)).toBe(true);
      expect(t.back.seen.at(-1)!.req).toMatchObject({ operation: BLKIF_OP_READ, sector: 300 });
      dev.freeBuffer(buf);
      dev.freeBuffer(rb);
    }
  });

  it('a read goes into the buffer\'s own pages: no pool page is used, one grant per page', async () => {
    const t = await bench();
    const dev = await t.connect({ persistent: false });
    await t.run(dev.write(0, pattern(0, 16, 3)));
    const buf = dev.allocBuffer(2 * PAGE);
    const inUse = dev.pagesInUse;
    const granted = dev.grantStats.granted;
    t.back.misbehave.hold = true;
    const p = dev.readPages(0, buf);
    await t.settle(3);
    expect(dev.pagesInUse).toBe(inUse);
    expect(dev.grantStats.granted).toBe(granted + 2);
    const segs = t.back.seen.at(-1)!.segs;
    expect(segs.map((s) => t.ggnt.entry(s.gref).frame)).toEqual([buf.gpa(0) / PAGE, buf.gpa(PAGE) / PAGE]);
    expect(segs.every((s) => (t.ggnt.entry(s.gref).flags & GTF_readonly) === 0)).toBe(true);
    t.back.misbehave.hold = false;
    t.back.release();
    await t.run(p);
    expect(sameBytes(bytesOf(buf, 0, 2 * PAGE), pattern(0, 16, 3))).toBe(true);
    expect(dev.pagesInUse).toBe(inUse);
    // A write grants its pages read-only.
    t.back.misbehave.hold = true;
    const w = dev.writePages(64, buf);
    await t.settle(3);
    expect(t.back.seen.at(-1)!.segs.every((s) => (t.ggnt.entry(s.gref).flags & GTF_readonly) !== 0)).toBe(true);
    t.back.misbehave.hold = false;
    t.back.release();
    await t.run(w);
    expect(dev.grantStats).toEqual({ granted: granted + 4, ended: granted + 4, leaked: 0 });
  });

  it('persistent grants: 100 I/Os on one buffer make one grant per page, kept and mapped once by the backend', async () => {
    const t = await bench();
    const dev = await t.connect({ persistent: true });
    const buf = dev.allocBuffer(4 * PAGE);
    buf.write(0, pattern(0, 32, 5));
    for (let i = 0; i < 50; i++) await t.run(dev.writePages(i * 32, buf));
    for (let i = 0; i < 50; i++) await t.run(dev.readPages(i * 32, buf));
    expect(dev.grantStats).toEqual({ granted: 4, ended: 0, leaked: 0 });
    expect(dev.bufferGrants).toBe(4);
    expect(dev.pooledGrants).toBe(0);
    expect(t.back.mappedPersistent).toBe(4);
    expect(sameBytes(bytesOf(buf, 0, 4 * PAGE), pattern(0, 32, 5))).toBe(true);
    // Concurrent I/Os on the same pages share the grants.
    await t.run(Promise.all(Array.from({ length: 10 }, (_, i) => dev.readPages(i * 32, buf))));
    expect(dev.grantStats.granted).toBe(4);
    // The backend keeps persistent grants mapped until it disconnects: the freed buffer's pages go back then.
    const free = t.v.xen.freePageCount;
    dev.freeBuffer(buf);
    expect(dev.bufferGrants).toBe(0);
    expect(t.v.xen.freePageCount).toBe(free);
    expect(dev.grantStats).toEqual({ granted: 4, ended: 0, leaked: 0 });
    await t.run(dev.close());
    expect(dev.grantStats).toEqual({ granted: 4, ended: 4, leaked: 0 });
    expect(t.back.mappedPersistent).toBe(0);
    expect(t.ggnt.freeRefCount).toBe(t.refsBefore);
    expect(t.v.xen.freePageCount).toBe(t.pagesBefore);
  });

  it('without persistent grants every buffer grant ends at completion and the backend keeps nothing mapped', async () => {
    const t = await bench();
    const dev = await t.connect({ persistent: false });
    const refs = t.ggnt.freeRefCount;
    const buf = dev.allocBuffer(16 * PAGE);
    buf.write(0, pattern(0, 128, 6));
    const ps: Array<Promise<void>> = [];
    for (let i = 0; i < 20; i++) ps.push(i % 2 ? dev.readPages(i * 8, buf, (i % 16) * PAGE, 8) : dev.writePages(i * 8, buf, (i % 16) * PAGE, 8));
    ps.push(dev.writePages(1000, buf));
    await t.run(Promise.all(ps));
    // 20 one-page requests, then one indirect request: 16 buffer pages and its indirect page.
    expect(dev.grantStats.granted).toBe(20 + 16 + 1);
    expect(dev.grantStats.ended).toBe(dev.grantStats.granted);
    expect(dev.grantStats.leaked).toBe(0);
    expect(t.back.mappedPersistent).toBe(0);
    expect(t.ggnt.freeRefCount).toBe(refs);
    expect(sameBytes(t.back.disk.subarray(1000 * 512, 1128 * 512), bytesOf(buf, 0, 16 * PAGE))).toBe(true);
    const free = t.v.xen.freePageCount;
    dev.freeBuffer(buf);
    expect(t.v.xen.freePageCount).toBe(free + 16);
  });

  it('a non-persistent buffer grant the backend keeps mapped is leaked; the page goes back once it unmaps', async () => {
    const t = await bench();
    const dev = await t.connect({ persistent: false });
    const buf = dev.allocBuffer(PAGE);
    t.back.misbehave.hold = true;
    const p = dev.readPages(0, buf);
    await t.settle(3);
    const stuck = t.gnt0.map(t.g.domid, t.back.seen[0]!.segs[0]!.gref);
    t.back.misbehave.hold = false;
    t.back.release();
    await t.run(p);
    expect(dev.grantStats.leaked).toBe(1);
    expect(t.warnings.some((w) => w.includes('leaking'))).toBe(true);
    // The buffer stays usable: the next request grants the page afresh.
    await t.run(dev.readPages(8, buf));
    expect(t.back.seen[1]!.segs[0]!.gref).not.toBe(t.back.seen[0]!.segs[0]!.gref);
    const free = t.v.xen.freePageCount;
    dev.freeBuffer(buf);
    expect(t.v.xen.freePageCount).toBe(free);
    t.gnt0.unmap(stuck);
    await t.run(dev.close());
    expect(t.v.xen.freePageCount).toBe(t.pagesBefore);
    expect(t.ggnt.freeRefCount).toBe(t.refsBefore);
  });

  it('bad offsets, ranges and buffers are refused with "range" and nothing is granted or sent', async () => {
    const t = await bench();
    const dev = await t.connect();
    const buf = dev.allocBuffer(2 * PAGE);
    const granted = dev.grantStats.granted;
    expect(await outcome(dev.readPages(0, buf, 512))).toBe('range');
    expect(await outcome(dev.writePages(0, buf, 100))).toBe('range');
    expect(await outcome(dev.readPages(0, buf, 2 * PAGE))).toBe('range');
    expect(await outcome(dev.readPages(0, buf, PAGE, 9))).toBe('range');
    expect(await outcome(dev.writePages(0, buf, 0, 17))).toBe('range');
    expect(await outcome(dev.readPages(4090, buf))).toBe('range');
    const e = await dev.readPages(0, buf, 512).catch((x: unknown) => x);
    expect(String((e as Error).message)).toMatch(/multiple of 4096/);
    dev.freeBuffer(buf);
    expect(await outcome(dev.readPages(0, buf))).toBe('range');
    expect(dev.grantStats.granted).toBe(granted);
    expect(t.back.seen.length).toBe(0);
    expect(dev.inFlight + dev.queued).toBe(0);
  });

  it('freeBuffer refuses a buffer with I/O pending', async () => {
    const t = await bench();
    const dev = await t.connect();
    const buf = dev.allocBuffer(PAGE);
    t.back.misbehave.hold = true;
    const p = dev.readPages(0, buf);
    await t.settle(3);
    expect(() => dev.freeBuffer(buf)).toThrow(/pending/);
    t.back.misbehave.hold = false;
    t.back.release();
    await t.run(p);
    dev.freeBuffer(buf);
  });

  it('big buffer I/O is split into indirect requests whose indirect pages come from the pool', async () => {
    const t = await bench();
    const dev = await t.connect({ persistent: false, maxIndirectSegments: 32 });
    const buf = dev.allocBuffer(100 * PAGE);
    const data = pattern(0, 800, 8);
    buf.write(0, data);
    const inUse = dev.pagesInUse;
    t.back.misbehave.hold = true;
    const w = dev.writePages(0, buf);
    await t.settle(3);
    // 32 + 32 + 32 indirect (one indirect page each), then 4 pages direct.
    expect(t.back.seen.map((s) => [s.req.operation, s.segs.length])).toEqual([[BLKIF_OP_INDIRECT, 32], [BLKIF_OP_INDIRECT, 32], [BLKIF_OP_INDIRECT, 32], [BLKIF_OP_WRITE, 4]]);
    expect(dev.pagesInUse).toBe(inUse + 3);
    const frames = t.back.seen.flatMap((s) => s.segs.map((g) => t.ggnt.entry(g.gref).frame));
    expect(frames).toEqual(buf.pages.map((p) => p.gfn));
    t.back.misbehave.hold = false;
    t.back.release();
    await t.run(w);
    expect(sameBytes(t.back.disk.subarray(0, data.length), data)).toBe(true);
    const rb = dev.allocBuffer(100 * PAGE);
    await t.run(dev.readPages(0, rb));
    expect(sameBytes(bytesOf(rb, 0, data.length), data)).toBe(true);
    expect(dev.grantStats.granted).toBe(dev.grantStats.ended);
  });
});

describe('blkfront zero-copy buffers: our grant table full', () => {
  it('pages that cannot be granted fail the I/O with "grants"; what was granted for it goes back and the device goes on', async () => {
    const t = await bench();
    const dev = await t.connect({ persistent: false, maxIndirectSegments: 32 });
    const buf = dev.allocBuffer(40 * PAGE);
    const data = pattern(0, 320, 4);
    buf.write(0, data);
    // Grant some page of ours to Dom0 until the table is full (max_grant_frames), then free `n` references.
    const filler: GrantRef[] = [];
    for (;;) {
      try {
        filler.push(t.ggnt.grantAccess(0, buf.pages[0]!.gfn));
      } catch (e) {
        if (e instanceof GrantTableFullError) break;
        throw e;
      }
    }
    const free = (n: number): void => {
      for (let i = 0; i < n; i++) expect(t.ggnt.endAccess(filler.pop()!)).toBe(true);
    };
    const failure = async (p: Promise<void>): Promise<string> => {
      const e: unknown = await t.run(p.then(() => undefined, (x: unknown) => x));
      expect(e).toBeInstanceOf(BlkfrontError);
      const err = e as BlkfrontError;
      expect(err.message).toMatch(/could not be granted to the backend \(out of grant references/);
      return err.reason;
    };
    const sent = t.back.seen.length;
    // One direct request of 8 pages with 3 references free: fails at its 4th page.
    free(3);
    expect(await failure(dev.writePages(0, buf, 0, 64))).toBe('grants');
    expect([t.ggnt.freeRefCount, dev.inFlight, t.back.seen.length]).toEqual([3, 0, sent]);
    // One indirect request of 32 pages with 32 free: its data pages are granted, its indirect page is not.
    free(29);
    expect(await failure(dev.writePages(0, buf, 0, 256))).toBe('grants');
    expect([t.ggnt.freeRefCount, dev.inFlight, t.back.seen.length, dev.pagesInUse]).toEqual([32, 0, sent, 0]);
    expect(dev.grantStats.granted).toBe(dev.grantStats.ended);
    // 40 pages with 35 free: the first request (32 pages, one indirect page) goes out; the rest (8 pages) cannot.
    free(3);
    expect(await failure(dev.writePages(0, buf))).toBe('grants');
    expect(t.back.seen.slice(sent).map((x) => [x.req.operation, x.segs.length])).toEqual([[BLKIF_OP_INDIRECT, 32]]);
    expect(sameBytes(t.back.disk.subarray(0, 32 * PAGE), data.subarray(0, 32 * PAGE))).toBe(true);
    expect([t.ggnt.freeRefCount, dev.inFlight]).toEqual([35, 0]);
    // With the table's references back, the same I/O goes through; nothing is left pending or granted.
    free(filler.length);
    buf.write(0, pattern(0, 320, 5));
    await t.run(dev.writePages(0, buf));
    expect(sameBytes(t.back.disk.subarray(0, 40 * PAGE), pattern(0, 320, 5))).toBe(true);
    expect(dev.grantStats.granted).toBe(dev.grantStats.ended);
    dev.freeBuffer(buf);
  });
});

describe('blkfront zero-copy buffers: reconnection and unplug', () => {
  it('buffer I/O in flight when the backend crashes is issued again on the new ring with fresh grants', async () => {
    for (const persistent of [true, false]) {
      const t = await bench();
      const dev = await t.connect({ persistent });
      await t.run(dev.write(0, pattern(0, 64, 3)));
      const reads = Array.from({ length: 8 }, () => dev.allocBuffer(PAGE));
      const wbuf = dev.allocBuffer(30 * PAGE);
      wbuf.write(0, pattern(200, 240, 6));
      t.back.misbehave.hold = true;
      const rs = reads.map((b, i) => dev.readPages(i * 8, b));
      const w = dev.writePages(200, wbuf);
      await t.settle(3);
      expect(t.back.heldCount).toBeGreaterThan(0);
      const grantedBefore = dev.grantStats.granted;
      await t.back.crash();
      await t.until(() => dev.state === 'Closed');
      // The old connection's buffer grants are all ended.
      expect(dev.grantStats.ended).toBe(grantedBefore);
      expect(dev.bufferGrants).toBe(0);
      t.back.misbehave.hold = false;
      await t.back.restart();
      await t.run(Promise.all([...rs, w]));
      const base = pattern(0, 64, 3);
      reads.forEach((b, i) => expect(sameBytes(bytesOf(b, 0, PAGE), base.subarray(i * PAGE, (i + 1) * PAGE))).toBe(true));
      expect(sameBytes(t.back.disk.subarray(200 * 512, 440 * 512), pattern(200, 240, 6))).toBe(true);
      expect(dev.stats.reissued).toBeGreaterThan(0);
      expect(dev.grantStats.granted).toBeGreaterThan(grantedBefore);
      if (persistent) expect(dev.bufferGrants).toBe(8 + 30);
      else expect(dev.grantStats.granted).toBe(dev.grantStats.ended);
      for (const b of [...reads, wbuf]) dev.freeBuffer(b);
      await t.run(dev.close());
      expect(t.ggnt.freeRefCount).toBe(t.refsBefore);
      expect(t.v.xen.freePageCount).toBe(t.pagesBefore);
      expect(dev.grantStats.granted).toBe(dev.grantStats.ended);
    }
  });

  it('hot-unplug fails pending buffer I/O with "removed"; the buffers can still be freed', async () => {
    const t = await bench();
    const dev = await t.connect();
    const bufs = Array.from({ length: 40 }, () => dev.allocBuffer(PAGE));
    const res = await unplugWithHeld(t, dev, () => bufs.map((b, i) => dev.readPages(i * 8, b)), 10);
    expect(res.filter((r) => r === 'ok')).toHaveLength(10);
    expect(res.filter((r) => r === 'removed')).toHaveLength(30);
    await t.run(dev.closed);
    expect(await outcome(dev.readPages(0, bufs[0]!))).toBe('removed');
    for (const b of bufs) dev.freeBuffer(b);
    expect(t.ggnt.freeRefCount).toBe(t.refsBefore);
    expect(t.v.xen.freePageCount).toBe(t.pagesBefore);
  });
});

describe('blkfront zero-copy buffers: random I/O against a model disk', () => {
  it('readPages/writePages mixed with read/write, batched, match the model', async () => {
    const SECTORS = 512;
    const BUF_PAGES = 24;
    const op = fc.record({
      k: fc.constantFrom('zw' as const, 'zr' as const, 'w' as const, 'r' as const),
      s: fc.nat(SECTORS - 1), page: fc.nat(BUF_PAGES - 1), n: fc.integer({ min: 1, max: 8 * BUF_PAGES }), salt: fc.nat(255),
    });
    // Each bench keeps one buffer per op slot of a batch, reused from run to run (as
    // docs/block.md advises): with persistent grants a freed buffer's pages stay
    // mapped by the backend until it disconnects, so fresh buffers per op would
    // run the guest out of pages over enough runs.
    const benches = new Map<string, { t: Awaited<ReturnType<typeof bench>>; dev: Awaited<ReturnType<Awaited<ReturnType<typeof bench>>['connect']>>; bufs: BlkBuffer[] }>();
    await fc.assert(fc.asyncProperty(
      fc.array(fc.array(op, { minLength: 1, maxLength: 8 }), { minLength: 1, maxLength: 4 }), fc.boolean(), fc.constantFrom(0, 32),
      async (batches, persistent, maxIndirectSegments) => {
        const key = `${persistent}/${maxIndirectSegments}`;
        let b = benches.get(key);
        if (!b) {
          const t = await bench({ sectors: SECTORS });
          const dev = await t.connect({ persistent, maxIndirectSegments });
          b = { t, dev, bufs: Array.from({ length: 8 }, () => dev.allocBuffer(BUF_PAGES * PAGE)) };
          benches.set(key, b);
        }
        const { t, dev, bufs } = b;
        const model = t.back.disk.slice();
        for (const batch of batches) {
          const ps: Array<Promise<void>> = [];
          for (const [i, o] of batch.entries()) {
            const n = Math.min(o.n, SECTORS - o.s, (BUF_PAGES - o.page) * 8);
            const offset = o.page * PAGE;
            if (o.k === 'zw' || o.k === 'w') {
              const data = pattern(o.s, n, o.salt);
              model.set(data, o.s * 512);
              if (o.k === 'w') { ps.push(dev.write(o.s, data)); continue; }
              const buf = bufs[i]!;
              buf.write(offset, data);
              ps.push(dev.writePages(o.s, buf, offset, n));
            } else {
              const want = model.slice(o.s * 512, (o.s + n) * 512);
              if (o.k === 'r') { ps.push(dev.read(o.s, n).then((got) => { expect(sameBytes(got, want)).toBe(true); })); continue; }
              const buf = bufs[i]!;
              ps.push(dev.readPages(o.s, buf, offset, n).then(() => { expect(sameBytes(bytesOf(buf, offset, n * 512), want)).toBe(true); }));
            }
          }
          await t.run(Promise.all(ps));
        }
        expect(sameBytes(t.back.disk, model)).toBe(true);
        expect(dev.inFlight).toBe(0);
        if (!persistent) expect(dev.grantStats.granted).toBe(dev.grantStats.ended);
        expect(dev.grantStats.leaked).toBe(0);
      }), { numRuns: 60 });
    for (const { t, dev, bufs } of benches.values()) {
      for (const buf of bufs) dev.freeBuffer(buf);
      await t.run(dev.close());
      // (The grant table may have grown: buffers freed while connected keep their persistent grants until then.)
      expect(dev.grantStats.granted).toBe(dev.grantStats.ended);
      expect(t.back.mappedPersistent).toBe(0);
      expect(t.v.xen.freePageCount).toBe(t.pagesBefore);
    }
  }, 120_000);
});

describe('blkfront zero-copy buffers: completion callbacks (queuePages)', () => {
  /** A `done` that records what it was called with, and whether that was inside a call of ours. */
  function recorder() {
    const calls: Array<Error | undefined> = [];
    let inside = false;
    const done = (err: Error | undefined): void => {
      expect(inside).toBe(false);
      calls.push(err);
    };
    const call = <T>(fn: () => T): T => {
      inside = true;
      try { return fn(); } finally { inside = false; }
    };
    return { calls, done, call };
  }

  it('done runs once per I/O, later and never inside queuePages or the driver; the data is the promise path\'s', async () => {
    const t = await bench();
    const dev = await t.connect();
    const data = pattern(40, 16, 9);
    const wbuf = dev.allocBuffer(2 * PAGE);
    wbuf.write(0, data);
    const w = recorder();
    expect(w.call(() => dev.queuePages('write', 40, wbuf, 0, 16, w.done))).toBeUndefined();
    expect(w.calls).toHaveLength(0);
    await t.until(() => w.calls.length > 0);
    expect(w.calls).toEqual([undefined]);
    // Responses consumed inside our own call (kick) still complete from a microtask.
    const rbuf = dev.allocBuffer(2 * PAGE);
    const r = recorder();
    expect(dev.queuePages('read', 40, rbuf, 0, undefined, r.done)).toBeUndefined();
    await t.settle(1);
    t.ev.dispatch();
    r.call(() => dev.kick());
    await t.until(() => r.calls.length > 0);
    expect(r.calls).toEqual([undefined]);
    expect(sameBytes(bytesOf(rbuf, 0, data.length), data)).toBe(true);
    expect(sameBytes(await t.run(dev.read(40, 16)), data)).toBe(true);
    await t.settle(3);
    expect(w.calls).toHaveLength(1);
    expect(r.calls).toHaveLength(1);
    dev.freeBuffer(wbuf);
    dev.freeBuffer(rbuf);
  });

  it('refused I/O returns its error and done is never called; a backend error reaches done; zero sectors complete', async () => {
    const t = await bench();
    const dev = await t.connect();
    const buf = dev.allocBuffer(PAGE);
    const rec = recorder();
    expect(dev.queuePages('read', 0, buf, 512, undefined, rec.done)).toMatchObject({ name: 'BlkfrontError', reason: 'range' });
    expect(dev.queuePages('read', 0, buf, 0, 9, rec.done)).toMatchObject({ reason: 'range' });
    expect(dev.queuePages('write', 4090, buf, 0, 8, rec.done)).toMatchObject({ reason: 'range' });
    const other = dev.allocBuffer(PAGE);
    dev.freeBuffer(other);
    expect(dev.queuePages('read', 0, other, 0, 8, rec.done)?.message).toMatch(/not a buffer of this device/);
    // Its `freed` flag cannot be set back by the caller; a copy of a live buffer's fields, an object of the class never allocated: all refused.
    expect(() => { (other as { freed: boolean }).freed = false; }).toThrow(TypeError);
    expect(other.freed).toBe(true);
    expect(dev.queuePages('read', 0, other, 0, 8, rec.done)?.message).toMatch(/not a buffer of this device/);
    const lookalike = { ...buf, pages: buf.pages, bytes: buf.bytes } as unknown as typeof buf;
    expect(dev.queuePages('read', 0, lookalike, 0, 8, rec.done)?.message).toMatch(/not a buffer of this device/);
    expect(dev.queuePages('read', 0, Object.create(Object.getPrototypeOf(buf)) as typeof buf, 0, 8, rec.done)?.message).toMatch(/not a buffer of this device/);
    expect(dev.inFlight + dev.queued).toBe(0);
    expect(t.back.seen).toHaveLength(0);
    t.back.misbehave.status = () => -1; // BLKIF_RSP_ERROR
    expect(dev.queuePages('read', 8, buf, 0, 8, rec.done)).toBeUndefined();
    await t.until(() => rec.calls.length > 0);
    expect(rec.calls).toHaveLength(1);
    expect(rec.calls[0]).toMatchObject({ name: 'BlkfrontError', reason: 'status', status: -1 });
    t.back.misbehave.status = undefined;
    expect(dev.queuePages('read', 8, buf, 0, 0, rec.done)).toBeUndefined();
    expect(rec.calls).toHaveLength(1);
    await t.settle(1);
    expect(rec.calls).toEqual([rec.calls[0], undefined]);
    dev.freeBuffer(buf);
  });

  it('a done that throws is reported and the others of its batch still run; done may queue more I/O', async () => {
    const warned: string[] = [];
    const t = await bench();
    const dev = await t.connect({ warn: (m) => warned.push(m) });
    const bufs = Array.from({ length: 4 }, () => dev.allocBuffer(PAGE));
    t.back.misbehave.hold = true;
    const order: number[] = [];
    let again = 0;
    bufs.forEach((b, i) => dev.queuePages('read', i * 8, b, 0, 8, () => {
      order.push(i);
      if (i === 1) throw new Error('bug in a completion');
      if (i === 2) dev.queuePages('read', 64, b, 0, 8, () => { again++; });
    }));
    await t.settle(3);
    t.back.misbehave.hold = false;
    t.back.release();
    await t.until(() => again === 1);
    expect(order).toEqual([0, 1, 2, 3]);
    expect(warned.filter((w) => /completion callback threw/.test(w))).toHaveLength(1);
    for (const b of bufs) dev.freeBuffer(b);
    expect(dev.inFlight + dev.queued).toBe(0);
  });

  it('freeBuffer refuses while a callback I/O is pending; hot-unplug fails pending ones with "removed"', async () => {
    const t = await bench();
    const dev = await t.connect();
    const bufs = Array.from({ length: 40 }, () => dev.allocBuffer(PAGE));
    const got: string[] = [];
    const res = await unplugWithHeld(t, dev, () => bufs.map((b, i) => new Promise<void>((resolve, reject) => {
      const refused = dev.queuePages('read', i * 8, b, 0, 8, (err) => (err ? reject(err) : resolve()));
      if (refused) reject(refused);
      if (i === 0) {
        try { dev.freeBuffer(b); } catch (e) { got.push(String((e as Error).message)); }
      }
    })), 10);
    expect(got).toEqual([expect.stringMatching(/pending/)]);
    expect(res.filter((r) => r === 'ok')).toHaveLength(10);
    expect(res.filter((r) => r === 'removed')).toHaveLength(30);
    await t.run(dev.closed);
    expect(dev.queuePages('read', 0, bufs[0]!, 0, 8, () => {})).toMatchObject({ reason: 'removed' });
    for (const b of bufs) dev.freeBuffer(b);
    expect(t.ggnt.freeRefCount).toBe(t.refsBefore);
    expect(t.v.xen.freePageCount).toBe(t.pagesBefore);
  });
});
