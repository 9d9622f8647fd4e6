/**
 * Grant tables for PV guest kernels, Dom0 and DomU alike (what Linux's
 * drivers/xen/grant-table.c does for a v1, auto-translated guest): map this
 * domain's grant table frames into its physmap, grant pages to other domains
 * and take the grants back, accept page transfers, and map, unmap, copy and
 * transfer through GNTTABOP_*. Hypercall failures throw XenError; per-entry
 * outcomes come back as GNTST_* statuses.
 *
 * Our guests are auto-translated: every frame is named by a gfn. A grant's
 * `frame` is the gfn of the granted page; an accept_transfer entry's `frame`
 * is the free gfn where the incoming page is to land (the hypervisor writes it
 * back on completion). Mappings of others' grants go into gfns nobody
 * populated, taken from a hole this library manages.
 *
 * Layout of the physmap holes (defaults; each can be set in the options):
 *   nrPages            shared_info (EventChannels' default)
 *   nrPages + 8 ...    grant table frames, frame i at frameGfn + i, up to the maximum
 *   after those        mapSlots gfns for map()
 */
import {
  GNTCOPY_dest_gref, GNTCOPY_source_gref, GNTMAP_host_map, GNTMAP_readonly, GNTTAB_COPY, GNTTAB_MAP_GRANT_REF,
  GNTTAB_NR_RESERVED_ENTRIES, GNTTAB_QUERY_SIZE, GNTTAB_SETUP_TABLE, GNTTAB_TRANSFER, GNTTAB_UNMAP_GRANT_REF,
  GNTTABOP_copy, GNTTABOP_map_grant_ref, GNTTABOP_query_size, GNTTABOP_setup_table, GNTTABOP_transfer,
  GNTTABOP_unmap_grant_ref, GNTST_okay, GRANT_ENTRIES_PER_FRAME_V1, GRANT_ENTRY_V1, GTF_accept_transfer,
  GTF_permit_access, GTF_readonly, GTF_reading, GTF_transfer_committed, GTF_transfer_completed, GTF_writing,
} from '../abi/grant-table.ts';
import { XEN_ADD_TO_PHYSMAP } from '../abi/memory.ts';
import { XENMAPSPACE_grant_table, XENMEM_add_to_physmap, __HYPERVISOR_grant_table_op, __HYPERVISOR_memory_op } from '../hypercall.ts';
import { StructView, type Fields, type Layout } from '../layout.ts';
import { DOMID_SELF, grantRef, PAGE_SIZE, type GrantRef } from '../types.ts';
import { check, type Xen } from './xen.ts';

export interface GrantTableOptions {
  /** gfn of grant frame 0 (frame i at frameGfn + i). Default nrPages + 8. */
  readonly frameGfn?: number;
  /** Frames to map now (default 1); more are mapped as refs run out, up to the maximum. */
  readonly frames?: number;
  /** First gfn of the hole map() places mappings in. Default: just past the table's largest extent. */
  readonly mapGfn?: number;
  /** Size of that hole (default 256). */
  readonly mapSlots?: number;
}

/** One mapping made by map(): `gpa` is where the granted page now is in our memory. */
export interface Mapping {
  readonly status: number;
  readonly handle: number;
  readonly gfn: number;
  readonly gpa: number;
}

/** One side of a grant copy: a grant of `domid`, or (without `domid`) a gfn of our own. */
export type CopySide =
  | { readonly ref: number; readonly domid: number; readonly offset?: number }
  | { readonly gfn: number; readonly offset?: number };

export interface CopyOp {
  readonly source: CopySide;
  readonly dest: CopySide;
  readonly len: number;
}

/** Give our page at `gfn` to `domid`, whose accept_transfer entry is `ref`. */
export interface TransferOp {
  readonly gfn: number;
  readonly domid: number;
  readonly ref: number;
}

/** A grant entry as it reads now. */
export interface GrantEntry {
  readonly flags: number;
  readonly domid: number;
  readonly frame: number;
}

const FLAGS = GRANT_ENTRY_V1.fields.flags.offset;

