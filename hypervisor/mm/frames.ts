/**
 * The frame table: owner, reference count and type of every machine frame, and
 * the M2P (frame -> gfn). Invariant (checked by tests): a frame is either free
 * (owner OWNER_FREE, count 0, on the buddy lists) or owned by exactly one domain
 * or by the hypervisor (OWNER_XEN) with count >= 1.
 *
 * count is the reference count: 1 for the owner's allocation (PGC_allocated),
 * plus one per foreign or grant mapping. A frame is freed when count drops to 0,
 * never while somebody still maps it. Caller holds heap_lock for every function
 * here unless said otherwise.
 */
import { lock, unlock } from '../../shared/lock.ts';
import { PAGE_SIZE } from '../../shared/types.ts';
import { buddyAlloc, buddyFree, type BuddyArrays } from './buddy.ts';
import { D, G, HvState, MAX_ORDER, OWNER_FREE, OWNER_XEN, PGT_none } from '../state.ts';

/** ftType bit: the owner's allocation reference is held (Xen's PGC_allocated). */
export const PGC_allocated = 1 << 16;
export const PGT_TYPE_MASK = 0xffff;

export function buddyOf(hv: HvState): BuddyArrays {
  return { nrFrames: hv.nrFrames, maxOrder: MAX_ORDER, order: hv.ftOrder, next: hv.ftNext, prev: hv.ftPrev, heads: hv.buddyHeads };
}

export function heapLock(hv: HvState): void { lock(hv.g, G.HEAP_LOCK); }
export function heapUnlock(hv: HvState): void { unlock(hv.g, G.HEAP_LOCK); }

/**
 * Allocate 2^order zeroed frames for the domain in `slot` (domid `owner`),
 * charging its tot_pages. Returns the first mfn, or -1 when the domain would
 * exceed max_pages or the heap has no such block. Caller holds heap_lock.
 */
export function allocDomainFrames(hv: HvState, slot: number, owner: number, order: number): number {
  const n = 1 << order;
  const tot = Atomics.load(hv.dom, hv.d(slot, D.tot_pages));
  if (tot + n > Atomics.load(hv.dom, hv.d(slot, D.max_pages))) return -1;
  const m = buddyAlloc(buddyOf(hv), order);
  if (m < 0) return -1;
  for (let i = m; i < m + n; i++) {
    hv.ftOwner[i] = owner;
    hv.ftCount[i] = 1;
    hv.ftType[i] = PGT_none | PGC_allocated;
    hv.ftGfn[i] = -1;
  }
  // Scrub: a frame never carries a previous owner's data.
  hv.mem8.fill(0, m * PAGE_SIZE, (m + n) * PAGE_SIZE);
  Atomics.add(hv.dom, hv.d(slot, D.tot_pages), n);
  Atomics.sub(hv.g, G.FREE_PAGES, n);
  return m;
}

/** Allocate one zeroed frame owned by the hypervisor (xenheap). -1 when out of memory. */
export function allocXenFrame(hv: HvState, type: number): number {
  const m = buddyAlloc(buddyOf(hv), 0);
  if (m < 0) return -1;
  hv.ftOwner[m] = OWNER_XEN;
  hv.ftCount[m] = 1;
  hv.ftType[m] = type | PGC_allocated;
  hv.ftGfn[m] = -1;
  hv.mem8.fill(0, m * PAGE_SIZE, (m + 1) * PAGE_SIZE);
  Atomics.sub(hv.g, G.FREE_PAGES, 1);
  Atomics.add(hv.g, G.XENHEAP_PAGES, 1);
  return m;
}

/** Take an extra reference on a frame owned by `owner`; false if it is not (or is free). */
export function getPage(hv: HvState, m: number, owner: number): boolean {
  if (m < 0 || m >= hv.nrFrames || hv.ftOwner[m] !== owner || hv.ftCount[m] <= 0) return false;
  hv.ftCount[m]++;
  return true;
}

/**
 * Drop one reference. On the last one the frame is freed and its owner's
 * tot_pages drops; returns the owner's slot whose accounting changed (or -1) so
 * the caller can finish a dead domain.
 */
export function putPage(hv: HvState, m: number): number {
  if (hv.ftCount[m] <= 0) throw new Error(`putPage: frame ${m} has no reference`);
  if (--hv.ftCount[m] > 0) return -1;
  const owner = hv.ftOwner[m];
  hv.ftOwner[m] = OWNER_FREE;
  hv.ftType[m] = PGT_none;
  hv.ftGfn[m] = -1;
  buddyFree(buddyOf(hv), m, 0);
  Atomics.add(hv.g, G.FREE_PAGES, 1);
  if (owner === OWNER_XEN) {
    Atomics.sub(hv.g, G.XENHEAP_PAGES, 1);
    return -1;
  }
  const slot = hv.domidMap[owner];
  if (slot >= 0) Atomics.sub(hv.dom, hv.d(slot, D.tot_pages), 1);
  return slot;
}

/** Drop the owner's allocation reference (PGC_allocated) if still held. */
export function dropAllocation(hv: HvState, m: number): number {
  if (!(hv.ftType[m] & PGC_allocated)) return -1;
  hv.ftType[m] &= ~PGC_allocated;
  return putPage(hv, m);
}
