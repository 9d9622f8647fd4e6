/**
 * The grant table's hypervisor-side layouts (Xen: common/grant_table.c), declared
 * once as data, and the word addressing of every grant structure in machine
 * memory. Guest-visible entries (grant_entry_v1) are declared in
 * shared/abi/grant-table.ts; the active entries and the maptrack live in
 * hypervisor frames no guest can map.
 *
 * Where things are:
 *  - grant frame i of domain slot s:   hv.grantFrames[s * GNT_MAX_FRAMES + i] (mfn, -1 none)
 *  - active frame j of domain slot s:  hv.activeFrames[s * GNT_MAX_FRAMES * ACTIVE_PER_GRANT_FRAME + j]
 *  - maptrack frame k of domain slot s: hv.maptrackFrames[s * MAPTRACK_MAX_FRAMES + k]
 * All three are guarded by the owning domain's lock (lock order level 2).
 */
import { defineLayout, i16, i32, u16, u32, u64, wordIndex } from '../../shared/layout.ts';
import { GRANT_ENTRIES_PER_FRAME_V1, GRANT_ENTRY_V1 } from '../../shared/abi/grant-table.ts';
import { PAGE_SIZE } from '../../shared/types.ts';
import { ACTIVE_PER_GRANT_FRAME, D, GNT_MAX_FRAMES, HvState, MAPTRACK_MAX_FRAMES } from '../state.ts';

/**
 * struct active_grant_entry (common/grant_table.c), our 16-byte form: the
 * hypervisor's shadow of a pinned grant. v1 has no sub-page or transitive
 * grants, so start/length/trans_* are not kept.
 */
export const ACTIVE_ENTRY = defineLayout({ name: 'active_grant_entry', header: 'xen/common/grant_table.c', size: 16 }, {
  /** GNTPIN_* counts: host writable mappings in bits 0-7, host read-only in bits 8-15. */
  pin: u32(0),
  /** Domain the entry is pinned for (the mapper or copier). */
  domid: u32(4),
  /** Machine frame pinned. */
  mfn: i32(8),
  /** The granter's gfn at pin time (Xen keeps it in debug builds). */
  gfn: i32(12),
});
export const ACGNT_PER_PAGE = PAGE_SIZE / ACTIVE_ENTRY.size;

/** Pin count fields (common/grant_table.c GNTPIN_*). */
export const GNTPIN_hstw_inc = 1 << 0;
export const GNTPIN_hstw_mask = 0xff << 0;
export const GNTPIN_hstr_inc = 1 << 8;
export const GNTPIN_hstr_mask = 0xff << 8;
/** A pin count about to overflow its byte: refuse further pins (Xen's 0x80808080 test). */
export const GNTPIN_OVERFLOW = 0x80808080 | 0;

/**
 * struct grant_mapping (common/grant_table.c), 16 bytes: one handle of the
 * mapper's maptrack. Xen keeps the vCPU that made it; we keep where the
 * mapping sits (gfn) and the frame, so that a mapping whose granter died
 * can still be released.
 */
export const GRANT_MAPPING = defineLayout({ name: 'grant_mapping', header: 'xen/common/grant_table.c', size: 16 }, {
  /** Grant ref mapped; while the handle is free: the next free handle, or MAPTRACK_TAIL. */
  ref: u32(0),
  /** GNTMAP_* of the mapping; 0 while the handle is free. */
  flags: u16(4),
  /** Granting domain. */
  domid: u16(6),
  /** gfn of the mapping in the mapper's physmap. */
  gfn: u32(8),
  /** Machine frame mapped (holds one page reference). */
  mfn: u32(12),
});
export const MAPTRACK_PER_PAGE = PAGE_SIZE / GRANT_MAPPING.size;
/** End of the maptrack free list. */
export const MAPTRACK_TAIL = -1;

/**
 * struct gnttab_unmap_and_replace (xen/include/public/grant_table.h), 24 bytes:
 *   uint64_t host_addr; uint64_t new_addr; grant_handle_t handle; int16_t status;
 * (Belongs beside the other op structs in shared/abi/grant-table.ts.)
 */
export const GNTTAB_UNMAP_AND_REPLACE = defineLayout({ name: 'gnttab_unmap_and_replace', header: 'xen/include/public/grant_table.h', size: 24 }, {
  host_addr: u64(0),
  new_addr: u64(8),
  handle: u32(16),
  status: i16(20),
});

