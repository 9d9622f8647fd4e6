/**
 * Dom0's host DMA capability (hypervisor/vcpu/host-dma.ts) on real temp files:
 * bytes land in (and come from) the right guest pages, as the guest's own
 * memory accessors see them; ranges are split per page and merged back into
 * machine-contiguous iovecs; every refusal happens before any I/O. Also
 * GuestMemory.readInto.
 *
 * Dom0 of the TestMachine is 1 MiB, gfn g on mfn g + 1 (machine-contiguous);
 * non-contiguous pages come from DomU grants mapped into Dom0's hole gfns.
 */
import fs from 'node:fs';
import fc from 'fast-check';
import { describe, expect, it, onTestFinished, vi } from 'vitest';
import { GNTST_okay } from '../../../shared/abi/grant-table.ts';
import { GuestFault, type GuestRange, type HostDma } from '../../../shared/guest/api.ts';
import { PAGE_SIZE } from '../../../shared/types.ts';
import { IovecPlan, MAX_EXTENT, planIovecs, type Extent } from '../../../hypervisor/vcpu/iovec.ts';
import { TestMachine } from '../../helpers/machine.ts';
import { addDomU, domOf, HOLE_GFN_BASE, type Dom } from '../gnttab/helpers.ts';
import { dom0Pages, gpa, pattern, useTempFiles } from './dma-helpers.ts';

const tempFile = useTempFiles('xents-host-dma-');

interface Rig { dom0: Dom; u: Dom; dma: HostDma }

/** Dom0 (`dom0MiB` of RAM) and one DomU that grants it pages. */
async function rig(dom0MiB = 1): Promise<Rig> {
  const m = new TestMachine({}, dom0MiB);
  const dom0 = domOf(m, 0, m.dom0.ctx.slot, m.dom0);
  return { dom0, u: await addDomU(m), dma: m.dma };
}

/** A DomU page granted to Dom0 and mapped at Dom0 gfn `at`. */
function grantMapped(r: Rig, at: number, o: { readonly?: boolean; fill?: number; uGfn?: number } = {}): { uGfn: number } {
  const uGfn = o.uGfn ?? r.u.page(o.fill ?? 0x33);
  const ref = r.u.gt.grantAccess(0, uGfn, o.readonly ?? false);
  const mp = r.dom0.gt.map(r.u.domid, ref, { gfn: at, readonly: o.readonly ?? false });
  expect(mp.status).toBe(GNTST_okay);
  return { uGfn };
}

/**
 * Two DomU pages (filled `fillA`, `fillB`) mapped at Dom0 gfns HOLE_GFN_BASE
 * (a) and HOLE_GFN_BASE + 1 (b) such that b's frame does not follow a's: a
 * guest range across the two gfns crosses between frames that are not adjacent.
 */
function scatteredPair(r: Rig, fillA: number, fillB: number): { a: { uGfn: number }; b: { uGfn: number } } {
  const p = r.u.page(fillA);
  const q = r.u.page(fillB);
  const [pa, pb] = r.u.mfn(q) === r.u.mfn(p) + 1 ? [q, p] : [p, q];
  if (pa !== p) {
    r.u.v.api.mem.fill(gpa(pa), PAGE_SIZE, fillA);
    r.u.v.api.mem.fill(gpa(pb), PAGE_SIZE, fillB);
  }
  const a = grantMapped(r, HOLE_GFN_BASE, { uGfn: pa });
  const b = grantMapped(r, HOLE_GFN_BASE + 1, { uGfn: pb });
  expect(r.dom0.mfn(HOLE_GFN_BASE + 1)).not.toBe(r.dom0.mfn(HOLE_GFN_BASE) + 1);
  return { a, b };
}

const concat = (...bs: Uint8Array[]): Uint8Array => {
  const out = new Uint8Array(bs.reduce((n, b) => n + b.length, 0));
  let at = 0;
  for (const b of bs) { out.set(b, at); at += b.length; }
  return out;
};

