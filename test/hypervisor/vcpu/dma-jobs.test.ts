/**
 * Host DMA jobs (hypervisor/vcpu/dma-jobs.ts) through Dom0's HostDma
 * (host-dma.ts submit / reap / drain) on real temp files: a job is checked
 * before it is queued (and refused exactly as preadv/pwritev refuse), runs
 * only when some thread takes it (a vCPU at its preemption point, the owner in
 * drain, or a real other thread), its callback runs once, on the owner, with
 * the byte count or a negative errno, and its slot comes back free. Nothing is
 * lost (every accepted job's callback runs) and nothing leaks (G.DMA_QUEUED,
 * `pending` and every slot back to zero / free).
 *
 * Dom0 of the TestMachine is 1 MiB in slot 0, gfn g on mfn g + 1; the DomU is
 * in slot 1 and its vCPU 0 plays "another domain's vCPU at a preemption
 * point" (runtime.ts explicitPreemptionPoint calls dmaRunQueued(hv, slot, vcpu)).
 */
import fs from 'node:fs';
import os from 'node:os';
import { Worker } from 'node:worker_threads';
import { describe, expect, it, vi } from 'vitest';
import { GNTST_okay } from '../../../shared/abi/grant-table.ts';
import { GuestFault, type GuestRange, type HostDma } from '../../../shared/guest/api.ts';
import { PAGE_SIZE } from '../../../shared/types.ts';
import {
  D, DJS_DONE, DJS_FREE, DJS_QUEUED, DJS_RUNNING, DMA_MAX_EXTENTS, DMA_SLOTS, G, V, VTHREAD_EXITED, VTHREAD_RUNNING, type HvState,
} from '../../../hypervisor/state.ts';
import { dmaJobRunner, dmaJobState, dmaRunOwn, dmaRunQueued, dmaRunTaken, dmaTake } from '../../../hypervisor/vcpu/dma-jobs.ts';
import { makeHostDma } from '../../../hypervisor/vcpu/host-dma.ts';
import { TestMachine } from '../../helpers/machine.ts';
import { addDomU, domOf, HOLE_GFN_BASE, type Dom } from '../gnttab/helpers.ts';
import type { DmaRunnerData } from './dma-runner.ts';
import { dom0Pages, gpa, pattern, useTempFiles } from './dma-helpers.ts';

const tempFile = useTempFiles('xents-dma-jobs-');
const fill = (n: number, byte: number): Uint8Array => new Uint8Array(n).fill(byte);

interface Rig { m: TestMachine; hv: HvState; dom0: Dom; u: Dom; dma: HostDma }

/** Dom0 and one DomU (whose vCPU 0 runs other domains' jobs in these tests). */
async function rig(): Promise<Rig> {
  const m = new TestMachine();
  const dom0 = domOf(m, 0, m.dom0.ctx.slot, m.dom0);
  return { m, hv: m.hv, dom0, u: await addDomU(m), dma: m.dma };
}

/** A DomU page (every byte `byte`) granted to Dom0 and mapped at Dom0 gfn `at`. */
function grantMapped(r: Rig, at: number, readonly: boolean, byte: number): { uGfn: number } {
  const uGfn = r.u.page(byte);
  const ref = r.u.gt.grantAccess(0, uGfn, readonly);
  const mp = r.dom0.gt.map(r.u.domid, ref, { gfn: at, readonly });
  expect(mp.status).toBe(GNTST_okay);
  return { uGfn };
}

const g = (hv: HvState, w: number): number => Atomics.load(hv.g, w);
const states = (hv: HvState): number[] => Array.from({ length: DMA_SLOTS }, (_, i) => dmaJobState(hv, i));
/** Slots in state `s`. */
const slotsIn = (hv: HvState, s: number): number[] => states(hv).flatMap((x, i) => (x === s ? [i] : []));

/** The engine holds nothing: no job queued, none pending on the capability, every slot free. */
function expectIdle(hv: HvState, dma: HostDma): void {
  expect(g(hv, G.DMA_QUEUED)).toBe(0);
  expect(dma.pending).toBe(0);
  expect(states(hv)).toEqual(Array.from({ length: DMA_SLOTS }, () => DJS_FREE));
}

/** A completion callback that records every result it is given. */
function recorder(): { done: (result: number) => void; results: number[] } {
  const results: number[] = [];
  return { done: (result: number) => { results.push(result); }, results };
}

/**
 * dma.drain(), failing the test instead of hanging it: drain spins until
 * every job is done, so a job nobody will ever finish (a regression in
 * dmaRunOwn) would spin forever on this thread, where no timeout can reach.
 * Every spin makes Atomics.load calls (dmaResult, dmaRunOwn); past `limit` of
 * them the watchdog throws out of drain.
 */
function drainOrFail(dma: HostDma, limit = 200_000): void {
  const real = Atomics.load;
  let n = 0;
  const watchdog = ((...args: unknown[]): unknown => {
    if (++n > limit) throw new Error(`drain() still spinning after ${limit} Atomics.load calls: a job nobody finishes`);
    return Reflect.apply(real, Atomics, args);
  }) as typeof Atomics.load;
  const spy = vi.spyOn(Atomics, 'load').mockImplementation(watchdog);
  try {
    dma.drain();
  } finally {
    spy.mockRestore();
  }
}