/** A u64 field from a number (gfns, guest-physical addresses: below 2^53). */
function setU64(dv: DataView, o: number, n: number): void {
  dv.setUint32(o, n % 2 ** 32, true);
  dv.setUint32(o + 4, Math.floor(n / 2 ** 32), true);
}
const FRAME = GRANT_ENTRY_V1.fields.frame.offset;
/** Guest-side bound on waiting for a committed transfer to complete (it completes inside one hypercall). */
const TRANSFER_SPINS = 100_000_000;

/** Every reference of our grant table is in use and it has max_grant_frames frames already. */
export class GrantTableFullError extends Error {
  constructor(readonly maxFrames: number) {
    super(`out of grant references (all ${maxFrames} grant frames in use)`);
    this.name = 'GrantTableFullError';
  }
}

export class GrantTable {
  /** max_grant_frames of this domain (query_size). */
  readonly maxFrames: number;
  readonly frameGfn: number;
  private nrFrames = 0;
  private readonly freeRefs: number[] = [];
  private readonly freeMapGfns: number[] = [];
  private readonly mapGfns: ReadonlySet<number>;
  /** One page of our own memory for op arrays (the Xen scratch page keeps single structs). */
  private readonly ops: number;
  /** A private copy of the op page, reused by every op: no allocation on the data path. */
  private readonly opBuf = new Uint8Array(PAGE_SIZE);
  private readonly opView = new DataView(this.opBuf.buffer);

  constructor(readonly xen: Xen, o: GrantTableOptions = {}) {
    const q = this.querySize();
    check('grant_table_op(query_size)', q.status);
    this.maxFrames = q.maxFrames;
    this.frameGfn = o.frameGfn ?? xen.nrPages + 8;
    const mapGfn = o.mapGfn ?? this.frameGfn + this.maxFrames;
    const slots = o.mapSlots ?? 256;
    for (let g = mapGfn + slots - 1; g >= mapGfn; g--) this.freeMapGfns.push(g);
    this.mapGfns = new Set(this.freeMapGfns);
    this.ops = xen.allocGfn() * PAGE_SIZE;
    this.grow(Math.max(1, o.frames ?? 1));
  }

  /** Grant frames mapped so far. */
  get frames(): number { return this.nrFrames; }
  /** Refs ready to hand out without growing the table. */
  get freeRefCount(): number { return this.freeRefs.length; }

  /** Map grant frames up to `n` (XENMAPSPACE_grant_table; the hypervisor grows the table to match). */
  grow(n: number): void {
    if (n > this.maxFrames) throw new Error(`grant table limited to ${this.maxFrames} frames`);
    const before = this.nrFrames;
    for (let i = before; i < n; i++) {
      const x = StructView.alloc(XEN_ADD_TO_PHYSMAP).set('domid', DOMID_SELF).set('space', XENMAPSPACE_grant_table)
        .set('idx', i).set('gpfn', this.frameGfn + i);
      check(`add_to_physmap(grant_table ${i})`, this.xen.k.hypercall(__HYPERVISOR_memory_op, XENMEM_add_to_physmap, this.xen.put(x)));
      this.nrFrames = i + 1;
    }
    // Lowest refs first; 0..7 are reserved (console, xenstore, ...) and never handed out.
    for (let r = n * GRANT_ENTRIES_PER_FRAME_V1 - 1; r >= Math.max(before * GRANT_ENTRIES_PER_FRAME_V1, GNTTAB_NR_RESERVED_ENTRIES); r--) {
      this.freeRefs.push(r);
    }
  }

  /** Guest-physical address of our grant entry `ref`. */
  entryAddr(ref: number): number {
    if (!Number.isInteger(ref) || ref < 0 || ref >= this.nrFrames * GRANT_ENTRIES_PER_FRAME_V1) throw new RangeError(`grant ref ${ref} outside our table`);
    return (this.frameGfn + Math.floor(ref / GRANT_ENTRIES_PER_FRAME_V1)) * PAGE_SIZE + (ref % GRANT_ENTRIES_PER_FRAME_V1) * GRANT_ENTRY_V1.size;
  }

  /** Our grant entry `ref` as it reads now. */
  entry(ref: number): GrantEntry {
    const a = this.entryAddr(ref);
    const w = this.xen.k.mem.atomicLoad32(a + FLAGS);
    return { flags: w & 0xffff, domid: w >>> 16, frame: this.xen.k.mem.readU32(a + FRAME) };
  }

