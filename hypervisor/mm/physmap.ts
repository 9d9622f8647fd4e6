/**
 * Physmap changes (Xen: common/memory.c, arch/x86/mm/p2m.c): populate, remove,
 * move, map shared_info, map a foreign frame. Each takes the domain lock then
 * heap_lock (lock order 2 -> 3) and returns 0 or a negative errno.
 */
import { EBUSY, EINVAL, ENOENT, ENOMEM, ESRCH } from '../../shared/errno.ts';
import { domLock, domUnlock, finishIfDead, releaseForeignFrame } from '../domain.ts';
import { allocDomainFrames, dropAllocation, getPage, heapLock, heapUnlock, putPage } from './frames.ts';
import { entryMfn, p2mClear, p2mLookup, p2mSet } from './p2m.ts';
import { D, HvState, P2M_INVALID, p2mType, p2m_map_foreign, p2m_ram_rw } from '../state.ts';

function gfnOk(hv: HvState, gfn: number, n = 1): boolean {
  return Number.isSafeInteger(gfn) && gfn >= 0 && gfn + n <= hv.cfg.p2mEntries;
}

/**
 * Remove whatever is at gfn, with heap_lock and the domain lock held: RAM loses
 * its allocation reference (freed unless mapped elsewhere), a foreign mapping
 * drops its reference. -ENOENT if nothing is there.
 */
function removeLocked(hv: HvState, slot: number, gfn: number): number {
  const e = p2mLookup(hv, slot, gfn);
  if (e === P2M_INVALID) return -ENOENT;
  const m = entryMfn(e);
  const t = p2mType(e);
  if (t === p2m_ram_rw) {
    const domid = hv.dom[hv.d(slot, D.domid)];
    p2mClear(hv, slot, gfn);
    if (hv.ftOwner[m] === domid) {
      hv.ftGfn[m] = -1;
      dropAllocation(hv, m);
    }
    // Otherwise the shared_info frame (owned by Xen): unmapping it frees nothing.
    return 0;
  }
  if (t === p2m_map_foreign) {
    p2mClear(hv, slot, gfn);
    releaseForeignFrame(hv, slot, m);
    return 0;
  }
  // Grant mappings are removed with GNTTABOP_unmap_grant_ref, not here.
  return -EBUSY;
}

/** guest_remove_page(). */
export function guestRemovePage(hv: HvState, slot: number, gfn: number): number {
  if (!gfnOk(hv, gfn)) return -EINVAL;
  domLock(hv, slot);
  heapLock(hv);
  let rc: number;
  try {
    rc = removeLocked(hv, slot, gfn);
  } finally {
    heapUnlock(hv);
    domUnlock(hv, slot);
  }
  finishIfDead(hv, slot);
  return rc;
}

/**
 * populate_physmap for one extent: 2^order new frames at gfn..gfn+2^order-1.
 * -EINVAL out of range, -EBUSY if any gfn is already populated, -ENOMEM over
 * max_pages or out of memory. Nothing changes on failure.
 */
export function populateExtent(hv: HvState, slot: number, gfn: number, order: number): number {
  const n = 2 ** order;
  if (!gfnOk(hv, gfn, n) || gfn % n !== 0) return -EINVAL;
  domLock(hv, slot);
  heapLock(hv);
  try {
    for (let i = 0; i < n; i++) if (p2mLookup(hv, slot, gfn + i) !== P2M_INVALID) return -EBUSY;
    const m = allocDomainFrames(hv, slot, hv.dom[hv.d(slot, D.domid)], order);
    if (m < 0) return -ENOMEM;
    for (let i = 0; i < n; i++) p2mSet(hv, slot, gfn + i, m + i, p2m_ram_rw);
    return 0;
  } finally {
    heapUnlock(hv);
    domUnlock(hv, slot);
  }
}

/** increase_reservation for an auto-translated domain: frames owned, not mapped (Xen's behaviour). */
export function increaseExtent(hv: HvState, slot: number, order: number): number {
  domLock(hv, slot);
  heapLock(hv);
  try {
    return allocDomainFrames(hv, slot, hv.dom[hv.d(slot, D.domid)], order) < 0 ? -ENOMEM : 0;
  } finally {
    heapUnlock(hv);
    domUnlock(hv, slot);
  }
}