/** What `fn` threw (failing if it returned). */
function thrown(fn: () => unknown): Error {
  try {
    fn();
  } catch (e) {
    expect(e).toBeInstanceOf(Error);
    return e as Error;
  }
  throw new Error('expected a throw');
}

describe('HostDma.submit refusals', () => {
  it('refuses exactly what preadv/pwritev refuse, with the same errors, and queues nothing', async () => {
    // Guards: submit checks its arguments as the synchronous calls do (same
    // error class, same fault address) before anything reaches the shared
    // job table; a refused submit leaves no slot reserved (FILLING/QUEUED)
    // and no job counted, and its callback never runs.
    const r = await rig();
    const data = pattern(3 * PAGE_SIZE, 1);
    const { fd, file } = tempFile(data);
    const gp = dom0Pages(r.dom0, 2);
    const ro = grantMapped(r, HOLE_GFN_BASE, true, 0x66);
    const spies = (['readSync', 'readvSync', 'writeSync', 'writevSync'] as const).map((k) => vi.spyOn(fs, k));
    const ok: GuestRange[] = [{ gpa: gpa(gp), len: 100 }];
    const unmapped: GuestRange[] = [{ gpa: gpa(gp), len: 10 }, { gpa: gpa(HOLE_GFN_BASE + 7, 100), len: 10 }];
    const offTheEnd: GuestRange[] = [{ gpa: gpa(HOLE_GFN_BASE, 4000), len: 200 }]; // runs from the mapped page into a hole
    interface Bad { what: string; fd: number; ranges: readonly GuestRange[]; position: number; ops: ReadonlyArray<'read' | 'write'> }
    const both = ['read', 'write'] as const;
    const bad: Bad[] = [
      ...[-1, 1.5, NaN, 2 ** 31, '3'].map((f) => ({ what: `fd ${String(f)}`, fd: f as number, ranges: ok, position: 0, ops: both })),
      ...[-1, 0.5, NaN, Infinity, 2 ** 53, '0', undefined, Number.MAX_SAFE_INTEGER - 50].map((p) =>
        ({ what: `position ${String(p)}`, fd, ranges: ok, position: p as number, ops: both })),
      { what: 'unmapped gfn', fd, ranges: unmapped, position: 0, ops: both },
      { what: 'range running into a hole', fd, ranges: offTheEnd, position: 0, ops: both },
      { what: 'negative gpa', fd, ranges: [{ gpa: -1, len: 10 }], position: 0, ops: both },
      { what: 'NaN len', fd, ranges: [{ gpa: gpa(gp), len: NaN }], position: 0, ops: both },
      // A read writes guest memory: a read-only grant mapping cannot be its destination (a write may read from it).
      { what: 'read into a read-only grant mapping', fd, ranges: [{ gpa: gpa(gp), len: 8 }, { gpa: gpa(HOLE_GFN_BASE, 8), len: 8 }], position: 0, ops: ['read'] },
      { what: 'ranges not an array', fd, ranges: { 0: ok[0], length: 1 } as unknown as GuestRange[], position: 0, ops: both },
      { what: 'null range', fd, ranges: [null as unknown as GuestRange], position: 0, ops: both },
    ];
    const cb = recorder();
    for (const b of bad) {
      for (const op of b.ops) {
        const write = op === 'write';
        const sync = thrown(() => (write ? r.dma.pwritev(b.fd, b.ranges, b.position) : r.dma.preadv(b.fd, b.ranges, b.position)));
        const queued = thrown(() => r.dma.submit(b.fd, b.ranges, b.position, write, cb.done));
        expect(queued.constructor, `${b.what} (${op})`).toBe(sync.constructor);
        expect([RangeError, TypeError, GuestFault]).toContain(sync.constructor);
        if (sync instanceof GuestFault) {
          const q = queued as GuestFault;
          expect([q.gpa, q.write], `${b.what} (${op})`).toEqual([sync.gpa, sync.write]);
        }
        expectIdle(r.hv, r.dma);
      }
    }
    // The callback itself: anything but a function is a TypeError, whatever the rest.
    for (const done of [undefined, null, 42, 'f', {}]) {
      for (const write of [false, true]) {
        expect(() => r.dma.submit(fd, ok, 0, write, done as unknown as (result: number) => void)).toThrow(TypeError);
        expectIdle(r.hv, r.dma);
      }
    }
    expect(cb.results).toEqual([]);
    // No I/O happened, and nothing changed in memory or in the file.
    for (const s of spies) expect(s).not.toHaveBeenCalled();
    expect(r.dom0.v.api.mem.read(gpa(gp), 2 * PAGE_SIZE)).toEqual(fill(2 * PAGE_SIZE, 0xee));
    expect(r.u.read(ro.uGfn)).toEqual(fill(PAGE_SIZE, 0x66));
    expect(new Uint8Array(fs.readFileSync(file))).toEqual(data);
    // And the capability still works after all that.
    expect(r.dma.submit(fd, ok, 5, false, cb.done)).toBe(true);
    drainOrFail(r.dma);
    expect(cb.results).toEqual([100]);
    expect(r.dom0.v.api.mem.read(gpa(gp), 100)).toEqual(data.subarray(5, 105));
    expectIdle(r.hv, r.dma);
  });

  it('more than DMA_MAX_EXTENTS iovecs: false and nothing queued; exactly DMA_MAX_EXTENTS is queued and run', async () => {
    // Guards: a job holds at most DMA_MAX_EXTENTS iovecs in its slot; a plan
    // one longer is refused whole (not truncated, no slot kept), and the
    // boundary itself is accepted. One-byte ranges two bytes apart never merge.
    const r = await rig();
    const data = pattern(2 * PAGE_SIZE, 3);
    const { fd } = tempFile(data);
    const gp = dom0Pages(r.dom0, 1);
    const ranges = (n: number): GuestRange[] => Array.from({ length: n }, (_, k) => ({ gpa: gpa(gp, 2 * k), len: 1 }));
    expect(2 * (DMA_MAX_EXTENTS + 1)).toBeLessThan(PAGE_SIZE);
    const cb = recorder();
    expect(r.dma.submit(fd, ranges(DMA_MAX_EXTENTS + 1), 0, false, cb.done)).toBe(false);
    expectIdle(r.hv, r.dma);
    expect(r.dma.submit(fd, ranges(DMA_MAX_EXTENTS + 1), 0, true, cb.done)).toBe(false);
    expectIdle(r.hv, r.dma);
    expect(r.dma.reap()).toBe(0);
    drainOrFail(r.dma);
    expect(cb.results).toEqual([]);
    expect(r.dom0.read(gp)).toEqual(fill(PAGE_SIZE, 0xee));
    // The most a job holds.
    expect(r.dma.submit(fd, ranges(DMA_MAX_EXTENTS), 10, false, cb.done)).toBe(true);
    drainOrFail(r.dma);
    expect(cb.results).toEqual([DMA_MAX_EXTENTS]);
    const page = r.dom0.read(gp);
    for (let k = 0; k < DMA_MAX_EXTENTS; k++) {
      if (page[2 * k] !== data[10 + k] || page[2 * k + 1] !== 0xee) throw new Error(`byte pair ${k}: ${page[2 * k]}, ${page[2 * k + 1]}`);
    }
    expect(page.subarray(2 * DMA_MAX_EXTENTS)).toEqual(fill(PAGE_SIZE - 2 * DMA_MAX_EXTENTS, 0xee));
    expectIdle(r.hv, r.dma);
  });

  it('DMA_SLOTS jobs pending: the next submit is false and queues nothing; after drain() submit works again', async () => {
    // Guards: a full capability (or a full shared table) refuses without
    // throwing, reserving nothing and never calling the refused callback;
    // draining frees the slots for new work.
    const r = await rig();
    const data = pattern((DMA_SLOTS + 2) * PAGE_SIZE, 5);
    const { fd } = tempFile(data);
    const gp = dom0Pages(r.dom0, DMA_SLOTS + 1);
    const cbs = Array.from({ length: DMA_SLOTS }, () => recorder());
    for (let k = 0; k < DMA_SLOTS; k++) {
      expect(r.dma.submit(fd, [{ gpa: gpa(gp + k), len: PAGE_SIZE }], k * PAGE_SIZE, false, cbs[k]!.done)).toBe(true);
    }
    expect(r.dma.pending).toBe(DMA_SLOTS);
    expect(g(r.hv, G.DMA_QUEUED)).toBe(DMA_SLOTS);
    expect(slotsIn(r.hv, DJS_QUEUED)).toHaveLength(DMA_SLOTS);
    const refused = recorder();
    expect(r.dma.submit(fd, [{ gpa: gpa(gp + DMA_SLOTS), len: PAGE_SIZE }], 0, false, refused.done)).toBe(false);
    expect(r.dma.pending).toBe(DMA_SLOTS);
    expect(g(r.hv, G.DMA_QUEUED)).toBe(DMA_SLOTS);
    drainOrFail(r.dma);
    expect(cbs.map((c) => c.results)).toEqual(cbs.map(() => [PAGE_SIZE]));
    expect(refused.results).toEqual([]);
    for (let k = 0; k < DMA_SLOTS; k++) expect(r.dom0.read(gp + k)).toEqual(data.subarray(k * PAGE_SIZE, (k + 1) * PAGE_SIZE));
    expect(r.dom0.read(gp + DMA_SLOTS)).toEqual(fill(PAGE_SIZE, 0xee));
    expectIdle(r.hv, r.dma);
    // Again.
    const again = recorder();
    expect(r.dma.submit(fd, [{ gpa: gpa(gp + DMA_SLOTS), len: PAGE_SIZE }], DMA_SLOTS * PAGE_SIZE, false, again.done)).toBe(true);
    drainOrFail(r.dma);
    expect(again.results).toEqual([PAGE_SIZE]);
    expect(r.dom0.read(gp + DMA_SLOTS)).toEqual(data.subarray(DMA_SLOTS * PAGE_SIZE, (DMA_SLOTS + 1) * PAGE_SIZE));
    expectIdle(r.hv, r.dma);

    // The table is shared: another capability holding the other slots makes
    // this one's submit false although it has fewer than DMA_SLOTS pending.
    const other = makeHostDma(r.hv, r.u.slot);
    const uPage = r.u.page(0x10);
    const mine = Math.floor(DMA_SLOTS / 2);
    const cb = recorder();
    for (let k = 0; k < mine; k++) expect(r.dma.submit(fd, [{ gpa: gpa(gp + k), len: 16 }], 0, false, cb.done)).toBe(true);
    for (let k = mine; k < DMA_SLOTS; k++) expect(other.submit(fd, [{ gpa: gpa(uPage, k), len: 1 }], 0, false, cb.done)).toBe(true);
    expect(r.dma.submit(fd, [{ gpa: gpa(gp), len: 16 }], 0, false, refused.done)).toBe(false);
    expect(r.dma.pending).toBe(mine);
    expect(g(r.hv, G.DMA_QUEUED)).toBe(DMA_SLOTS);
    drainOrFail(r.dma);
    drainOrFail(other);
    expect(cb.results).toEqual([...fill(mine, 16), ...fill(DMA_SLOTS - mine, 1)]);
    expect(refused.results).toEqual([]);
    expectIdle(r.hv, r.dma);
    expectIdle(r.hv, other);
  });
});

