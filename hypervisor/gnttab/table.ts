/**
 * A domain's grant table and maptrack (Xen: common/grant_table.c): growing the
 * table on demand, the guest-shared entries' flag protocol, maptrack handles,
 * and tearing both down. Every function here runs with the owning domain's
 * lock held (lock order level 2); those that allocate or free frames say so
 * and take or expect heap_lock (level 3).
 *
 * Grant frames are hypervisor pages shared with the granting domain and owned
 * by it (Xen's share_xen_page_with_guest): owner = the domain, counted in its
 * xenheap_pages and not in tot_pages. The table holds the frame's one
 * reference, so the frame carries no PGC_allocated: removing it from the
 * physmap (decrease_reservation, remove_from_physmap) unhooks it and frees
 * nothing. Active and maptrack frames are the hypervisor's own (OWNER_XEN).
 */
import {
  GNTST_general_error, GNTST_okay, GTF_permit_access, GTF_readonly, GTF_reading, GTF_type_mask, GTF_writing,
} from '../../shared/abi/grant-table.ts';
import { allocXenFrame, heapLock, heapUnlock, putPage } from '../mm/frames.ts';
import { entryMfn, p2mClear, p2mLookup } from '../mm/p2m.ts';
import {
  ACTIVE_PER_GRANT_FRAME, D, HvState, OWNER_XEN, P2M_INVALID, PGT_grant_table, PGT_none, p2mType, p2m_ram_rw,
} from '../state.ts';
import {
  activeFrameIdx, grantFrameIdx, INITIAL_NR_GRANT_FRAMES, MAPTRACK_PER_PAGE, MAPTRACK_TAIL, maptrackFrameIdx,
  MT_FLAGS_DOMID, MT_REF, mtWord,
} from './layout.ts';

/**
 * gnttab_grow_table(): grant frames [nr_grant_frames, req) and the active
 * frames that shadow them, all zeroed. Domain lock and heap_lock held.
 * Returns false, with nothing changed, when req exceeds max_grant_frames or
 * memory runs out.
 */
export function growTableLocked(hv: HvState, slot: number, req: number): boolean {
  const nr = hv.dom[hv.d(slot, D.nr_grant_frames)];
  const want = Math.max(req, INITIAL_NR_GRANT_FRAMES);
  if (want <= nr) return true;
  if (want > hv.dom[hv.d(slot, D.max_grant_frames)]) return false;
  const taken: number[] = [];
  const undo = (): false => {
    for (const m of taken) putPage(hv, m);
    for (let j = nr * ACTIVE_PER_GRANT_FRAME; j < want * ACTIVE_PER_GRANT_FRAME; j++) hv.activeFrames[activeFrameIdx(slot, j)] = -1;
    for (let i = nr; i < want; i++) hv.grantFrames[grantFrameIdx(slot, i)] = -1;
    return false;
  };
  for (let j = nr * ACTIVE_PER_GRANT_FRAME; j < want * ACTIVE_PER_GRANT_FRAME; j++) {
    const m = allocXenFrame(hv, PGT_none);
    if (m < 0) return undo();
    taken.push(m);
    hv.activeFrames[activeFrameIdx(slot, j)] = m;
  }
  for (let i = nr; i < want; i++) {
    const m = allocXenFrame(hv, PGT_grant_table);
    if (m < 0) return undo();
    taken.push(m);
    hv.grantFrames[grantFrameIdx(slot, i)] = m;
  }
  // Share the new frames with the domain (share_xen_page_with_guest).
  const domid = hv.dom[hv.d(slot, D.domid)];
  for (let i = nr; i < want; i++) {
    const m = hv.grantFrames[grantFrameIdx(slot, i)];
    hv.ftOwner[m] = domid;
    hv.ftType[m] = PGT_grant_table;
    Atomics.add(hv.dom, hv.d(slot, D.xenheap_pages), 1);
  }
  Atomics.store(hv.dom, hv.d(slot, D.nr_grant_frames), want);
  return true;
}

/** growTableLocked with heap_lock taken here (domain lock held). */
export function growTable(hv: HvState, slot: number, req: number): boolean {
  heapLock(hv);
  try {
    return growTableLocked(hv, slot, req);
  } finally {
    heapUnlock(hv);
  }
}

/**
 * grant_table_destroy() for a dying domain: unhook each grant frame from the
 * physmap, hand it back to the hypervisor and drop the table's reference (the
 * frame is freed unless a foreign mapping still holds it; then it is freed by
 * that unmapping), and free the active frames. Domain lock and heap_lock held.
 */
