/**
 * GNTTABOP_copy (Xen: common/grant_table.c gnttab_copy and its helpers): copy
 * bytes between two frames, each named either by a grant reference of some
 * domain (GNTCOPY_source_gref / GNTCOPY_dest_gref) or by a gfn of the caller's
 * own memory (DOMID_SELF only). A gref side is taken for the copy as a mapping
 * would take it: GTF_reading for the source, GTF_writing too for the
 * destination (a GTF_readonly entry cannot be a destination), set by
 * compare-and-swap before any byte moves and cleared after, unless a mapping's
 * pins still need them.
 *
 * Checks in Xen's order: domains (permission_denied for a gmfn of another
 * domain, bad_domain), source, destination, then the bounds: offset + len
 * past the page is GNTST_bad_copy_arg.
 *
 * Locking: the domain locks of both sides (lower slot first) are held while
 * an entry is checked and its bytes move, so neither frame can leave its
 * owner's physmap mid-copy (no page reference, no heap_lock). Consecutive
 * entries between the same two domains share one taking of the locks, up to
 * COPY_RUN entries (Xen likewise keeps the domains it looked up across
 * consecutive entries, gnttab_copy_lock_domains, though its locks are not
 * exclusive). Unlike Xen, a copy leaves the active entry's pin count alone:
 * such a pin would live only while our locks are held, and nobody reads pins
 * without them; the guest-visible flags are what a racing revoke sees.
 */
import {
  GNTCOPY_dest_gref, GNTCOPY_source_gref, GNTST_bad_copy_arg, GNTST_bad_domain, GNTST_bad_gntref, GNTST_bad_page,
  GNTST_general_error, GNTST_okay, GNTST_permission_denied, GNTTAB_COPY, GRANT_ENTRIES_PER_FRAME_V1, GTF_reading,
  GTF_writing,
} from '../../shared/abi/grant-table.ts';
import { DOMID_SELF, PAGE_SHIFT, PAGE_SIZE } from '../../shared/types.ts';
import { liveSlot } from '../domain.ts';
import { D, DOMSTATE_ACTIVE, HvState } from '../state.ts';
import { ACT_DOMID, ACT_MFN, ACT_PIN, actWord, GNTPIN_hstw_mask, GNTPIN_OVERFLOW, SHA_FRAME, shaWord } from './layout.ts';
import { grantableFrame, lockDomains, unlockDomains } from './map.ts';
import { clearFlags, setStatusV1 } from './table.ts';

/** Entries done under one taking of the domain locks (a bound on how long others wait). */
export const COPY_RUN = 32;

const F = GNTTAB_COPY.fields;

/**
 * What takeForCopy found, for dropForCopy (module scratch instead of an object
 * per entry: this is the data path; both run on this thread under the locks).
 */
let takenSw = 0;
let takenPin = 0;

/**
 * The gref side's part of acquire_grant_for_copy(), both domain locks held:
 * check and take grant `ref` of `rslot` for `ldomid`. Returns the machine
 * frame, or a negative GNTST_*. On success what it set in the entry's flags
 * is undone by dropForCopy(takenSw, takenPin) right after the copy.
 */
function takeForCopy(hv: HvState, rslot: number, ref: number, ldomid: number, readonly: boolean): number {
  if (ref >= hv.dom[hv.d(rslot, D.nr_grant_frames)]! * GRANT_ENTRIES_PER_FRAME_V1) return GNTST_bad_gntref;
  const mem32 = hv.mem32;
  const aw = actWord(hv, rslot, ref);
  const pin = mem32[aw + ACT_PIN]!;
  const sw = shaWord(hv, rslot, ref);
  takenSw = sw;
  takenPin = pin;
  if (pin !== 0 && (mem32[aw + ACT_DOMID] !== ldomid || (pin & GNTPIN_OVERFLOW) !== 0)) return GNTST_general_error;
  if (pin !== 0 && (readonly || (pin & GNTPIN_hstw_mask) !== 0)) {
    // Pinned by a mapping of the copier's that covers this access: the flags are set already.
    const m = mem32[aw + ACT_MFN]!;
    return hv.ftOwner[m] === hv.dom[hv.d(rslot, D.domid)] ? m : GNTST_bad_domain;
  }
  const rc = setStatusV1(hv, sw, pin !== 0, readonly, ldomid);
  if (rc !== GNTST_okay) return rc;
  if (pin !== 0) return mem32[aw + ACT_MFN]!; // a read pin upgraded for this write
  // One read of the frame field, after the flags are ours.
  const m = grantableFrame(hv, rslot, Atomics.load(mem32, sw + SHA_FRAME) >>> 0);
  if (m < 0) {
    clearFlags(hv, sw, GTF_reading | (readonly ? 0 : GTF_writing));
    return GNTST_bad_page;
  }
  return m;
}

/** release_grant_for_copy(): clear what takeForCopy set, leaving what the mappings' pins (unchanged) need. */
function dropForCopy(hv: HvState, sw: number, pin: number, readonly: boolean): void {
  const clear = (!readonly && (pin & GNTPIN_hstw_mask) === 0 ? GTF_writing : 0) | (pin === 0 ? GTF_reading : 0);
  if (clear) clearFlags(hv, sw, clear);
}

/** A frame of the caller's own RAM named by gfn (get_paged_frame on DOMID_SELF): mfn, or GNTST_bad_page. */
function ownFrame(hv: HvState, cslot: number, gfn: number): number {
  const m = grantableFrame(hv, cslot, gfn);
  return m < 0 ? GNTST_bad_page : m;
}