describe('host DMA jobs: who runs them', () => {
  it('a queued read runs only when a thread takes it; reap() then runs its callback once', async () => {
    // Guards: submit only queues (no I/O on the owner); a vCPU of another
    // domain at its preemption point takes and runs the job (counted in
    // DMA_RUN and DMA_RUN_ELSEWHERE, DMA_QUEUED back to 0); the callback
    // runs from reap(), on the owner, once, with the byte count; the slot is free after.
    const r = await rig();
    const data = pattern(4 * PAGE_SIZE, 7);
    const { fd } = tempFile(data);
    const gp = dom0Pages(r.dom0, 3);
    const ranges: GuestRange[] = [{ gpa: gpa(gp, 3000), len: 2000 }, { gpa: gpa(gp + 2, 10), len: 100 }];
    const total = 2100;
    const run0 = g(r.hv, G.DMA_RUN);
    const else0 = g(r.hv, G.DMA_RUN_ELSEWHERE);
    const reads = (['readSync', 'readvSync'] as const).map((k) => vi.spyOn(fs, k));
    const cb = recorder();
    expect(r.dma.submit(fd, ranges, 77, false, cb.done)).toBe(true);
    for (const s of reads) expect(s).not.toHaveBeenCalled();
    expect(r.dma.pending).toBe(1);
    expect(g(r.hv, G.DMA_QUEUED)).toBe(1);
    const [slot] = slotsIn(r.hv, DJS_QUEUED);
    expect(slot).toBeDefined();
    expect(r.dma.reap()).toBe(0);
    expect(cb.results).toEqual([]);
    expect(r.dom0.v.api.mem.read(gpa(gp), 3 * PAGE_SIZE)).toEqual(fill(3 * PAGE_SIZE, 0xee));

    // The DomU's vCPU 0 reaches its preemption point.
    expect(dmaRunQueued(r.hv, r.u.slot, 0)).toBe(true);
    expect(g(r.hv, G.DMA_RUN)).toBe(run0 + 1);
    expect(g(r.hv, G.DMA_RUN_ELSEWHERE)).toBe(else0 + 1);
    expect(g(r.hv, G.DMA_QUEUED)).toBe(0);
    expect(states(r.hv)[slot!]).toBe(DJS_DONE);
    expect(dmaJobRunner(r.hv, slot!)).toBeNull();
    expect(cb.results).toEqual([]); // run, but its callback waits for the owner
    expect(dmaRunQueued(r.hv, r.u.slot, 0)).toBe(false); // nothing left to take
    expect(g(r.hv, G.DMA_RUN)).toBe(run0 + 1);

    expect(r.dma.reap()).toBe(1);
    expect(cb.results).toEqual([total]);
    expect(r.dom0.v.api.mem.read(gpa(gp, 3000), 2000)).toEqual(data.subarray(77, 2077));
    expect(r.dom0.v.api.mem.read(gpa(gp + 2, 10), 100)).toEqual(data.subarray(2077, 2177));
    expect(r.dom0.v.api.mem.read(gpa(gp), 3000)).toEqual(fill(3000, 0xee));
    expect(r.dom0.v.api.mem.read(gpa(gp, 5000), 2 * PAGE_SIZE + 10 - 5000)).toEqual(fill(2 * PAGE_SIZE + 10 - 5000, 0xee));
    expect(r.dom0.v.api.mem.read(gpa(gp + 2, 110), PAGE_SIZE - 110)).toEqual(fill(PAGE_SIZE - 110, 0xee));
    expectIdle(r.hv, r.dma);
    expect(r.dma.reap()).toBe(0);
    expect(cb.results).toEqual([total]);
  });

  it('a job run by a vCPU of its owner\'s domain is not counted as run elsewhere; an owner filter skips others\' jobs', async () => {
    // Guards: DMA_RUN_ELSEWHERE counts only runners of another domain than the
    // job's owner; dmaRunQueued(..., owner) leaves other owners' jobs queued.
    const r = await rig();
    const data = pattern(PAGE_SIZE, 9);
    const { fd } = tempFile(data);
    const gp = dom0Pages(r.dom0, 1);
    const run0 = g(r.hv, G.DMA_RUN);
    const else0 = g(r.hv, G.DMA_RUN_ELSEWHERE);
    const cb = recorder();
    expect(r.dma.submit(fd, [{ gpa: gpa(gp), len: 512 }], 0, false, cb.done)).toBe(true);
    expect(dmaRunQueued(r.hv, r.u.slot, 0, r.u.slot)).toBe(false); // only the DomU's own jobs: none
    expect(g(r.hv, G.DMA_QUEUED)).toBe(1);
    expect(g(r.hv, G.DMA_RUN)).toBe(run0);
    expect(dmaRunQueued(r.hv, r.dom0.slot, 1)).toBe(true);
    expect(g(r.hv, G.DMA_RUN)).toBe(run0 + 1);
    expect(g(r.hv, G.DMA_RUN_ELSEWHERE)).toBe(else0);
    expect(r.dma.reap()).toBe(1);
    expect(cb.results).toEqual([512]);
    expect(r.dom0.read(gp, 0, 512)).toEqual(data.subarray(0, 512));
    expectIdle(r.hv, r.dma);
  });

  it('drain() runs the jobs nobody took on the calling thread, each callback once with its result', async () => {
    // Guards: the owner does not wait on work nobody will do; jobs it runs
    // itself are not "elsewhere"; a short read at end of file returns the short count.
    const r = await rig();
    const data = pattern(3 * PAGE_SIZE, 13);
    const { fd } = tempFile(data);
    const gp = dom0Pages(r.dom0, 3);
    const run0 = g(r.hv, G.DMA_RUN);
    const else0 = g(r.hv, G.DMA_RUN_ELSEWHERE);
    const cbs = [recorder(), recorder(), recorder()];
    expect(r.dma.submit(fd, [{ gpa: gpa(gp), len: PAGE_SIZE }], PAGE_SIZE, false, cbs[0]!.done)).toBe(true);
    expect(r.dma.submit(fd, [{ gpa: gpa(gp + 1, 1), len: 300 }, { gpa: gpa(gp + 1, 400), len: 50 }], 3, false, cbs[1]!.done)).toBe(true);
    expect(r.dma.submit(fd, [{ gpa: gpa(gp + 2), len: PAGE_SIZE }], 3 * PAGE_SIZE - 100, false, cbs[2]!.done)).toBe(true);
    expect(g(r.hv, G.DMA_QUEUED)).toBe(3);
    drainOrFail(r.dma);
    expect(cbs.map((c) => c.results)).toEqual([[PAGE_SIZE], [350], [100]]);
    expect(g(r.hv, G.DMA_RUN)).toBe(run0 + 3);
    expect(g(r.hv, G.DMA_RUN_ELSEWHERE)).toBe(else0);
    expect(r.dom0.read(gp)).toEqual(data.subarray(PAGE_SIZE, 2 * PAGE_SIZE));
    expect(r.dom0.read(gp + 1, 1, 300)).toEqual(data.subarray(3, 303));
    expect(r.dom0.read(gp + 1, 400, 50)).toEqual(data.subarray(303, 353));
    expect(r.dom0.read(gp + 1, 301, 99)).toEqual(fill(99, 0xee));
    expect(r.dom0.read(gp + 2, 0, 100)).toEqual(data.subarray(3 * PAGE_SIZE - 100));
    expect(r.dom0.read(gp + 2, 100)).toEqual(fill(PAGE_SIZE - 100, 0xee));
    expectIdle(r.hv, r.dma);
    drainOrFail(r.dma); // nothing pending: returns at once
    expect(cbs.map((c) => c.results.length)).toEqual([1, 1, 1]);
  });

  it('a job whose runner\'s thread exited mid-copy is run again by drain(); while that thread lives, it is left alone', async () => {
    // Guards: a job taken (RUNNING) by a vCPU whose thread then died is not
    // lost: the owner re-runs it (jobs are idempotent) and gets the full
    // count. While the runner's thread is alive, the owner does not run it a
    // second time concurrently.
    const r = await rig();
    const data = pattern(2 * PAGE_SIZE, 17);
    const { fd } = tempFile(data);
    const gp = dom0Pages(r.dom0, 2);
    const cb = recorder();
    const ranges: GuestRange[] = [{ gpa: gpa(gp, 100), len: PAGE_SIZE + 200 }];
    expect(r.dma.submit(fd, ranges, 33, false, cb.done)).toBe(true);
    const [slot] = slotsIn(r.hv, DJS_QUEUED);
    // The DomU's vCPU 0 takes it, as dmaRunQueued does, and is killed before copying a byte.
    const thread = r.hv.v(r.u.slot, 0, V.thread);
    Atomics.store(r.hv.vcpu, thread, VTHREAD_RUNNING);
    const run0 = g(r.hv, G.DMA_RUN);
    const else0 = g(r.hv, G.DMA_RUN_ELSEWHERE);
    expect(dmaTake(r.hv, slot!, r.u.slot, 0)).toBe(true);
    expect(dmaJobRunner(r.hv, slot!)).toEqual([r.u.slot, 0]);
    expect(g(r.hv, G.DMA_QUEUED)).toBe(0);

    // Alive: the owner must not touch it; nobody else can take it either.
    expect(dmaRunOwn(r.hv, slot!, -1, -1)).toBe(false);
    expect(dmaRunOwn(r.hv, slot!, r.dom0.slot, 0)).toBe(false);
    expect(dmaRunQueued(r.hv, r.dom0.slot, 0)).toBe(false);
    expect(states(r.hv)[slot!]).toBe(DJS_RUNNING);
    expect(g(r.hv, G.DMA_RUN)).toBe(run0 + 1);
    expect(r.dma.reap()).toBe(0);
    expect(cb.results).toEqual([]);
    expect(r.dom0.v.api.mem.read(gpa(gp), 2 * PAGE_SIZE)).toEqual(fill(2 * PAGE_SIZE, 0xee));

    Atomics.store(r.hv.vcpu, thread, VTHREAD_EXITED);
    drainOrFail(r.dma);
    expect(cb.results).toEqual([PAGE_SIZE + 200]);
    // One job: counted once, by the runner that took it, not again for the re-run.
    expect(g(r.hv, G.DMA_RUN)).toBe(run0 + 1);
    expect(g(r.hv, G.DMA_RUN_ELSEWHERE)).toBe(else0 + 1);
    expect(r.dom0.v.api.mem.read(gpa(gp, 100), PAGE_SIZE + 200)).toEqual(data.subarray(33, 33 + PAGE_SIZE + 200));
    expect(r.dom0.v.api.mem.read(gpa(gp), 100)).toEqual(fill(100, 0xee));
    expect(r.dom0.v.api.mem.read(gpa(gp, PAGE_SIZE + 300), PAGE_SIZE - 300)).toEqual(fill(PAGE_SIZE - 300, 0xee));
    expectIdle(r.hv, r.dma);
  });
});

