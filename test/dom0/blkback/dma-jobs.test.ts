/**
 * blkback's READs as host DMA jobs (engine.ts, hypervisor/vcpu/dma-jobs.ts),
 * against the fake frontend on a real temp file, with Dom0's polling loop:
 * which requests go out as jobs (INDIRECT READs of ASYNC_MIN_SECTORS and more,
 * ASYNC_DEPTH at a time; direct READs, ASYNC_DIRECT_DEPTH at a time) and which
 * stay on Dom0's vCPU; a job's grants held until it is answered, and no
 * longer, the purge of persistent grants going on meanwhile; a job's READ answered
 * only once the job is done and reaped, with the right data, id and status;
 * Dom0 not blocking while one is out; a barrier waiting for it; disconnect
 * finishing it (run by Dom0 itself when no vCPU took it), never failing or
 * losing it; a job's error answered BLKIF_RSP_ERROR; the switch that turns
 * jobs off.
 */
import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import {
  BLKIF_OP_INDIRECT, BLKIF_OP_READ, BLKIF_OP_WRITE, BLKIF_OP_WRITE_BARRIER, BLKIF_RSP_ERROR, BLKIF_RSP_OKAY,
} from '../../../shared/abi/blkif.ts';
import type { BlkifSegment } from '../../../shared/blkif/proto.ts';
import { PAGE_SIZE } from '../../../shared/types.ts';
import { ASYNC_DIRECT_DEPTH, ASYNC_MIN_SECTORS } from '../../../dom0/blkback/engine.ts';
import type { BlockStorage } from '../../../dom0/blkback/storage.ts';
import { Dom0Loop } from '../../../dom0/loop.ts';
import { dmaRunQueued } from '../../../hypervisor/vcpu/dma-jobs.ts';
import { DJ, DJS_FILLING, DJS_FREE, DMA_SLOTS, G } from '../../../hypervisor/state.ts';
import { BlkTestbed, FakeBlkfront, type FrontPage } from '../../helpers/fake-blkfront.ts';
import { tempDisk } from '../../helpers/temp-disk.ts';

const SECTOR = 512;
/** The image: 1 MiB, byte i a function of i, so misplaced data shows. */
const IMAGE = 1 << 20;
const byteAt = (i: number): number => (Math.imul(i + 1, 2654435761) >>> 24) ^ (i & 0xff);
const image = (b: Uint8Array): void => { for (let i = 0; i < b.length; i++) b[i] = byteAt(i); };

interface Rig {
  tb: BlkTestbed;
  f: FakeBlkfront;
  loop: Dom0Loop | undefined;
  path: string;
  before: ReturnType<BlkTestbed['dom0Resources']>;
}

/**
 * Dom0 with blkback on the test's thread and a frontend on a 1 MiB image;
 * `polled`: Dom0's loop serves the ring by polling (jobs need it).
 */
async function rig(o: Parameters<typeof BlkTestbed.start>[0] = {}, polled = true): Promise<Rig> {
  let loop: Dom0Loop | undefined;
  const tb = await BlkTestbed.start({ ...(polled ? { addPoller: (port, serve, arm) => loop!.addPoller(port, serve, arm) } : {}), ...o });
  if (polled) loop = new Dom0Loop(tb.ev, undefined, { spinRecentMs: 60_000 });
  const before = tb.dom0Resources();
  const f = await FakeBlkfront.create(tb, {});
  const path = tempDisk(IMAGE, image);
  await tb.addVbd(f.domid, f.devid, { params: path });
  await f.connect();
  expect(await f.backendState()).toBe('4');
  return { tb, f, loop, path, before };
}

/** `sectors` sectors of whole pages (8 a page) for one request, filled with 0xee. */
function pagesFor(f: FakeBlkfront, sectors: number): FrontPage[] {
  const ps = Array.from({ length: Math.ceil(sectors / 8) }, () => f.page());
  for (const p of ps) f.mem.fill(p.gpa, PAGE_SIZE, 0xee);
  return ps;
}