/** One copy with both domain locks held. */
function copyLocked(
  hv: HvState, cslot: number, cdomid: number, flags: number,
  sslot: number, su: number, soff: number, dslot: number, du: number, doff: number, len: number,
): number {
  const srcGref = (flags & GNTCOPY_source_gref) !== 0;
  const dstGref = (flags & GNTCOPY_dest_gref) !== 0;
  const sm = srcGref ? takeForCopy(hv, sslot, su, cdomid, true) : ownFrame(hv, cslot, su);
  if (sm < 0) return sm;
  const sSw = takenSw;
  const sPin = takenPin;
  const dm = dstGref ? takeForCopy(hv, dslot, du, cdomid, false) : ownFrame(hv, cslot, du);
  let status = GNTST_okay;
  if (dm < 0) {
    status = dm;
  } else {
    if (soff + len > PAGE_SIZE || doff + len > PAGE_SIZE) {
      status = GNTST_bad_copy_arg;
    } else {
      const s = (sm << PAGE_SHIFT) + soff;
      hv.mem8.copyWithin((dm << PAGE_SHIFT) + doff, s, s + len);
    }
    if (dstGref) dropForCopy(hv, takenSw, takenPin, false);
  }
  if (srcGref) dropForCopy(hv, sSw, sPin, true);
  return status;
}

/** Still the live domain `domid` in `slot`? Checked with its lock held: it cannot be torn down meanwhile. */
function stillLive(hv: HvState, slot: number, domid: number): boolean {
  return Atomics.load(hv.dom, hv.d(slot, D.state)) === DOMSTATE_ACTIVE && hv.dom[hv.d(slot, D.domid)] === domid;
}

/**
 * A batch of gnttab_copy entries for the caller in `cslot` (domid `cdomid`),
 * one entry at a time through `one()`, then `close()` (always: it releases the
 * domain locks a run of entries keeps).
 *
 * A foreign domain is looked up once and re-checked each time its lock is
 * taken; while the lock is held it cannot be torn down, so, as in Xen, a
 * domain that starts dying during a run of entries still serves them.
 */
export class CopyBatch {
  private lo = -1;
  private hi = -1;
  private run = 0;
  /** The last foreign domain looked up (domid, slot). */
  private fdom = -1;
  private fslot = -1;

  constructor(private readonly hv: HvState, private readonly cslot: number, private readonly cdomid: number) {}

  private side(domid: number, isGref: boolean): number {
    if (domid === DOMID_SELF) return this.cslot;
    if (!isGref) return GNTST_permission_denied;
    if (domid !== this.fdom) {
      this.fslot = liveSlot(this.hv, domid);
      this.fdom = this.fslot < 0 ? -1 : domid;
    }
    return this.fslot < 0 ? GNTST_bad_domain : this.fslot;
  }

  /**
   * One entry, whose 40 bytes are at `o` in `b` (the guest's memory or a
   * private copy): each field is read exactly once, into a local, before
   * anything is checked. Returns its GNTST_* status.
   */
  one(b: DataView, o: number): number {
    const hv = this.hv;
    const flags = b.getUint16(o + F.flags.offset, true);
    const srcGref = (flags & GNTCOPY_source_gref) !== 0;
    const dstGref = (flags & GNTCOPY_dest_gref) !== 0;
    // A gref side names u.ref, the low 32 bits of the union; a frame side u.gmfn, all 64.
    const su = b.getUint32(o + F.source_u.offset, true) + (srcGref ? 0 : b.getUint32(o + F.source_u.offset + 4, true) * 2 ** 32);
    const du = b.getUint32(o + F.dest_u.offset, true) + (dstGref ? 0 : b.getUint32(o + F.dest_u.offset + 4, true) * 2 ** 32);
    const sdom = b.getUint16(o + F.source_domid.offset, true);
    const ddom = b.getUint16(o + F.dest_domid.offset, true);
    const soff = b.getUint16(o + F.source_offset.offset, true);
    const doff = b.getUint16(o + F.dest_offset.offset, true);
    const len = b.getUint16(o + F.len.offset, true);
    const sslot = this.side(sdom, srcGref);
    if (sslot < 0) return sslot;
    const dslot = this.side(ddom, dstGref);
    if (dslot < 0) return dslot;
    const a = Math.min(sslot, dslot);
    const z = Math.max(sslot, dslot);
    if (a !== this.lo || z !== this.hi || this.run === COPY_RUN) {
      this.close();
      lockDomains(hv, a, z);
      this.lo = a;
      this.hi = z;
      this.run = 0;
      // Looked up before the locks were taken: still those domains, alive? (The same
      // slots later in the run are the same domains: a locked domain cannot be torn down.)
      if (!stillLive(hv, sslot, sdom === DOMID_SELF ? this.cdomid : sdom) || !stillLive(hv, dslot, ddom === DOMID_SELF ? this.cdomid : ddom)) {
        this.close();
        this.fdom = -1;
        return GNTST_bad_domain;
      }
    }
    this.run++;
    return copyLocked(hv, this.cslot, this.cdomid, flags, sslot, su, soff, dslot, du, doff, len);
  }

  /** Release the locks held for the current run. */
  close(): void {
    if (this.lo >= 0) unlockDomains(this.hv, this.lo, this.hi);
    this.lo = this.hi = -1;
  }
}
