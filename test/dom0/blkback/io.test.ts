/**
 * blkback's request engine against the fake frontend on a real temp file:
 * data round trips, every malformed request answered (and the ring going on),
 * an impossible req_prod halting one ring only, a slot rewritten mid-request,
 * persistent grants, flush and barrier durability order, multi-page rings,
 * indirect requests, hot-unplug with requests in flight, no leaks.
 */
import { spawnSync } from 'node:child_process';
import { chmodSync, closeSync, openSync, readFileSync, readSync, statSync, utimesSync, writeFileSync } from 'node:fs';
import { dirname } from 'node:path';
import { describe, expect, it } from 'vitest';
import {
  BLKIF_OP_DISCARD, BLKIF_OP_FLUSH_DISKCACHE, BLKIF_OP_INDIRECT, BLKIF_OP_READ, BLKIF_OP_WRITE, BLKIF_OP_WRITE_BARRIER,
  BLKIF_RSP_EOPNOTSUPP, BLKIF_RSP_ERROR, BLKIF_RSP_OKAY,
} from '../../../shared/abi/blkif.ts';
import { SRING_HEADER } from '../../../shared/abi/ring.ts';
import { encodeRequest, type BlkifSegment } from '../../../shared/blkif/proto.ts';
import { BlkTestbed, FakeBlkfront } from '../../helpers/fake-blkfront.ts';
import { tempDisk } from '../../helpers/temp-disk.ts';
import { Dom0Loop } from '../../../dom0/loop.ts';

const rw = (operation: 0 | 1 | 2 | 3, id: bigint, sector: number, segs: BlkifSegment[], nrSegments = segs.length) =>
  ({ kind: 'rw' as const, operation, nrSegments, handle: 0, id, sector, segs });
const seg = (gref: number, firstSect = 0, lastSect = 7): BlkifSegment => ({ gref, firstSect, lastSect });
const pattern = (n: number, k: number): Uint8Array => Uint8Array.from({ length: n }, (_, i) => (i * 7 + k) & 0xff);

async function connected(o: Parameters<typeof BlkTestbed.start>[0] = {}, fo: ConstructorParameters<typeof Object>[0] = {}, bytes = 1 << 20) {
  const tb = await BlkTestbed.start(o);
  const before = tb.dom0Resources();
  const f = await FakeBlkfront.create(tb, fo as object);
  const path = tempDisk(bytes);
  await tb.addVbd(f.domid, f.devid, { params: path });
  await f.connect();
  expect(await f.backendState()).toBe('4');
  return { tb, f, path, before };
}

