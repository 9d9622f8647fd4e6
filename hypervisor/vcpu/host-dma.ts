/**
 * The DMA capability of Dom0's backends (DESIGN.md §5): host I/O straight
 * between a host file descriptor and the domain's guest-physical memory, so
 * that blkback moves data between a file and a granted frame without a copy
 * and without guest code ever holding a view of machine memory.
 *
 * Each call is decode, validate, act: the ranges are read once (each gpa and
 * len one property read), every page they touch is translated through the
 * P2M (writable for preadv, since it writes guest memory), and only when all
 * of it is good does any I/O start. Pages are not machine-contiguous in
 * general, so the ranges are split at page boundaries and the pieces merged
 * back into one iovec wherever their machine addresses meet (a buddy-allocated
 * guest is mostly contiguous: 256 pages of a 1 MiB request usually make one
 * iovec; measured on the 2-core host, a 1 MiB preadv through here costs ~44 µs
 * against ~40 µs for a bare 1 MiB readSync and ~53 µs for readv of 256 views
 * of 4 KiB). A plan of one extent skips the views entirely and reads into the
 * machine memory array at an offset (a 4 KiB preadv: ~0.93 µs against
 * ~0.81 µs for a bare readSync).
 *
 * `submit` makes the same checks and then, instead of doing the I/O, queues
 * the plan's machine ranges as a host DMA job (dma-jobs.ts), run by the first
 * vCPU to reach an explicit preemption point; `reap` and `drain` run the
 * callbacks of the jobs done (`drain` runs still-queued ones itself).
 *
 * Not done: page references for the duration of the I/O. The frames are
 * checked mapped at validation; a Dom0 vCPU that unmaps a grant on another
 * thread while this one is in the I/O could have the frame reused under it
 * (copy_to_guest in mm/p2m.ts has the same window, only shorter). For a job
 * the window lasts until its result is taken: the caller keeps the ranges
 * mapped until then (blkback holds the request's grant mappings).
 */
import { GuestFault, type GuestRange, type HostDma } from '../../shared/guest/api.ts';
import { PAGE_SIZE } from '../../shared/types.ts';
import { dmaQueue, dmaResult, dmaRunOwn, dmaTakeOver } from './dma-jobs.ts';
import { IovecPlan, MAX_EXTENT, runPlan } from './iovec.ts';
import { DMA_SLOTS, P2M_INVALID, P2M_MFN_MASK, P2M_TYPE_SHIFT, p2m_grant_map_ro, type HvState } from '../state.ts';

/** A host DMA job's completion: bytes moved, or a negative errno. */
type DmaDone = (result: number) => void;

// Module-local copies of imported constants. They were made when a read of an
// imported binding measured ~15 ns in a vCPU thread, which made the per-page
// translation (mm/p2m.ts gpaToMachine: ~125 ns a page) the larger part of a
// 4 KiB preadv (with locals: ~16 ns a page). Measured again on 2026-11-21 in a
// worker loading TypeScript through tsx/esm as vCPU threads do, an imported
// read cost ~0.3 ns more than a local one; the copies stay (they cost nothing).
const PAGE = PAGE_SIZE;
const INVALID = P2M_INVALID;
const MFN_MASK = P2M_MFN_MASK;
const TYPE_SHIFT = P2M_TYPE_SHIFT;
const GRANT_MAP_RO = p2m_grant_map_ro;

const isFd = (fd: unknown): fd is number => typeof fd === 'number' && (fd | 0) === fd && fd >= 0;

/** A call's fd and file position, checked before anything else: RangeError if bad. */
function checkFdPosition(fd: unknown, position: unknown): void {
  if (!isFd(fd)) throw new RangeError(`host DMA: bad fd ${String(fd)}`);
  if (typeof position !== 'number' || !Number.isSafeInteger(position) || position < 0) {
    throw new RangeError(`host DMA: bad file position ${String(position)}`);
  }
}

/** The end of the I/O planned at `position`: RangeError if not a safe integer. */
function checkEnd(position: number, p: IovecPlan): void {
  if (!Number.isSafeInteger(position + p.total)) throw new RangeError(`host DMA: file position ${position} + ${p.total} too large`);
}

/**
 * Read `ranges` once, check them, and translate them into `plan` (reset
 * first). `write`: the I/O writes guest memory (preadv), so every page must be
 * mapped writable. Throws GuestFault for the first bad address; TypeError if
 * `ranges` is not an array of objects.
 */
