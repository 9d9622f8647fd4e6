/**
 * The P2M (gfn -> mfn and type, per domain) and guest-physical access for trusted
 * code. Every domain is auto-translated: guests name gfns, never mfns.
 * Changes are made under the domain's lock; translation reads one 32-bit entry.
 */
import { PAGE_SHIFT, PAGE_SIZE } from '../../shared/types.ts';
import { HvState, P2M_INVALID, P2M_MFN_MASK, P2M_TYPE_SHIFT, p2m_grant_map_ro, p2m_ram_rw } from '../state.ts';

export function p2mLookup(hv: HvState, slot: number, gfn: number): number {
  if (!Number.isInteger(gfn) || gfn < 0 || gfn >= hv.cfg.p2mEntries) return P2M_INVALID;
  return hv.p2m[hv.p2mIndex(slot, gfn)];
}

/** Install gfn -> mfn with a type; the M2P follows for the owner's own RAM. */
export function p2mSet(hv: HvState, slot: number, gfn: number, m: number, type: number): void {
  hv.p2m[hv.p2mIndex(slot, gfn)] = ((type << P2M_TYPE_SHIFT) | m) >>> 0;
  if (type === p2m_ram_rw) hv.ftGfn[m] = gfn;
}

export function p2mClear(hv: HvState, slot: number, gfn: number): void {
  hv.p2m[hv.p2mIndex(slot, gfn)] = P2M_INVALID;
}

export const entryMfn = (e: number): number => e & P2M_MFN_MASK;

/** Translate a guest-physical address for access; -1 if unmapped (or read-only and `write`). */
/*
 * Module-local copies of the constants the per-access path reads: under tsx
 * (how vCPU threads load TypeScript) every read of an imported binding costs
 * ~7 ns more than a local one, and this runs on every guest memory access.
 */
const L_PAGE_SIZE = PAGE_SIZE;
const L_P2M_INVALID = P2M_INVALID;
const L_P2M_TYPE_SHIFT = P2M_TYPE_SHIFT;
const L_P2M_MFN_MASK = P2M_MFN_MASK;
const L_GRANT_MAP_RO = p2m_grant_map_ro;

export function gpaToMachine(hv: HvState, slot: number, gpa: number, write: boolean): number {
  const gfn = Math.floor(gpa / L_PAGE_SIZE);
  if (!(gfn >= 0 && gfn < hv.cfg.p2mEntries) || !Number.isInteger(gfn)) return -1;
  const e = hv.p2m[hv.p2mIndex(slot, gfn)];
  if (e === L_P2M_INVALID) return -1;
  if (write && e >>> L_P2M_TYPE_SHIFT === L_GRANT_MAP_RO) return -1;
  // Multiply, not shift: a machine address above 2 GiB overflows `<<`.
  return (e & L_P2M_MFN_MASK) * L_PAGE_SIZE + (gpa - gfn * L_PAGE_SIZE);
}

/** True if [gpa, gpa+len) is a valid range of numbers (not whether it is mapped). */
function rangeOk(gpa: number, len: number): boolean {
  return Number.isSafeInteger(gpa) && Number.isSafeInteger(len) && gpa >= 0 && len >= 0;
}

/**
 * copy_from_guest: a private copy of [gpa, gpa+len) of the domain's memory, or
 * null if any byte is unmapped (the caller answers -EFAULT).
 */
export function copyFromGuest(hv: HvState, slot: number, gpa: number, len: number): Uint8Array | null {
  if (!rangeOk(gpa, len)) return null;
  const out = new Uint8Array(len);
  let done = 0;
  while (done < len) {
    const a = gpa + done;
    const ma = gpaToMachine(hv, slot, a, false);
    if (ma < 0) return null;
    const n = Math.min(len - done, PAGE_SIZE - (a % PAGE_SIZE));
    out.set(hv.mem8.subarray(ma, ma + n), done);
    done += n;
  }
  return out;
}

/** copy_to_guest: false if any byte is unmapped or read-only (the caller answers -EFAULT). */
export function copyToGuest(hv: HvState, slot: number, gpa: number, data: Uint8Array): boolean {
  if (!rangeOk(gpa, data.length)) return false;
  const len = data.length;
  if (len === 0) return true;
  if ((gpa % L_PAGE_SIZE) + len <= L_PAGE_SIZE) {
    // Within one page (ring entries, responses, op arrays): one translation.
    const ma = gpaToMachine(hv, slot, gpa, true);
    if (ma < 0) return false;
    if (len <= 16) for (let i = 0; i < len; i++) hv.mem8[ma + i] = data[i]!;
    else hv.mem8.set(data, ma);
    return true;
  }
  // Check every page first so a fault leaves guest memory untouched.
  for (let a = gpa; a < gpa + data.length; a = (Math.floor(a / PAGE_SIZE) + 1) * PAGE_SIZE) {
    if (gpaToMachine(hv, slot, a, true) < 0) return false;
  }
  let done = 0;
  while (done < data.length) {
    const a = gpa + done;
    const ma = gpaToMachine(hv, slot, a, true);
    const n = Math.min(data.length - done, PAGE_SIZE - (a % PAGE_SIZE));
    hv.mem8.set(data.subarray(done, done + n), ma);
    done += n;
  }
  return true;
}