  private takeRef(): number {
    if (this.freeRefs.length === 0 && this.nrFrames < this.maxFrames) this.grow(this.nrFrames + 1);
    const r = this.freeRefs.pop();
    if (r === undefined) throw new GrantTableFullError(this.maxFrames);
    return r;
  }

  /** Publish an entry: domid and frame first, then (a seq-cst store, the barrier) the flags. */
  private publish(ref: number, domid: number, frame: number, flags: number): void {
    const a = this.entryAddr(ref);
    this.xen.k.mem.writeU32(a + FRAME, frame);
    this.xen.k.mem.atomicStore32(a + FLAGS, ((domid & 0xffff) << 16) | flags);
  }

  /** gnttab_grant_foreign_access: let `domid` map or copy our page at `gfn`. */
  grantAccess(domid: number, gfn: number, readonly = false): GrantRef {
    const ref = this.takeRef();
    this.publish(ref, domid, gfn, GTF_permit_access | (readonly ? GTF_readonly : 0));
    return grantRef(ref);
  }

  /**
   * gnttab_end_foreign_access_ref: revoke a grant unless it is in use. Returns
   * false, changing nothing, while the peer has it mapped (GTF_reading or
   * GTF_writing); otherwise the flags go to 0 by compare-and-swap (so a racing
   * map either sees the revoke or is seen by it) and the ref is free again.
   */
  endAccess(ref: GrantRef): boolean {
    const a = this.entryAddr(ref);
    const mem = this.xen.k.mem;
    let flags = mem.readU16(a + FLAGS);
    for (;;) {
      if (flags & (GTF_reading | GTF_writing)) return false;
      const seen = mem.atomicCmpxchg16(a + FLAGS, flags, 0);
      if (seen === flags) break;
      flags = seen;
    }
    this.freeRefs.push(ref);
    return true;
  }

  /**
   * gnttab_grant_foreign_transfer: accept one page from `domid`, to land at
   * our free gfn `gfn` (it must stay unpopulated until the transfer is done).
   */
  grantTransfer(domid: number, gfn: number): GrantRef {
    const ref = this.takeRef();
    this.publish(ref, domid, gfn, GTF_accept_transfer);
    return grantRef(ref);
  }

  /** True once a transfer into `ref` has completed (the page is ours at the entry's frame). */
  transferCompleted(ref: GrantRef): boolean {
    return (this.entry(ref).flags & GTF_transfer_completed) !== 0;
  }

  /**
   * gnttab_end_foreign_transfer_ref: finish with an accept_transfer entry and
   * free the ref. If no transfer has started, the entry is revoked and null
   * returned; if one has committed, wait for it to complete and return the gfn
   * where the page landed (read after the completed flag).
   */
  endTransfer(ref: GrantRef): number | null {
    const a = this.entryAddr(ref);
    const mem = this.xen.k.mem;
    let flags = mem.readU16(a + FLAGS);
    while (!(flags & GTF_transfer_committed)) {
      const seen = mem.atomicCmpxchg16(a + FLAGS, flags, 0);
      if (seen === flags) {
        this.freeRefs.push(ref);
        return null;
      }
      flags = seen;
    }
    for (let i = 0; !(flags & GTF_transfer_completed); i++) {
      if (i === TRANSFER_SPINS) throw new Error(`grant ${ref}: transfer committed but never completed`);
      flags = mem.atomicLoad32(a + FLAGS) & 0xffff;
    }
    const frame = mem.atomicLoad32(a + FRAME);
    mem.atomicStore32(a + FLAGS, 0);
    this.freeRefs.push(ref);
    return frame;
  }

  private gnttabOp(name: string, cmd: number, at: number, count: number): void {
    check(`grant_table_op(${name})`, this.xen.k.hypercall(__HYPERVISOR_grant_table_op, cmd, at, count));
  }

  /**
   * Write `count` entries of `layout` into the op page, each filled by
   * `fill(dv, o, i)` at byte `o` of one DataView (ops are the data path: no
   * object per entry). Returns the op page's address.
   */
  private marshal<F extends Fields>(layout: Layout<F>, count: number, fill: (dv: DataView, o: number, i: number) => void): number {
    const n = layout.size * count;
    const dv = this.opView;
    this.opBuf.fill(0, 0, n);
    for (let i = 0; i < count; i++) fill(dv, i * layout.size, i);
    this.xen.k.mem.write(this.ops, this.opBuf.subarray(0, n));
    return this.ops;
  }