describe('HostDma.preadv', () => {
  it('fills one page from a file offset, and nothing around it', async () => {
    const r = await rig();
    const data = pattern(3 * PAGE_SIZE);
    const { fd } = tempFile(data);
    const g = dom0Pages(r.dom0, 3);
    expect(r.dma.preadv(fd, [{ gpa: gpa(g + 1), len: PAGE_SIZE }], 100)).toBe(PAGE_SIZE);
    expect(r.dom0.read(g + 1)).toEqual(data.subarray(100, 100 + PAGE_SIZE));
    expect(r.dom0.read(g)).toEqual(new Uint8Array(PAGE_SIZE).fill(0xee));
    expect(r.dom0.read(g + 2)).toEqual(new Uint8Array(PAGE_SIZE).fill(0xee));
  });

  it('fills an unaligned range across pages', async () => {
    const r = await rig();
    const data = pattern(4 * PAGE_SIZE, 7);
    const { fd } = tempFile(data);
    const g = dom0Pages(r.dom0, 4);
    const len = 2 * PAGE_SIZE + 300;
    expect(r.dma.preadv(fd, [{ gpa: gpa(g, 4000), len }], 5)).toBe(len);
    expect(r.dom0.v.api.mem.read(gpa(g, 4000), len)).toEqual(data.subarray(5, 5 + len));
    expect(r.dom0.v.api.mem.read(gpa(g), 4000)).toEqual(new Uint8Array(4000).fill(0xee));
    expect(r.dom0.v.api.mem.readU8(gpa(g, 4000) + len)).toBe(0xee);
  });

  it('fills scattered ranges in order: Dom0 RAM and granted DomU pages on frames that are not adjacent', async () => {
    const r = await rig();
    const data = pattern(6 * PAGE_SIZE, 99);
    const { fd } = tempFile(data);
    const g = dom0Pages(r.dom0, 2);
    const { a, b } = scatteredPair(r, 0x22, 0x11);
    const ranges: GuestRange[] = [
      { gpa: gpa(g, 10), len: 5000 }, // crosses into g + 1
      { gpa: gpa(HOLE_GFN_BASE, 2048), len: PAGE_SIZE }, // crosses from one DomU frame to the other
      { gpa: gpa(g + 1, 3000), len: 0 },
      { gpa: gpa(g + 1, 4000), len: 96 },
    ];
    const total = 5000 + PAGE_SIZE + 96;
    expect(r.dma.preadv(fd, ranges, 1234)).toBe(total);
    const f = data.subarray(1234);
    expect(r.dom0.v.api.mem.read(gpa(g, 10), 5000)).toEqual(f.subarray(0, 5000));
    expect(r.dom0.v.api.mem.read(gpa(HOLE_GFN_BASE, 2048), PAGE_SIZE)).toEqual(f.subarray(5000, 5000 + PAGE_SIZE));
    expect(r.dom0.v.api.mem.read(gpa(g + 1, 4000), 96)).toEqual(f.subarray(5000 + PAGE_SIZE, total));
    // The DomU sees the data in its own pages: the mapping is its frame, not a copy.
    expect(r.u.read(a.uGfn, 2048, 2048)).toEqual(f.subarray(5000, 5000 + 2048));
    expect(r.u.read(a.uGfn, 0, 2048)).toEqual(new Uint8Array(2048).fill(0x22));
    expect(r.u.read(b.uGfn, 0, 2048)).toEqual(f.subarray(5000 + 2048, 5000 + PAGE_SIZE));
    expect(r.u.read(b.uGfn, 2048, 2048)).toEqual(new Uint8Array(2048).fill(0x11));
  });

  it('turns 256 machine-contiguous pages into one 1 MiB transfer, and scattered frames into one iovec each', async () => {
    const r = await rig(2);
    const data = pattern(1 << 20, 3);
    const { fd } = tempFile(data);
    const n = 256;
    const g = dom0Pages(r.dom0, n);
    const read = vi.spyOn(fs, 'readSync');
    const readv = vi.spyOn(fs, 'readvSync');
    const pages = Array.from({ length: n }, (_, i) => ({ gpa: gpa(g + i), len: PAGE_SIZE }));
    expect(r.dma.preadv(fd, pages, 0)).toBe(n * PAGE_SIZE);
    expect(read).toHaveBeenCalledTimes(1);
    expect((read.mock.calls[0] as unknown[])[3]).toBe(n * PAGE_SIZE); // (fd, mem8, offset, length, position)
    expect(readv).not.toHaveBeenCalled();
    // (Buffer.equals: a deep toEqual of 1 MiB takes seconds.)
    expect(Buffer.from(r.dom0.v.api.mem.read(gpa(g), n * PAGE_SIZE)).equals(data.subarray(0, n * PAGE_SIZE))).toBe(true);
    read.mockClear();
    // Scattered: g, then a grant-mapped frame, then g + 1 — three iovecs (g and g + 1 are not merged across the middle).
    grantMapped(r, HOLE_GFN_BASE);
    expect(r.dma.preadv(fd, [{ gpa: gpa(g), len: PAGE_SIZE }, { gpa: gpa(HOLE_GFN_BASE), len: PAGE_SIZE }, { gpa: gpa(g + 1), len: PAGE_SIZE }], 0)).toBe(3 * PAGE_SIZE);
    expect(read).not.toHaveBeenCalled();
    expect(readv).toHaveBeenCalledTimes(1);
    expect((readv.mock.calls[0]![1] as Uint8Array[]).map((v) => v.length)).toEqual([PAGE_SIZE, PAGE_SIZE, PAGE_SIZE]);
  });

  it('stops at end of file: returns the short count and leaves the rest of the ranges alone', async () => {
    const r = await rig();
    const data = pattern(6000, 5);
    const { fd } = tempFile(data);
    const g = dom0Pages(r.dom0, 2);
    grantMapped(r, HOLE_GFN_BASE, { fill: 0x44 });
    const ranges = [{ gpa: gpa(g), len: 2 * PAGE_SIZE }, { gpa: gpa(HOLE_GFN_BASE), len: 100 }];
    expect(r.dma.preadv(fd, ranges, 0)).toBe(6000);
    expect(r.dom0.v.api.mem.read(gpa(g), 6000)).toEqual(data);
    expect(r.dom0.v.api.mem.read(gpa(g, 6000), 2 * PAGE_SIZE - 6000)).toEqual(new Uint8Array(2 * PAGE_SIZE - 6000).fill(0xee));
    expect(r.dom0.read(HOLE_GFN_BASE, 0, 100)).toEqual(new Uint8Array(100).fill(0x44));
    // Past the end, and the multi-iovec path at end of file.
    expect(r.dma.preadv(fd, ranges, 6000)).toBe(0);
    expect(r.dma.preadv(fd, ranges, 7000)).toBe(0);
    expect(r.dma.preadv(fd, [{ gpa: gpa(HOLE_GFN_BASE), len: 100 }, { gpa: gpa(g), len: 100 }], 5950)).toBe(50);
    expect(r.dom0.read(HOLE_GFN_BASE, 0, 50)).toEqual(data.subarray(5950));
    expect(r.dom0.read(HOLE_GFN_BASE, 50, 50)).toEqual(new Uint8Array(50).fill(0x44));
  });

  it('carries on after short reads, in the single- and multi-iovec paths', async () => {
    const r = await rig();
    const data = pattern(4 * PAGE_SIZE, 11);
    const { fd } = tempFile(data);
    const g = dom0Pages(r.dom0, 3);
    grantMapped(r, HOLE_GFN_BASE);
    const realReadv = fs.readvSync;
    const realRead = fs.readSync;
    // The kernel may return less than asked: at most 1000 bytes per call.
    const readv = vi.spyOn(fs, 'readvSync').mockImplementation((f, bufs, pos) => {
      const out: Uint8Array[] = [];
      let left = 1000;
      for (const b of bufs as Uint8Array[]) {
        if (left === 0) break;
        const v = b.subarray(0, Math.min(left, b.length));
        out.push(v);
        left -= v.length;
      }
      return realReadv(f, out, pos);
    });
    vi.spyOn(fs, 'readSync').mockImplementation(((f: number, b: Uint8Array, off: number, len: number, pos: number) =>
      realRead(f, b, off, Math.min(len, 999), pos)) as typeof fs.readSync);
    const ranges = [{ gpa: gpa(g, 1), len: 2 * PAGE_SIZE }, { gpa: gpa(HOLE_GFN_BASE, 3), len: 1500 }, { gpa: gpa(g + 2, 7), len: 10 }];
    const total = 2 * PAGE_SIZE + 1500 + 10;
    expect(r.dma.preadv(fd, ranges, 17)).toBe(total);
    expect(readv.mock.calls.length).toBe(Math.ceil(total / 1000));
    const f = data.subarray(17);
    expect(r.dom0.v.api.mem.read(gpa(g, 1), 2 * PAGE_SIZE)).toEqual(f.subarray(0, 2 * PAGE_SIZE));
    expect(r.dom0.v.api.mem.read(gpa(HOLE_GFN_BASE, 3), 1500)).toEqual(f.subarray(2 * PAGE_SIZE, 2 * PAGE_SIZE + 1500));
    expect(r.dom0.v.api.mem.read(gpa(g + 2, 7), 10)).toEqual(f.subarray(2 * PAGE_SIZE + 1500, total));
    // One extent: readSync in 999-byte steps.
    expect(r.dma.preadv(fd, [{ gpa: gpa(g, 5), len: 3 * PAGE_SIZE - 5 }], 2)).toBe(3 * PAGE_SIZE - 5);
    expect(r.dom0.v.api.mem.read(gpa(g, 5), 3 * PAGE_SIZE - 5)).toEqual(data.subarray(2, 2 + 3 * PAGE_SIZE - 5));
  });

  it('fills a page through its writable grant mapping, and refuses a read-only one before any I/O', async () => {
    const r = await rig();
    const data = pattern(2 * PAGE_SIZE, 21);
    const { fd } = tempFile(data);
    const g = dom0Pages(r.dom0, 1);
    const rw = grantMapped(r, HOLE_GFN_BASE, { fill: 0x55 });
    const ro = grantMapped(r, HOLE_GFN_BASE + 1, { readonly: true, fill: 0x66 });
    expect(r.dma.preadv(fd, [{ gpa: gpa(HOLE_GFN_BASE), len: 16 }], 0)).toBe(16);
    expect(r.u.read(rw.uGfn, 0, 16)).toEqual(data.subarray(0, 16));
    const ranges = [{ gpa: gpa(g), len: PAGE_SIZE }, { gpa: gpa(HOLE_GFN_BASE + 1, 8), len: 8 }];
    const read = vi.spyOn(fs, 'readSync');
    const readv = vi.spyOn(fs, 'readvSync');
    const e = catchFault(() => r.dma.preadv(fd, ranges, 0));
    expect(e.gpa).toBe(gpa(HOLE_GFN_BASE + 1, 8));
    expect(e.write).toBe(true);
    expect(read).not.toHaveBeenCalled();
    expect(readv).not.toHaveBeenCalled();
    expect(r.dom0.read(g)).toEqual(new Uint8Array(PAGE_SIZE).fill(0xee));
    expect(r.u.read(ro.uGfn)).toEqual(new Uint8Array(PAGE_SIZE).fill(0x66));
  });
});