describe('host DMA jobs: results', () => {
  it('a host error comes back through the callback as a negative errno, and the engine is clean after', async () => {
    // Guards: an fd that is bad by the time the job runs makes the runner's
    // preadv fail; the runner does not throw (it may be any vCPU), the owner's
    // callback gets -EBADF (Node's errno), and the slot is freed all the same.
    const r = await rig();
    const { fd } = tempFile(pattern(PAGE_SIZE, 19), false);
    const gp = dom0Pages(r.dom0, 2);
    const cbs = [recorder(), recorder()];
    expect(r.dma.submit(fd, [{ gpa: gpa(gp), len: 100 }], 0, false, cbs[0]!.done)).toBe(true);
    expect(r.dma.submit(fd, [{ gpa: gpa(gp + 1, 5), len: 10 }, { gpa: gpa(gp, 2000), len: 10 }], 0, true, cbs[1]!.done)).toBe(true);
    fs.closeSync(fd);
    drainOrFail(r.dma);
    expect(os.constants.errno.EBADF).toBe(9);
    expect(cbs.map((c) => c.results)).toEqual([[-9], [-9]]);
    expectIdle(r.hv, r.dma);
    expect(r.dom0.v.api.mem.read(gpa(gp), 2 * PAGE_SIZE)).toEqual(fill(2 * PAGE_SIZE, 0xee));
    // Through another vCPU too: the error is the owner's to see, not the runner's.
    const cb = recorder();
    expect(r.dma.submit(fd, [{ gpa: gpa(gp), len: 100 }], 0, false, cb.done)).toBe(true);
    expect(dmaRunQueued(r.hv, r.u.slot, 0)).toBe(true);
    expect(r.dma.reap()).toBe(1);
    expect(cb.results).toEqual([-9]);
    expectIdle(r.hv, r.dma);
  });

  it('submit with write=true writes the ranges to the file at the position (from read-only grant mappings too)', async () => {
    // Guards: a queued job keeps its direction (pwritev), its position and
    // the order of its ranges; a read-only mapping is a valid source.
    const r = await rig();
    const { fd, file } = tempFile(fill(10, 0xaa));
    const gp = dom0Pages(r.dom0, 2);
    const src = pattern(2 * PAGE_SIZE, 23);
    r.dom0.v.api.mem.write(gpa(gp), src);
    const ro = grantMapped(r, HOLE_GFN_BASE, true, 0x5c);
    const ranges: GuestRange[] = [{ gpa: gpa(gp, 100), len: 5000 }, { gpa: gpa(HOLE_GFN_BASE, 4000), len: 96 }, { gpa: gpa(gp, 10), len: 20 }];
    const total = 5000 + 96 + 20;
    const cb = recorder();
    expect(r.dma.submit(fd, ranges, 4, true, cb.done)).toBe(true);
    expect(new Uint8Array(fs.readFileSync(file))).toEqual(fill(10, 0xaa)); // not yet
    expect(dmaRunQueued(r.hv, r.u.slot, 0)).toBe(true);
    expect(r.dma.reap()).toBe(1);
    expect(cb.results).toEqual([total]);
    const expected = new Uint8Array(4 + total);
    expected.set(fill(4, 0xaa), 0);
    expected.set(src.subarray(100, 5100), 4);
    expected.set(fill(96, 0x5c), 5004);
    expected.set(src.subarray(10, 30), 5100);
    expect(new Uint8Array(fs.readFileSync(file))).toEqual(expected);
    // Guest memory is only read.
    expect(r.dom0.v.api.mem.read(gpa(gp), 2 * PAGE_SIZE)).toEqual(src);
    expect(r.u.read(ro.uGfn)).toEqual(fill(PAGE_SIZE, 0x5c));
    expectIdle(r.hv, r.dma);
  });
});

