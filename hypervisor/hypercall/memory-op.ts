/** do_memory_op (Xen: common/memory.c). */
import { EFAULT, EINVAL, ENOSYS, ESRCH } from '../../shared/errno.ts';
import {
  MEMOP_CMD_MASK, MEMOP_EXTENT_SHIFT, XENMAPSPACE_gmfn, XENMAPSPACE_gmfn_foreign, XENMAPSPACE_gmfn_range,
  XENMAPSPACE_shared_info, XENMEM_add_to_physmap, XENMEM_add_to_physmap_batch, XENMEM_current_reservation,
  XENMEM_decrease_reservation, XENMEM_increase_reservation, XENMEM_maximum_ram_page, XENMEM_maximum_reservation,
  XENMEM_populate_physmap, XENMEM_remove_from_physmap,
} from '../../shared/hypercall.ts';
import {
  XEN_ADD_TO_PHYSMAP, XEN_ADD_TO_PHYSMAP_BATCH, XEN_MEMORY_DOMAIN, XEN_MEMORY_RESERVATION, XEN_REMOVE_FROM_PHYSMAP,
} from '../../shared/abi/memory.ts';
import { DOMID_SELF } from '../../shared/types.ts';
import { liveSlot } from '../domain.ts';
import { guestRemovePage, increaseExtent, mapForeign, mapSharedInfo, moveGmfn, populateExtent } from '../mm/physmap.ts';
import { D, MAX_ORDER } from '../state.ts';
import { gnttabAddToPhysmap } from '../gnttab/setup.ts';
import { XENMAPSPACE_grant_table } from '../../shared/hypercall.ts';
import type { VcpuCtx } from '../vcpu/context.ts';
import { xsmCheck, type XsmAction } from '../xsm.ts';

/** Largest extent order a guest may ask for (Xen's CONFIG_DOMU_MAX_ORDER / CTLDOM_MAX_ORDER). */
export const DOMU_MAX_ORDER = 9;
export const CTLDOM_MAX_ORDER = 12;

/** Resolve a domid argument (DOMID_SELF or a live domain) and check the caller may act on it. */
function targetSlot(ctx: VcpuCtx, domid: number, action: XsmAction): number {
  const slot = domid === DOMID_SELF ? ctx.slot : liveSlot(ctx.hv, domid);
  if (slot < 0) return -ESRCH;
  const rc = xsmCheck(ctx.hv, ctx.slot, action, slot);
  return rc < 0 ? rc : slot;
}

/**
 * increase/decrease_reservation and populate_physmap. As in Xen, the result is
 * the number of extents done: a bad argument, a bad domain, a caller without
 * rights over it (xsm_memory_adjust_reservation) or a failing extent stops the
 * loop and returns how far it got. Never a negative errno.
 */
function reservation(ctx: VcpuCtx, op: number, arg: number, start: number): number {
  const r = ctx.readStruct(XEN_MEMORY_RESERVATION, arg);
  if (!r) return start;
  const nr = r.get('nr_extents');
  const order = r.get('extent_order');
  if (nr > (0xffffffff >>> MEMOP_EXTENT_SHIFT) || start >= nr) return start;
  const maxOrder = Math.min(ctx.privileged ? CTLDOM_MAX_ORDER : DOMU_MAX_ORDER, MAX_ORDER);
  if (order > maxOrder) return start;
  const domid = r.get('domid');
  const slot = domid === DOMID_SELF ? ctx.slot : liveSlot(ctx.hv, domid);
  if (slot < 0) return start;
  if (xsmCheck(ctx.hv, ctx.slot, 'memory_adjust_reservation', slot) < 0) return start;
  const list = r.get('extent_start');
  let i = start;
  for (; i < nr; i++) {
    if (op === XENMEM_increase_reservation) {
      if (increaseExtent(ctx.hv, slot, order) < 0) break;
      continue;
    }
    const e = ctx.copyFrom(list + i * 8, 8);
    if (!e) break;
    const gfn = Number(new DataView(e.buffer).getBigUint64(0, true));
    if (op === XENMEM_populate_physmap) {
      if (populateExtent(ctx.hv, slot, gfn, order) < 0) break;
    } else {
      let ok = true;
      for (let j = 0; j < 2 ** order && ok; j++) ok = guestRemovePage(ctx.hv, slot, gfn + j) === 0;
      if (!ok) break;
    }
  }
  return i;
}

function stat(ctx: VcpuCtx, op: number, arg: number, start: number): number {
  if (start !== 0) return -EINVAL;
  const m = ctx.readStruct(XEN_MEMORY_DOMAIN, arg);
  if (!m) return -EFAULT;
  const slot = targetSlot(ctx, m.get('domid'), 'memory_stat_reservation');
  if (slot < 0) return slot;
  return Atomics.load(ctx.hv.dom, ctx.hv.d(slot, op === XENMEM_current_reservation ? D.tot_pages : D.max_pages));
}