function translate(hv: HvState, slot: number, plan: IovecPlan, ranges: readonly GuestRange[], write: boolean): void {
  if (!Array.isArray(ranges)) throw new TypeError('host DMA needs an array of guest ranges');
  plan.reset();
  // mm/p2m.ts p2mLookup, inlined over locals (see above): the slot's P2M
  // entries are p2m[base .. base + entries).
  const p2m = hv.p2m;
  const entries = hv.cfg.p2mEntries;
  const base = slot * entries;
  const nr = ranges.length;
  for (let i = 0; i < nr; i++) {
    const r = ranges[i];
    const gpa: unknown = r.gpa;
    const len: unknown = r.len;
    if (typeof gpa !== 'number' || !Number.isSafeInteger(gpa) || gpa < 0) {
      throw new GuestFault(typeof gpa === 'number' ? gpa : NaN, write);
    }
    if (typeof len !== 'number' || !Number.isSafeInteger(len) || len < 0 || !Number.isSafeInteger(gpa + len)) {
      throw new GuestFault(gpa, write);
    }
    // Page by page (the first from gpa's offset in it), each page's
    // machine run kept in locals and handed to the plan only where the
    // machine addresses stop following on (256 pages of a 1 MiB range: one
    // push, not 256).
    let gfn = Math.floor(gpa / PAGE);
    let off = gpa - gfn * PAGE;
    let left = len;
    let runMa = 0;
    let runLen = 0;
    while (left > 0) {
      const e = gfn < entries ? p2m[base + gfn]! : INVALID;
      if (e === INVALID || (write && e >>> TYPE_SHIFT === GRANT_MAP_RO)) throw new GuestFault(gfn * PAGE + off, write);
      const n = left < PAGE - off ? left : PAGE - off;
      const ma = (e & MFN_MASK) * PAGE + off;
      if (runLen > 0 && runMa + runLen === ma && runLen + n <= MAX_EXTENT) {
        runLen += n;
      } else {
        if (runLen > 0) plan.push(runMa, runLen);
        runMa = ma;
        runLen = n;
      }
      left -= n;
      gfn++;
      off = 0;
    }
    if (runLen > 0) plan.push(runMa, runLen);
  }
}

/**
 * The DMA capability for the domain in `slot`: a frozen object of closures
 * over trusted state, holding no reference a guest could reach.
 */
export function makeHostDma(hv: HvState, slot: number): HostDma {
  const mem8 = hv.mem8;
  const plan = new IovecPlan();
  // Set while ranges are being translated: a range whose getter calls back
  // in gets a plan of its own, not the one being checked. (Once translated,
  // no guest code runs before the plan is used: runPlan and dmaQueue only
  // read it.)
  let busy = false;
  /** Read, check and translate `ranges` for I/O at `position` (`write`: pwritev, which reads guest memory): the plan. */
  const planFor = (ranges: readonly GuestRange[], position: number, write: boolean): IovecPlan => {
    const outer = !busy;
    const p = outer ? plan : new IovecPlan();
    busy = true;
    try {
      translate(hv, slot, p, ranges, !write);
      checkEnd(position, p);
      return p;
    } finally {
      if (outer) busy = false;
    }
  };
  const io = (fd: number, ranges: readonly GuestRange[], position: number, write: boolean): number => {
    checkFdPosition(fd, position);
    return runPlan(mem8, planFor(ranges, position, write), fd, position, write);
  };
  // The asynchronous side (dma-jobs.ts): jobs of this domain's, each one's
  // callback kept here by slot until its result is taken.
  const waiting: Array<DmaDone | null> = Array.from({ length: DMA_SLOTS }, () => null);
  let pending = 0;
  const submit = (fd: number, ranges: readonly GuestRange[], position: number, write: boolean, done: DmaDone): boolean => {
    checkFdPosition(fd, position);
    if (typeof write !== 'boolean') throw new TypeError('host DMA: submit needs write true or false');
    if (typeof done !== 'function') throw new TypeError('host DMA: submit needs a completion callback');
    const p = planFor(ranges, position, write);
    if (pending === DMA_SLOTS) return false;
    const i = dmaQueue(hv, slot, fd, p, position, write);
    if (i < 0) return false;
    waiting[i] = done;
    pending++;
    return true;
  };
  const reap = (): number => {
    if (pending === 0) return 0;
    let n = 0;
    for (let i = 0; i < DMA_SLOTS; i++) {
      const done = waiting[i];
      if (done == null) continue;
      let result = dmaResult(hv, i);
      // Not done: if its runner is gone (a thread terminated mid-copy), nobody else will finish it.
      if (result === null && dmaTakeOver(hv, i, -1, -1)) result = dmaResult(hv, i);
      if (result === null) continue;
      waiting[i] = null;
      pending--;
      n++;
      done(result);
    }
    return n;
  };
  const drain = (): void => {
    while (pending > 0) {
      if (reap() > 0) continue;
      // Nobody has taken them, or their runner died: run them here.
      for (let i = 0; i < DMA_SLOTS; i++) if (waiting[i] != null) dmaRunOwn(hv, i, -1, -1);
    }
  };
  const dma: HostDma = {
    preadv: (fd, ranges, position) => io(fd, ranges, position, false),
    pwritev: (fd, ranges, position) => io(fd, ranges, position, true),
    submit,
    reap,
    drain,
    get pending() { return pending; },
  };
  return Object.freeze(dma);
}
