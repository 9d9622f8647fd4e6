/**
 * blkback's per-device counters (what xentop reads from Linux's
 * /sys/bus/xen-backend/devices/vbd-<domid>-<devid>/statistics/), driven by
 * the fake frontend against the real engine: reads, writes, flush, barrier,
 * discard, indirect requests, refused ones; kept across a reconnection, gone
 * with the device.
 */
import { describe, expect, it } from 'vitest';
import {
  BLKIF_OP_DISCARD, BLKIF_OP_FLUSH_DISKCACHE, BLKIF_OP_INDIRECT, BLKIF_OP_READ, BLKIF_OP_WRITE, BLKIF_OP_WRITE_BARRIER,
  BLKIF_RSP_ERROR, BLKIF_RSP_OKAY,
} from '../../../shared/abi/blkif.ts';
import type { BlkifSegment } from '../../../shared/blkif/proto.ts';
import { BlkTestbed, FakeBlkfront } from '../../helpers/fake-blkfront.ts';
import { tempDisk } from '../../helpers/temp-disk.ts';

const rw = (operation: 0 | 1 | 2 | 3, id: bigint, sector: number, segs: BlkifSegment[], nrSegments = segs.length) =>
  ({ kind: 'rw' as const, operation, nrSegments, handle: 0, id, sector, segs });
const seg = (gref: number, firstSect = 0, lastSect = 7): BlkifSegment => ({ gref, firstSect, lastSect });
const ind = (indirectOp: number, id: bigint, sector: number, nrSegments: number, grefs: number[]) =>
  ({ kind: 'indirect' as const, operation: BLKIF_OP_INDIRECT as typeof BLKIF_OP_INDIRECT, indirectOp, nrSegments, handle: 0, id, sector, indirectGrefs: grefs });
const discard = (id: bigint, sector: number, nrSectors: number) =>
  ({ kind: 'discard' as const, operation: BLKIF_OP_DISCARD as typeof BLKIF_OP_DISCARD, flag: 0, handle: 0, id, sector, nrSectors });

const ZERO = { ooReq: 0, rdReq: 0, wrReq: 0, fReq: 0, dsReq: 0, rdSect: 0, wrSect: 0 };

async function connected(bytes = 1 << 20) {
  const tb = await BlkTestbed.start();
  const f = await FakeBlkfront.create(tb);
  await tb.addVbd(f.domid, f.devid, { params: tempDisk(bytes) });
  await f.connect();
  expect(await f.backendState()).toBe('4');
  return { tb, f };
}