  /** The op page's first `count` entries of `layout` as the hypervisor left them, in our private op buffer. */
  private results<F extends Fields>(layout: Layout<F>, count: number): DataView {
    this.xen.k.mem.readInto(this.ops, this.opBuf.subarray(0, layout.size * count));
    return this.opView;
  }

  private statuses<F extends Fields>(layout: Layout<F>, count: number, field: keyof F & string): number[] {
    const dv = this.results(layout, count);
    const off = layout.fields[field].offset;
    return Array.from({ length: count }, (_, i) => dv.getInt16(i * layout.size + off, true));
  }

  /** Run `all` in chunks that fit the op page. */
  private chunked<T, R>(all: readonly T[], size: number, run: (part: readonly T[]) => R[]): R[] {
    const per = Math.floor(PAGE_SIZE / size);
    const out: R[] = [];
    for (let at = 0; at < all.length; at += per) out.push(...run(all.slice(at, at + per)));
    return out;
  }

  /**
   * GNTTABOP_map_grant_ref: map grant `ref` of `domid` into our memory, at
   * `gfn` or a free gfn of the map hole. Check `status` (GNTST_okay).
   */
  map(domid: number, ref: number, o: { readonly readonly?: boolean; readonly gfn?: number } = {}): Mapping {
    return this.mapBatch([{ domid, ref, ...o }])[0]!;
  }

  mapBatch(reqs: ReadonlyArray<{ readonly domid: number; readonly ref: number; readonly readonly?: boolean; readonly gfn?: number }>): Mapping[] {
    return this.chunked(reqs, GNTTAB_MAP_GRANT_REF.size, (part) => {
      const gfns = part.map((r) => r.gfn ?? this.takeMapGfn());
      const M = GNTTAB_MAP_GRANT_REF.fields;
      const at = this.marshal(GNTTAB_MAP_GRANT_REF, part.length, (dv, o, i) => {
        const r = part[i]!;
        setU64(dv, o + M.host_addr.offset, gfns[i]! * PAGE_SIZE);
        dv.setUint32(o + M.flags.offset, GNTMAP_host_map | (r.readonly ? GNTMAP_readonly : 0), true);
        dv.setUint32(o + M.ref.offset, r.ref, true);
        dv.setUint16(o + M.dom.offset, r.domid, true);
      });
      this.gnttabOp('map_grant_ref', GNTTABOP_map_grant_ref, at, part.length);
      const dv = this.results(GNTTAB_MAP_GRANT_REF, part.length);
      return part.map((r, i) => {
        const o = i * GNTTAB_MAP_GRANT_REF.size;
        const status = dv.getInt16(o + M.status.offset, true);
        if (status !== GNTST_okay && r.gfn === undefined) this.releaseMapGfn(gfns[i]!);
        return { status, handle: dv.getUint32(o + M.handle.offset, true), gfn: gfns[i]!, gpa: gfns[i]! * PAGE_SIZE };
      });
    });
  }

  /** GNTTABOP_unmap_grant_ref of a mapping made by map(); its gfn returns to the hole. */
  unmap(m: { readonly handle: number; readonly gfn: number }): number {
    return this.unmapBatch([m])[0]!;
  }

  unmapBatch(ms: ReadonlyArray<{ readonly handle: number; readonly gfn: number }>): number[] {
    return this.chunked(ms, GNTTAB_UNMAP_GRANT_REF.size, (part) => {
      const U = GNTTAB_UNMAP_GRANT_REF.fields;
      const at = this.marshal(GNTTAB_UNMAP_GRANT_REF, part.length, (dv, o, i) => {
        setU64(dv, o + U.host_addr.offset, part[i]!.gfn * PAGE_SIZE);
        dv.setUint32(o + U.handle.offset, part[i]!.handle, true);
      });
      this.gnttabOp('unmap_grant_ref', GNTTABOP_unmap_grant_ref, at, part.length);
      const st = this.statuses(GNTTAB_UNMAP_GRANT_REF, part.length, 'status');
      part.forEach((m, i) => { if (st[i] === GNTST_okay && this.mapGfns.has(m.gfn)) this.releaseMapGfn(m.gfn); });
      return st;
    });
  }

