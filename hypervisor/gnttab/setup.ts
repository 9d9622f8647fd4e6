/**
 * Grant table frames as the guest sees them: GNTTABOP_setup_table and
 * GNTTABOP_query_size (common/grant_table.c), and XENMAPSPACE_grant_table in
 * XENMEM_add_to_physmap (gnttab_map_frame + xenmem_add_to_physmap_one).
 *
 * Our domains are all auto-translated, so a guest reaches its grant table by
 * mapping frame `idx` into its own physmap with add_to_physmap (which grows the
 * table up to idx + 1, as Xen's gnttab_grow_table). setup_table grows the table
 * too and reports, per frame, the gfn where the frame is mapped, or
 * INVALID_GFN (all ones) while it is mapped nowhere: never a machine frame
 * number, the rule Xen follows for auto-translated guests on Arm.
 */
import { EBUSY, EINVAL } from '../../shared/errno.ts';
import { domLock, domUnlock } from '../domain.ts';
import { heapLock, heapUnlock } from '../mm/frames.ts';
import { guestRemovePage } from '../mm/physmap.ts';
import { entryMfn, p2mClear, p2mLookup, p2mSet } from '../mm/p2m.ts';
import { D, HvState, P2M_INVALID, p2mType, p2m_ram_rw } from '../state.ts';
import { grantFrameIdx } from './layout.ts';
import { gfnInRange } from './map.ts';
import { growTableLocked } from './table.ts';

/** The gfn a guest reads for a grant frame mapped nowhere (Xen's INVALID_GFN). */
export const INVALID_GFN = 0xffffffffffffffffn;

/** XENMAPIDX_grant_table_status: asks for a v2 status frame, which v1 does not have. */
export const XENMAPIDX_grant_table_status = 0x80000000;

/** gfn where grant frame `i` of `slot` is mapped in its owner's physmap, or -1. Domain lock held. */
export function grantFrameGfn(hv: HvState, slot: number, i: number): number {
  const m = hv.grantFrames[grantFrameIdx(slot, i)];
  if (m < 0) return -1;
  const g = hv.ftGfn[m];
  if (g < 0) return -1;
  const e = p2mLookup(hv, slot, g);
  return e !== P2M_INVALID && p2mType(e) === p2m_ram_rw && entryMfn(e) === m ? g : -1;
}

/**
 * XENMAPSPACE_grant_table: map grant frame `idx` of the domain in `slot` at
 * `gpfn`, growing the table to idx + 1 frames if needed. What was at gpfn goes
 * first (its RAM is freed, as Xen does); a frame mapped elsewhere moves. 0, or
 * -EINVAL (status frame asked for, idx beyond max_grant_frames or the table
 * cannot grow, gpfn out of range), -EBUSY (gpfn holds a grant mapping).
 */
export function gnttabAddToPhysmap(hv: HvState, slot: number, idx: number, gpfn: number): number {
  if (!Number.isSafeInteger(idx) || idx < 0 || !gfnInRange(hv, gpfn)) return -EINVAL;
  if (idx >= XENMAPIDX_grant_table_status) return -EINVAL;
  if (idx >= Atomics.load(hv.dom, hv.d(slot, D.max_grant_frames))) return -EINVAL;
  // Unhook or free what is at gpfn (guest_remove_page), unless it is already this frame.
  const cur = p2mLookup(hv, slot, gpfn);
  if (cur !== P2M_INVALID) {
    const m = idx < Atomics.load(hv.dom, hv.d(slot, D.nr_grant_frames)) ? hv.grantFrames[grantFrameIdx(slot, idx)] : -1;
    if (entryMfn(cur) !== m || p2mType(cur) !== p2m_ram_rw) {
      const rc = guestRemovePage(hv, slot, gpfn);
      if (rc < 0) return rc;
    }
  }
  domLock(hv, slot);
  heapLock(hv);
  try {
    if (!growTableLocked(hv, slot, idx + 1)) return -EINVAL;
    const m = hv.grantFrames[grantFrameIdx(slot, idx)];
    const at = p2mLookup(hv, slot, gpfn);
    if (at !== P2M_INVALID && !(p2mType(at) === p2m_ram_rw && entryMfn(at) === m)) return -EBUSY; // refilled meanwhile
    const old = grantFrameGfn(hv, slot, idx);
    if (old >= 0 && old !== gpfn) p2mClear(hv, slot, old);
    p2mSet(hv, slot, gpfn, m, p2m_ram_rw);
    return 0;
  } finally {
    heapUnlock(hv);
    domUnlock(hv, slot);
  }
}

/**
 * The frames setup_table reports for `nr` frames of `slot`, growing the table
 * first: an array of u64 gfns (INVALID_GFN where unmapped), or null when nr
 * exceeds max_grant_frames or the table cannot grow (GNTST_general_error).
 */
export function setupFrames(hv: HvState, slot: number, nr: number): bigint[] | null {
  domLock(hv, slot);
  try {
    if (nr > hv.dom[hv.d(slot, D.max_grant_frames)]) return null;
    if (nr > hv.dom[hv.d(slot, D.nr_grant_frames)]) {
      heapLock(hv);
      const ok = growTableLocked(hv, slot, nr);
      heapUnlock(hv);
      if (!ok) return null;
    }
    const out: bigint[] = [];
    for (let i = 0; i < nr; i++) {
      const g = grantFrameGfn(hv, slot, i);
      out.push(g < 0 ? INVALID_GFN : BigInt(g));
    }
    return out;
  } finally {
    domUnlock(hv, slot);
  }
}