export function destroyTableLocked(hv: HvState, slot: number): void {
  const nr = hv.dom[hv.d(slot, D.nr_grant_frames)];
  for (let i = 0; i < nr; i++) {
    const gi = grantFrameIdx(slot, i);
    const m = hv.grantFrames[gi];
    const g = hv.ftGfn[m];
    if (g >= 0) {
      const e = p2mLookup(hv, slot, g);
      if (e !== P2M_INVALID && p2mType(e) === p2m_ram_rw && entryMfn(e) === m) p2mClear(hv, slot, g);
    }
    hv.ftGfn[m] = -1;
    hv.ftOwner[m] = OWNER_XEN;
    Atomics.sub(hv.dom, hv.d(slot, D.xenheap_pages), 1);
    putPage(hv, m);
    hv.grantFrames[gi] = -1;
  }
  for (let j = 0; j < nr * ACTIVE_PER_GRANT_FRAME; j++) {
    const ai = activeFrameIdx(slot, j);
    putPage(hv, hv.activeFrames[ai]);
    hv.activeFrames[ai] = -1;
  }
  Atomics.store(hv.dom, hv.d(slot, D.nr_grant_frames), 0);
}

/**
 * _set_status_v1(): take the shared entry at mem32 word `w` for access by
 * `ldomid`, setting GTF_reading (and GTF_writing unless `readonly`) with a
 * compare-and-swap on the flags|domid word, so a racing revoke by the granter
 * either wins before (and the check fails) or sees the flags. While the entry
 * is not yet pinned its type must be permit_access and its domid the
 * accessor's; a write access needs the entry not GTF_readonly. A granter that
 * keeps rewriting the word makes it fail after 5 tries. Returns GNTST_okay or
 * GNTST_general_error (Xen's status for all of these).
 */
export function setStatusV1(hv: HvState, w: number, pinned: boolean, readonly: boolean, ldomid: number): number {
  let cur = Atomics.load(hv.mem32, w);
  for (let retries = 0; ; retries++) {
    const flags = cur & 0xffff;
    if (!pinned && ((flags & GTF_type_mask) !== GTF_permit_access || cur >>> 16 !== ldomid)) return GNTST_general_error;
    let next = cur | GTF_reading;
    if (!readonly) {
      if (flags & GTF_readonly) return GNTST_general_error;
      next |= GTF_writing;
    }
    const prev = Atomics.compareExchange(hv.mem32, w, cur, next);
    if (prev === cur) return GNTST_okay;
    if (retries === 4) return GNTST_general_error;
    cur = prev;
  }
}

/** gnttab_clear_flags(): atomically clear flag bits, leaving the rest of the word (domid) alone. */
export function clearFlags(hv: HvState, w: number, bits: number): void {
  if (bits) Atomics.and(hv.mem32, w, ~bits);
}

/**
 * get_maptrack_handle(): a free handle of the domain's maptrack, growing it by
 * one frame (up to max_maptrack_frames) when the free list is empty. Domain
 * lock held; takes heap_lock to grow. -1 when there is none to be had.
 */
export function getMaptrackHandle(hv: HvState, slot: number): number {
  const hi = hv.d(slot, D.maptrack_head);
  let head = hv.dom[hi];
  if (head === MAPTRACK_TAIL) {
    const k = hv.dom[hv.d(slot, D.nr_maptrack_frames)];
    if (k >= hv.dom[hv.d(slot, D.max_maptrack_frames)]) return -1;
    heapLock(hv);
    const m = allocXenFrame(hv, PGT_none);
    heapUnlock(hv);
    if (m < 0) return -1;
    hv.maptrackFrames[maptrackFrameIdx(slot, k)] = m;
    Atomics.store(hv.dom, hv.d(slot, D.nr_maptrack_frames), k + 1);
    // Chain the new entries: each free entry's ref names the next free handle.
    const first = k * MAPTRACK_PER_PAGE;
    for (let h = first; h < first + MAPTRACK_PER_PAGE; h++) {
      hv.mem32[mtWord(hv, slot, h) + MT_REF] = h + 1 < first + MAPTRACK_PER_PAGE ? h + 1 : MAPTRACK_TAIL;
    }
    head = first;
  }
  const w = mtWord(hv, slot, head);
  hv.dom[hi] = hv.mem32[w + MT_REF];
  hv.mem32[w + MT_REF] = 0;
  return head;
}

/** put_maptrack_handle(): mark the entry free and push it on the free list. Domain lock held. */
export function putMaptrackHandle(hv: HvState, slot: number, handle: number): void {
  const w = mtWord(hv, slot, handle);
  Atomics.store(hv.mem32, w + MT_FLAGS_DOMID, 0);
  const hi = hv.d(slot, D.maptrack_head);
  hv.mem32[w + MT_REF] = hv.dom[hi];
  hv.dom[hi] = handle;
}

/** Free the maptrack frames of a dying domain whose mappings are all released. Domain lock and heap_lock held. */
export function destroyMaptrackLocked(hv: HvState, slot: number): void {
  const k = hv.dom[hv.d(slot, D.nr_maptrack_frames)];
  for (let i = 0; i < k; i++) {
    const mi = maptrackFrameIdx(slot, i);
    putPage(hv, hv.maptrackFrames[mi]);
    hv.maptrackFrames[mi] = -1;
  }
  Atomics.store(hv.dom, hv.d(slot, D.nr_maptrack_frames), 0);
  hv.dom[hv.d(slot, D.maptrack_head)] = MAPTRACK_TAIL;
}