/** XENMAPSPACE_shared_info: map the domain's shared_info frame at gfn, replacing what was there. */
export function mapSharedInfo(hv: HvState, slot: number, gfn: number): number {
  if (!gfnOk(hv, gfn)) return -EINVAL;
  const si = hv.dom[hv.d(slot, D.shared_info_mfn)];
  if (si < 0) return -EINVAL;
  domLock(hv, slot);
  heapLock(hv);
  try {
    // Only one place in the physmap holds shared_info: drop an older mapping.
    const old = hv.ftGfn[si];
    if (old >= 0 && old !== gfn && p2mLookup(hv, slot, old) !== P2M_INVALID && entryMfn(p2mLookup(hv, slot, old)) === si) {
      p2mClear(hv, slot, old);
    }
    if (p2mLookup(hv, slot, gfn) !== P2M_INVALID) {
      const rc = removeLocked(hv, slot, gfn);
      if (rc < 0) return rc;
    }
    p2mSet(hv, slot, gfn, si, p2m_ram_rw);
    hv.ftGfn[si] = gfn;
    return 0;
  } finally {
    heapUnlock(hv);
    domUnlock(hv, slot);
  }
}

/** XENMAPSPACE_gmfn: move the domain's own frame from gfn `idx` to `gfn`. */
export function moveGmfn(hv: HvState, slot: number, idx: number, gfn: number): number {
  if (!gfnOk(hv, idx) || !gfnOk(hv, gfn)) return -EINVAL;
  if (idx === gfn) return 0;
  domLock(hv, slot);
  heapLock(hv);
  try {
    const e = p2mLookup(hv, slot, idx);
    if (e === P2M_INVALID || p2mType(e) !== p2m_ram_rw) return -EINVAL;
    if (p2mLookup(hv, slot, gfn) !== P2M_INVALID) {
      const rc = removeLocked(hv, slot, gfn);
      if (rc < 0) return rc;
    }
    p2mClear(hv, slot, idx);
    p2mSet(hv, slot, gfn, entryMfn(e), p2m_ram_rw);
    return 0;
  } finally {
    heapUnlock(hv);
    domUnlock(hv, slot);
  }
}

/**
 * XENMAPSPACE_gmfn_foreign: map frame `idx` of the foreign domain into `slot`'s
 * physmap at gfn, taking a reference so the frame outlives its owner's destroy
 * until unmapped. -ESRCH/-EINVAL on bad input.
 */
export function mapForeign(hv: HvState, slot: number, foreignSlot: number, idx: number, gfn: number): number {
  if (!gfnOk(hv, idx) || !gfnOk(hv, gfn)) return -EINVAL;
  if (foreignSlot < 0) return -ESRCH;
  if (foreignSlot === slot) return -EINVAL;
  const [first, second] = slot < foreignSlot ? [slot, foreignSlot] : [foreignSlot, slot];
  // Two domain locks: a fixed order (here by slot) so two mappers cannot deadlock.
  domLock(hv, first);
  domLock(hv, second);
  heapLock(hv);
  try {
    const fe = p2mLookup(hv, foreignSlot, idx);
    if (fe === P2M_INVALID || p2mType(fe) !== p2m_ram_rw) return -EINVAL;
    const m = entryMfn(fe);
    if (!getPage(hv, m, hv.dom[hv.d(foreignSlot, D.domid)])) return -EINVAL;
    if (p2mLookup(hv, slot, gfn) !== P2M_INVALID) {
      const rc = removeLocked(hv, slot, gfn);
      if (rc < 0) {
        putPage(hv, m); // undo our reference; the owner's allocation keeps the frame
        return rc;
      }
    }
    p2mSet(hv, slot, gfn, m, p2m_map_foreign);
    Atomics.add(hv.dom, hv.d(slot, D.foreign_maps), 1);
    return 0;
  } finally {
    heapUnlock(hv);
    domUnlock(hv, second);
    domUnlock(hv, first);
  }
}
