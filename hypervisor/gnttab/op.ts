/**
 * do_grant_table_op (Xen: common/grant_table.c), __HYPERVISOR_grant_table_op = 20.
 *
 *   grant_table_op(cmd, uop, count)
 *
 * Returns 0, or -EINVAL (count negative or above GNTTAB_MAX_BATCH, continuation
 * bits in cmd, count != 1 for setup_table/query_size), -EFAULT (an argument
 * cannot be read, or a status cannot be written back), -ENOSYS (any other
 * cmd). Each entry's own outcome is its GNTST_* status. Entries are copied out
 * of guest memory before they are checked and acted on (copy entries field by
 * field: each field is read exactly once), and processed in order; an
 * unreadable entry stops the batch with -EFAULT after the ones before it took
 * effect, as in Xen.
 */
import {
  GNTTAB_COPY, GNTTAB_MAP_GRANT_REF, GNTTAB_QUERY_SIZE, GNTTAB_SETUP_TABLE, GNTTAB_TRANSFER, GNTTAB_UNMAP_GRANT_REF,
  GNTTABOP_copy, GNTTABOP_map_grant_ref, GNTTABOP_query_size, GNTTABOP_setup_table, GNTTABOP_transfer,
  GNTTABOP_unmap_and_replace, GNTTABOP_unmap_grant_ref, GNTST_bad_domain, GNTST_bad_virt_addr, GNTST_general_error,
  GNTST_okay, GNTST_permission_denied,
} from '../../shared/abi/grant-table.ts';
import { EFAULT, EINVAL, ENOSYS } from '../../shared/errno.ts';
import { DOMID_SELF, PAGE_SIZE } from '../../shared/types.ts';
import { liveSlot } from '../domain.ts';
import { copyFromGuest, copyToGuest, gpaToMachine } from '../mm/p2m.ts';
import { D, HvState } from '../state.ts';
import type { VcpuCtx } from '../vcpu/context.ts';
import { xsmCheck, type XsmAction } from '../xsm.ts';
import { CopyBatch } from './copy.ts';
import { GNTTAB_UNMAP_AND_REPLACE } from './layout.ts';
import { mapGrantRef, unmapGrantRef } from './map.ts';
import { setupFrames } from './setup.ts';
import { gnttabTransferOne } from './transfer.ts';

/** Entries one call may carry. */
export const GNTTAB_MAX_BATCH = 512;
/** Low bits of cmd; Xen keeps a continuation argument above them (GNTTABOP_CMD_MASK). */
export const GNTTABOP_CMD_MASK = 0xfff;

/**
 * xsm_grant_setup and xsm_grant_query_size are XSM_TARGET in Xen: the domain
 * itself, a privileged one, or its device model. xsm.ts has no grant actions
 * yet; add_to_physmap carries exactly that rule.
 */
const XSM_GRANT_SETUP: XsmAction = 'add_to_physmap';

const MAP = GNTTAB_MAP_GRANT_REF.fields;
const UNMAP = GNTTAB_UNMAP_GRANT_REF.fields;
const UAR = GNTTAB_UNMAP_AND_REPLACE.fields;
const COPY = GNTTAB_COPY.fields;
const XFER = GNTTAB_TRANSFER.fields;

/** A DataView over all machine memory (trusted code only), for status write-back without allocation. */
let viewOf: HvState | null = null;
let view: DataView | null = null;
function memView(hv: HvState): DataView {
  if (viewOf !== hv || !view) {
    view = hv.machineView();
    viewOf = hv;
  }
  return view;
}

/**
 * Write `bytes` bytes at guest `gpa` through `put` (copy_field_to_guest):
 * in place when they sit in one page of writable RAM, else through a private
 * buffer and copyToGuest. False on fault.
 */
function putField(ctx: VcpuCtx, gpa: number, bytes: number, put: (dv: DataView, at: number) => void): boolean {
  const ma = gpa % PAGE_SIZE <= PAGE_SIZE - bytes ? gpaToMachine(ctx.hv, ctx.slot, gpa, true) : -1;
  if (ma >= 0) {
    put(memView(ctx.hv), ma);
    return true;
  }
  const b = new Uint8Array(bytes);
  put(new DataView(b.buffer), 0);
  return copyToGuest(ctx.hv, ctx.slot, gpa, b);
}