function catchFault(fn: () => unknown): GuestFault {
  try {
    fn();
  } catch (e) {
    expect(e).toBeInstanceOf(GuestFault);
    return e as GuestFault;
  }
  throw new Error('expected a GuestFault');
}

describe('HostDma refusals: nothing read, nothing written', () => {
  const FILE_BYTES = 3 * PAGE_SIZE;

  async function refusalRig(): Promise<{ r: Rig; g: number; fd: number; file: string; data: Uint8Array; noIo: () => void }> {
    const r = await rig();
    const data = pattern(FILE_BYTES, 31);
    const { fd, file } = tempFile(data);
    const g = dom0Pages(r.dom0, 2);
    const spies = (['readSync', 'readvSync', 'writeSync', 'writevSync'] as const).map((k) => vi.spyOn(fs, k));
    const noIo = (): void => {
      for (const s of spies) expect(s).not.toHaveBeenCalled();
      expect(fs.readFileSync(file)).toEqual(Buffer.from(data));
      for (const s of spies) s.mockClear(); // readFileSync reads through fs.readSync
      expect(r.dom0.v.api.mem.read(gpa(g), 2 * PAGE_SIZE)).toEqual(new Uint8Array(2 * PAGE_SIZE).fill(0xee));
    };
    return { r, g, fd, file, data, noIo };
  }

  it('an unmapped gfn anywhere in the ranges: GuestFault at the first bad address', async () => {
    const { r, g, fd, noIo } = await refusalRig();
    const hole = HOLE_GFN_BASE + 7;
    grantMapped(r, HOLE_GFN_BASE, { fill: 0x99 });
    for (const op of ['preadv', 'pwritev'] as const) {
      const write = op === 'preadv';
      // A range that runs off the end of mapped memory faults at the page boundary.
      let e = catchFault(() => r.dma[op](fd, [{ gpa: gpa(g), len: 10 }, { gpa: gpa(hole, 100), len: 10 }], 0));
      expect([e.gpa, e.write]).toEqual([gpa(hole, 100), write]);
      e = catchFault(() => r.dma[op](fd, [{ gpa: gpa(g), len: 8 }, { gpa: gpa(HOLE_GFN_BASE, 4000), len: 200 }], 0));
      expect([e.gpa, e.write]).toEqual([gpa(HOLE_GFN_BASE + 1), write]);
      noIo();
    }
  });

  it('negative, fractional, non-number or overflowing gpa and len: GuestFault', async () => {
    const { r, g, fd, noIo } = await refusalRig();
    const bad: Array<[unknown, unknown]> = [
      [-1, 10], [gpa(g) + 0.5, 10], [NaN, 10], [Infinity, 10], ['4096', 10], [undefined, 10],
      [gpa(g), -1], [gpa(g), 1.5], [gpa(g), NaN], [gpa(g), '10'], [gpa(g), Number.MAX_SAFE_INTEGER],
      [2 ** 53, 0], [-0.5, 0],
    ];
    for (const [a, len] of bad) {
      for (const op of ['preadv', 'pwritev'] as const) {
        const ranges = [{ gpa: gpa(g), len: 100 }, { gpa: a, len } as unknown as GuestRange];
        expect(() => r.dma[op](fd, ranges, 0), `${String(a)}, ${String(len)}`).toThrow(GuestFault);
      }
    }
    noIo();
  });

  it('negative, fractional or non-number fd and position: RangeError; not an array of ranges: TypeError', async () => {
    const { r, g, fd, noIo } = await refusalRig();
    const ok = [{ gpa: gpa(g), len: 100 }];
    for (const op of ['preadv', 'pwritev'] as const) {
      for (const badFd of [-1, 1.5, NaN, 2 ** 31, '3']) expect(() => r.dma[op](badFd as number, ok, 0)).toThrow(RangeError);
      for (const pos of [-1, 0.5, NaN, Infinity, 2 ** 53, '0', undefined]) expect(() => r.dma[op](fd, ok, pos as number)).toThrow(RangeError);
      expect(() => r.dma[op](fd, ok, Number.MAX_SAFE_INTEGER - 50)).toThrow(RangeError);
      expect(() => r.dma[op](fd, { 0: ok[0], length: 1 } as unknown as GuestRange[], 0)).toThrow(TypeError);
      expect(() => r.dma[op](fd, [null as unknown as GuestRange], 0)).toThrow(TypeError);
    }
    noIo();
  });

  it('host errors come back as Node errors (blkback answers BLKIF_RSP_ERROR)', async () => {
    const r = await rig();
    const g = dom0Pages(r.dom0, 1);
    const { fd, file } = tempFile(new TextEncoder().encode('x'), false);
    fs.closeSync(fd);
    expect(() => r.dma.preadv(fd, [{ gpa: gpa(g), len: 10 }], 0)).toThrow(expect.objectContaining({ code: 'EBADF' }));
    const ro = fs.openSync(file, 'r');
    onTestFinished(() => fs.closeSync(ro));
    expect(() => r.dma.pwritev(ro, [{ gpa: gpa(g), len: 10 }], 0)).toThrow(expect.objectContaining({ code: 'EBADF' }));
  });

  it('a range whose getter calls back into the capability cannot change what the outer call validated', async () => {
    // Regression: the translation plan is reused between calls; a re-entrant
    // call must not reset it under the outer one (which could then do I/O on
    // pages it never checked, e.g. read into a read-only grant mapping).
    const r = await rig();
    const data = pattern(2 * PAGE_SIZE, 41);
    const { fd } = tempFile(data);
    const g = dom0Pages(r.dom0, 3);
    const ro = grantMapped(r, HOLE_GFN_BASE, { readonly: true, fill: 0x77 });
    const sneaky = {
      len: 8,
      get gpa(): number {
        r.dma.pwritev(fd, [{ gpa: gpa(HOLE_GFN_BASE), len: 8 }], PAGE_SIZE); // legal on its own: reads the ro page
        return gpa(g + 2);
      },
    };
    expect(r.dma.preadv(fd, [{ gpa: gpa(g), len: 16 }, sneaky], 0)).toBe(24);
    expect(r.dom0.v.api.mem.read(gpa(g), 16)).toEqual(data.subarray(0, 16));
    expect(r.dom0.v.api.mem.read(gpa(g + 2), 8)).toEqual(data.subarray(16, 24));
    expect(r.u.read(ro.uGfn)).toEqual(new Uint8Array(PAGE_SIZE).fill(0x77));
    expect(r.dom0.v.api.mem.read(gpa(g + 1), PAGE_SIZE)).toEqual(new Uint8Array(PAGE_SIZE).fill(0xee));
  });
});