function addToPhysmap(ctx: VcpuCtx, arg: number): number {
  const x = ctx.readStruct(XEN_ADD_TO_PHYSMAP, arg);
  if (!x) return -EFAULT;
  // Foreign mapping is only possible via add_to_physmap_batch (Xen checks this first).
  if (x.get('space') === XENMAPSPACE_gmfn_foreign) return -ENOSYS;
  const slot = targetSlot(ctx, x.get('domid'), 'add_to_physmap');
  if (slot < 0) return slot;
  const idx = x.get('idx');
  const gpfn = x.get('gpfn');
  switch (x.get('space')) {
    case XENMAPSPACE_shared_info:
      return idx === 0 ? mapSharedInfo(ctx.hv, slot, gpfn) : -EINVAL;
    case XENMAPSPACE_gmfn:
      return moveGmfn(ctx.hv, slot, idx, gpfn);
    case XENMAPSPACE_gmfn_range: {
      const size = x.get('size');
      for (let i = 0; i < size; i++) {
        const rc = moveGmfn(ctx.hv, slot, idx + i, gpfn + i);
        if (rc < 0) return rc;
      }
      return 0;
    }
    case XENMAPSPACE_grant_table:
      // Grant table frame idx of the domain (hypervisor/gnttab/setup.ts).
      return gnttabAddToPhysmap(ctx.hv, slot, idx, gpfn);
    default:
      return -EINVAL;
  }
}

/** add_to_physmap_batch: per-index status in errs[]; the call fails only on a bad argument. */
function addToPhysmapBatch(ctx: VcpuCtx, arg: number): number {
  const x = ctx.readStruct(XEN_ADD_TO_PHYSMAP_BATCH, arg);
  if (!x) return -EFAULT;
  const slot = targetSlot(ctx, x.get('domid'), 'add_to_physmap');
  if (slot < 0) return slot;
  if (x.get('space') !== XENMAPSPACE_gmfn_foreign) return -EINVAL;
  const fd = x.get('foreign_domid');
  const fslot = liveSlot(ctx.hv, fd);
  const size = x.get('size');
  const idxs = ctx.copyFrom(x.get('idxs'), size * 8);
  const gpfns = ctx.copyFrom(x.get('gpfns'), size * 8);
  if (!idxs || !gpfns) return -EFAULT;
  const iv = new DataView(idxs.buffer);
  const gv = new DataView(gpfns.buffer);
  const errs = new Uint8Array(size * 4);
  const ev = new DataView(errs.buffer);
  for (let i = 0; i < size; i++) {
    let rc = fslot < 0 ? -ESRCH : xsmCheck(ctx.hv, ctx.slot, 'map_gmfn_foreign', fslot);
    if (rc === 0) rc = mapForeign(ctx.hv, slot, fslot, Number(iv.getBigUint64(i * 8, true)), Number(gv.getBigUint64(i * 8, true)));
    ev.setInt32(i * 4, rc, true);
  }
  return ctx.copyTo(x.get('errs'), errs) ? 0 : -EFAULT;
}

function removeFromPhysmap(ctx: VcpuCtx, arg: number): number {
  const x = ctx.readStruct(XEN_REMOVE_FROM_PHYSMAP, arg);
  if (!x) return -EFAULT;
  const slot = targetSlot(ctx, x.get('domid'), 'add_to_physmap');
  if (slot < 0) return slot;
  return guestRemovePage(ctx.hv, slot, x.get('gpfn'));
}

export function doMemoryOp(ctx: VcpuCtx, cmd: number, arg: number): number {
  const op = cmd & MEMOP_CMD_MASK;
  const start = Math.floor(cmd / 2 ** MEMOP_EXTENT_SHIFT);
  switch (op) {
    case XENMEM_increase_reservation:
    case XENMEM_decrease_reservation:
    case XENMEM_populate_physmap:
      return reservation(ctx, op, arg, start);
    case XENMEM_current_reservation:
    case XENMEM_maximum_reservation:
      return stat(ctx, op, arg, start);
    case XENMEM_maximum_ram_page:
      return ctx.hv.nrFrames;
    case XENMEM_add_to_physmap:
      return addToPhysmap(ctx, arg);
    case XENMEM_add_to_physmap_batch:
      return addToPhysmapBatch(ctx, arg);
    case XENMEM_remove_from_physmap:
      return removeFromPhysmap(ctx, arg);
    default:
      return -ENOSYS;
  }
}
