/**
 * DISCARD on a file-backed disk: a hole punched with fallocate(1) (or zeroes
 * written where no hole can be made), off Dom0's vCPU and answered when done;
 * requests behind it go on, a barrier waits for it, an unplug answers it
 * ERROR, and a file's discards run one at a time in order.
 */
import { execFileSync } from 'node:child_process';
import { chmodSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it, onTestFinished } from 'vitest';
import { BLKIF_OP_DISCARD, BLKIF_OP_READ, BLKIF_OP_WRITE, BLKIF_OP_WRITE_BARRIER, BLKIF_RSP_ERROR, BLKIF_RSP_OKAY } from '../../../shared/abi/blkif.ts';
import type { BlkifSegment } from '../../../shared/blkif/proto.ts';
import { FileStorage, type BlockStorage } from '../../../dom0/blkback/storage.ts';
import { BlkTestbed, FakeBlkfront } from '../../helpers/fake-blkfront.ts';
import { TestMachine } from '../../helpers/machine.ts';
import { tempDisk } from '../../helpers/temp-disk.ts';

const MIB = 1 << 20;
const rw = (operation: 0 | 1 | 2 | 3, id: bigint, sector: number, segs: BlkifSegment[]) =>
  ({ kind: 'rw' as const, operation, nrSegments: segs.length, handle: 0, id, sector, segs });
const seg = (gref: number): BlkifSegment => ({ gref, firstSect: 0, lastSect: 7 });
const discard = (id: bigint, sector: number, nrSectors: number) =>
  ({ kind: 'discard' as const, operation: BLKIF_OP_DISCARD as typeof BLKIF_OP_DISCARD, flag: 0, handle: 0, id, sector, nrSectors });
const filled = (b: Uint8Array): void => { b.fill(0xaa); };
/** 512-byte blocks the file has allocated on the host. */
const blocks = (path: string): number => statSync(path).blocks;

/** Whether the temp directory's filesystem takes a punched hole (fallocate(1) there gives blocks back). */
function holesWork(): boolean {
  const d = mkdtempSync(join(tmpdir(), 'xents-holes-'));
  try {
    const p = join(d, 'probe');
    writeFileSync(p, new Uint8Array(MIB).fill(1));
    const before = blocks(p);
    execFileSync('fallocate', ['--punch-hole', '--offset', '0', '--length', String(MIB), p]);
    return blocks(p) < before;
  } catch {
    return false;
  } finally {
    rmSync(d, { recursive: true, force: true });
  }
}

/**
 * A stand-in fallocate(1) for the test: a shell script running `body` (given
 * the path of a log file it may append to; $3 is the offset, $5 the length),
 * then failing, so that FileStorage writes zeroes instead. Removed when the
 * test finishes.
 */
function fakeFallocate(body: (log: string) => string): { tool: string; log: string } {
  const dir = mkdtempSync(join(tmpdir(), 'xents-fallocate-'));
  onTestFinished(() => rmSync(dir, { recursive: true, force: true }));
  const log = join(dir, 'log');
  const tool = join(dir, 'fallocate');
  writeFileSync(tool, `#!/bin/sh\n${body(log)}\nexit 1\n`);
  chmodSync(tool, 0o755);
  return { tool, log };
}

/** Connect the fake frontend to a 4 MiB image full of 0xaa; `wrap` interposes on its storage. */
async function connected(wrap?: (s: BlockStorage) => BlockStorage) {
  let storage: BlockStorage | undefined;
  const tb = await BlkTestbed.start({ wrapStorage: (s) => { storage = s; return wrap ? wrap(s) : s; } });
  const before = tb.dom0Resources();
  const f = await FakeBlkfront.create(tb, {});
  const path = tempDisk(4 * MIB, filled);
  await tb.addVbd(f.domid, f.devid, { params: path });
  await f.connect();
  expect(await f.backendState()).toBe('4');
  return { tb, f, path, before, storage: storage as FileStorage };
}

/** A storage that holds each discard's end until the test lets it go. */
function holdingDiscards(calls: string[], held: Array<() => void>) {
  return (s: BlockStorage): BlockStorage => ({
    sectors: s.sectors, isNull: s.isNull, close: s.close.bind(s),
    read: (r, pos) => { calls.push(`read@${pos / 512}`); return s.read(r, pos); },
    write: (r, pos) => { calls.push(`write@${pos / 512}`); return s.write(r, pos); },
    flush: (done) => { calls.push('fdatasync'); s.flush((err) => { calls.push('fdatasync returned'); done(err); }); },
    discard: (sector, n, done) => {
      calls.push(`discard@${sector}`);
      s.discard(sector, n, (err) => held.push(() => { calls.push(`discard@${sector} done`); done(err); }));
    },
  });
}