describe('HostDma.pwritev', () => {
  it('writes scattered ranges in order and reads them back (round trip), from read-only grants too', async () => {
    const r = await rig();
    const { fd, file } = tempFile(new Uint8Array(10).fill(0xaa));
    const g = dom0Pages(r.dom0, 3);
    const src = pattern(3 * PAGE_SIZE, 51);
    r.dom0.v.api.mem.write(gpa(g), src);
    const ro = grantMapped(r, HOLE_GFN_BASE, { readonly: true, fill: 0x5c });
    const ranges = [{ gpa: gpa(g, 100), len: 5000 }, { gpa: gpa(HOLE_GFN_BASE, 4000), len: 96 }, { gpa: gpa(g + 2, 10), len: 20 }];
    const total = 5000 + 96 + 20;
    expect(r.dma.pwritev(fd, ranges, 4)).toBe(total);
    const expected = concat(new Uint8Array(4).fill(0xaa), src.subarray(100, 5100), new Uint8Array(96).fill(0x5c), src.subarray(2 * PAGE_SIZE + 10, 2 * PAGE_SIZE + 30));
    expect(new Uint8Array(fs.readFileSync(file))).toEqual(expected);
    expect(r.u.read(ro.uGfn)).toEqual(new Uint8Array(PAGE_SIZE).fill(0x5c));
    // And back into other pages, split differently.
    const h = dom0Pages(r.dom0, 2, 0);
    expect(r.dma.preadv(fd, [{ gpa: gpa(h, 3), len: 7 }, { gpa: gpa(h, 4090), len: total - 7 }], 4)).toBe(total);
    expect(r.dom0.v.api.mem.read(gpa(h, 3), 7)).toEqual(expected.subarray(4, 11));
    expect(r.dom0.v.api.mem.read(gpa(h, 4090), total - 7)).toEqual(expected.subarray(11));
  });

  it('carries on after short writes', async () => {
    const r = await rig();
    const { fd, file } = tempFile();
    const g = dom0Pages(r.dom0, 2);
    const src = pattern(2 * PAGE_SIZE, 61);
    r.dom0.v.api.mem.write(gpa(g), src);
    grantMapped(r, HOLE_GFN_BASE, { fill: 0x12 });
    const realWritev = fs.writevSync;
    const realWrite = fs.writeSync;
    vi.spyOn(fs, 'writevSync').mockImplementation((f, bufs, pos) => realWritev(f, [(bufs as Uint8Array[])[0]!.subarray(0, 700)], pos));
    vi.spyOn(fs, 'writeSync').mockImplementation(((f: number, b: Uint8Array, off: number, len: number, pos: number) =>
      realWrite(f, b, off, Math.min(len, 333), pos)) as typeof fs.writeSync);
    expect(r.dma.pwritev(fd, [{ gpa: gpa(g, 1), len: 2 * PAGE_SIZE - 1 }, { gpa: gpa(HOLE_GFN_BASE), len: 50 }], 0)).toBe(2 * PAGE_SIZE + 49);
    expect(new Uint8Array(fs.readFileSync(file))).toEqual(concat(src.subarray(1), new Uint8Array(50).fill(0x12)));
    expect(r.dma.pwritev(fd, [{ gpa: gpa(g), len: 2 * PAGE_SIZE }], 10_000)).toBe(2 * PAGE_SIZE);
    expect(new Uint8Array(fs.readFileSync(file)).subarray(10_000)).toEqual(src);
  });

  it('an empty list or empty ranges do nothing and return 0', async () => {
    const r = await rig();
    const { fd, file } = tempFile(new Uint8Array([1, 2, 3]));
    expect(r.dma.pwritev(fd, [], 0)).toBe(0);
    expect(r.dma.pwritev(fd, [{ gpa: gpa(HOLE_GFN_BASE + 9), len: 0 }], 0)).toBe(0);
    expect(r.dma.preadv(fd, [], 0)).toBe(0);
    expect(new Uint8Array(fs.readFileSync(file))).toEqual(new Uint8Array([1, 2, 3]));
  });
});

