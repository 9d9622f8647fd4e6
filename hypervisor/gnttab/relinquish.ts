/**
 * Grant state of a dying domain (Xen: gnttab_release_mappings and
 * grant_table_destroy), run by relinquishResources before its physmap sweep:
 *
 *  1. every mapping the domain holds of others' grants is released as an
 *     unmap would: the granter's pin counts drop and GTF_reading/GTF_writing
 *     clear, the page reference goes (freeing a frame whose dead owner waited
 *     only for this mapping);
 *  2. its own grant table frames leave its physmap and are freed (a frame a
 *     foreign mapping still holds is handed to the hypervisor and freed by
 *     that unmapping), with the active frames;
 *  3. its maptrack frames are freed.
 *
 * Frames the domain granted and others still map are not touched here: they
 * are its RAM, and the physmap sweep drops only their allocation reference, so
 * they stay allocated (the domain a zombie) until the mappers unmap.
 * The domain's vCPUs are stopped: nobody else changes its maptrack.
 */
import { domLock, domUnlock, finishIfDead, slotOf } from '../domain.ts';
import { heapLock, heapUnlock } from '../mm/frames.ts';
import { HvState } from '../state.ts';
import { maptrackLimit, MT_FLAGS_DOMID, mtWord } from './layout.ts';
import { lockDomains, releaseMappingLocked, unlockDomains } from './map.ts';
import { destroyMaptrackLocked, destroyTableLocked } from './table.ts';

export function gnttabRelinquish(hv: HvState, slot: number): void {
  const limit = maptrackLimit(hv, slot);
  for (let h = 0; h < limit; h++) {
    const fd = Atomics.load(hv.mem32, mtWord(hv, slot, h) + MT_FLAGS_DOMID);
    if ((fd & 0xffff) === 0) continue;
    const rslot = slotOf(hv, fd >>> 16);
    if (rslot < 0) throw new Error(`gnttab: d${fd >>> 16} vanished while mapped by slot ${slot}`);
    let freed = -1;
    lockDomains(hv, slot, rslot);
    heapLock(hv);
    try {
      freed = releaseMappingLocked(hv, slot, rslot, h);
    } finally {
      heapUnlock(hv);
      unlockDomains(hv, slot, rslot);
    }
    if (freed >= 0 && freed !== slot) finishIfDead(hv, freed);
  }
  domLock(hv, slot);
  heapLock(hv);
  try {
    destroyTableLocked(hv, slot);
    destroyMaptrackLocked(hv, slot);
  } finally {
    heapUnlock(hv);
    domUnlock(hv, slot);
  }
}