describe('blkback DISCARD', () => {
  it('punches a hole: the range reads back as zeroes through the ring and in the file, its blocks go back to the host, the rest stays', async () => {
    const holes = holesWork();
    const { tb, f, path, before, storage } = await connected();
    const allocated = blocks(path);
    // 1 MiB at 1 MiB.
    f.put(discard(1n, 2048, 2048));
    expect(await f.submit()).toEqual([{ id: 1n, operation: BLKIF_OP_DISCARD, status: BLKIF_RSP_OKAY }]);
    const file = readFileSync(path);
    expect(file.length).toBe(4 * MIB);
    expect(file.subarray(MIB, 2 * MIB).every((x) => x === 0)).toBe(true);
    expect(file[MIB - 1]).toBe(0xaa);
    expect(file[2 * MIB]).toBe(0xaa);
    if (holes) {
      expect(storage.discardStats).toEqual({ punched: 1, zeroed: 0 });
      expect(allocated - blocks(path)).toBeGreaterThanOrEqual(MIB / 512);
    } else {
      expect(storage.discardStats).toEqual({ punched: 0, zeroed: 1 });
    }
    const p = f.page();
    f.mem.fill(p.gpa, 4096, 0x55);
    f.put(rw(BLKIF_OP_READ, 2n, 2048 + 8, [seg(p.gref)]));
    expect((await f.submit())[0]!.status).toBe(BLKIF_RSP_OKAY);
    expect(f.mem.read(p.gpa, 4096).every((x) => x === 0)).toBe(true);
    expect(tb.driver.device(f.domid, f.devid)!.counters.dsReq).toBe(1);
    await tb.unplug(f.domid, f.devid);
    expect(tb.dom0Resources()).toEqual(before);
  });

  it('a DISCARD still running holds nothing up; a WRITE_BARRIER behind it waits for it before its fdatasync', async () => {
    const calls: string[] = [];
    const held: Array<() => void> = [];
    const { f, path } = await connected(holdingDiscards(calls, held));
    const p = f.page();
    f.mem.fill(p.gpa, 4096, 0x11);
    f.put(discard(1n, 0, 8));
    f.put(rw(BLKIF_OP_WRITE, 2n, 64, [seg(p.gref)]));
    f.put(rw(BLKIF_OP_READ, 3n, 64, [seg(p.gref)]));
    f.put(rw(BLKIF_OP_WRITE_BARRIER, 4n, 128, [seg(p.gref)]));
    f.put(rw(BLKIF_OP_WRITE, 5n, 256, [seg(p.gref)]));
    expect((await f.submit(2)).map((r) => [r.id, r.status])).toEqual([[2n, BLKIF_RSP_OKAY], [3n, BLKIF_RSP_OKAY]]);
    await f.tb.until(() => held.length === 1, 'the hole to be punched');
    // Punched, but not yet reported: no answer, and the barrier has not synced.
    for (let i = 0; i < 5; i++) await f.tb.round();
    expect(f.responses()).toEqual([]);
    expect(calls).toEqual(['discard@0', 'write@64', 'read@64']);
    held.shift()!();
    const rest = await f.submit(3);
    expect(rest.map((r) => [r.id, r.operation, r.status])).toEqual([
      [1n, BLKIF_OP_DISCARD, BLKIF_RSP_OKAY], [4n, BLKIF_OP_WRITE_BARRIER, BLKIF_RSP_OKAY], [5n, BLKIF_OP_WRITE, BLKIF_RSP_OKAY],
    ]);
    expect(calls.slice(3)).toEqual(['discard@0 done', 'fdatasync', 'fdatasync returned', 'write@128', 'write@256']);
    const file = readFileSync(path);
    expect(file.subarray(0, 4096).every((x) => x === 0)).toBe(true);
    expect(file.subarray(64 * 512, 64 * 512 + 4096).every((x) => x === 0x11)).toBe(true);
  });

  it('unplugged with a DISCARD running: it is answered ERROR, not lost; its late end answers nothing more; nothing leaks', async () => {
    const calls: string[] = [];
    const held: Array<() => void> = [];
    const { tb, f, before } = await connected(holdingDiscards(calls, held));
    f.put(discard(7n, 0, 4096));
    f.push();
    await tb.until(() => held.length === 1, 'the hole to be punched');
    await tb.unplug(f.domid, f.devid, false);
    expect(f.responses()).toEqual([{ id: 7n, operation: BLKIF_OP_DISCARD, status: BLKIF_RSP_ERROR }]);
    held.shift()!();
    for (let i = 0; i < 3; i++) await tb.round();
    expect(f.responses()).toEqual([]);
    await tb.xb.rm(`/local/domain/0/backend/vbd/${f.domid}/${f.devid}`);
    await tb.round();
    expect(tb.dom0Resources()).toEqual(before);
  });

  it('a DISCARD the host fails is answered ERROR, and the ring goes on', async () => {
    const { f } = await connected((s) => ({
      sectors: s.sectors, isNull: s.isNull, close: s.close.bind(s), read: s.read.bind(s), write: s.write.bind(s), flush: s.flush.bind(s),
      discard: (_sector, _n, done) => setImmediate(() => done(Object.assign(new Error('EIO: i/o error'), { code: 'EIO' }))),
    }));
    const p = f.page();
    f.put(discard(1n, 0, 8));
    f.put(rw(BLKIF_OP_READ, 2n, 0, [seg(p.gref)]));
    const r = await f.submit(2);
    expect(r.map((x) => [x.id, x.status]).sort((a, b) => Number((a[0] as bigint) - (b[0] as bigint)))).toEqual([[1n, BLKIF_RSP_ERROR], [2n, BLKIF_RSP_OKAY]]);
  });

  it('a ring full of whole-disk DISCARDs: every one answered OKAY, the disk all zeroes', async () => {
    const { tb, f, path, storage } = await connected();
    for (let i = 0; i < 32; i++) f.put(discard(BigInt(i), 0, (4 * MIB) / 512));
    const r = await f.submit(32);
    expect(r.map((x) => x.id).sort((a, b) => Number(a - b))).toEqual(Array.from({ length: 32 }, (_, i) => BigInt(i)));
    expect(r.every((x) => x.status === BLKIF_RSP_OKAY)).toBe(true);
    // The first ran alone; the 31 that waited behind it covered the same range: one more hole for all.
    expect(storage.discardStats.punched + storage.discardStats.zeroed).toBe(2);
    expect(readFileSync(path).every((x) => x === 0)).toBe(true);
    expect(tb.driver.device(f.domid, f.devid)!.counters.dsReq).toBe(32);
  });
});