describe('blkback statistics (Linux statistics/{oo,rd,wr,f,ds}_req, {rd,wr}_sect)', () => {
  it('a probed device starts at zero', async () => {
    const { tb, f } = await connected();
    expect(tb.driver.stats()).toEqual([{ domid: f.domid, devid: f.devid, ...ZERO }]);
  });

  it('counts reads, writes, flushes, barriers, discards and indirect requests by their indirect_op', async () => {
    const { tb, f } = await connected();
    const a = f.page();
    const b = f.page();
    // WRITE of 8 + 2 sectors; READ of 6.
    f.put(rw(BLKIF_OP_WRITE, 1n, 100, [seg(a.gref), seg(b.gref, 2, 3)]));
    f.put(rw(BLKIF_OP_READ, 2n, 104, [seg(a.gref, 1, 6)]));
    // A pure flush (no data) and a barrier carrying 8 sectors (written: wr_sect).
    f.put(rw(BLKIF_OP_FLUSH_DISKCACHE, 3n, 0, []));
    f.put(rw(BLKIF_OP_WRITE_BARRIER, 4n, 8, [seg(a.gref)]));
    f.put(discard(5n, 8, 16));
    let r = await f.submit(5);
    expect(r.every((x) => x.status === BLKIF_RSP_OKAY)).toBe(true);

    // Indirect: a WRITE of 64 whole pages (512 sectors), a READ of 2 (16 sectors).
    const pages = Array.from({ length: 64 }, () => f.page());
    const wp = f.indirectPage(pages.map((p) => seg(p.gref)));
    const rp = f.indirectPage([seg(a.gref), seg(b.gref)]);
    f.put(ind(BLKIF_OP_WRITE, 6n, 512, 64, [wp.gref]));
    f.put(ind(BLKIF_OP_READ, 7n, 512, 2, [rp.gref]));
    r = await f.submit(2);
    expect(r.map((x) => [x.id, x.operation, x.status])).toEqual([[6n, BLKIF_OP_WRITE, BLKIF_RSP_OKAY], [7n, BLKIF_OP_READ, BLKIF_RSP_OKAY]]);

    expect(tb.driver.stats()).toEqual([{
      domid: f.domid, devid: f.devid,
      ooReq: 0, // never deferred for lack of resources
      rdReq: 2, wrReq: 2, fReq: 2, dsReq: 1,
      rdSect: 6 + 16,
      wrSect: 10 + 8 + 512,
    }]);
    // The device's counters are what the engine counted into.
    const dev = tb.driver.device(f.domid, f.devid)!;
    expect(dev.engine!.counters).toBe(dev.counters);
  });

  it('refused requests: READ/WRITE counted (as Linux, before the checks), no sectors; bad indirect_op and refused discards not counted', async () => {
    const { tb, f } = await connected(1 << 20); // 2048 sectors
    const p = f.page();
    const good = f.indirectPage([seg(p.gref)]);
    f.put(rw(BLKIF_OP_READ, 1n, 2048 - 7, [seg(p.gref)])); // past the end
    f.put(rw(BLKIF_OP_WRITE, 2n, 0, [seg(p.gref, 5, 4)])); // first_sect > last_sect
    f.put(rw(BLKIF_OP_READ, 3n, 0, [seg(4000)])); // bad gref: checked, then the map fails
    f.put(ind(BLKIF_OP_FLUSH_DISKCACHE, 4n, 0, 1, [good.gref])); // indirect_op must be READ/WRITE
    f.put(discard(5n, 2000, 100)); // past the end
    const r = await f.submit(5);
    expect(r.every((x) => x.status !== BLKIF_RSP_OKAY)).toBe(true);
    expect(r.filter((x) => x.status === BLKIF_RSP_ERROR)).toHaveLength(5);
    expect(tb.driver.stats()).toEqual([{ domid: f.domid, devid: f.devid, ...ZERO, rdReq: 2, wrReq: 1 }]);
  });

  it('a null device counts sectors though it maps nothing', async () => {
    const tb = await BlkTestbed.start();
    const f = await FakeBlkfront.create(tb);
    await tb.addVbd(f.domid, f.devid, { params: String(1 << 30), type: 'null' });
    await f.connect();
    for (let i = 0; i < 10; i++) f.put(rw(i % 2 ? BLKIF_OP_READ : BLKIF_OP_WRITE, BigInt(i), i * 8, [seg(4000 + i, 0, i % 8)]));
    f.put(rw(BLKIF_OP_FLUSH_DISKCACHE, 99n, 0, []));
    expect((await f.submit(11)).every((x) => x.status === BLKIF_RSP_OKAY)).toBe(true);
    // Writes i = 0,2,4,6,8: i%8+1 sectors = 1+3+5+7+1; reads 1,3,5,7,9: 2+4+6+8+2.
    expect(tb.driver.stats()).toEqual([{ domid: f.domid, devid: f.devid, ...ZERO, rdReq: 5, wrReq: 5, fReq: 1, rdSect: 22, wrSect: 17 }]);
  });

  it('a device keeps its counters across a reconnection; they go with the device; devices listed by domid, devid', async () => {
    const { tb, f } = await connected();
    const g = f.sibling({ devid: 51728 });
    await tb.addVbd(g.domid, g.devid, { params: tempDisk(1 << 16) });
    await g.connect();
    const h = await FakeBlkfront.create(tb, { devid: 51712 });
    await tb.addVbd(h.domid, h.devid, { params: tempDisk(1 << 16) });
    await h.connect();
    const p = f.page();
    f.put(rw(BLKIF_OP_READ, 1n, 0, [seg(p.gref)]));
    await f.submit();
    // The frontend closes and reconnects (a new ring, a new engine).
    await f.setState(5);
    await f.setState(6);
    await f.setState(1);
    await f.connect();
    expect(await f.backendState()).toBe('4');
    const q = f.page();
    f.put(rw(BLKIF_OP_WRITE, 2n, 0, [seg(q.gref)]));
    await f.submit();
    const gp = g.page();
    g.put(rw(BLKIF_OP_READ, 1n, 0, [seg(gp.gref, 0, 0)]));
    await g.submit();
    expect(tb.driver.stats()).toEqual([
      { domid: f.domid, devid: 51712, ...ZERO, rdReq: 1, wrReq: 1, rdSect: 8, wrSect: 8 },
      { domid: f.domid, devid: 51728, ...ZERO, rdReq: 1, rdSect: 1 },
      { domid: h.domid, devid: 51712, ...ZERO },
    ]);
    // Hot-unplug: the device (and its counters) is gone; a new one starts at zero.
    await tb.unplug(f.domid, f.devid);
    expect(tb.driver.stats().map((s) => [s.domid, s.devid])).toEqual([[f.domid, 51728], [h.domid, 51712]]);
    await tb.addVbd(f.domid, f.devid, { params: tempDisk(1 << 16) });
    expect(tb.driver.stats()[0]).toEqual({ domid: f.domid, devid: 51712, ...ZERO });
  });
});
