/**
 * GNTTABOP_map_grant_ref and GNTTABOP_unmap_grant_ref for auto-translated
 * domains (Xen: common/grant_table.c map_grant_ref, unmap_common and
 * unmap_common_complete; arch/x86/hvm create/replace_grant_p2m_mapping).
 *
 * A mapping puts the granter's frame into the mapper's physmap at the gfn of
 * `host_addr` with type p2m_grant_map_rw or p2m_grant_map_ro, takes one page
 * reference, pins the granter's active entry (setting GTF_reading, and
 * GTF_writing for a writable mapping) and records a maptrack handle.
 * Unmapping undoes each step; the page reference is dropped last, so a frame
 * whose owner died meanwhile is freed only then.
 *
 * Locks: the mapper's and the granter's domain locks (lower slot first), then
 * heap_lock for page references.
 */
import {
  GNTMAP_application_map, GNTMAP_contains_pte, GNTMAP_device_map, GNTMAP_host_map, GNTMAP_readonly, GNTST_bad_domain,
  GNTST_bad_gntref, GNTST_bad_handle, GNTST_bad_page, GNTST_general_error, GNTST_no_device_space, GNTST_okay,
  GTF_reading, GTF_writing,
} from '../../shared/abi/grant-table.ts';
import { PAGE_SIZE } from '../../shared/types.ts';
import { domidOfSlot, domLock, domUnlock, finishIfDead, liveSlot, slotOf } from '../domain.ts';
import { getPage, heapLock, heapUnlock, PGT_TYPE_MASK, putPage } from '../mm/frames.ts';
import { entryMfn, p2mClear, p2mLookup, p2mSet } from '../mm/p2m.ts';
import {
  D, DOMSTATE_ACTIVE, HvState, P2M_INVALID, PGT_none, p2mType, p2m_grant_map_ro, p2m_grant_map_rw, p2m_ram_rw,
} from '../state.ts';
import {
  ACT_DOMID, ACT_GFN, ACT_MFN, ACT_PIN, actWord, GNTPIN_hstr_inc, GNTPIN_hstw_inc, GNTPIN_hstw_mask, GNTPIN_OVERFLOW,
  maptrackLimit, MT_FLAGS_DOMID, MT_GFN, MT_MFN, MT_REF, mtWord, nrGrantEntries, SHA_FRAME, shaWord,
} from './layout.ts';
import { clearFlags, getMaptrackHandle, putMaptrackHandle, setStatusV1 } from './table.ts';

/** Take two domain locks in the fixed order (lower slot first); one lock if they are the same domain. */
export function lockDomains(hv: HvState, a: number, b: number): void {
  if (a === b) return domLock(hv, a);
  domLock(hv, Math.min(a, b));
  domLock(hv, Math.max(a, b));
}

export function unlockDomains(hv: HvState, a: number, b: number): void {
  if (a === b) return domUnlock(hv, a);
  domUnlock(hv, Math.max(a, b));
  domUnlock(hv, Math.min(a, b));
}

/** True for a gfn inside the physmap. */
export function gfnInRange(hv: HvState, gfn: number): boolean {
  return Number.isSafeInteger(gfn) && gfn >= 0 && gfn < hv.cfg.p2mEntries;
}

/**
 * The machine frame behind a granter's gfn, as get_paged_frame() accepts it:
 * ordinary RAM of the granter's own (not a foreign or grant mapping, not a
 * hypervisor page such as shared_info or a grant table frame). -1 otherwise.
 * Granter's domain lock held.
 */
export function grantableFrame(hv: HvState, rslot: number, gfn: number): number {
  const e = p2mLookup(hv, rslot, gfn);
  if (e === P2M_INVALID || p2mType(e) !== p2m_ram_rw) return -1;
  const m = entryMfn(e);
  if (hv.ftOwner[m] !== hv.dom[hv.d(rslot, D.domid)] || (hv.ftType[m] & PGT_TYPE_MASK) !== PGT_none) return -1;
  return m;
}

/** Guest input of one map_grant_ref, already copied out of guest memory. */
export interface MapRequest {
  readonly hostAddr: number;
  readonly flags: number;
  readonly ref: number;
  readonly dom: number;
}

/** GNTST_* status; `handle` is meaningful only for GNTST_okay. */
export interface MapResult {
  readonly status: number;
  readonly handle: number;
}

const failed = (status: number): MapResult => ({ status, handle: 0 });