describe('host DMA jobs on a real other thread', () => {
  it('a runner thread takes and runs every queued read; the owner reaps them all', async () => {
    // Guards: the job table works across threads: a runner that builds its
    // own HvState over the same buffers sees each queued job's fields (the
    // QUEUED store publishes them), runs it once, and its result and bytes
    // are visible to the owner when it sees DONE. Every job counted elsewhere.
    const r = await rig();
    const per = PAGE_SIZE;
    const data = pattern(DMA_SLOTS * 2 * per, 29);
    const { fd } = tempFile(data);
    const gp = dom0Pages(r.dom0, DMA_SLOTS + 1);
    const else0 = g(r.hv, G.DMA_RUN_ELSEWHERE);
    const run0 = g(r.hv, G.DMA_RUN);
    const control = new SharedArrayBuffer(8);
    const words = new Int32Array(control);
    const entry = new URL('./dma-runner.ts', import.meta.url).href;
    const wd: DmaRunnerData = { entry, cfg: r.hv.cfg, buffers: r.hv.buffers, slot: r.u.slot, vcpu: 0, control };
    const worker = new Worker(new URL('../../../hypervisor/platform/boot-worker.mjs', import.meta.url), { workerData: wd });
    let failure: Error | null = null;
    worker.on('error', (e: Error) => { failure = e; });
    const ran = new Promise<number>((res) => { worker.once('message', (n: number) => res(n)); });
    const sleep = (ms: number): Promise<void> => new Promise((res) => setTimeout(res, ms));
    try {
      // Different regions of the file (2 * per apart, odd offsets) into different pages.
      const results: Array<number[]> = Array.from({ length: DMA_SLOTS }, () => []);
      for (let k = 0; k < DMA_SLOTS; k++) {
        const ranges: GuestRange[] = [{ gpa: gpa(gp + k, 0), len: per }];
        expect(r.dma.submit(fd, ranges, 2 * per * k + k, false, (n) => { results[k]!.push(n); })).toBe(true);
      }
      const deadline = Date.now() + 20_000;
      while (results.some((x) => x.length === 0)) {
        if (failure) throw failure;
        if (Date.now() > deadline) {
          throw new Error(`runner thread: ${results.filter((x) => x.length > 0).length} of ${DMA_SLOTS} jobs done after 20 s (started: ${Atomics.load(words, 1)})`);
        }
        r.dma.reap();
        await sleep(1);
      }
      expect(results).toEqual(results.map(() => [per]));
      for (let k = 0; k < DMA_SLOTS; k++) {
        const off = 2 * per * k + k;
        expect(Buffer.from(r.dom0.read(gp + k)).equals(data.subarray(off, off + per)), `page ${k}`).toBe(true);
      }
      expect(r.dom0.read(gp + DMA_SLOTS)).toEqual(fill(PAGE_SIZE, 0xee));
      expect(g(r.hv, G.DMA_RUN)).toBe(run0 + DMA_SLOTS);
      expect(g(r.hv, G.DMA_RUN_ELSEWHERE)).toBe(else0 + DMA_SLOTS);
      expectIdle(r.hv, r.dma);
      Atomics.store(words, 0, 1);
      const n = await Promise.race([ran, sleep(10_000).then(() => -1)]);
      expect(n).toBe(DMA_SLOTS);
      expect(failure).toBeNull();
    } finally {
      Atomics.store(words, 0, 1);
      await worker.terminate();
    }
  });
});

