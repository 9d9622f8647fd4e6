/**
 * Indirect requests through persistent grants (Linux's xen_blkbk_parse_indirect
 * maps indirect pages through xen_blkbk_map, using and adding persistent
 * grants like data segments), against the fake frontend on a real temp file:
 * a reused indirect gref costs no hypercall; its page is still read afresh
 * for every request; refusals are answered as before and the ring goes on;
 * disconnect unmaps the indirect pages kept; without persistent grants (or
 * without room) indirect pages are mapped and unmapped per request as before.
 */
import { readFileSync, writeFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { BLKIF_OP_INDIRECT, BLKIF_OP_READ, BLKIF_OP_WRITE, BLKIF_RSP_ERROR, BLKIF_RSP_OKAY } from '../../../shared/abi/blkif.ts';
import { encodeIndirectSegments, type BlkifSegment } from '../../../shared/blkif/proto.ts';
import { PAGE_SIZE } from '../../../shared/types.ts';
import { BlkTestbed, FakeBlkfront, type FrontPage } from '../../helpers/fake-blkfront.ts';
import { tempDisk } from '../../helpers/temp-disk.ts';

const seg = (gref: number, firstSect = 0, lastSect = 7): BlkifSegment => ({ gref, firstSect, lastSect });
const pattern = (n: number, k: number): Uint8Array => Uint8Array.from({ length: n }, (_, i) => (i * 7 + k) & 0xff);
const ind = (indirectOp: number, id: bigint, sector: number, nrSegments: number, grefs: number[]) =>
  ({ kind: 'indirect' as const, operation: BLKIF_OP_INDIRECT as typeof BLKIF_OP_INDIRECT, indirectOp, nrSegments, handle: 0, id, sector, indirectGrefs: grefs });

async function connected(o: Parameters<typeof BlkTestbed.start>[0] = {}, mode: 'w' | 'r' = 'w') {
  const tb = await BlkTestbed.start(o);
  const before = tb.dom0Resources();
  const f = await FakeBlkfront.create(tb);
  const path = tempDisk(1 << 20);
  // Known contents: sector s holds pattern(512, s).
  const img = new Uint8Array(1 << 20);
  for (let s = 0; s < 2048; s++) img.set(pattern(512, s), s * 512);
  writeFileSync(path, img);
  await tb.addVbd(f.domid, f.devid, { params: path, mode });
  await f.connect();
  expect(await f.backendState()).toBe('4');
  const dev = tb.driver.device(f.domid, f.devid)!;
  return { tb, f, path, img, before, dev, engine: dev.engine! };
}

/** An indirect page granted read-write (as Linux's blkfront grants its persistent pages) holding `segs`. */
function writableIndirectPage(f: FakeBlkfront, segs: readonly BlkifSegment[]): FrontPage {
  const p = f.page();
  writeIndirect(f, p, segs);
  return p;
}
function writeIndirect(f: FakeBlkfront, p: FrontPage, segs: readonly BlkifSegment[]): void {
  f.mem.write(p.gpa, encodeIndirectSegments(segs, new Uint8Array(PAGE_SIZE)));
}

describe('blkback indirect requests and persistent grants', () => {
  it('a reused indirect gref is read from its persistent mapping: no map hypercall, data right', async () => {
    const { tb, f, img, before, dev, engine } = await connected();
    const data = Array.from({ length: 4 }, () => f.page());
    const ip = writableIndirectPage(f, data.map((p) => seg(p.gref)));
    f.put(ind(BLKIF_OP_READ, 1n, 64, 4, [ip.gref]));
    expect(await f.submit()).toEqual([{ id: 1n, operation: BLKIF_OP_READ, status: BLKIF_RSP_OKAY }]);
    // One batch for the indirect page, one for the data pages; all kept.
    expect(engine.stats.mapCalls).toBe(2);
    expect(dev.persistentGrants).toBe(5);
    data.forEach((p, i) => expect(f.mem.read(p.gpa, PAGE_SIZE)).toEqual(img.subarray((64 + 8 * i) * 512, (72 + 8 * i) * 512)));
    const hits = engine.stats.persistentHits;
    for (const p of data) f.mem.write(p.gpa, new Uint8Array(PAGE_SIZE));
    f.put(ind(BLKIF_OP_READ, 2n, 128, 4, [ip.gref]));
    expect(await f.submit()).toEqual([{ id: 2n, operation: BLKIF_OP_READ, status: BLKIF_RSP_OKAY }]);
    expect(engine.stats.mapCalls).toBe(2);
    expect(engine.stats.persistentHits).toBe(hits + 5);
    data.forEach((p, i) => expect(f.mem.read(p.gpa, PAGE_SIZE)).toEqual(img.subarray((128 + 8 * i) * 512, (136 + 8 * i) * 512)));
    expect(tb.dom0Resources().maptrack).toBe(before.maptrack + 1 + 5); // ring + 5 persistent
    expect(engine.counters.rdReq).toBe(2);
    expect(engine.counters.rdSect).toBe(64);
  });

  it('an indirect page granted read-only is kept read-only after one failed writable map, then costs nothing', async () => {
    const { f, dev, engine, path } = await connected();
    const data = [f.page(), f.page()];
    data.forEach((p, i) => f.mem.write(p.gpa, pattern(PAGE_SIZE, 40 + i)));
    const ip = f.indirectPage(data.map((p) => seg(p.gref))); // read-only, as the fake frontend grants it
    f.put(ind(BLKIF_OP_WRITE, 1n, 0, 2, [ip.gref]));
    expect((await f.submit())[0]!.status).toBe(BLKIF_RSP_OKAY);
    // Writable attempt, read-only retry, data pages.
    expect(engine.stats.mapCalls).toBe(3);
    expect(dev.persistentGrants).toBe(3);
    f.put(ind(BLKIF_OP_WRITE, 2n, 16, 2, [ip.gref]));
    expect((await f.submit())[0]!.status).toBe(BLKIF_RSP_OKAY);
    expect(engine.stats.mapCalls).toBe(3);
    const file = readFileSync(path);
    expect(new Uint8Array(file.subarray(16 * 512, 24 * 512))).toEqual(pattern(PAGE_SIZE, 40));
    expect(new Uint8Array(file.subarray(24 * 512, 32 * 512))).toEqual(pattern(PAGE_SIZE, 41));
  });

  it('the indirect page is re-read for every request: a page rewritten between requests is honoured', async () => {
    const { f, img, engine, path } = await connected();
    const a = f.page();
    const b = f.page();
    const c = f.page();
    const ip = writableIndirectPage(f, [seg(a.gref)]);
    f.put(ind(BLKIF_OP_READ, 1n, 8, 1, [ip.gref]));
    expect((await f.submit())[0]!.status).toBe(BLKIF_RSP_OKAY);
    expect(f.mem.read(a.gpa, PAGE_SIZE)).toEqual(img.subarray(8 * 512, 16 * 512));
    // Same indirect gref, new contents: now b (sectors 2..5) then c, 2 segments.
    writeIndirect(f, ip, [seg(b.gref, 2, 5), seg(c.gref)]);
    f.mem.write(a.gpa, new Uint8Array(PAGE_SIZE));
    const calls = engine.stats.mapCalls;
    f.put(ind(BLKIF_OP_READ, 2n, 100, 2, [ip.gref]));
    expect((await f.submit())[0]!.status).toBe(BLKIF_RSP_OKAY);
    expect(engine.stats.mapCalls).toBe(calls + 1); // b and c only: the indirect page is persistent
    expect(f.mem.read(a.gpa, PAGE_SIZE)).toEqual(new Uint8Array(PAGE_SIZE)); // a is not named any more
    expect(f.mem.read(b.gpa + 2 * 512, 4 * 512)).toEqual(img.subarray(100 * 512, 104 * 512));
    expect(f.mem.read(c.gpa, PAGE_SIZE)).toEqual(img.subarray(104 * 512, 112 * 512));
    expect(engine.counters.rdSect).toBe(8 + 12);
    // And a WRITE through the same page, rewritten again: c's data lands at sector 300.
    f.mem.write(c.gpa, pattern(PAGE_SIZE, 77));
    writeIndirect(f, ip, [seg(c.gref)]);
    f.put(ind(BLKIF_OP_WRITE, 3n, 300, 1, [ip.gref]));
    expect((await f.submit())[0]!.status).toBe(BLKIF_RSP_OKAY);
    expect(new Uint8Array(readFileSync(path).subarray(300 * 512, 308 * 512))).toEqual(pattern(PAGE_SIZE, 77));
  });

  it('refusals of indirect requests under persistent grants: ERROR with the indirect_op, counted as before, the ring goes on', async () => {
    const { tb, f, engine } = await connected();
    const p = f.page();
    const ip = writableIndirectPage(f, [seg(p.gref)]);
    f.put(ind(BLKIF_OP_READ, 1n, 0, 1, [ip.gref])); // maps ip persistently
    expect((await f.submit())[0]!.status).toBe(BLKIF_RSP_OKAY);
    const k0 = { ...engine.counters };
    const errors0 = engine.stats.errors;
    const cases: Array<[string, () => void, number]> = [
      ['first_sect > last_sect', () => writeIndirect(f, ip, [seg(p.gref, 5, 4)]), BLKIF_OP_READ],
      ['last_sect 8', () => writeIndirect(f, ip, [seg(p.gref, 0, 8)]), BLKIF_OP_READ],
      ['a bad segment after good ones', () => writeIndirect(f, ip, [seg(p.gref), seg(p.gref), seg(p.gref, 3, 2)]), BLKIF_OP_READ],
      ['a segment gref that cannot be mapped', () => writeIndirect(f, ip, [seg(p.gref), seg(4003)]), BLKIF_OP_WRITE],
    ];
    for (const [what, rewrite, op] of cases) {
      rewrite();
      const n = what === 'a bad segment after good ones' ? 3 : what === 'a segment gref that cannot be mapped' ? 2 : 1;
      f.put(ind(op, 10n, 0, n, [ip.gref]));
      const r = await f.submit();
      expect({ what, r }).toEqual({ what, r: [{ id: 10n, operation: op, status: BLKIF_RSP_ERROR }] });
    }
    writeIndirect(f, ip, [seg(p.gref)]);
    const more: Array<[string, ReturnType<typeof ind>, number]> = [
      ['beyond the end of the disk', ind(BLKIF_OP_READ, 11n, 2048 - 4, 1, [ip.gref]), BLKIF_OP_READ],
      ['0 segments', ind(BLKIF_OP_WRITE, 12n, 0, 0, [ip.gref]), BLKIF_OP_WRITE],
      ['257 segments', ind(BLKIF_OP_READ, 13n, 0, 257, [ip.gref]), BLKIF_OP_READ],
      ['a bad indirect gref', ind(BLKIF_OP_READ, 14n, 0, 1, [4001]), BLKIF_OP_READ],
      ['indirect_op 7', ind(7, 15n, 0, 1, [ip.gref]), 7],
    ];
    for (const [what, req, op] of more) {
      f.put(req);
      const r = await f.submit();
      expect({ what, r }).toEqual({ what, r: [{ id: req.id, operation: op, status: BLKIF_RSP_ERROR }] });
    }
    expect(engine.stats.errors).toBe(errors0 + 9);
    // Counted by indirect_op before the checks (indirect_op 7 not at all); no sectors moved.
    expect(engine.counters).toEqual({ ...k0, rdReq: k0.rdReq + 6, wrReq: k0.wrReq + 2 });
    // The ring goes on.
    f.put(ind(BLKIF_OP_READ, 20n, 8, 1, [ip.gref]));
    expect(await f.submit()).toEqual([{ id: 20n, operation: BLKIF_OP_READ, status: BLKIF_RSP_OKAY }]);
    expect(engine.halted).toBe(false);
    expect(tb.m.checkInvariants()).toEqual([]);
  });

  it('a WRITE through a persistent indirect page to a read-only disk is refused', async () => {
    const { f, engine } = await connected({}, 'r');
    const p = f.page();
    const ip = writableIndirectPage(f, [seg(p.gref)]);
    f.put(ind(BLKIF_OP_READ, 1n, 0, 1, [ip.gref]));
    f.put(ind(BLKIF_OP_WRITE, 2n, 0, 1, [ip.gref]));
    expect((await f.submit(2)).map((r) => [r.id, r.operation, r.status])).toEqual([[1n, BLKIF_OP_READ, BLKIF_RSP_OKAY], [2n, BLKIF_OP_WRITE, BLKIF_RSP_ERROR]]);
    expect(engine.counters.wrReq).toBe(1);
    expect(engine.counters.wrSect).toBe(0);
  });

  it('disconnect unmaps the persistent indirect mappings (maptrack and gfn pool back to where they were)', async () => {
    const { tb, f, before, dev } = await connected();
    const data = [f.page(), f.page()];
    const ips = [writableIndirectPage(f, data.map((p) => seg(p.gref))), f.indirectPage(data.map((p) => seg(p.gref)))];
    f.put(ind(BLKIF_OP_READ, 1n, 0, 2, [ips[0]!.gref]));
    f.put(ind(BLKIF_OP_WRITE, 2n, 0, 2, [ips[1]!.gref]));
    expect((await f.submit(2)).every((r) => r.status === BLKIF_RSP_OKAY)).toBe(true);
    expect(dev.persistentGrants).toBe(4);
    expect(tb.dom0Resources().maptrack).toBe(before.maptrack + 1 + 4);
    await f.setState(5);
    await f.setState(6);
    expect(tb.dom0Resources()).toEqual(before);
    expect(tb.driver.pool.inUse).toBe(0);
    expect(tb.m.checkInvariants()).toEqual([]);
  });

  it('without persistent grants: one map and one unmap of the indirect page per request, nothing kept', async () => {
    const { tb, f, before, dev, engine, img } = await connected({ persistent: false });
    const data = [f.page(), f.page()];
    const ip = f.indirectPage(data.map((p) => seg(p.gref)));
    for (let i = 0; i < 3; i++) {
      f.put(ind(BLKIF_OP_READ, BigInt(i), 16 * i, 2, [ip.gref]));
      expect((await f.submit())[0]!.status).toBe(BLKIF_RSP_OKAY);
      expect(f.mem.read(data[1]!.gpa, PAGE_SIZE)).toEqual(img.subarray((16 * i + 8) * 512, (16 * i + 16) * 512));
      expect(tb.dom0Resources().maptrack).toBe(before.maptrack + 1);
    }
    expect(engine.stats.mapCalls).toBe(6); // indirect page + data, per request
    expect(engine.stats.grantsMapped).toBe(9);
    expect(engine.stats.persistentHits).toBe(0);
    expect(dev.persistentGrants).toBe(0);
  });

  it('no room left for persistent grants: the indirect page is mapped and unmapped per request', async () => {
    const { tb, f, before, dev, engine } = await connected({ maxPersistentGrants: 2 });
    const data = [f.page(), f.page()];
    const ip = writableIndirectPage(f, data.map((p) => seg(p.gref)));
    // Fill the room with the data pages first (a direct request).
    f.put({ kind: 'rw', operation: BLKIF_OP_READ, nrSegments: 2, handle: 0, id: 1n, sector: 0, segs: data.map((p) => seg(p.gref)) });
    expect((await f.submit())[0]!.status).toBe(BLKIF_RSP_OKAY);
    expect(dev.persistentGrants).toBe(2);
    const calls = engine.stats.mapCalls;
    for (let i = 0; i < 2; i++) {
      f.put(ind(BLKIF_OP_READ, 2n, 0, 2, [ip.gref]));
      expect((await f.submit())[0]!.status).toBe(BLKIF_RSP_OKAY);
    }
    expect(engine.stats.mapCalls).toBe(calls + 2);
    expect(dev.persistentGrants).toBe(2);
    expect(tb.dom0Resources().maptrack).toBe(before.maptrack + 1 + 2);
  });
});