/** Write an i16 status into guest memory at gpa; false on fault. */
function putStatus(ctx: VcpuCtx, gpa: number, status: number): boolean {
  return putField(ctx, gpa, 2, (dv, at) => dv.setInt16(at, status, true));
}

/** u64 at `o`, as a number (values past 2^53 stay past every range we check). */
function u64(b: DataView, o: number): number {
  return b.getUint32(o, true) + b.getUint32(o + 4, true) * 2 ** 32;
}

/**
 * One entry whose bytes are at `o` in `b` (the guest's memory, or a private
 * copy): read each field exactly once, act, write the results back to guest
 * `gpa`. 0, or -EFAULT when the results cannot be written.
 */
type EntryFn = (ctx: VcpuCtx, b: DataView, o: number, gpa: number) => number;

/**
 * Run `count` entries of `size` bytes from `uop` in order. An entry inside one
 * page of readable memory is read in place; one that straddles pages is
 * copied out first. An entry that cannot be read stops the batch with
 * -EFAULT, the entries before it done (as Xen's __copy_from_guest_offset).
 */
function batch(ctx: VcpuCtx, uop: number, count: number, size: number, one: EntryFn): number {
  const hv = ctx.hv;
  for (let i = 0, gpa = uop; i < count; i++, gpa += size) {
    const ma = gpa % PAGE_SIZE <= PAGE_SIZE - size ? gpaToMachine(hv, ctx.slot, gpa, false) : -1;
    let rc: number;
    if (ma >= 0) {
      rc = one(ctx, memView(hv), ma, gpa);
    } else {
      const e = copyFromGuest(hv, ctx.slot, gpa, size);
      if (!e) return -EFAULT;
      rc = one(ctx, new DataView(e.buffer), 0, gpa);
    }
    if (rc < 0) return rc;
  }
  return 0;
}

const mapOne: EntryFn = (ctx, b, o, gpa) => {
  const r = mapGrantRef(ctx.hv, ctx.slot, {
    hostAddr: u64(b, o + MAP.host_addr.offset),
    flags: b.getUint32(o + MAP.flags.offset, true),
    ref: b.getUint32(o + MAP.ref.offset, true),
    dom: b.getUint16(o + MAP.dom.offset, true),
  });
  // Xen copies the whole entry back; only status, handle and dev_bus_addr can differ.
  if (!putStatus(ctx, gpa + MAP.status.offset, r.status)) return -EFAULT;
  if (r.status !== GNTST_okay) return 0;
  const ok = putField(ctx, gpa + MAP.handle.offset, 4, (dv, at) => dv.setUint32(at, r.handle, true)) &&
    putField(ctx, gpa + MAP.dev_bus_addr.offset, 8, (dv, at) => dv.setBigUint64(at, 0n, true));
  return ok ? 0 : -EFAULT;
};

const unmapOne: EntryFn = (ctx, b, o, gpa) => {
  const st = unmapGrantRef(ctx.hv, ctx.slot, u64(b, o + UNMAP.host_addr.offset), u64(b, o + UNMAP.dev_bus_addr.offset),
    b.getUint32(o + UNMAP.handle.offset, true));
  return putStatus(ctx, gpa + UNMAP.status.offset, st) ? 0 : -EFAULT;
};

/** unmap_and_replace: for auto-translated mappers only new_addr 0 is possible (replace_grant_p2m_mapping). */
const unmapAndReplaceOne: EntryFn = (ctx, b, o, gpa) => {
  const hostAddr = u64(b, o + UAR.host_addr.offset);
  const newAddr = u64(b, o + UAR.new_addr.offset);
  const handle = b.getUint32(o + UAR.handle.offset, true);
  const st = newAddr !== 0 ? GNTST_general_error : unmapGrantRef(ctx.hv, ctx.slot, hostAddr, 0, handle);
  return putStatus(ctx, gpa + UAR.status.offset, st) ? 0 : -EFAULT;
};

/**
 * copy: the entries go through one CopyBatch, which keeps the domain locks
 * across a run of entries between the same domains (and releases them
 * however the batch ends).
 */
function copyBatch(ctx: VcpuCtx, uop: number, count: number): number {
  const run = new CopyBatch(ctx.hv, ctx.slot, ctx.domid);
  try {
    return batch(ctx, uop, count, GNTTAB_COPY.size,
      (c, b, o, gpa) => putStatus(c, gpa + COPY.status.offset, run.one(b, o)) ? 0 : -EFAULT);
  } finally {
    run.close();
  }
}