describe('planIovecs (pure)', () => {
  it('merges machine-adjacent pieces and keeps the others apart', () => {
    expect(planIovecs([])).toEqual([]);
    expect(planIovecs([{ ma: 0x5000, len: 0 }])).toEqual([]);
    expect(planIovecs([{ ma: 0x5000, len: 10 }, { ma: 0x500a, len: 6 }, { ma: 0x9000, len: 4 }, { ma: 0x9004, len: 0 }, { ma: 0x9004, len: 1 }]))
      .toEqual([{ ma: 0x5000, len: 16 }, { ma: 0x9000, len: 5 }]);
    // Backwards neighbours are not merged: the file order is the iovec order.
    expect(planIovecs([{ ma: 0x2000, len: 0x1000 }, { ma: 0x1000, len: 0x1000 }])).toHaveLength(2);
  });

  it('256 contiguous 4 KiB pages become one iovec', () => {
    const pieces = Array.from({ length: 256 }, (_, i) => ({ ma: 0x40000 + i * PAGE_SIZE, len: PAGE_SIZE }));
    expect(planIovecs(pieces)).toEqual([{ ma: 0x40000, len: 256 * PAGE_SIZE }]);
  });

  it('never makes an iovec longer than MAX_EXTENT', () => {
    const pieces = [{ ma: 0, len: MAX_EXTENT - 10 }, { ma: MAX_EXTENT - 10, len: 20 }, { ma: MAX_EXTENT + 10, len: 5 }];
    expect(planIovecs(pieces)).toEqual([{ ma: 0, len: MAX_EXTENT - 10 }, { ma: MAX_EXTENT - 10, len: 25 }]);
  });

  /** Pieces as the translation makes them: within a page, often machine-adjacent to the previous one. */
  const piecesArb = fc.array(
    fc.record({ adjacent: fc.boolean(), page: fc.integer({ min: 0, max: 64 }), off: fc.integer({ min: 0, max: PAGE_SIZE }), len: fc.integer({ min: 0, max: PAGE_SIZE }) }),
    { maxLength: 60 },
  ).map((xs) => {
    const out: Extent[] = [];
    let next = 0;
    for (const x of xs) {
      const ma = x.adjacent ? next : x.page * PAGE_SIZE + x.off;
      out.push({ ma, len: x.len });
      next = ma + x.len;
    }
    return out;
  });
  /** The machine address of every byte, in transfer order. */
  const bytes = (es: readonly Extent[]): number[] => es.flatMap((e) => Array.from({ length: e.len }, (_, i) => e.ma + i));

  it('property: total length and byte order preserved; no empty iovec; no two neighbours contiguous', () => {
    fc.assert(fc.property(piecesArb, (pieces) => {
      const plan = planIovecs(pieces);
      expect(plan.reduce((n, e) => n + e.len, 0)).toBe(pieces.reduce((n, e) => n + e.len, 0));
      expect(bytes(plan)).toEqual(bytes(pieces));
      for (const e of plan) expect(e.len).toBeGreaterThan(0);
      for (let i = 1; i < plan.length; i++) expect(plan[i - 1]!.ma + plan[i - 1]!.len).not.toBe(plan[i]!.ma);
    }), { numRuns: 300 });
  });

  it('property: a reused IovecPlan gives the same plan as a fresh one', () => {
    const plan = new IovecPlan();
    fc.assert(fc.property(piecesArb, (pieces) => {
      plan.reset();
      for (const p of pieces) plan.push(p.ma, p.len);
      expect(plan.extents()).toEqual(planIovecs(pieces));
      expect(plan.total).toBe(pieces.reduce((n, e) => n + e.len, 0));
    }), { numRuns: 200 });
  });
});