describe('FileStorage.discard', () => {
  const m = new TestMachine();

  it('without fallocate(1) overwrites the range with zeroes (no hole), keeping the size', async () => {
    const path = tempDisk(2 * MIB, filled);
    const s = new FileStorage(path, true, m.dma, { fallocate: null });
    const err = await new Promise<Error | null>((res) => s.discard(8, 2048 + 8, res));
    expect(err).toBeNull();
    const file = readFileSync(path);
    expect(file.length).toBe(2 * MIB);
    expect(file[8 * 512 - 1]).toBe(0xaa);
    expect(file.subarray(8 * 512, (2048 + 16) * 512).every((x) => x === 0)).toBe(true);
    expect(file[(2048 + 16) * 512]).toBe(0xaa);
    expect(s.discardStats).toEqual({ punched: 0, zeroed: 1 });
    s.close();
  });

  it('falls back to zeroes when fallocate(1) cannot be run', async () => {
    const path = tempDisk(MIB, filled);
    const s = new FileStorage(path, true, m.dma, { fallocate: join(tmpdir(), 'no-such-dir', 'fallocate') });
    expect(await new Promise<Error | null>((res) => s.discard(0, 16, res))).toBeNull();
    expect(s.discardStats).toEqual({ punched: 0, zeroed: 1 });
    const file = readFileSync(path);
    expect(file.subarray(0, 16 * 512).every((x) => x === 0)).toBe(true);
    expect(file[16 * 512]).toBe(0xaa);
    s.close();
  });

  it('runs a file\'s discards one at a time, in the order asked (one fallocate(1) at a time)', async () => {
    const path = tempDisk(MIB, filled);
    // A fallocate that logs its start and end around a short sleep, then fails (so zeroes are written).
    const { tool, log } = fakeFallocate((log) => `echo "start $3" >> ${log}\nsleep 0.05\necho "end $3" >> ${log}`);
    const s = new FileStorage(path, true, m.dma, { fallocate: tool });
    const order: string[] = [];
    const ask = (sector: number, n = 8) => new Promise<void>((res) => s.discard(sector, n, (err) => { order.push(`${sector}:${err === null}`); res(); }));
    // Apart from each other: one at a time, in order.
    await Promise.all([ask(0), ask(32), ask(64)]);
    expect(order).toEqual(['0:true', '32:true', '64:true']);
    expect(readFileSync(log, 'utf8').trim().split('\n')).toEqual(['start 0', 'end 0', 'start 16384', 'end 16384', 'start 32768', 'end 32768']);
    expect(s.discardStats).toEqual({ punched: 0, zeroed: 3 });
    const file = readFileSync(path);
    for (const at of [0, 32, 64]) expect(file.subarray(at * 512, (at + 8) * 512).every((x) => x === 0)).toBe(true);
    expect(file.subarray(8 * 512, 32 * 512).every((x) => x === 0xaa)).toBe(true);
    s.close();
  });

  it('merges the discards waiting behind a running one whose ranges overlap or touch (one hole for them all), answers empty ones at once', async () => {
    const path = tempDisk(MIB, filled);
    const { tool, log } = fakeFallocate((log) => `echo "$3 $5" >> ${log}\nsleep 0.05`);
    const s = new FileStorage(path, true, m.dma, { fallocate: tool });
    const order: string[] = [];
    const ask = (sector: number, n: number) => new Promise<void>((res) => s.discard(sector, n, (err) => { order.push(`${sector}+${n}:${err === null}`); res(); }));
    // 100+8 runs alone; behind it 16+8, 24+8 (touching), an empty one, 20+16 (overlapping) merge into 16..36;
    // 200+8 is apart and runs after them.
    await Promise.all([ask(100, 8), ask(16, 8), ask(24, 8), ask(50, 0), ask(20, 16), ask(200, 8)]);
    expect(order).toEqual(['100+8:true', '16+8:true', '24+8:true', '50+0:true', '20+16:true', '200+8:true']);
    expect(readFileSync(log, 'utf8').trim().split('\n')).toEqual([`${100 * 512} ${8 * 512}`, `${16 * 512} ${20 * 512}`, `${200 * 512} ${8 * 512}`]);
    expect(s.discardStats).toEqual({ punched: 0, zeroed: 3 });
    const file = readFileSync(path);
    expect(file.subarray(16 * 512, 36 * 512).every((x) => x === 0)).toBe(true);
    expect(file[16 * 512 - 1]).toBe(0xaa);
    expect(file[36 * 512]).toBe(0xaa);
    s.close();
  });

  it('an empty discard waiting behind others does not hold up those after it', async () => {
    const path = tempDisk(MIB, filled);
    const s = new FileStorage(path, true, m.dma, { fallocate: null });
    const order: string[] = [];
    const ask = (sector: number, n: number) => new Promise<void>((res) => s.discard(sector, n, () => { order.push(`${sector}+${n}`); res(); }));
    await Promise.all([ask(0, 8), ask(500, 0), ask(100, 8)]);
    expect(order).toEqual(['0+8', '500+0', '100+8']);
    s.close();
  });

  it('scattered discards are punched by one helper shell (fallocate(1) is not started by Dom0 per discard), those waiting sent to it together; closing the image ends it', async () => {
    const path = tempDisk(MIB, filled);
    // Logs the pid of the process that started it: the helper shell.
    const { tool, log } = fakeFallocate((log) => `echo "$PPID $3" >> ${log}`);
    const s = new FileStorage(path, true, m.dma, { fallocate: tool });
    const ask = (sector: number) => new Promise<Error | null>((res) => s.discard(sector, 8, res));
    const at = Array.from({ length: 12 }, (_, i) => i * 64);
    expect(await Promise.all(at.map(ask))).toEqual(at.map(() => null));
    const helper = s.puncherPid!;
    expect(helper).toBeGreaterThan(0);
    expect(helper).not.toBe(process.pid);
    expect(readFileSync(log, 'utf8').trim().split('\n')).toEqual(at.map((a) => `${helper} ${a * 512}`));
    // The first alone; the eleven that waited meanwhile in one request.
    expect(s.puncherRequests).toBe(2);
    expect(s.discardStats).toEqual({ punched: 0, zeroed: 12 });
    s.close();
    const alive = (): boolean => { try { process.kill(helper, 0); return true; } catch { return false; } };
    for (let i = 0; i < 200 && alive(); i++) await new Promise((r) => setTimeout(r, 10));
    expect(alive()).toBe(false);
  });

  it('a helper that dies: the discard it ran is done with zeroes, so are later ones, and no helper is started again', async () => {
    const path = tempDisk(MIB, filled);
    // Kills the helper shell that started it.
    const { tool, log } = fakeFallocate((log) => `echo "$3" >> ${log}\nkill -9 $PPID`);
    const s = new FileStorage(path, true, m.dma, { fallocate: tool });
    const ask = (sector: number) => new Promise<Error | null>((res) => s.discard(sector, 8, res));
    expect(await ask(0)).toBeNull();
    expect(await ask(64)).toBeNull();
    expect(readFileSync(log, 'utf8').trim().split('\n')).toEqual(['0']);
    expect(s.discardStats).toEqual({ punched: 0, zeroed: 2 });
    const file = readFileSync(path);
    for (const a of [0, 64]) expect(file.subarray(a * 512, (a + 8) * 512).every((x) => x === 0)).toBe(true);
    expect(file[8 * 512]).toBe(0xaa);
    s.close();
  });

  it('closed with discards waiting: they are dropped with an error; the running one fails and is not zeroed; the image is left alone', async () => {
    const path = tempDisk(MIB, filled);
    const { tool } = fakeFallocate(() => 'sleep 0.05');
    const s = new FileStorage(path, true, m.dma, { fallocate: tool });
    const results: string[] = [];
    const ask = (sector: number) => new Promise<void>((res) => s.discard(sector, 8, (err) => { results.push(`${sector}:${err === null ? 'ok' : err.message}`); res(); }));
    const all = Promise.all([ask(0), ask(8), ask(16)]);
    s.close();
    await all;
    expect(results).toEqual([`8:${path} closed before the discard ran`, `16:${path} closed before the discard ran`, `0:${path} closed before the discard was done`]);
    expect(readFileSync(path).every((x) => x === 0xaa)).toBe(true);
  });

  it('closed while the helper works through a batch: the rest of the batch is not run, each answered with an error, nothing zeroed', async () => {
    const path = tempDisk(MIB, filled);
    const { tool, log } = fakeFallocate((log) => `echo "start $3" >> ${log}\nsleep 0.1\necho "end $3" >> ${log}`);
    const s = new FileStorage(path, true, m.dma, { fallocate: tool });
    const results: string[] = [];
    const ask = (sector: number) => new Promise<void>((res) => s.discard(sector, 8, (err) => { results.push(`${sector}:${err === null ? 'ok' : 'error'}`); res(); }));
    // 0 runs alone; 64 and 128 wait, then go to the helper together.
    const all = Promise.all([ask(0), ask(64), ask(128)]);
    const lines = (): string[] => { try { return readFileSync(log, 'utf8').trim().split('\n'); } catch { return []; } };
    for (let i = 0; i < 500 && !lines().includes(`start ${64 * 512}`); i++) await new Promise((r) => setTimeout(r, 5));
    expect(s.puncherRequests).toBe(2);
    s.close();
    await all;
    expect(results).toEqual(['0:ok', '64:error', '128:error']);
    // The fallocate(1) that was running ends on its own; a live helper would start the next at once.
    for (let i = 0; i < 1000 && !lines().includes(`end ${64 * 512}`); i++) await new Promise((r) => setTimeout(r, 5));
    await new Promise((r) => setTimeout(r, 200));
    expect(lines()).toEqual(['start 0', 'end 0', `start ${64 * 512}`, `end ${64 * 512}`]);
    const file = readFileSync(path);
    expect(file.subarray(0, 8 * 512).every((x) => x === 0)).toBe(true); // its stand-in failed: zeroed before the close
    expect(file.subarray(8 * 512).every((x) => x === 0xaa)).toBe(true);
  });

  it('a discard on a file that is gone reports its error (the engine answers ERROR)', async () => {
    const path = tempDisk(MIB, filled);
    const s = new FileStorage(path, true, m.dma, { fallocate: null });
    rmSync(path);
    const err = await new Promise<Error | null>((res) => s.discard(0, 8, res));
    expect((err as NodeJS.ErrnoException | null)?.code).toBe('ENOENT');
    s.close();
  });
});