/** Xen 4.17's INITIAL_NR_GRANT_FRAMES: a table that grows never has fewer. */
export const INITIAL_NR_GRANT_FRAMES = 1;

// Word offsets inside each structure (for Atomics on hv.mem32).
/** flags u16 @0 and domid u16 @2 share one word: flags in the low half (little-endian). */
export const SHA_FLAGS_DOMID = GRANT_ENTRY_V1.fields.flags.offset >> 2;
export const SHA_FRAME = GRANT_ENTRY_V1.fields.frame.offset >> 2;
export const ACT_PIN = wordIndex(ACTIVE_ENTRY, 'pin');
export const ACT_DOMID = wordIndex(ACTIVE_ENTRY, 'domid');
export const ACT_MFN = wordIndex(ACTIVE_ENTRY, 'mfn');
export const ACT_GFN = wordIndex(ACTIVE_ENTRY, 'gfn');
export const MT_REF = wordIndex(GRANT_MAPPING, 'ref');
/** flags u16 @4 and domid u16 @6 share one word: flags in the low half. */
export const MT_FLAGS_DOMID = GRANT_MAPPING.fields.flags.offset >> 2;
export const MT_GFN = wordIndex(GRANT_MAPPING, 'gfn');
export const MT_MFN = wordIndex(GRANT_MAPPING, 'mfn');

const WORDS_PER_PAGE = PAGE_SIZE >> 2;
const SHA_WORDS = GRANT_ENTRY_V1.size >> 2;
const ACT_WORDS = ACTIVE_ENTRY.size >> 2;
const MT_WORDS = GRANT_MAPPING.size >> 2;

if (ACGNT_PER_PAGE * ACTIVE_PER_GRANT_FRAME !== GRANT_ENTRIES_PER_FRAME_V1 || GRANT_ENTRIES_PER_FRAME_V1 !== 1 << 9 || ACGNT_PER_PAGE !== 1 << 8) {
  throw new Error('grant/active entries per frame do not match state.ts ACTIVE_PER_GRANT_FRAME or the shifts below');
}

/** Grant entries a domain's table holds now (nr_grant_entries()). */
export function nrGrantEntries(hv: HvState, slot: number): number {
  return Atomics.load(hv.dom, hv.d(slot, D.nr_grant_frames)) * GRANT_ENTRIES_PER_FRAME_V1;
}

export const grantFrameIdx = (slot: number, i: number): number => slot * GNT_MAX_FRAMES + i;
export const activeFrameIdx = (slot: number, j: number): number => slot * GNT_MAX_FRAMES * ACTIVE_PER_GRANT_FRAME + j;
export const maptrackFrameIdx = (slot: number, k: number): number => slot * MAPTRACK_MAX_FRAMES + k;

/**
 * hv.mem32 index of grant entry `ref`'s flags|domid word (frame is the next
 * word). The caller has checked ref < nrGrantEntries and holds the domain lock.
 */
export function shaWord(hv: HvState, slot: number, ref: number): number {
  // ref < nr_grant_entries <= 64 * 512: shifts and masks are exact.
  const m = hv.grantFrames[grantFrameIdx(slot, ref >>> 9)];
  return m * WORDS_PER_PAGE + (ref & (GRANT_ENTRIES_PER_FRAME_V1 - 1)) * SHA_WORDS;
}

/** hv.mem32 index of active entry `ref`, or -1 when the table has been torn down. */
export function actWord(hv: HvState, slot: number, ref: number): number {
  const m = hv.activeFrames[activeFrameIdx(slot, ref >>> 8)];
  return m < 0 ? -1 : m * WORDS_PER_PAGE + (ref & (ACGNT_PER_PAGE - 1)) * ACT_WORDS;
}

/** hv.mem32 index of maptrack entry `handle`; the caller has checked handle < maptrackLimit. */
export function mtWord(hv: HvState, slot: number, handle: number): number {
  const m = hv.maptrackFrames[maptrackFrameIdx(slot, Math.floor(handle / MAPTRACK_PER_PAGE))];
  return m * WORDS_PER_PAGE + (handle % MAPTRACK_PER_PAGE) * MT_WORDS;
}

/** Handles the maptrack holds now (maptrack_limit). */
export function maptrackLimit(hv: HvState, slot: number): number {
  return Atomics.load(hv.dom, hv.d(slot, D.nr_maptrack_frames)) * MAPTRACK_PER_PAGE;
}