/** Views of `len` bytes at each of `offsets` into an ArrayBuffer and into a SharedArrayBuffer. */
function placedViews(offsets: readonly number[], len: number): Uint8Array[] {
  const backing = new ArrayBuffer(1024);
  const shared = new SharedArrayBuffer(1024);
  return offsets.flatMap((at) => [new Uint8Array(backing, at, len), new Uint8Array(shared, at, len)]);
}

/** A rig whose Dom0 has two adjacent pages at gfn `g` holding `src` (a pattern from `seed`). */
async function twoPatternedPages(seed: number) {
  const r = await rig();
  const mem = r.dom0.v.api.mem;
  const g = dom0Pages(r.dom0, 2);
  const src = pattern(2 * PAGE_SIZE, seed);
  mem.write(gpa(g), src);
  return { r, mem, g, src };
}

describe('GuestMemory.readInto', () => {
  it('copies within a page, across pages and across frames that are not adjacent, into the caller\'s buffer', async () => {
    const { r, mem, g, src } = await twoPatternedPages(71);
    const dst = new Uint8Array(5000);
    mem.readInto(gpa(g, 100), dst);
    expect(dst).toEqual(src.subarray(100, 5100));
    // Into part of a larger buffer (a subarray view).
    const big = new Uint8Array(64).fill(9);
    mem.readInto(gpa(g, PAGE_SIZE - 3), big.subarray(10, 16));
    expect(Array.from(big.subarray(8, 18))).toEqual([9, 9, ...src.subarray(PAGE_SIZE - 3, PAGE_SIZE + 3), 9, 9]);
    scatteredPair(r, 0xa0, 0xb1);
    const across = new Uint8Array(200);
    mem.readInto(gpa(HOLE_GFN_BASE, PAGE_SIZE - 100), across);
    expect(across).toEqual(concat(new Uint8Array(100).fill(0xa0), new Uint8Array(100).fill(0xb1)));
    expect(across).toEqual(mem.read(gpa(HOLE_GFN_BASE, PAGE_SIZE - 100), 200));
    mem.readInto(gpa(HOLE_GFN_BASE), new Uint8Array(0));
  });

  it('property: any offset, length and destination placement reads what read() returns (word, byte and bulk copies; destinations reused and alternated)', async () => {
    const { mem, g, src } = await twoPatternedPages(13);
    // A few destinations, reused across runs: readInto keeps word views of
    // the last two it copied into by words, so alternating them matters; and
    // two fixed parts of each (blkback copies an entry's head, then the rest).
    const dsts = placedViews([0, 4, 5, 8], 300);
    const parts = dsts.map((d) => [d.subarray(0, 32), d.subarray(32, 112), d.subarray(8, 24)]);
    fc.assert(fc.property(
      fc.integer({ min: 0, max: 2 * PAGE_SIZE - 300 }), fc.integer({ min: 0, max: 300 }), fc.integer({ min: 0, max: dsts.length - 1 }),
      fc.constantFrom('whole', 'fresh', 'part'),
      (off, n, which, kind) => {
        // 'whole': the same destination object again (as blkback's entry copy was); 'part': one of its fixed parts.
        const whole = dsts[which]!;
        const dst = kind === 'whole' ? whole : kind === 'fresh' ? whole.subarray(0, n) : parts[which]![n % 3]!;
        const at = dst.byteOffset - whole.byteOffset;
        const len = dst.length;
        whole.fill(0xee);
        mem.readInto(gpa(g, off), dst);
        expect(dst).toEqual(src.subarray(off, off + len));
        // Nothing written outside the destination.
        expect(whole.subarray(0, at).every((b) => b === 0xee)).toBe(true);
        expect(whole.subarray(at + len).every((b) => b === 0xee)).toBe(true);
      }), { numRuns: 600 });
  });

  it('faults at the first unmapped address, leaving the buffer untouched', async () => {
    const r = await rig();
    const mem = r.dom0.v.api.mem;
    const dst = new Uint8Array(300).fill(0xcd);
    grantMapped(r, HOLE_GFN_BASE, { fill: 1 });
    const e = catchFault(() => mem.readInto(gpa(HOLE_GFN_BASE, PAGE_SIZE - 100), dst));
    expect([e.gpa, e.write]).toEqual([gpa(HOLE_GFN_BASE + 1), false]);
    expect(dst).toEqual(new Uint8Array(300).fill(0xcd));
    expect(() => mem.readInto(-1, dst)).toThrow(GuestFault);
    expect(() => mem.readInto(1.5, dst)).toThrow(GuestFault);
    expect(() => mem.readInto(gpa(HOLE_GFN_BASE + 5), dst)).toThrow(GuestFault);
    expect(() => mem.readInto(0, [1, 2] as unknown as Uint8Array)).toThrow(TypeError);
    expect(dst).toEqual(new Uint8Array(300).fill(0xcd));
  });
});