/** map_grant_ref() for the domain in `lslot`. Follows Xen's checks in Xen's order. */
export function mapGrantRef(hv: HvState, lslot: number, op: MapRequest): MapResult {
  if ((op.flags & (GNTMAP_device_map | GNTMAP_host_map)) === 0) return failed(GNTST_bad_gntref);
  // Auto-translated mappers ("HVM"): no device, application or PTE mappings.
  if (op.flags & (GNTMAP_device_map | GNTMAP_application_map | GNTMAP_contains_pte)) return failed(GNTST_general_error);
  const rslot = liveSlot(hv, op.dom);
  if (rslot < 0) return failed(GNTST_bad_domain);
  const ldomid = domidOfSlot(hv, lslot);
  const readonly = (op.flags & GNTMAP_readonly) !== 0;
  const inc = readonly ? GNTPIN_hstr_inc : GNTPIN_hstw_inc;
  lockDomains(hv, lslot, rslot);
  try {
    // Under the lock: the granter may have started dying since the lookup.
    if (Atomics.load(hv.dom, hv.d(rslot, D.state)) !== DOMSTATE_ACTIVE) return failed(GNTST_bad_domain);
    const handle = getMaptrackHandle(hv, lslot);
    if (handle < 0) return failed(GNTST_no_device_space);
    const status = pinAndMap(hv, lslot, rslot, ldomid, op, readonly, inc, handle);
    if (status !== GNTST_okay) {
      putMaptrackHandle(hv, lslot, handle);
      return failed(status);
    }
    Atomics.add(hv.dom, hv.d(lslot, D.maptrack_in_use), 1);
    return { status, handle };
  } finally {
    unlockDomains(hv, lslot, rslot);
  }
}

/** The body of map_grant_ref once the handle is held; both domain locks held. Undoes itself on failure. */
function pinAndMap(
  hv: HvState, lslot: number, rslot: number, ldomid: number, op: MapRequest, readonly: boolean, inc: number, handle: number,
): number {
  if (op.ref >= nrGrantEntries(hv, rslot)) return GNTST_bad_gntref;
  const sw = shaWord(hv, rslot, op.ref);
  const aw = actWord(hv, rslot, op.ref);
  const pin = hv.mem32[aw + ACT_PIN];
  // Pinned already: only for the same domain, and never past a counter's top bit.
  if (pin !== 0 && (hv.mem32[aw + ACT_DOMID] !== ldomid || (pin & GNTPIN_OVERFLOW) !== 0)) return GNTST_general_error;
  if (pin === 0 || (!readonly && (pin & GNTPIN_hstw_mask) === 0)) {
    const rc = setStatusV1(hv, sw, pin !== 0, readonly, ldomid);
    if (rc !== GNTST_okay) return rc;
    if (pin === 0) {
      // One read of the frame field after the flags are ours: the granter may no longer change it.
      const gfn = Atomics.load(hv.mem32, sw + SHA_FRAME) >>> 0;
      const m = grantableFrame(hv, rslot, gfn);
      if (m < 0) {
        clearFlags(hv, sw, GTF_reading | (readonly ? 0 : GTF_writing));
        return GNTST_bad_page;
      }
      hv.mem32[aw + ACT_DOMID] = ldomid;
      hv.mem32[aw + ACT_MFN] = m;
      hv.mem32[aw + ACT_GFN] = gfn;
    }
  }
  hv.mem32[aw + ACT_PIN] += inc;
  const m = hv.mem32[aw + ACT_MFN];
  const hostGfn = Math.floor(op.hostAddr / PAGE_SIZE);
  let status = GNTST_okay;
  heapLock(hv);
  try {
    if (!gfnInRange(hv, hostGfn) || p2mLookup(hv, lslot, hostGfn) !== P2M_INVALID) {
      // create_grant_p2m_mapping failed: the mapper's gfn is out of range or in use.
      status = GNTST_general_error;
    } else if (!getPage(hv, m, op.dom)) {
      status = GNTST_general_error;
    } else {
      p2mSet(hv, lslot, hostGfn, m, readonly ? p2m_grant_map_ro : p2m_grant_map_rw);
    }
  } finally {
    heapUnlock(hv);
  }
  if (status !== GNTST_okay) {
    const left = (hv.mem32[aw + ACT_PIN] -= inc);
    clearFlags(hv, sw, (!readonly && (left & GNTPIN_hstw_mask) === 0 ? GTF_writing : 0) | (left === 0 ? GTF_reading : 0));
    return status;
  }
  const w = mtWord(hv, lslot, handle);
  hv.mem32[w + MT_REF] = op.ref;
  hv.mem32[w + MT_GFN] = hostGfn;
  hv.mem32[w + MT_MFN] = m;
  // Flags last: a non-zero flags word is what makes the handle live.
  Atomics.store(hv.mem32, w + MT_FLAGS_DOMID, (op.flags & 0xffff) | (op.dom << 16));
  return GNTST_okay;
}