  /** GNTTABOP_copy: one status per op. */
  copy(ops: readonly CopyOp[]): number[] {
    const C = GNTTAB_COPY.fields;
    return this.chunked(ops, GNTTAB_COPY.size, (part) => {
      const side = (dv: DataView, o: number, u: number, d: number, s: CopySide): number => {
        const gref = 'ref' in s;
        setU64(dv, o + u, gref ? s.ref : s.gfn);
        dv.setUint16(o + d, gref ? s.domid : DOMID_SELF, true);
        return gref ? 1 : 0;
      };
      this.marshal(GNTTAB_COPY, part.length, (dv, o, i) => {
        const op = part[i]!;
        const flags = (side(dv, o, C.source_u.offset, C.source_domid.offset, op.source) ? GNTCOPY_source_gref : 0) |
          (side(dv, o, C.dest_u.offset, C.dest_domid.offset, op.dest) ? GNTCOPY_dest_gref : 0);
        dv.setUint16(o + C.source_offset.offset, op.source.offset ?? 0, true);
        dv.setUint16(o + C.dest_offset.offset, op.dest.offset ?? 0, true);
        dv.setUint16(o + C.len.offset, op.len, true);
        dv.setUint16(o + C.flags.offset, flags, true);
      });
      this.gnttabOp('copy', GNTTABOP_copy, this.ops, part.length);
      return this.statuses(GNTTAB_COPY, part.length, 'status');
    });
  }

  /**
   * GNTTABOP_transfer: give away our pages. Whatever the status, the page has
   * left our physmap unless it is GNTST_bad_page (see docs/grant-tables.md).
   */
  transfer(ops: readonly TransferOp[]): number[] {
    return this.chunked(ops, GNTTAB_TRANSFER.size, (part) => {
      const T = GNTTAB_TRANSFER.fields;
      const at = this.marshal(GNTTAB_TRANSFER, part.length, (dv, o, i) => {
        setU64(dv, o + T.mfn.offset, part[i]!.gfn);
        dv.setUint16(o + T.domid.offset, part[i]!.domid, true);
        dv.setUint32(o + T.ref.offset, part[i]!.ref, true);
      });
      this.gnttabOp('transfer', GNTTABOP_transfer, at, part.length);
      return this.statuses(GNTTAB_TRANSFER, part.length, 'status');
    });
  }

  /** GNTTABOP_query_size for `dom` (ours by default). */
  querySize(dom: number = DOMID_SELF): { status: number; nrFrames: number; maxFrames: number } {
    const at = this.xen.put(StructView.alloc(GNTTAB_QUERY_SIZE).set('dom', dom));
    this.gnttabOp('query_size', GNTTABOP_query_size, at, 1);
    const q = this.xen.get(GNTTAB_QUERY_SIZE);
    return { status: q.get('status'), nrFrames: q.get('nr_frames'), maxFrames: q.get('max_nr_frames') };
  }

  /**
   * GNTTABOP_setup_table: grow `dom`'s table to `nr` frames and read where
   * each frame is mapped (a gfn, or 2^64-1 where it is mapped nowhere).
   */
  setupTable(nr: number, dom: number = DOMID_SELF): { status: number; frames: bigint[] } {
    const list = this.xen.putArray(new Uint8Array(nr * 8));
    const at = this.xen.put(StructView.alloc(GNTTAB_SETUP_TABLE).set('dom', dom).set('nr_frames', nr).set('frame_list', list));
    this.gnttabOp('setup_table', GNTTABOP_setup_table, at, 1);
    const status = this.xen.get(GNTTAB_SETUP_TABLE).get('status');
    const b = this.xen.readArray(nr * 8);
    const dv = new DataView(b.buffer);
    return { status, frames: Array.from({ length: nr }, (_, i) => dv.getBigUint64(i * 8, true)) };
  }

  private takeMapGfn(): number {
    const g = this.freeMapGfns.pop();
    if (g === undefined) throw new Error('no free gfn left for grant mappings');
    return g;
  }

  private releaseMapGfn(g: number): void { this.freeMapGfns.push(g); }
}
