/**
 * GNTTABOP_transfer, page flipping (Xen: common/grant_table.c gnttab_transfer
 * and gnttab_prepare_for_transfer): the caller's page leaves its physmap and
 * its ownership and accounting move to the target domain. No byte is copied.
 *
 * For auto-translated domains, as in Xen, `mfn` names a gfn of the caller and
 * the target's accept_transfer entry's `frame` names the gfn where the page
 * lands in the target's physmap (Xen: guest_physmap_add_page(e, sha->frame));
 * the hypervisor writes that gfn back into `frame` before setting
 * GTF_transfer_completed.
 *
 * Statuses, in Xen's order:
 *  - GNTST_bad_page: the gfn is not RAM of the caller's own, or the page is
 *    mapped or referenced by anyone else (steal_page fails). Nothing happens.
 *  - every later failure loses the page: it has left the caller and is freed.
 *    GNTST_bad_domain: no such target. GNTST_general_error: the target is
 *    dying or has no headroom (tot_pages >= max_pages), or its entry is not
 *    exactly GTF_accept_transfer naming the caller, or the ref is out of range,
 *    or the entry keeps changing, or (our check, made before committing) the
 *    entry's frame is not a free gfn of the target's physmap.
 *
 * Locks: both domain locks (lower slot first), then heap_lock.
 */
import {
  GNTST_bad_domain, GNTST_bad_page, GNTST_general_error, GNTST_okay, GTF_accept_transfer, GTF_transfer_committed,
  GTF_transfer_completed,
} from '../../shared/abi/grant-table.ts';
import { slotOf } from '../domain.ts';
import { dropAllocation, heapLock, heapUnlock, PGC_allocated } from '../mm/frames.ts';
import { entryMfn, p2mClear, p2mLookup, p2mSet } from '../mm/p2m.ts';
import { D, DOMSTATE_ACTIVE, HvState, P2M_INVALID, PGT_none, p2mType, p2m_ram_rw } from '../state.ts';
import { nrGrantEntries, SHA_FLAGS_DOMID, SHA_FRAME, shaWord } from './layout.ts';
import { gfnInRange, lockDomains, unlockDomains } from './map.ts';

/** One gnttab_transfer for the caller in `cslot`: its page at `gfn` to domain `domid`, entry `ref`. */
export function gnttabTransferOne(hv: HvState, cslot: number, gfn: number, domid: number, ref: number): number {
  const eslot = slotOf(hv, domid);
  const other = eslot < 0 ? cslot : eslot;
  lockDomains(hv, cslot, other);
  heapLock(hv);
  try {
    const cdomid = hv.dom[hv.d(cslot, D.domid)];
    const e = p2mLookup(hv, cslot, gfn);
    if (e === P2M_INVALID || p2mType(e) !== p2m_ram_rw) return GNTST_bad_page;
    const m = entryMfn(e);
    // steal_page(): only a plain RAM page of the caller's that nobody else references.
    if (hv.ftOwner[m] !== cdomid || hv.ftCount[m] !== 1 || hv.ftType[m] !== (PGT_none | PGC_allocated)) return GNTST_bad_page;
    // From here the page has left the caller, whatever the outcome.
    p2mClear(hv, cslot, gfn);
    hv.ftGfn[m] = -1;
    const status = eslot < 0 ? GNTST_bad_domain : acceptLocked(hv, cslot, cdomid, eslot, ref, m);
    if (status !== GNTST_okay) dropAllocation(hv, m); // lost: freed, and the caller's tot_pages drops
    return status;
  } finally {
    heapUnlock(hv);
    unlockDomains(hv, cslot, other);
  }
}

/**
 * The target's side: headroom, then commit the accept_transfer entry by
 * compare-and-swap (at most 5 tries against a granter rewriting it), then
 * assign the page, map it at the entry's gfn, write the frame field, and set
 * GTF_transfer_completed last. Both domain locks and heap_lock held.
 */
function acceptLocked(hv: HvState, cslot: number, cdomid: number, eslot: number, ref: number, m: number): number {
  // A self-transfer has already given the page up (steal_page lowered tot_pages in Xen).
  const tot = hv.dom[hv.d(eslot, D.tot_pages)] - (eslot === cslot ? 1 : 0);
  if (Atomics.load(hv.dom, hv.d(eslot, D.state)) !== DOMSTATE_ACTIVE || tot >= hv.dom[hv.d(eslot, D.max_pages)]) {
    return GNTST_general_error;
  }
  if (ref >= nrGrantEntries(hv, eslot)) return GNTST_general_error;
  const sw = shaWord(hv, eslot, ref) + SHA_FLAGS_DOMID;
  let cur = Atomics.load(hv.mem32, sw);
  let gfn: number;
  for (let retries = 0; ; retries++) {
    if ((cur & 0xffff) !== GTF_accept_transfer || cur >>> 16 !== cdomid) return GNTST_general_error;
    gfn = Atomics.load(hv.mem32, sw + SHA_FRAME) >>> 0;
    if (!gfnInRange(hv, gfn) || p2mLookup(hv, eslot, gfn) !== P2M_INVALID) return GNTST_general_error;
    const prev = Atomics.compareExchange(hv.mem32, sw, cur, cur | GTF_transfer_committed);
    if (prev === cur) break;
    if (retries === 4) return GNTST_general_error;
    cur = prev;
  }
  // assign_pages(): ownership and accounting move; the allocation reference goes with the page.
  hv.ftOwner[m] = hv.dom[hv.d(eslot, D.domid)];
  Atomics.sub(hv.dom, hv.d(cslot, D.tot_pages), 1);
  Atomics.add(hv.dom, hv.d(eslot, D.tot_pages), 1);
  p2mSet(hv, eslot, gfn, m, p2m_ram_rw);
  Atomics.store(hv.mem32, sw + SHA_FRAME, gfn);
  // Seq-cst atomics: the frame store above is visible before the completed flag.
  Atomics.or(hv.mem32, sw, GTF_transfer_completed);
  return GNTST_okay;
}