describe('host DMA jobs: regressions', () => {
  it('write must be true or false: a truthy non-boolean is refused (TypeError), not checked as one direction and run as the other', async () => {
    // Regression: submit checked the pages with `!write` and queued the job
    // with `write === true`, so write=1 was checked as a write (read-only
    // grant mappings allowed) and run as a read, into a read-only grant page.
    const r = await rig();
    const { fd } = tempFile(pattern(PAGE_SIZE, 9));
    const ro = grantMapped(r, HOLE_GFN_BASE, true, 0x77);
    const cb = recorder();
    for (const w of [1, 'yes', null, undefined] as const) {
      expect(thrown(() => r.dma.submit(fd, [{ gpa: gpa(HOLE_GFN_BASE), len: 64 }], 0, w as unknown as boolean, cb.done))).toBeInstanceOf(TypeError);
    }
    expectIdle(r.hv, r.dma);
    expect(cb.results).toEqual([]);
    expect(r.u.read(ro.uGfn)).toEqual(new Uint8Array(PAGE_SIZE).fill(0x77));
  });

  it('a range whose getter calls submit back cannot change what the outer submit checked', async () => {
    // Regression: submit reused one translation plan with no re-entrancy
    // guard; an inner submit from a getter reset it mid-check, and the outer
    // read delivered file bytes into the inner call's read-only grant page.
    const r = await rig();
    const data = pattern(2 * PAGE_SIZE, 41);
    const { fd } = tempFile(data);
    const gp = dom0Pages(r.dom0, 3);
    const ro = grantMapped(r, HOLE_GFN_BASE, true, 0x77);
    const inner = recorder();
    const outer = recorder();
    const sneaky = {
      len: 8,
      get gpa(): number {
        // Legal on its own: a pwritev job reads the read-only page.
        expect(r.dma.submit(fd, [{ gpa: gpa(HOLE_GFN_BASE), len: 8 }], PAGE_SIZE, true, inner.done)).toBe(true);
        return gpa(gp + 2);
      },
    };
    expect(r.dma.submit(fd, [{ gpa: gpa(gp), len: 16 }, sneaky], 0, false, outer.done)).toBe(true);
    drainOrFail(r.dma);
    expect(outer.results).toEqual([24]);
    expect(inner.results).toEqual([8]);
    expect(r.dom0.v.api.mem.read(gpa(gp), 16)).toEqual(data.subarray(0, 16));
    expect(r.dom0.v.api.mem.read(gpa(gp + 2), 8)).toEqual(data.subarray(16, 24));
    expect(r.dom0.v.api.mem.read(gpa(gp + 1), PAGE_SIZE)).toEqual(fill(PAGE_SIZE, 0xee));
    expect(r.u.read(ro.uGfn)).toEqual(new Uint8Array(PAGE_SIZE).fill(0x77));
    expectIdle(r.hv, r.dma);
  });

  it('with every slot pending, bad arguments still throw (the checks come first); good ones get false', async () => {
    const r = await rig();
    const { fd } = tempFile(pattern(PAGE_SIZE, 3));
    const gp = dom0Pages(r.dom0, 1);
    const cb = recorder();
    for (let i = 0; i < DMA_SLOTS; i++) expect(r.dma.submit(fd, [{ gpa: gpa(gp, 8 * i), len: 8 }], 8 * i, false, cb.done)).toBe(true);
    expect(thrown(() => r.dma.submit(-1, [{ gpa: gpa(gp), len: 8 }], 0, false, cb.done))).toBeInstanceOf(RangeError);
    expect(thrown(() => r.dma.submit(fd, [{ gpa: gpa(HOLE_GFN_BASE + 7), len: 8 }], 0, false, cb.done))).toBeInstanceOf(GuestFault);
    expect(thrown(() => r.dma.submit(fd, [{ gpa: gpa(gp), len: 8 }], 0, false, 5 as unknown as (x: number) => void))).toBeInstanceOf(TypeError);
    expect(r.dma.submit(fd, [{ gpa: gpa(gp), len: 8 }], 0, false, cb.done)).toBe(false);
    drainOrFail(r.dma);
    expect(cb.results).toEqual(Array(DMA_SLOTS).fill(8));
    expectIdle(r.hv, r.dma);
  });

  it('a runner taken over (its domain slot reused since it took the job) that finishes late leaves the slot alone', async () => {
    // Guards the take-over: the owner re-runs a job whose runner's domain
    // generation has changed; should the old runner still finish, its
    // compare-exchange to FINISHING fails, and a new job in that slot is not
    // marked done with its result.
    const r = await rig();
    const data = pattern(PAGE_SIZE, 5);
    const { fd } = tempFile(data);
    const gp = dom0Pages(r.dom0, 2);
    const first = recorder();
    expect(r.dma.submit(fd, [{ gpa: gpa(gp), len: 100 }], 0, false, first.done)).toBe(true);
    const [slot] = slotsIn(r.hv, DJS_QUEUED);
    Atomics.store(r.hv.vcpu, r.hv.v(r.u.slot, 0, V.thread), VTHREAD_RUNNING);
    expect(dmaTake(r.hv, slot!, r.u.slot, 0)).toBe(true);
    // Alive, same generation: the owner waits for it.
    expect(dmaRunOwn(r.hv, slot!, -1, -1)).toBe(false);
    // The DomU's slot is reused by another domain: the runner is gone.
    const genAt = r.hv.d(r.u.slot, D.generation);
    Atomics.add(r.hv.dom, genAt, 1);
    drainOrFail(r.dma);
    expect(first.results).toEqual([100]);
    expect(r.dom0.v.api.mem.read(gpa(gp), 100)).toEqual(data.subarray(0, 100));
    // A new job takes the same slot; the old runner wakes up and runs what it took.
    const second = recorder();
    expect(r.dma.submit(fd, [{ gpa: gpa(gp + 1), len: 50 }], 200, false, second.done)).toBe(true);
    expect(states(r.hv)[slot!]).toBe(DJS_QUEUED);
    dmaRunTaken(r.hv, slot!, r.u.slot, 0);
    expect(states(r.hv)[slot!]).toBe(DJS_QUEUED);
    expect(r.dma.reap()).toBe(0);
    expect(second.results).toEqual([]);
    drainOrFail(r.dma);
    expect(second.results).toEqual([50]);
    expect(r.dom0.v.api.mem.read(gpa(gp + 1), 50)).toEqual(data.subarray(200, 250));
    Atomics.sub(r.hv.dom, genAt, 1);
    expectIdle(r.hv, r.dma);
  });
});