describe('GuestMemory.write', () => {
  it('property: any offset, length and source placement writes exactly those bytes (short and long pieces, across pages, sources of any alignment)', async () => {
    const r = await rig();
    const mem = r.dom0.v.api.mem;
    const g = dom0Pages(r.dom0, 2, 0);
    const image = new Uint8Array(2 * PAGE_SIZE);
    const srcs = placedViews([0, 4, 6, 16], 300);
    // Fixed parts of each source too: write keeps word views of the last two sources it copied by words.
    const parts = srcs.map((d) => [d.subarray(0, 16), d.subarray(16, 48), d.subarray(4, 12)]);
    let seed = 1;
    fc.assert(fc.property(
      fc.integer({ min: 0, max: 2 * PAGE_SIZE - 300 }), fc.integer({ min: 0, max: 300 }), fc.integer({ min: 0, max: srcs.length - 1 }),
      fc.constantFrom('whole', 'fresh', 'part'),
      (off, n, which, kind) => {
        const src = kind === 'whole' ? srcs[which]! : kind === 'fresh' ? srcs[which]!.subarray(0, n) : parts[which]![n % 3]!;
        src.set(pattern(src.length, seed++));
        mem.write(gpa(g, off), src);
        image.set(src, off);
        expect(mem.read(gpa(g), 2 * PAGE_SIZE)).toEqual(image);
      }), { numRuns: 500 });
  });

  it('refuses a read-only grant mapping and an unmapped page with a fault, writing nothing', async () => {
    const r = await rig();
    const mem = r.dom0.v.api.mem;
    const ro = grantMapped(r, HOLE_GFN_BASE, { readonly: true, fill: 0x5a });
    const entry = pattern(112, 9); // a ring entry
    for (const at of [0, 64, PAGE_SIZE - 112]) {
      const e = catchFault(() => mem.write(gpa(HOLE_GFN_BASE, at), entry));
      expect([e.gpa, e.write]).toEqual([gpa(HOLE_GFN_BASE, at), true]);
    }
    expect(r.u.read(ro.uGfn)).toEqual(new Uint8Array(PAGE_SIZE).fill(0x5a));
    const e = catchFault(() => mem.write(gpa(HOLE_GFN_BASE + 5, 16), entry));
    expect([e.gpa, e.write]).toEqual([gpa(HOLE_GFN_BASE + 5, 16), true]);
    expect(() => mem.write(-4, entry)).toThrow(GuestFault);
    expect(() => mem.write(0.5, entry)).toThrow(GuestFault);
    expect(() => mem.write(0, Array.from(entry) as unknown as Uint8Array)).toThrow(TypeError);
  });
});
