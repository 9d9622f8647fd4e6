import { describe, expect, it } from 'vitest';
import { bench, outcome, pattern, sameBytes } from './setup.ts';
import {
  BLKIF_OP_DISCARD, BLKIF_OP_FLUSH_DISKCACHE, BLKIF_OP_INDIRECT, BLKIF_OP_READ, BLKIF_OP_WRITE, BLKIF_OP_WRITE_BARRIER,
  BLKIF_RSP_EOPNOTSUPP, BLKIF_RSP_ERROR,
} from '../../../shared/abi/blkif.ts';

describe('blkfront I/O', () => {
  it('write then read round trip, including partial pages and readInto', async () => {
    const t = await bench();
    const dev = await t.connect();
    const data = pattern(3, 13);
    await t.run(dev.write(3, data));
    expect(t.back.disk.subarray(3 * 512, 16 * 512)).toEqual(data);
    expect(await t.run(dev.read(3, 13))).toEqual(data);
    const dst = new Uint8Array(5 * 512);
    await t.run(dev.readInto(5, dst));
    expect(dst).toEqual(data.subarray(2 * 512, 7 * 512));
    await expect(dev.read(4090, 10)).rejects.toMatchObject({ reason: 'range' });
    await expect(dev.readInto(0, new Uint8Array(100))).rejects.toMatchObject({ reason: 'range' });
  });

  it('more I/Os than ring slots queue in the driver and all complete in order', async () => {
    const t = await bench();
    const dev = await t.connect();
    t.back.misbehave.hold = true;
    const ps = Array.from({ length: 100 }, (_, i) => dev.write(i * 8, new Uint8Array(4096).fill(i + 1)));
    await t.settle(5);
    expect(dev.inFlight).toBe(32);
    expect(dev.queued).toBe(68);
    expect(t.back.heldCount).toBe(32);
    t.back.misbehave.hold = false;
    t.back.release();
    await t.run(Promise.all(ps));
    expect(t.back.seen.length).toBe(100);
    expect(t.back.seen.map((s) => s.req.kind === 'rw' ? s.req.sector : -1)).toEqual(Array.from({ length: 100 }, (_, i) => i * 8));
    for (let i = 0; i < 100; i++) expect(t.back.disk[i * 4096]).toBe(i + 1);
    expect(dev.inFlight).toBe(0);
  });

  it('splits big I/Os: 11-segment direct requests without indirect, maxIndirectSegments with it', async () => {
    const direct = await bench({ features: { maxIndirectSegments: 0 } });
    const d = await direct.connect();
    const data = pattern(0, 8 * 30);
    await direct.run(d.write(0, data));
    expect(direct.back.seen.map((s) => [s.req.operation, s.segs.length])).toEqual([[BLKIF_OP_WRITE, 11], [BLKIF_OP_WRITE, 11], [BLKIF_OP_WRITE, 8]]);
    expect(sameBytes(await direct.run(d.read(0, 8 * 30)), data)).toBe(true);

    const ind = await bench();
    const dev = await ind.connect({ maxIndirectSegments: 32 });
    await ind.run(dev.write(0, data));
    const kinds = ind.back.seen.map((s) => s.req.kind === 'indirect' ? ['indirect', s.req.indirectOp, s.req.nrSegments] : [s.req.kind, s.segs.length]);
    expect(kinds).toEqual([['indirect', BLKIF_OP_WRITE, 30]]);
    ind.back.seen.length = 0;
    expect(sameBytes(await ind.run(dev.read(0, 8 * 30)), data)).toBe(true);
    // 100 pages: 32 + 32 + 32 indirect, then 4 pages fit a direct request.
    ind.back.seen.length = 0;
    const big = pattern(0, 800, 9);
    await ind.run(dev.write(0, big));
    expect(ind.back.seen.map((s) => [s.req.operation, s.segs.length])).toEqual([[BLKIF_OP_INDIRECT, 32], [BLKIF_OP_INDIRECT, 32], [BLKIF_OP_INDIRECT, 32], [BLKIF_OP_WRITE, 4]]);
    expect(sameBytes(await ind.run(dev.read(0, 800)), big)).toBe(true);
    // The backend's 256 caps a larger option; ours caps the backend's.
    const wide = await bench();
    const w = await wide.connect({ maxIndirectSegments: 512, maxPages: 600 });
    expect(w.features.maxIndirectSegments).toBe(256);
    await wide.run(w.write(0, pattern(0, 8 * 300)));
    expect(wide.back.seen.map((s) => s.segs.length)).toEqual([256, 44]);
  });

  it('persistent grants: each page granted once, never ended while connected, the backend maps each once', async () => {
    const t = await bench();
    const dev = await t.connect({ persistent: true });
    for (let i = 0; i < 10; i++) await t.run(dev.write(0, pattern(0, 16, i)));
    for (let i = 0; i < 10; i++) await t.run(dev.read(0, 16));
    expect(dev.grantStats).toEqual({ granted: 2, ended: 0, leaked: 0 });
    expect(dev.pooledGrants).toBe(2);
    expect(t.back.mappedPersistent).toBe(2);
  });

  it('an indirect page holds its request\'s segments and zeroes after them, whatever larger request used the writer before', async () => {
    const t = await bench();
    const dev = await t.connect({ maxIndirectSegments: 256 });
    await t.run(dev.write(0, pattern(0, 8 * 200, 3)));
    await t.run(dev.write(8 * 200, pattern(8 * 200, 8 * 20, 4)));
    const [a, b] = t.back.seen;
    expect(a!.req).toMatchObject({ kind: 'indirect', nrSegments: 200 });
    expect(b!.req).toMatchObject({ kind: 'indirect', nrSegments: 20 });
    const bytes = b!.indirectBytes!;
    expect(bytes.length).toBe(4096);
    expect(b!.segs.every((s) => s.firstSect === 0 && s.lastSect === 7 && s.gref > 0)).toBe(true);
    // Each segment's padding, and everything past the 20th, is zero.
    for (let i = 0; i < 20; i++) expect([bytes[i * 8 + 6], bytes[i * 8 + 7]]).toEqual([0, 0]);
    expect(bytes.subarray(20 * 8).every((x) => x === 0)).toBe(true);
  });

  it('without persistent grants: granted per request and ended on completion (read-only for writes and indirect pages)', async () => {
    const t = await bench();
    const dev = await t.connect({ persistent: false });
    expect(dev.features.persistent).toBe(false);
    const before = t.ggnt.freeRefCount;
    for (let i = 0; i < 10; i++) await t.run(dev.write(0, pattern(0, 16, i)));
    expect(dev.grantStats).toEqual({ granted: 20, ended: 20, leaked: 0 });
    await t.run(dev.write(0, pattern(0, 8 * 20)));
    expect(dev.grantStats).toEqual({ granted: 41, ended: 41, leaked: 0 });
    expect(t.ggnt.freeRefCount).toBe(before);
    expect(dev.pooledGrants).toBe(0);
    expect(t.back.mappedPersistent).toBe(0);
  });

  it('a grant the backend still maps is not ended: its page is leaked with a warning, not reused', async () => {
    const t = await bench();
    const dev = await t.connect({ persistent: false });
    t.back.misbehave.hold = true;
    const p = dev.read(0, 8);
    await t.settle(3);
    const seg = t.back.seen[0]!.segs[0]!;
    const stuck = t.gnt0.map(t.g.domid, seg.gref);
    t.back.release();
    t.back.misbehave.hold = false;
    await t.run(p);
    expect(dev.grantStats.leaked).toBe(1);
    expect(t.warnings.some((w) => w.includes('leaking'))).toBe(true);
    await t.run(dev.read(0, 8));
    expect(t.back.seen[1]!.segs[0]!.gref).not.toBe(seg.gref);
    t.gnt0.unmap(stuck);
  });

  it('flush uses FLUSH_DISKCACHE, else WRITE_BARRIER, else fails; EOPNOTSUPP turns the feature off', async () => {
    const a = await bench();
    const da = await a.connect();
    await a.run(da.flush());
    expect(a.back.seen.at(-1)!.req.operation).toBe(BLKIF_OP_FLUSH_DISKCACHE);
    expect(a.back.flushes).toBe(1);

    const b = await bench({ features: { flushCache: false } });
    const db = await b.connect();
    await b.run(db.flush());
    expect(b.back.seen.at(-1)!.req.operation).toBe(BLKIF_OP_WRITE_BARRIER);

    const c = await bench({ features: { flushCache: false, barrier: false } });
    const dc = await c.connect();
    await expect(dc.flush()).rejects.toMatchObject({ reason: 'unsupported' });
    expect(c.back.seen.length).toBe(0);

    a.back.misbehave.status = (r) => r.operation === BLKIF_OP_FLUSH_DISKCACHE ? BLKIF_RSP_EOPNOTSUPP : undefined;
    expect(await outcome(a.run(da.flush()))).toBe(`status ${BLKIF_RSP_EOPNOTSUPP}`);
    expect(da.features.flushCache).toBe(false);
    await a.run(da.flush());
    expect(a.back.seen.at(-1)!.req.operation).toBe(BLKIF_OP_WRITE_BARRIER);
  });

  it('discard sends BLKIF_OP_DISCARD with the sector range', async () => {
    const t = await bench();
    const dev = await t.connect();
    await t.run(dev.write(0, pattern(0, 64)));
    await t.run(dev.discard(8, 40));
    const r = t.back.seen.at(-1)!.req;
    expect(r).toMatchObject({ kind: 'discard', operation: BLKIF_OP_DISCARD, sector: 8, nrSectors: 40, flag: 0 });
    expect(t.back.disk.subarray(8 * 512, 48 * 512).every((b) => b === 0)).toBe(true);
    const n = await bench({ features: { discard: false } });
    const dn = await n.connect();
    await expect(dn.discard(0, 8)).rejects.toMatchObject({ reason: 'unsupported' });
  });

  it('an error status rejects that I/O only, with the blkif status', async () => {
    const t = await bench();
    const dev = await t.connect();
    t.back.misbehave.status = (r) => r.kind === 'rw' && r.sector === 16 ? BLKIF_RSP_ERROR : undefined;
    const ok1 = dev.write(0, pattern(0, 8));
    const bad = dev.read(16, 8);
    const ok2 = dev.read(0, 8);
    const e = await t.run(bad).catch((x: unknown) => x);
    expect(e).toMatchObject({ name: 'BlkfrontError', reason: 'status', status: BLKIF_RSP_ERROR });
    await t.run(ok1);
    expect(await t.run(ok2)).toEqual(pattern(0, 8));
    expect(dev.inFlight).toBe(0);
    // A big read failing in one part fails as a whole; its other requests still complete.
    t.back.misbehave.status = (r) => r.kind === 'indirect' && r.sector === 256 ? BLKIF_RSP_ERROR : undefined;
    expect(await outcome(t.run(dev.read(0, 8 * 96)))).toBe(`status ${BLKIF_RSP_ERROR}`);
    await t.settle(3);
    expect(dev.inFlight).toBe(0);
    expect(dev.queued).toBe(0);
  });

  it('read operations are READ requests on the ring', async () => {
    const t = await bench();
    const dev = await t.connect();
    await t.run(dev.read(0, 8));
    expect(t.back.seen[0]!.req).toMatchObject({ kind: 'rw', operation: BLKIF_OP_READ, nrSegments: 1, sector: 0 });
  });
});