/** An INDIRECT request of `op` for `sectors` sectors at `sector` into `pages` (its indirect page granted read-only). */
function indirect(f: FakeBlkfront, op: number, id: bigint, sector: number, pages: readonly FrontPage[], sectors: number): void {
  const segs: BlkifSegment[] = pages.map((p, i) => ({ gref: p.gref, firstSect: 0, lastSect: Math.min(7, sectors - 8 * i - 1) }));
  const ind = f.indirectPage(segs);
  f.put({ kind: 'indirect', operation: BLKIF_OP_INDIRECT, indirectOp: op, nrSegments: segs.length, handle: 0, id, sector, indirectGrefs: [ind.gref] });
}

/** The bytes `pages` hold for `sectors` sectors. */
function readPages(f: FakeBlkfront, pages: readonly FrontPage[], sectors: number): Uint8Array {
  const out = new Uint8Array(sectors * SECTOR);
  pages.forEach((p, i) => out.set(f.mem.read(p.gpa, Math.min(PAGE_SIZE, out.length - i * PAGE_SIZE)), i * PAGE_SIZE));
  return out;
}

/** A direct READ of whole `pages` at `sector`. */
function direct(f: FakeBlkfront, id: bigint, sector: number, pages: readonly FrontPage[]): void {
  f.put({ kind: 'rw', operation: BLKIF_OP_READ, nrSegments: pages.length, handle: 0, id, sector, segs: pages.map((p) => ({ gref: p.gref, firstSect: 0, lastSect: 7 })) });
}

/**
 * Two large READs pushed together, A (id `idA`, sectors 0..) then B (id 2,
 * the next ASYNC_MIN_SECTORS), each into its own fresh pages: the first goes
 * out as a job, the second is served on Dom0's vCPU.
 */
function twoLargeReads(f: FakeBlkfront, idA: bigint): { a: FrontPage[]; b: FrontPage[] } {
  const n = ASYNC_MIN_SECTORS;
  const a = pagesFor(f, n);
  const b = pagesFor(f, n);
  indirect(f, BLKIF_OP_READ, idA, 0, a, n);
  indirect(f, BLKIF_OP_READ, 2n, n, b, n);
  f.ring.pushRequestsAndCheckNotify();
  return { a, b };
}

const fileBytes = (from: number, len: number): Uint8Array => Uint8Array.from({ length: len }, (_, i) => byteAt(from + i));
const ok = (id: bigint, operation = BLKIF_OP_READ) => ({ id, operation, status: BLKIF_RSP_OKAY });
const queued = (tb: BlkTestbed): number => Atomics.load(tb.m.hv.g, G.DMA_QUEUED);