describe('host DMA jobs: a runner gone mid-copy, seen by reap', () => {
  it('reap takes over a job whose runner\'s thread exited, so the request is answered without a disconnect', async () => {
    // Guards: blkback reaps from its spin and only drains at disconnect; a
    // job left RUNNING by a terminated thread would hang its request (and
    // keep Dom0 from blocking) if only drain took jobs over.
    const r = await rig();
    const data = pattern(PAGE_SIZE, 23);
    const { fd } = tempFile(data);
    const gp = dom0Pages(r.dom0, 1);
    const cb = recorder();
    expect(r.dma.submit(fd, [{ gpa: gpa(gp, 16), len: 300 }], 40, false, cb.done)).toBe(true);
    const [slot] = slotsIn(r.hv, DJS_QUEUED);
    const thread = r.hv.v(r.u.slot, 0, V.thread);
    Atomics.store(r.hv.vcpu, thread, VTHREAD_RUNNING);
    expect(dmaTake(r.hv, slot!, r.u.slot, 0)).toBe(true);
    expect(r.dma.reap()).toBe(0); // its runner is alive: wait
    expect(cb.results).toEqual([]);
    Atomics.store(r.hv.vcpu, thread, VTHREAD_EXITED);
    expect(r.dma.reap()).toBe(1);
    expect(cb.results).toEqual([300]);
    expect(r.dom0.v.api.mem.read(gpa(gp, 16), 300)).toEqual(data.subarray(40, 340));
    expectIdle(r.hv, r.dma);
  });
});