describe('blkback data path', () => {
  it('WRITE then READ round trip through the file (multi-segment, partial pages)', async () => {
    const { tb, f, path, before } = await connected();
    const a = f.page();
    const b = f.page();
    f.mem.write(a.gpa, pattern(4096, 1));
    f.mem.write(b.gpa, pattern(4096, 2));
    // 8 sectors of a, then sectors 2..3 of b: 10 sectors at sector 100.
    f.put(rw(BLKIF_OP_WRITE, 42n, 100, [seg(a.gref), seg(b.gref, 2, 3)]));
    expect(await f.submit()).toEqual([{ id: 42n, operation: BLKIF_OP_WRITE, status: BLKIF_RSP_OKAY }]);
    const file = readFileSync(path);
    expect(new Uint8Array(file.subarray(100 * 512, 108 * 512))).toEqual(pattern(4096, 1));
    expect(new Uint8Array(file.subarray(108 * 512, 110 * 512))).toEqual(pattern(4096, 2).subarray(1024, 2048));
    const c = f.page();
    f.put(rw(BLKIF_OP_READ, 43n, 104, [seg(c.gref, 1, 6)]));
    expect(await f.submit()).toEqual([{ id: 43n, operation: BLKIF_OP_READ, status: BLKIF_RSP_OKAY }]);
    expect(f.mem.read(c.gpa + 512, 6 * 512)).toEqual(new Uint8Array(file.subarray(104 * 512, 110 * 512)));
    await tb.unplug(f.domid, f.devid);
    expect(tb.dom0Resources()).toEqual(before);
    expect(tb.driver.pool.inUse).toBe(0);
  });

  it('guest READs leave the image\'s access time alone (opened O_NOATIME); a plain read on the same mount moves it', async (ctx) => {
    const { tb, f, path } = await connected();
    const old = Date.now() / 1000 - 3 * 86400; // older than relatime's day: any atime-updating read moves it
    const atime = (): number => statSync(path).atimeMs / 1000;
    utimesSync(path, old, old);
    const fd = openSync(path, 'r');
    readSync(fd, new Uint8Array(512), 0, 512, 0);
    closeSync(fd);
    if (Math.abs(atime() - old) < 1) ctx.skip('the temp directory\'s filesystem does not update access times (noatime mount)');
    utimesSync(path, old, old);
    const p = f.page();
    for (let i = 0; i < 4; i++) f.put(rw(BLKIF_OP_READ, BigInt(i), i * 8, [seg(p.gref)]));
    expect((await f.submit(4)).map((r) => r.status)).toEqual(Array(4).fill(BLKIF_RSP_OKAY));
    expect(Math.abs(atime() - old)).toBeLessThan(1);
    await tb.unplug(f.domid, f.devid);
  });

  it('an image Dom0 may not open O_NOATIME (not its owner, no CAP_FOWNER: EPERM) is opened without it', async (ctx) => {
    if (process.getuid?.() !== 0) ctx.skip('needs root, to open the image as another user');
    // Root's image, readable by all, opened read-only by FileStorage in a process running as nobody.
    const path = tempDisk(64 * 512, (b) => b.fill(0x33));
    chmodSync(dirname(path), 0o755);
    chmodSync(path, 0o644);
    const storageTs = new URL('../../../dom0/blkback/storage.ts', import.meta.url);
    const nobody = { uid: 65534, gid: 65534, cwd: process.cwd(), encoding: 'utf8' } as const;
    const reach = spawnSync(process.execPath, ['-e', `require('node:fs').accessSync(${JSON.stringify(storageTs.pathname)})`], nobody);
    if (reach.status !== 0) ctx.skip('the checkout is not readable by nobody');
    const probe = `import { FileStorage } from ${JSON.stringify(storageTs.href)};
      const s = new FileStorage(process.argv[1], false, {});
      console.log(s.sectors); s.close();`;
    const r = spawnSync(process.execPath, ['--import', 'tsx', '--input-type=module', '-e', probe, path], nobody);
    expect(r.stderr).not.toMatch(/cannot open/);
    expect(r.stdout.trim()).toBe('64');
    expect(r.status).toBe(0);
  });

  it('answers every malformed request with ERROR/EOPNOTSUPP and goes on', async () => {
    const { tb, f } = await connected();
    const p = f.page();
    const ro = f.page(true);
    const raw = (op: number, nr: number, sectorLo: number, sectorHi: number): Uint8Array => {
      const b = encodeRequest(rw(BLKIF_OP_READ, 7n, 0, [seg(p.gref)]));
      const dv = new DataView(b.buffer);
      dv.setUint8(0, op);
      dv.setUint8(1, nr);
      dv.setUint32(16, sectorLo, true);
      dv.setUint32(20, sectorHi, true);
      return b;
    };
    const ind = (indirectOp: number, nrSegments: number, grefs: number[]) =>
      ({ kind: 'indirect' as const, operation: BLKIF_OP_INDIRECT as typeof BLKIF_OP_INDIRECT, indirectOp, nrSegments, handle: 0, id: 0n, sector: 0, indirectGrefs: grefs });
    const good = f.indirectPage([seg(p.gref)]);
    const cases: Array<[string, Parameters<FakeBlkfront['put']>[0], number, number]> = [
      ['unknown op 9', raw(9, 1, 0, 0), 9, BLKIF_RSP_EOPNOTSUPP],
      ['reserved op 4', raw(4, 1, 0, 0), 4, BLKIF_RSP_EOPNOTSUPP],
      ['READ with 0 segments', rw(BLKIF_OP_READ, 1n, 0, [], 0), BLKIF_OP_READ, BLKIF_RSP_ERROR],
      ['READ with 12 segments', rw(BLKIF_OP_READ, 2n, 0, [seg(p.gref)], 12), BLKIF_OP_READ, BLKIF_RSP_ERROR],
      ['first_sect > last_sect', rw(BLKIF_OP_READ, 3n, 0, [seg(p.gref, 5, 4)]), BLKIF_OP_READ, BLKIF_RSP_ERROR],
      ['last_sect 8', rw(BLKIF_OP_READ, 4n, 0, [seg(p.gref, 0, 8)]), BLKIF_OP_READ, BLKIF_RSP_ERROR],
      ['sector past the end', rw(BLKIF_OP_READ, 5n, 2048 - 7, [seg(p.gref)]), BLKIF_OP_READ, BLKIF_RSP_ERROR],
      ['sector overflow near 2^64', raw(BLKIF_OP_READ, 1, 0xfffffff8, 0xffffffff), BLKIF_OP_READ, BLKIF_RSP_ERROR],
      ['bad gref', rw(BLKIF_OP_READ, 6n, 0, [seg(4000)]), BLKIF_OP_READ, BLKIF_RSP_ERROR],
      ['READ into a read-only grant', rw(BLKIF_OP_READ, 8n, 0, [seg(ro.gref)]), BLKIF_OP_READ, BLKIF_RSP_ERROR],
      ['indirect with indirect_op FLUSH', ind(BLKIF_OP_FLUSH_DISKCACHE, 1, [good.gref]), BLKIF_OP_FLUSH_DISKCACHE, BLKIF_RSP_ERROR],
      ['indirect with 257 segments', ind(BLKIF_OP_READ, 257, [good.gref]), BLKIF_OP_READ, BLKIF_RSP_ERROR],
      ['indirect with 0 segments', ind(BLKIF_OP_READ, 0, [good.gref]), BLKIF_OP_READ, BLKIF_RSP_ERROR],
      ['indirect with a bad indirect gref', ind(BLKIF_OP_READ, 1, [4001]), BLKIF_OP_READ, BLKIF_RSP_ERROR],
      ['indirect whose segment is bad', ind(BLKIF_OP_READ, 2, [good.gref]), BLKIF_OP_READ, BLKIF_RSP_ERROR],
      ['secure discard', { kind: 'discard', operation: BLKIF_OP_DISCARD, flag: 1, handle: 0, id: 9n, sector: 0, nrSectors: 8 }, BLKIF_OP_DISCARD, BLKIF_RSP_EOPNOTSUPP],
      ['discard past the end', { kind: 'discard', operation: BLKIF_OP_DISCARD, flag: 0, handle: 0, id: 10n, sector: 2000, nrSectors: 100 }, BLKIF_OP_DISCARD, BLKIF_RSP_ERROR],
    ];
    for (const [what, req, op, status] of cases) {
      f.put(req);
      const r = await f.submit();
      expect({ what, op: r[0]?.operation, status: r[0]?.status }).toEqual({ what, op, status });
    }
    // The ring goes on: a good READ, and a good indirect READ.
    f.put(rw(BLKIF_OP_READ, 77n, 0, [seg(p.gref)]));
    f.put(ind(BLKIF_OP_READ, 1, [good.gref]));
    const r = await f.submit(2);
    expect(r.map((x) => x.status)).toEqual([BLKIF_RSP_OKAY, BLKIF_RSP_OKAY]);
    expect(tb.driver.device(f.domid, f.devid)!.engine!.halted).toBe(false);
  });

  it('refuses writes, flushes and discards on a read-only disk', async () => {
    const tb = await BlkTestbed.start();
    const f = await FakeBlkfront.create(tb);
    await tb.addVbd(f.domid, f.devid, { params: tempDisk(1 << 16), mode: 'r' });
    await f.connect();
    const p = f.page();
    f.put(rw(BLKIF_OP_WRITE, 1n, 0, [seg(p.gref)]));
    f.put({ kind: 'discard', operation: BLKIF_OP_DISCARD, flag: 0, handle: 0, id: 2n, sector: 0, nrSectors: 8 });
    f.put(rw(BLKIF_OP_READ, 3n, 0, [seg(p.gref)]));
    const r = await f.submit(3);
    expect(r.map((x) => [x.id, x.status])).toEqual([[1n, BLKIF_RSP_ERROR], [2n, BLKIF_RSP_EOPNOTSUPP], [3n, BLKIF_RSP_OKAY]]);
  });

  it('an impossible req_prod halts that ring (logged); Dom0 still serves another device', async () => {
    const tb = await BlkTestbed.start();
    const f = await FakeBlkfront.create(tb);
    await tb.addVbd(f.domid, f.devid, { params: tempDisk(1 << 16) });
    await f.connect();
    const g = f.sibling({ devid: 51728 });
    await tb.addVbd(g.domid, g.devid, { params: tempDisk(1 << 16) });
    await g.connect();
    f.mem.atomicStore32(f.ring.base + SRING_HEADER.fields.req_prod.offset, 1000);
    f.ev.send(f.port);
    await tb.round();
    expect(tb.driver.device(f.domid, f.devid)!.engine!.halted).toBe(true);
    expect(f.responses()).toEqual([]);
    const p = g.page();
    g.put(rw(BLKIF_OP_READ, 5n, 0, [seg(p.gref)]));
    expect((await g.submit())[0]!.status).toBe(BLKIF_RSP_OKAY);
    // Unplugging the halted device still releases everything.
    await tb.unplug(f.domid, f.devid);
    expect(tb.driver.deviceCount).toBe(1);
  });

  it('a slot rewritten by the frontend after our copy changes nothing we do', async () => {
    let hook: (() => void) | undefined;
    const { f, path } = await connected({
      wrapStorage: (s) => ({ ...s, sectors: s.sectors, isNull: s.isNull, read: s.read.bind(s), flush: s.flush.bind(s), discard: s.discard.bind(s), close: s.close.bind(s),
        write: (ranges, pos) => { hook?.(); return s.write(ranges, pos); } }),
    });
    const a = f.page();
    const evil = f.page();
    f.mem.write(a.gpa, pattern(4096, 9));
    const idx = f.put(rw(BLKIF_OP_WRITE, 100n, 8, [seg(a.gref)]));
    hook = () => { f.ring.writeEntry(idx, encodeRequest(rw(BLKIF_OP_WRITE, 666n, 16, [seg(evil.gref)]))); };
    const r = await f.submit();
    expect(r).toEqual([{ id: 100n, operation: BLKIF_OP_WRITE, status: BLKIF_RSP_OKAY }]);
    const file = readFileSync(path);
    expect(new Uint8Array(file.subarray(8 * 512, 16 * 512))).toEqual(pattern(4096, 9));
    expect(new Uint8Array(file.subarray(16 * 512, 24 * 512))).toEqual(new Uint8Array(4096));
  });

  it('persistent grants: mapped once, reused without a hypercall, unmapped at disconnect', async () => {
    const { tb, f, before } = await connected();
    const p = f.page();
    const dev = tb.driver.device(f.domid, f.devid)!;
    f.put(rw(BLKIF_OP_WRITE, 1n, 0, [seg(p.gref)]));
    await f.submit();
    const e = dev.engine!;
    expect(e.stats.mapCalls).toBe(1);
    expect(dev.persistentGrants).toBe(1);
    for (let i = 0; i < 5; i++) f.put(rw(i % 2 ? BLKIF_OP_READ : BLKIF_OP_WRITE, BigInt(i + 2), i * 8, [seg(p.gref)]));
    expect((await f.submit(5)).every((x) => x.status === BLKIF_RSP_OKAY)).toBe(true);
    expect(e.stats.mapCalls).toBe(1);
    expect(e.stats.persistentHits).toBe(5);
    expect(tb.dom0Resources().maptrack).toBe(before.maptrack + 2); // ring + the persistent grant
    await f.setState(5);
    await f.setState(6);
    expect(tb.dom0Resources()).toEqual(before);
    expect(tb.driver.pool.inUse).toBe(0);
  });

  it('without persistent grants (backend switch): one map batch per request, nothing kept', async () => {
    const { tb, f, before } = await connected({ persistent: false });
    expect(await tb.xb.read(`${f.be}/feature-persistent`)).toBe('0');
    const p = f.page();
    const q = f.page();
    for (let i = 0; i < 3; i++) f.put(rw(BLKIF_OP_WRITE, BigInt(i), i * 16, [seg(p.gref), seg(q.gref)]));
    await f.submit(3);
    const dev = tb.driver.device(f.domid, f.devid)!;
    expect(dev.engine!.stats.mapCalls).toBe(3);
    expect(dev.engine!.stats.grantsMapped).toBe(6);
    expect(dev.persistentGrants).toBe(0);
    expect(tb.dom0Resources().maptrack).toBe(before.maptrack + 1);
  });

  it('FLUSH_DISKCACHE is answered only after fdatasync returned; other requests go on meanwhile', async () => {
    const calls: string[] = [];
    let held: (() => void) | undefined;
    const { f } = await connected({
      wrapStorage: (s) => ({
        sectors: s.sectors, isNull: s.isNull, discard: s.discard.bind(s), close: s.close.bind(s),
        read: (r, pos) => { calls.push('read'); return s.read(r, pos); },
        write: (r, pos) => { calls.push('write'); return s.write(r, pos); },
        flush: (done) => { calls.push('fdatasync'); s.flush((err) => { held = () => { calls.push('fdatasync returned'); done(err); }; }); },
      }),
    });
    const p = f.page();
    f.put(rw(BLKIF_OP_WRITE, 1n, 0, [seg(p.gref)]));
    f.put(rw(BLKIF_OP_FLUSH_DISKCACHE, 2n, 0, []));
    f.put(rw(BLKIF_OP_READ, 3n, 0, [seg(p.gref)]));
    const first = await f.submit(2);
    expect(first.map((r) => r.id)).toEqual([1n, 3n]);
    await f.tb.until(() => held !== undefined, 'fdatasync to return');
    expect(f.responses()).toEqual([]);
    held!();
    await f.tb.round();
    expect(f.responses()).toEqual([{ id: 2n, operation: BLKIF_OP_FLUSH_DISKCACHE, status: BLKIF_RSP_OKAY }]);
    expect(calls).toEqual(['write', 'fdatasync', 'read', 'fdatasync returned']);
  });

  it('WRITE_BARRIER: earlier writes, then fdatasync, then its data; later requests start after it', async () => {
    const calls: string[] = [];
    const { f, path } = await connected({
      wrapStorage: (s) => ({
        sectors: s.sectors, isNull: s.isNull, discard: s.discard.bind(s), close: s.close.bind(s),
        read: (r, pos) => { calls.push(`read@${pos / 512}`); return s.read(r, pos); },
        write: (r, pos) => { calls.push(`write@${pos / 512}`); return s.write(r, pos); },
        flush: (done) => { calls.push('fdatasync'); s.flush((err) => { calls.push('fdatasync returned'); done(err); }); },
      }),
    });
    const p = f.page();
    f.mem.write(p.gpa, pattern(4096, 3));
    f.put(rw(BLKIF_OP_WRITE, 1n, 0, [seg(p.gref)]));
    f.put(rw(BLKIF_OP_WRITE_BARRIER, 2n, 8, [seg(p.gref)]));
    f.put(rw(BLKIF_OP_WRITE, 3n, 16, [seg(p.gref)]));
    const r = await f.submit(3);
    expect(r.map((x) => [x.id, x.operation, x.status])).toEqual([[1n, 1, 0], [2n, BLKIF_OP_WRITE_BARRIER, 0], [3n, 1, 0]]);
    expect(calls).toEqual(['write@0', 'fdatasync', 'fdatasync returned', 'write@8', 'write@16']);
    expect(new Uint8Array(readFileSync(path).subarray(8 * 512, 16 * 512))).toEqual(pattern(4096, 3));
  });

  it('DISCARD zeroes the range', async () => {
    const { f, path } = await connected();
    writeFileSync(path, new Uint8Array(1 << 20).fill(0xaa));
    f.put({ kind: 'discard', operation: BLKIF_OP_DISCARD, flag: 0, handle: 0, id: 1n, sector: 8, nrSectors: 16 });
    expect((await f.submit())[0]!.status).toBe(BLKIF_RSP_OKAY);
    const b = readFileSync(path);
    expect(b[8 * 512 - 1]).toBe(0xaa);
    expect(b.subarray(8 * 512, 24 * 512).every((x) => x === 0)).toBe(true);
    expect(b[24 * 512]).toBe(0xaa);
  });

  it('a multi-page ring (order 2: 128 slots) carries a full batch', async () => {
    const { tb, f, path, before } = await connected({}, { ringOrder: 2 });
    expect(f.ring.size).toBe(128);
    const pages = Array.from({ length: 4 }, () => f.page());
    pages.forEach((p, i) => f.mem.write(p.gpa, pattern(4096, i)));
    for (let i = 0; i < 128; i++) f.put(rw(BLKIF_OP_WRITE, BigInt(i), i * 8, [seg(pages[i % 4]!.gref)]));
    const r = await f.submit(128);
    expect(r.length).toBe(128);
    expect(r.every((x) => x.status === BLKIF_RSP_OKAY)).toBe(true);
    const file = readFileSync(path);
    expect(new Uint8Array(file.subarray(127 * 4096, 128 * 4096))).toEqual(pattern(4096, 3));
    await tb.unplug(f.domid, f.devid);
    expect(tb.dom0Resources()).toEqual(before);
  });

  it('responses are published in batches: every 8 small ones, after any large or non-READ/WRITE one, and all by the end', async () => {
    const { tb, f } = await connected({}, { ringOrder: 2 });
    const dev = tb.driver.device(f.domid, f.devid)!;
    // Each push as the frontend would see it: rsp_prod after every RING_PUSH_RESPONSES_AND_CHECK_NOTIFY.
    const ring = (dev.engine as unknown as { d: { ring: { pushResponsesAndCheckNotify(): boolean; rspProdPvt: number } } }).d.ring;
    const pushes: number[] = [];
    const push = ring.pushResponsesAndCheckNotify.bind(ring);
    ring.pushResponsesAndCheckNotify = () => { pushes.push(ring.rspProdPvt); return push(); };
    const p = f.page();
    // 20 one-page READs (8 sectors each), one 64-sector indirect READ, 3 more small READs, a DISCARD, 2 more.
    for (let i = 0; i < 20; i++) f.put(rw(BLKIF_OP_READ, BigInt(i), i * 8, [seg(p.gref)]));
    const pages = Array.from({ length: 8 }, () => f.page());
    const ind = f.indirectPage(pages.map((q) => seg(q.gref)));
    f.put({ kind: 'indirect', operation: BLKIF_OP_INDIRECT, indirectOp: BLKIF_OP_READ, nrSegments: 8, handle: 0, id: 20n, sector: 0, indirectGrefs: [ind.gref] });
    for (let i = 21; i < 24; i++) f.put(rw(BLKIF_OP_READ, BigInt(i), 0, [seg(p.gref, 0, 0)]));
    f.put({ kind: 'discard', operation: BLKIF_OP_DISCARD, flag: 0, handle: 0, id: 24n, sector: 0, nrSectors: 8 });
    for (let i = 25; i < 27; i++) f.put(rw(BLKIF_OP_READ, BigInt(i), 0, [seg(p.gref, 0, 0)]));
    const r = await f.submit(27);
    // The DISCARD is answered when its hole is punched, after the requests behind it.
    expect(r.map((x) => x.id)).toEqual([...Array.from({ length: 24 }, (_, i) => BigInt(i)), 25n, 26n, 24n]);
    expect(r.every((x) => x.status === BLKIF_RSP_OKAY)).toBe(true);
    // 8 and 16 (eight small each), 21 (the 64-sector READ), 24 (at the DISCARD: not a READ or WRITE),
    // 26 (no more requests), 27 (the DISCARD's answer).
    expect(pushes).toEqual([8, 16, 21, 24, 26, 27]);
    await tb.unplug(f.domid, f.devid);
  });

  it('direct READs and WRITEs are staged: their I/O back to back in ring order, then their answers; another kind of request runs them first', async () => {
    const calls: string[] = [];
    let answered = (): number => 0;
    const { tb, f } = await connected({
      wrapStorage: (s) => ({
        sectors: s.sectors, isNull: s.isNull, discard: s.discard.bind(s), close: s.close.bind(s),
        // Each call notes how many answers were put on the ring before it.
        read: (r, pos) => { calls.push(`read@${pos / 512} after ${answered()}`); return s.read(r, pos); },
        write: (r, pos) => { calls.push(`write@${pos / 512} after ${answered()}`); return s.write(r, pos); },
        flush: (done) => { calls.push(`fdatasync after ${answered()}`); s.flush(done); },
      }),
    });
    const ring = (tb.driver.device(f.domid, f.devid)!.engine as unknown as { d: { ring: { rspProdPvt: number } } }).d.ring;
    answered = () => ring.rspProdPvt;
    const [a, b, c] = [f.page(), f.page(), f.page()];
    f.mem.write(a.gpa, pattern(4096, 5));
    f.put(rw(BLKIF_OP_WRITE, 1n, 0, [seg(a.gref)]));
    f.put(rw(BLKIF_OP_READ, 2n, 0, [seg(b.gref)]));
    f.put(rw(BLKIF_OP_WRITE, 3n, 8, [seg(a.gref)]));
    f.put(rw(BLKIF_OP_FLUSH_DISKCACHE, 4n, 0, []));
    f.put(rw(BLKIF_OP_READ, 5n, 8, [seg(c.gref)]));
    const r = await f.submit(5);
    expect(r.map((x) => [x.id, x.status])).toEqual([[1n, 0], [2n, 0], [3n, 0], [5n, 0], [4n, 0]]);
    // The READ staged behind the WRITE of the same sectors reads what it wrote.
    expect(f.mem.read(b.gpa, 4096)).toEqual(pattern(4096, 5));
    expect(f.mem.read(c.gpa, 4096)).toEqual(pattern(4096, 5));
    expect(calls).toEqual(['write@0 after 0', 'read@0 after 0', 'write@8 after 0', 'fdatasync after 3', 'read@8 after 3']);
  });

  it('a staged request whose grant cannot be mapped is answered ERROR; the others in its batch are served; nothing stays mapped', async () => {
    const { tb, f, before } = await connected();
    const p = f.page();
    f.mem.write(p.gpa, pattern(4096, 9));
    f.put(rw(BLKIF_OP_WRITE, 1n, 0, [seg(p.gref)]));
    f.put(rw(BLKIF_OP_READ, 2n, 0, [seg(4000)]));
    f.put(rw(BLKIF_OP_READ, 3n, 0, [seg(p.gref)]));
    const r = await f.submit(3);
    expect(r.map((x) => [x.id, x.status]).sort((x, y) => Number((x[0] as bigint) - (y[0] as bigint)))).toEqual([[1n, BLKIF_RSP_OKAY], [2n, BLKIF_RSP_ERROR], [3n, BLKIF_RSP_OKAY]]);
    expect(f.mem.read(p.gpa, 4096)).toEqual(pattern(4096, 9));
    await tb.unplug(f.domid, f.devid);
    expect(tb.dom0Resources()).toEqual(before);
    expect(tb.driver.pool.inUse).toBe(0);
  });

  it('an indirect WRITE of 64 segments lands in the file', async () => {
    const { f, path } = await connected();
    const pages = Array.from({ length: 64 }, (_, i) => { const p = f.page(); f.mem.write(p.gpa, pattern(4096, i)); return p; });
    const ip = f.indirectPage(pages.map((p) => seg(p.gref)));
    f.put({ kind: 'indirect', operation: BLKIF_OP_INDIRECT, indirectOp: BLKIF_OP_WRITE, nrSegments: 64, handle: 0, id: 5n, sector: 0, indirectGrefs: [ip.gref] });
    expect(await f.submit()).toEqual([{ id: 5n, operation: BLKIF_OP_WRITE, status: BLKIF_RSP_OKAY }]);
    const file = readFileSync(path);
    expect(new Uint8Array(file.subarray(63 * 4096, 64 * 4096))).toEqual(pattern(4096, 63));
  });

  it('segments adjacent in Dom0\'s memory reach the storage as one range; a partial segment splits them; the data lands right', async () => {
    const seen: Array<Array<[number, number]>> = [];
    const { f, path } = await connected({
      wrapStorage: (s) => ({
        sectors: s.sectors, isNull: s.isNull, discard: s.discard.bind(s), close: s.close.bind(s), flush: s.flush.bind(s),
        read: (r, pos) => { seen.push(r.map((x) => [x.gpa, x.len])); return s.read(r, pos); },
        write: (r, pos) => { seen.push(r.map((x) => [x.gpa, x.len])); return s.write(r, pos); },
      }),
    });
    const pages = Array.from({ length: 16 }, (_, i) => { const p = f.page(); f.mem.write(p.gpa, pattern(4096, i)); return p; });
    const ind = (segs: BlkifSegment[], id: bigint, sector: number) => {
      const ip = f.indirectPage(segs);
      f.put({ kind: 'indirect', operation: BLKIF_OP_INDIRECT, indirectOp: BLKIF_OP_WRITE, nrSegments: segs.length, handle: 0, id, sector, indirectGrefs: [ip.gref] });
    };
    // 16 whole pages, mapped afresh (persistently) one after the other: one range of 64 KiB.
    ind(pages.map((p) => seg(p.gref)), 1n, 0);
    expect((await f.submit()).map((r) => r.status)).toEqual([BLKIF_RSP_OKAY]);
    expect(seen.at(-1)!.length).toBe(1);
    expect(seen.at(-1)![0]![1]).toBe(16 * 4096);
    // The same pages again, the 8th only sectors 0..3: the range stops after it and starts again at the next page.
    ind(pages.map((p, i) => seg(p.gref, 0, i === 7 ? 3 : 7)), 2n, 256);
    expect((await f.submit()).map((r) => r.status)).toEqual([BLKIF_RSP_OKAY]);
    expect(seen.at(-1)!.map(([, len]) => len)).toEqual([7 * 4096 + 2048, 8 * 4096]);
    const file = readFileSync(path);
    expect(new Uint8Array(file.subarray(15 * 4096, 16 * 4096))).toEqual(pattern(4096, 15));
    expect(new Uint8Array(file.subarray(256 * 512 + 7 * 4096, 256 * 512 + 7 * 4096 + 2048))).toEqual(pattern(4096, 7).subarray(0, 2048));
    expect(new Uint8Array(file.subarray(256 * 512 + 7 * 4096 + 2048, 256 * 512 + 8 * 4096 + 2048))).toEqual(pattern(4096, 8));
  });

  it('hot-unplug with requests in flight: each one completed or answered ERROR; nothing leaks', async () => {
    let held = false;
    const { tb, f, before } = await connected({
      wrapStorage: (s) => ({ ...s, sectors: s.sectors, isNull: s.isNull, read: s.read.bind(s), write: s.write.bind(s), discard: s.discard.bind(s), close: s.close.bind(s),
        flush: () => { held = true; /* never returns before the unplug */ } }),
    });
    const p = f.page();
    f.put(rw(BLKIF_OP_WRITE, 1n, 0, [seg(p.gref)]));
    f.put(rw(BLKIF_OP_FLUSH_DISKCACHE, 2n, 0, []));
    await f.submit(1);
    expect(held).toBe(true);
    // Pushed but never notified: still on the ring when the toolstack unplugs.
    for (let i = 0; i < 5; i++) f.put(rw(BLKIF_OP_READ, BigInt(10 + i), 0, [seg(p.gref)]));
    f.ring.pushRequests();
    await tb.unplug(f.domid, f.devid);
    const r = f.responses();
    expect(r.map((x) => [x.id, x.status]).sort()).toEqual([[10n, 0], [11n, 0], [12n, 0], [13n, 0], [14n, 0], [2n, BLKIF_RSP_ERROR]].sort());
    expect(tb.dom0Resources()).toEqual(before);
    expect(tb.driver.pool.inUse).toBe(0);
    expect(tb.m.checkInvariants()).toEqual([]);
  });

  it('null device: no grant is mapped, everything OKAY', async () => {
    const tb = await BlkTestbed.start();
    const f = await FakeBlkfront.create(tb);
    await tb.addVbd(f.domid, f.devid, { params: String(1 << 30), type: 'null' });
    await f.connect();
    expect(await tb.xb.read(`${f.be}/sectors`)).toBe(String((1 << 30) / 512));
    for (let i = 0; i < 10; i++) f.put(rw(i % 2 ? BLKIF_OP_READ : BLKIF_OP_WRITE, BigInt(i), i * 8, [seg(4000 + i)]));
    f.put(rw(BLKIF_OP_FLUSH_DISKCACHE, 99n, 0, []));
    const r = await f.submit(11);
    expect(r.every((x) => x.status === BLKIF_RSP_OKAY)).toBe(true);
    expect(tb.driver.device(f.domid, f.devid)!.engine!.stats.mapCalls).toBe(0);
  });

  it('Dom0\'s spin serves a ring that published requests without an event (poller registered by the driver)', async () => {
    let loop: Dom0Loop | undefined;
    // (READs stay on Dom0's vCPU: no vCPU here would run them as jobs; dma-jobs.test.ts has those.)
    const tb = await BlkTestbed.start({ addPoller: (port, serve, arm) => loop!.addPoller(port, serve, arm), dmaJobs: false });
    // Spin however long ago the last work was (the default, 2 ms, is shorter
    // than the awaits below can take on a loaded machine: the loop blocked instead).
    loop = new Dom0Loop(tb.ev, undefined, { spinRecentMs: 60_000 });
    const f2 = await FakeBlkfront.create(tb, {});
    await tb.addVbd(f2.domid, f2.devid, { params: tempDisk(1 << 20) });
    await f2.connect();
    expect(await f2.backendState()).toBe('4');
    const p = f2.page();
    f2.put(rw(BLKIF_OP_READ, 1n, 0, [seg(p.gref)]));
    expect(await f2.submit()).toEqual([{ id: 1n, operation: BLKIF_OP_READ, status: BLKIF_RSP_OKAY }]);
    const engine = tb.driver.device(f2.domid, f2.devid)!.engine!;
    expect(engine.poll()).toBe(0); // nothing waiting: one look at req_prod
    // Published, no event sent: only polling finds it.
    f2.put(rw(BLKIF_OP_READ, 2n, 8, [seg(p.gref)]));
    f2.ring.pushRequestsAndCheckNotify();
    const blocksBefore = tb.m.dom0.sched.blocks;
    loop.idle(5);
    expect(loop.stats.spinServed).toBeGreaterThanOrEqual(1);
    expect(tb.m.dom0.sched.blocks).toBe(blocksBefore);
    expect(f2.responses()).toEqual([{ id: 2n, operation: BLKIF_OP_READ, status: BLKIF_RSP_OKAY }]);
    await tb.unplug(f2.domid, f2.devid);
  });

  it('polled by Dom0, the ring asks for no notification; armed before Dom0 blocks, it does, and what raced with the arm is served', async () => {
    let loop: Dom0Loop | undefined;
    const tb = await BlkTestbed.start({ addPoller: (port, serve, arm) => loop!.addPoller(port, serve, arm) });
    loop = new Dom0Loop(tb.ev, undefined, { spinRecentMs: 60_000 });
    const f = await FakeBlkfront.create(tb, {});
    await tb.addVbd(f.domid, f.devid, { params: String(1 << 30), type: 'null' });
    await f.connect();
    const engine = tb.driver.device(f.domid, f.devid)!.engine!;
    const p = f.page();
    const read = (id: bigint): number => f.put(rw(BLKIF_OP_READ, id, 0, [seg(p.gref)]));
    const ok = (id: bigint) => ({ id, operation: BLKIF_OP_READ, status: BLKIF_RSP_OKAY });
    // Served by polling (the spin, or the port's handler under Dom0's loop): req_event is left where it was.
    read(1n);
    f.ring.pushRequestsAndCheckNotify();
    expect(engine.poll()).toBe(1);
    expect(f.responses()).toEqual([ok(1n)]);
    read(2n);
    read(3n);
    expect(f.ring.pushRequestsAndCheckNotify()).toBe(false);
    expect(engine.poll()).toBe(2);
    expect(f.responses()).toEqual([ok(2n), ok(3n)]);
    // Dom0's last look before blocking: nothing waits, req_event is set, and Dom0 blocks.
    const blocks = tb.m.dom0.sched.blocks;
    loop.idle(1);
    expect(tb.m.dom0.sched.blocks).toBe(blocks + 1);
    read(4n);
    expect(f.ring.pushRequestsAndCheckNotify()).toBe(true);
    f.ev.send(f.port);
    tb.ev.dispatch();
    expect(f.responses()).toEqual([ok(4n)]);
    // Pushed unnotified (req_event stale) just before the arm: the arm serves it and Dom0 does not block.
    read(5n);
    expect(f.ring.pushRequestsAndCheckNotify()).toBe(false);
    expect(engine.armRing()).toBe(1);
    expect(f.responses()).toEqual([ok(5n)]);
    read(6n);
    expect(f.ring.pushRequestsAndCheckNotify()).toBe(true);
    expect(engine.poll()).toBe(1);
    read(7n);
    f.ring.pushRequestsAndCheckNotify();
    const blocks2 = tb.m.dom0.sched.blocks;
    loop.idle(1);
    expect(tb.m.dom0.sched.blocks).toBe(blocks2);
    expect(f.responses()).toEqual([ok(6n), ok(7n)]);
    await tb.unplug(f.domid, f.devid);
  });
});