const transferOne: EntryFn = (ctx, b, o, gpa) => {
  const st = gnttabTransferOne(ctx.hv, ctx.slot, u64(b, o + XFER.mfn.offset), b.getUint16(o + XFER.domid.offset, true),
    b.getUint32(o + XFER.ref.offset, true));
  return putStatus(ctx, gpa + XFER.status.offset, st) ? 0 : -EFAULT;
};

/** The domain a setup_table/query_size names (DOMID_SELF or a live domain) and the caller's right to it. */
function tableOwner(ctx: VcpuCtx, dom: number): { slot: number; status: number } {
  const slot = dom === DOMID_SELF ? ctx.slot : liveSlot(ctx.hv, dom);
  if (slot < 0) return { slot, status: GNTST_bad_domain };
  if (xsmCheck(ctx.hv, ctx.slot, XSM_GRANT_SETUP, slot) < 0) return { slot, status: GNTST_permission_denied };
  return { slot, status: GNTST_okay };
}

/**
 * setup_table: grow the table to nr_frames and report each frame's gfn (see
 * setup.ts). Status GNTST_general_error beyond max_grant_frames or out of
 * memory, GNTST_bad_virt_addr if frame_list cannot be written.
 */
function setupTable(ctx: VcpuCtx, uop: number, count: number): number {
  if (count !== 1) return -EINVAL;
  const op = ctx.readStruct(GNTTAB_SETUP_TABLE, uop);
  if (!op) return -EFAULT;
  const t = tableOwner(ctx, op.get('dom'));
  let status = t.status;
  if (status === GNTST_okay) {
    const frames = setupFrames(ctx.hv, t.slot, op.get('nr_frames'));
    if (!frames) {
      status = GNTST_general_error;
    } else {
      const list = op.get('frame_list');
      const one = new Uint8Array(8);
      const dv = new DataView(one.buffer);
      frames.forEach((g, i) => {
        dv.setBigUint64(0, g, true);
        if (!ctx.copyTo(list + i * 8, one)) status = GNTST_bad_virt_addr;
      });
    }
  }
  return putStatus(ctx, uop + GNTTAB_SETUP_TABLE.fields.status.offset, status) ? 0 : -EFAULT;
}

/** query_size: frames in use and the maximum. */
function querySize(ctx: VcpuCtx, uop: number, count: number): number {
  if (count !== 1) return -EINVAL;
  const op = ctx.readStruct(GNTTAB_QUERY_SIZE, uop);
  if (!op) return -EFAULT;
  const t = tableOwner(ctx, op.get('dom'));
  op.set('status', t.status);
  if (t.status === GNTST_okay) {
    op.set('nr_frames', Atomics.load(ctx.hv.dom, ctx.hv.d(t.slot, D.nr_grant_frames)));
    op.set('max_nr_frames', Atomics.load(ctx.hv.dom, ctx.hv.d(t.slot, D.max_grant_frames)));
  }
  return ctx.writeStruct(op, uop) ? 0 : -EFAULT;
}

export function doGrantTableOp(ctx: VcpuCtx, cmd: number, uop: number, count: number): number {
  if (count < 0 || count > GNTTAB_MAX_BATCH) return -EINVAL;
  if (cmd < 0 || cmd > GNTTABOP_CMD_MASK) return -EINVAL;
  switch (cmd) {
    case GNTTABOP_map_grant_ref:
      return batch(ctx, uop, count, GNTTAB_MAP_GRANT_REF.size, mapOne);
    case GNTTABOP_unmap_grant_ref:
      return batch(ctx, uop, count, GNTTAB_UNMAP_GRANT_REF.size, unmapOne);
    case GNTTABOP_unmap_and_replace:
      return batch(ctx, uop, count, GNTTAB_UNMAP_AND_REPLACE.size, unmapAndReplaceOne);
    case GNTTABOP_setup_table:
      return setupTable(ctx, uop, count);
    case GNTTABOP_query_size:
      return querySize(ctx, uop, count);
    case GNTTABOP_transfer:
      return batch(ctx, uop, count, GNTTAB_TRANSFER.size, transferOne);
    case GNTTABOP_copy:
      return copyBatch(ctx, uop, count);
    default:
      return -ENOSYS;
  }
}