/**
 * Release maptrack handle `handle` of `lslot` (a mapping of `rslot`'s grant):
 * clear the physmap entry, free the handle, unpin the granter's active entry
 * and clear GTF_writing / GTF_reading as the pin counts reach 0 (if the granter
 * still has its table), and drop the page reference. Both domain locks and
 * heap_lock held. Returns the slot of a domain whose last frame this freed
 * (for finishIfDead), or -1.
 */
export function releaseMappingLocked(hv: HvState, lslot: number, rslot: number, handle: number): number {
  const w = mtWord(hv, lslot, handle);
  const flags = hv.mem32[w + MT_FLAGS_DOMID] & 0xffff;
  const ref = hv.mem32[w + MT_REF] >>> 0;
  const gfn = hv.mem32[w + MT_GFN];
  const m = hv.mem32[w + MT_MFN];
  const e = p2mLookup(hv, lslot, gfn);
  if (e !== P2M_INVALID && entryMfn(e) === m && isGrantMapping(p2mType(e))) p2mClear(hv, lslot, gfn);
  putMaptrackHandle(hv, lslot, handle);
  Atomics.sub(hv.dom, hv.d(lslot, D.maptrack_in_use), 1);
  const readonly = (flags & GNTMAP_readonly) !== 0;
  const aw = ref < nrGrantEntries(hv, rslot) ? actWord(hv, rslot, ref) : -1;
  if (aw >= 0) {
    const left = (hv.mem32[aw + ACT_PIN] -= readonly ? GNTPIN_hstr_inc : GNTPIN_hstw_inc);
    clearFlags(hv, shaWord(hv, rslot, ref),
      (!readonly && (left & GNTPIN_hstw_mask) === 0 ? GTF_writing : 0) | (left === 0 ? GTF_reading : 0));
  }
  return putPage(hv, m);
}

const isGrantMapping = (t: number): boolean => t === p2m_grant_map_rw || t === p2m_grant_map_ro;

/**
 * unmap_grant_ref() for the domain in `lslot`. GNTST_bad_handle for a handle
 * out of range or not in use (never mapped, or unmapped already);
 * GNTST_general_error when dev_bus_addr is not 0 (we never hand one out) or
 * host_addr does not name the mapping's gfn. A host_addr of 0 leaves the
 * mapping in place and succeeds, as in Xen.
 */
export function unmapGrantRef(hv: HvState, lslot: number, hostAddr: number, devBusAddr: number, handle: number): number {
  if (!Number.isInteger(handle) || handle < 0 || handle >= maptrackLimit(hv, lslot)) return GNTST_bad_handle;
  const w = mtWord(hv, lslot, handle);
  const seen = Atomics.load(hv.mem32, w + MT_FLAGS_DOMID);
  if ((seen & 0xffff) === 0) return GNTST_bad_handle;
  const rslot = slotOf(hv, seen >>> 16);
  // A live mapping holds a reference on a frame its granter owns, so the granter's record outlives it.
  if (rslot < 0) return GNTST_general_error;
  let freed = -1;
  lockDomains(hv, lslot, rslot);
  try {
    // Another vCPU of ours may have unmapped (and even reused) the handle meanwhile.
    if (Atomics.load(hv.mem32, w + MT_FLAGS_DOMID) !== seen) return GNTST_bad_handle;
    if (devBusAddr !== 0) return GNTST_general_error;
    if (hostAddr === 0) return GNTST_okay;
    if (Math.floor(hostAddr / PAGE_SIZE) !== hv.mem32[w + MT_GFN]) return GNTST_general_error;
    heapLock(hv);
    try {
      freed = releaseMappingLocked(hv, lslot, rslot, handle);
    } finally {
      heapUnlock(hv);
    }
  } finally {
    unlockDomains(hv, lslot, rslot);
  }
  if (freed >= 0) finishIfDead(hv, freed);
  return GNTST_okay;
}