describe('blkback: READs as host DMA jobs', () => {
  it('a large READ goes out as a job and is answered once the job is done and reaped; the next large one meanwhile is served on Dom0\'s vCPU', async () => {
    const { tb, f, before } = await rig();
    const engine = tb.driver.device(f.domid, f.devid)!.engine!;
    const n = ASYNC_MIN_SECTORS;
    const { a, b } = twoLargeReads(f, 0xa000_0000_0000_0001n);
    const run0 = Atomics.load(tb.m.hv.g, G.DMA_RUN);
    expect(engine.poll()).toBe(2);
    // B was served at once (the job's share was taken); A waits for its job.
    expect(f.responses()).toEqual([ok(2n)]);
    expect(readPages(f, b, n)).toEqual(fileBytes(n * SECTOR, n * SECTOR));
    expect(queued(tb)).toBe(1);
    expect(readPages(f, a, n).every((x) => x === 0xee)).toBe(true);
    // The DomU's vCPU reaches a preemption point and runs it: done, not yet answered.
    expect(dmaRunQueued(tb.m.hv, f.v.ctx.slot, 0)).toBe(true);
    expect(Atomics.load(tb.m.hv.g, G.DMA_RUN)).toBe(run0 + 1);
    expect(queued(tb)).toBe(0);
    expect(readPages(f, a, n)).toEqual(fileBytes(0, n * SECTOR));
    expect(f.responses()).toEqual([]);
    // Dom0's next look reaps it: answered with its id, OKAY.
    expect(engine.poll()).toBe(1);
    expect(f.responses()).toEqual([ok(0xa000_0000_0000_0001n)]);
    expect(engine.counters.rdReq).toBe(2);
    expect(engine.counters.rdSect).toBe(2 * n);
    // With A reaped, the next large READ goes out as a job again.
    indirect(f, BLKIF_OP_READ, 3n, 2 * n, a, n);
    f.ring.pushRequestsAndCheckNotify();
    expect(engine.poll()).toBe(1);
    expect(queued(tb)).toBe(1);
    expect(dmaRunQueued(tb.m.hv, f.v.ctx.slot, 0)).toBe(true);
    expect(engine.poll()).toBe(1);
    expect(f.responses()).toEqual([ok(3n)]);
    expect(readPages(f, a, n)).toEqual(fileBytes(2 * n * SECTOR, n * SECTOR));
    await tb.unplug(f.domid, f.devid);
    expect(tb.dom0Resources()).toEqual(before);
    expect(tb.driver.pool.inUse).toBe(0);
  });

  it('smaller INDIRECT READs, WRITEs of any size, and rings Dom0 does not poll stay on Dom0\'s vCPU', async () => {
    const { tb, f, path } = await rig();
    const engine = tb.driver.device(f.domid, f.devid)!.engine!;
    const small = pagesFor(f, ASYNC_MIN_SECTORS - 1);
    indirect(f, BLKIF_OP_READ, 1n, 8, small, ASYNC_MIN_SECTORS - 1);
    const w = pagesFor(f, ASYNC_MIN_SECTORS);
    for (const p of w) f.mem.fill(p.gpa, PAGE_SIZE, 0x5c);
    indirect(f, BLKIF_OP_WRITE, 2n, 1024, w, ASYNC_MIN_SECTORS);
    f.ring.pushRequestsAndCheckNotify();
    expect(engine.poll()).toBe(2);
    expect(f.responses()).toEqual([ok(1n), ok(2n, BLKIF_OP_WRITE)]);
    expect(queued(tb)).toBe(0);
    expect(readPages(f, small, ASYNC_MIN_SECTORS - 1)).toEqual(fileBytes(8 * SECTOR, (ASYNC_MIN_SECTORS - 1) * SECTOR));
    expect(readFileSync(path).subarray(1024 * SECTOR, (1024 + ASYNC_MIN_SECTORS) * SECTOR).every((x) => x === 0x5c)).toBe(true);
    await tb.unplug(f.domid, f.devid);

    // Without a polling loop nothing would reap a job: the driver does not make any.
    const plain = await rig({}, false);
    const big = pagesFor(plain.f, ASYNC_MIN_SECTORS);
    indirect(plain.f, BLKIF_OP_READ, 7n, 0, big, ASYNC_MIN_SECTORS);
    expect(await plain.f.submit()).toEqual([ok(7n)]);
    expect(queued(plain.tb)).toBe(0);
    expect(readPages(plain.f, big, ASYNC_MIN_SECTORS)).toEqual(fileBytes(0, ASYNC_MIN_SECTORS * SECTOR));
    await plain.tb.unplug(plain.f.domid, plain.f.devid);
  });

  it('xen_blkback.dma_jobs=0: large and direct READs are served on Dom0\'s vCPU', async () => {
    const { tb, f } = await rig({ dmaJobs: false });
    const engine = tb.driver.device(f.domid, f.devid)!.engine!;
    const a = pagesFor(f, ASYNC_MIN_SECTORS);
    indirect(f, BLKIF_OP_READ, 1n, 0, a, ASYNC_MIN_SECTORS);
    const p = f.page();
    direct(f, 2n, 16, [p]);
    f.ring.pushRequestsAndCheckNotify();
    expect(engine.poll()).toBe(2);
    expect(f.responses()).toEqual([ok(1n), ok(2n)]);
    expect(queued(tb)).toBe(0);
    expect(readPages(f, [p], 8)).toEqual(fileBytes(16 * SECTOR, PAGE_SIZE));
    await tb.unplug(f.domid, f.devid);
  });

  it('Dom0 does not block with a job out (nothing would wake it): its last look before blocking runs the job itself and answers it; so does disconnect, never failing it', async () => {
    const { tb, f, loop, before } = await rig();
    const engine = tb.driver.device(f.domid, f.devid)!.engine!;
    const a = pagesFor(f, ASYNC_MIN_SECTORS);
    indirect(f, BLKIF_OP_READ, 5n, 64, a, ASYNC_MIN_SECTORS);
    f.ring.pushRequestsAndCheckNotify();
    expect(engine.poll()).toBe(1);
    expect(queued(tb)).toBe(1);
    expect(f.responses()).toEqual([]);
    // No vCPU takes the job (this test's Dom0 has no preemption point to run it in its spin):
    // idle() spins, then arms the ring; the arm runs the job, answers the READ with its data, then Dom0 blocks.
    const blocks = tb.m.dom0.sched.blocks;
    loop!.idle(1);
    expect(queued(tb)).toBe(0);
    expect(f.responses()).toEqual([ok(5n)]);
    expect(readPages(f, a, ASYNC_MIN_SECTORS)).toEqual(fileBytes(64 * SECTOR, ASYNC_MIN_SECTORS * SECTOR));
    expect(tb.m.dom0.sched.blocks).toBe(blocks + 1);
    // Hot-unplug with a job still queued: Dom0 runs it, and the READ is answered OKAY with its data.
    const b = pagesFor(f, ASYNC_MIN_SECTORS);
    indirect(f, BLKIF_OP_READ, 6n, 128, b, ASYNC_MIN_SECTORS);
    f.ring.pushRequestsAndCheckNotify();
    expect(engine.poll()).toBe(1);
    expect(queued(tb)).toBe(1);
    await tb.unplug(f.domid, f.devid);
    expect(queued(tb)).toBe(0);
    expect(f.responses()).toEqual([ok(6n)]);
    expect(readPages(f, b, ASYNC_MIN_SECTORS)).toEqual(fileBytes(128 * SECTOR, ASYNC_MIN_SECTORS * SECTOR));
    expect(tb.dom0Resources()).toEqual(before);
    expect(tb.driver.pool.inUse).toBe(0);
    // Nothing is out any more: Dom0 blocks again.
    const blocks2 = tb.m.dom0.sched.blocks;
    loop!.idle(1);
    expect(tb.m.dom0.sched.blocks).toBe(blocks2 + 1);
  });

  it('a WRITE_BARRIER waits for a READ out as a job: the READ is answered first, then the barrier', async () => {
    const { tb, f } = await rig();
    const engine = tb.driver.device(f.domid, f.devid)!.engine!;
    const a = pagesFor(f, ASYNC_MIN_SECTORS);
    indirect(f, BLKIF_OP_READ, 1n, 0, a, ASYNC_MIN_SECTORS);
    f.put({ kind: 'rw', operation: BLKIF_OP_WRITE_BARRIER, nrSegments: 0, handle: 0, id: 2n, sector: 0, segs: [] });
    f.ring.pushRequestsAndCheckNotify();
    expect(engine.poll()).toBe(2);
    // Held: neither is answered, time enough as it is for an fdatasync to have come back.
    for (let i = 0; i < 10; i++) {
      await new Promise((r) => setTimeout(r, 10));
      await tb.round();
    }
    expect(f.responses()).toEqual([]);
    expect(dmaRunQueued(tb.m.hv, f.v.ctx.slot, 0)).toBe(true);
    engine.poll();
    const got = f.responses();
    await tb.until(() => { got.push(...f.responses()); return got.length >= 2; }, 'the barrier\'s answer');
    expect(got).toEqual([ok(1n), ok(2n, BLKIF_OP_WRITE_BARRIER)]);
    await tb.unplug(f.domid, f.devid);
  });

  it('direct READs go out as jobs, ASYNC_DIRECT_DEPTH at a time, the rest served on Dom0\'s vCPU; each answered with its data once its job is run and reaped', async () => {
    const { tb, f, before } = await rig();
    const engine = tb.driver.device(f.domid, f.devid)!.engine!;
    const n = ASYNC_DIRECT_DEPTH + 2;
    // Request i reads 1 + (i % 3) pages at sector 24 * i (its data differs from every other's).
    const pages = Array.from({ length: n }, (_, i) => pagesFor(f, 8 * (1 + (i % 3))));
    pages.forEach((ps, i) => direct(f, BigInt(100 + i), 24 * i, ps));
    f.ring.pushRequestsAndCheckNotify();
    expect(engine.poll()).toBe(n);
    // The first ASYNC_DIRECT_DEPTH are out; the last two were served at once.
    expect(queued(tb)).toBe(ASYNC_DIRECT_DEPTH);
    expect(f.responses()).toEqual([ok(BigInt(100 + n - 2)), ok(BigInt(100 + n - 1))]);
    for (let i = 0; i < n; i++) {
      const out = i < ASYNC_DIRECT_DEPTH;
      expect(readPages(f, pages[i]!, 8 * pages[i]!.length).every((x) => x === 0xee)).toBe(out);
    }
    expect(engine.counters.rdReq).toBe(n);
    expect(engine.counters.rdSect).toBe(pages.reduce((k, ps) => k + 8 * ps.length, 0));
    // The frontend's vCPU runs three of them; Dom0's next look answers just those, in the order they finished.
    for (let k = 0; k < 3; k++) expect(dmaRunQueued(tb.m.hv, f.v.ctx.slot, 0)).toBe(true);
    expect(engine.poll()).toBe(3);
    const first = f.responses();
    expect(first.map((r) => r.status)).toEqual([BLKIF_RSP_OKAY, BLKIF_RSP_OKAY, BLKIF_RSP_OKAY]);
    // The rest: run by Dom0 at disconnect, answered OKAY, never failed.
    await tb.unplug(f.domid, f.devid);
    const all = [...first, ...f.responses()];
    expect(all.map((r) => r.id).sort((x, y) => Number(x - y))).toEqual(Array.from({ length: ASYNC_DIRECT_DEPTH }, (_, i) => BigInt(100 + i)));
    expect(all.every((r) => r.status === BLKIF_RSP_OKAY && r.operation === BLKIF_OP_READ)).toBe(true);
    pages.forEach((ps, i) => expect(readPages(f, ps, 8 * ps.length)).toEqual(fileBytes(24 * i * SECTOR, ps.length * PAGE_SIZE)));
    expect(queued(tb)).toBe(0);
    expect(tb.dom0Resources()).toEqual(before);
    expect(tb.driver.pool.inUse).toBe(0);
  });

  it('with every host job slot taken (by other owners), direct and large READs are served on Dom0\'s vCPU at once, with their data; once slots are free, READs go out as jobs again', async () => {
    const { tb, f, before } = await rig();
    const engine = tb.driver.device(f.domid, f.devid)!.engine!;
    const hv = tb.m.hv;
    // Every slot reserved, as an owner filling it would have it: no job can be queued.
    const reserve = (state: number): void => { for (let i = 0; i < DMA_SLOTS; i++) Atomics.store(hv.dmaJob, i * DJ.WORDS + DJ.STATE, state); };
    reserve(DJS_FILLING);
    const p = pagesFor(f, 8);
    const big = pagesFor(f, ASYNC_MIN_SECTORS);
    direct(f, 1n, 40, p);
    indirect(f, BLKIF_OP_READ, 2n, 512, big, ASYNC_MIN_SECTORS);
    f.ring.pushRequestsAndCheckNotify();
    expect(engine.poll()).toBe(2);
    expect(f.responses()).toEqual([ok(1n), ok(2n)]);
    expect(readPages(f, p, 8)).toEqual(fileBytes(40 * SECTOR, PAGE_SIZE));
    expect(readPages(f, big, ASYNC_MIN_SECTORS)).toEqual(fileBytes(512 * SECTOR, ASYNC_MIN_SECTORS * SECTOR));
    expect(queued(tb)).toBe(0);
    reserve(DJS_FREE);
    direct(f, 3n, 48, p);
    f.ring.pushRequestsAndCheckNotify();
    expect(engine.poll()).toBe(1);
    expect(f.responses()).toEqual([]);
    expect(queued(tb)).toBe(1);
    expect(dmaRunQueued(hv, f.v.ctx.slot, 0)).toBe(true);
    expect(engine.poll()).toBe(1);
    expect(f.responses()).toEqual([ok(3n)]);
    expect(readPages(f, p, 8)).toEqual(fileBytes(48 * SECTOR, PAGE_SIZE));
    await tb.unplug(f.domid, f.devid);
    expect(tb.dom0Resources()).toEqual(before);
    expect(tb.driver.pool.inUse).toBe(0);
  });

  it('a job\'s persistent grants are in use until its READ is answered, and no longer: the purge goes on meanwhile and leaves them, and later removes them once unused', async () => {
    const clock = { t: 1_000_000 };
    const { tb, f } = await rig({ now: () => clock.t, persistentGrantUnusedSeconds: 60 });
    const dev = tb.driver.device(f.domid, f.devid)!;
    const engine = dev.engine!;
    const n = ASYNC_MIN_SECTORS;
    // A goes out as a job; B, on other pages, is served on Dom0's vCPU after it.
    const { a, b } = twoLargeReads(f, 1n);
    expect(engine.poll()).toBe(2);
    expect(f.responses()).toEqual([ok(2n)]);
    const kept = (ps: readonly FrontPage[]): boolean[] => ps.map((p) => dev.hasPersistentGrant(p.gref));
    expect(kept([...a, ...b]).every(Boolean)).toBe(true);
    // 61 s later a WRITE's batch runs the purge: B's grants (unused) go; A's, under its job, stay.
    clock.t += 61_000;
    const w = f.page();
    f.put({ kind: 'rw', operation: BLKIF_OP_WRITE, nrSegments: 1, handle: 0, id: 3n, sector: 4 * n, segs: [{ gref: w.gref, firstSect: 0, lastSect: 7 }] });
    f.ring.pushRequestsAndCheckNotify();
    expect(engine.poll()).toBe(1);
    expect(f.responses()).toEqual([ok(3n, BLKIF_OP_WRITE)]);
    expect(kept(b).some(Boolean)).toBe(false);
    expect(kept(a).every(Boolean)).toBe(true);
    // A's job runs (into pages still mapped) and is answered; its grants' last use is now.
    expect(dmaRunQueued(tb.m.hv, f.v.ctx.slot, 0)).toBe(true);
    expect(engine.poll()).toBe(1);
    expect(f.responses()).toEqual([ok(1n)]);
    expect(readPages(f, a, n)).toEqual(fileBytes(0, n * SECTOR));
    // 61 s after that, no longer in use: the next purge removes them too.
    clock.t += 61_000;
    f.put({ kind: 'rw', operation: BLKIF_OP_WRITE, nrSegments: 1, handle: 0, id: 4n, sector: 4 * n, segs: [{ gref: w.gref, firstSect: 0, lastSect: 7 }] });
    f.ring.pushRequestsAndCheckNotify();
    expect(engine.poll()).toBe(1);
    expect(f.responses()).toEqual([ok(4n, BLKIF_OP_WRITE)]);
    expect(kept(a).some(Boolean)).toBe(false);
    expect(engine.stats.errors).toBe(0);
    await tb.unplug(f.domid, f.devid);
  });

  it('a job that fails, or moves fewer bytes than asked, is answered BLKIF_RSP_ERROR, and the ring goes on', async () => {
    let mode: 'eio' | 'short' | 'pass' = 'eio';
    const wrap = (s: BlockStorage): BlockStorage => ({
      get sectors() { return s.sectors; },
      get isNull() { return s.isNull; },
      read: (r, p) => s.read(r, p),
      write: (r, p) => s.write(r, p),
      flush: (d) => s.flush(d),
      discard: (a, b, d) => s.discard(a, b, d),
      close: () => s.close(),
      submit: (r, p, w, done) => s.submit!(r, p, w, (res) => done(mode === 'eio' ? -5 : mode === 'short' ? res - SECTOR : res)),
      reap: () => s.reap!(),
      drain: () => s.drain!(),
    });
    const { tb, f } = await rig({ wrapStorage: wrap });
    const engine = tb.driver.device(f.domid, f.devid)!.engine!;
    const a = pagesFor(f, ASYNC_MIN_SECTORS);
    const fail = BLKIF_RSP_ERROR;
    for (const [id, m] of [[1n, 'eio'], [2n, 'short'], [3n, 'pass']] as const) {
      mode = m;
      indirect(f, BLKIF_OP_READ, id, 0, a, ASYNC_MIN_SECTORS);
      f.ring.pushRequestsAndCheckNotify();
      expect(engine.poll()).toBe(1);
      expect(dmaRunQueued(tb.m.hv, f.v.ctx.slot, 0)).toBe(true);
      expect(engine.poll()).toBe(1);
      expect(f.responses()).toEqual([{ id, operation: BLKIF_OP_READ, status: m === 'pass' ? BLKIF_RSP_OKAY : fail }]);
    }
    expect(engine.stats.errors).toBe(2);
    await tb.unplug(f.domid, f.devid);
  });
});
