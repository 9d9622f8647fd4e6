/**
 * The PV guest kernel library: typed wrappers over the raw hypercalls, used by
 * Dom0's and DomU's kernels alike. Arguments are marshalled into a scratch page
 * of the guest's own memory (hypercalls take guest-physical pointers, as Xen's
 * take guest handles), using the layouts of shared/abi.
 */
import { errnoName } from '../errno.ts';
import {
  CONSOLEIO_write, SCHEDOP_block, SCHEDOP_shutdown, SCHEDOP_yield, VCPUOP_get_runstate_info, VCPUOP_is_up,
  XENMAPSPACE_shared_info, XENMEM_add_to_physmap, XENMEM_current_reservation, XENMEM_decrease_reservation,
  XENMEM_maximum_reservation, XENMEM_populate_physmap, XENMEM_increase_reservation, XENVER_extraversion,
  XENVER_version, __HYPERVISOR_console_io, __HYPERVISOR_memory_op, __HYPERVISOR_sched_op, __HYPERVISOR_vcpu_op,
  __HYPERVISOR_xen_version, XENMEM_remove_from_physmap,
} from '../hypercall.ts';
import { StructView, type Fields, type Layout } from '../layout.ts';
import { XEN_ADD_TO_PHYSMAP, XEN_MEMORY_DOMAIN, XEN_MEMORY_RESERVATION, XEN_REMOVE_FROM_PHYSMAP } from '../abi/memory.ts';
import { SCHED_SHUTDOWN } from '../abi/sched.ts';
import { VCPU_RUNSTATE_INFO } from '../abi/vcpu.ts';
import { START_INFO } from '../abi/start-info.ts';
import { DOMID_SELF, PAGE_SIZE } from '../types.ts';
import type { KernelApi } from './api.ts';
import { decodeStartInfo, FIRST_FREE_GFN, START_INFO_GFN, type StartInfo } from './image.ts';

/** A hypercall failed: carries the op name and the (negative) Xen errno. */
export class XenError extends Error {
  constructor(readonly op: string, readonly rc: number) {
    super(`${op} failed: ${errnoName(rc)} (${rc})`);
    this.name = 'XenError';
  }
}

/** Throw XenError if rc < 0, else return rc. */
export function check(op: string, rc: number): number {
  if (rc < 0) throw new XenError(op, rc);
  return rc;
}

export interface Runstate {
  readonly state: number;
  readonly stateEntryTime: bigint;
  readonly time: readonly [bigint, bigint, bigint, bigint];
}

/** Offsets inside the scratch page: a struct at 0, arrays from ARRAY_AT. */
const ARRAY_AT = 512;
const ARRAY_BYTES = PAGE_SIZE - ARRAY_AT;

export class Xen {
  readonly startInfo: StartInfo;
  /** Guest-physical address of the scratch page used to marshal arguments. */
  readonly scratch: number;
  private readonly freeGfns: number[] = [];

  constructor(readonly k: KernelApi) {
    this.startInfo = decodeStartInfo(k.mem.read(k.startInfo, START_INFO.size));
    const nr = this.startInfo.get('nr_pages');
    for (let g = nr - 1; g >= FIRST_FREE_GFN; g--) this.freeGfns.push(g);
    const s = this.freeGfns.pop();
    if (s === undefined) throw new Error('no RAM for the hypercall scratch page');
    this.scratch = s * PAGE_SIZE;
  }

  get nrPages(): number { return this.startInfo.get('nr_pages'); }
  get cmdline(): string { return this.startInfo.getString('cmd_line'); }
  get flags(): number { return this.startInfo.get('flags'); }
  /** gfn of the xenstore ring page (start_info store_mfn; a gfn on our auto-translated guests), 0 if none. */
  get storeGfn(): number { return this.startInfo.get('store_mfn'); }
  /** Our end of the xenstore event channel (start_info store_evtchn), 0 if none. */
  get storeEvtchn(): number { return this.startInfo.get('store_evtchn'); }
  /** gfn of the console ring page (start_info console.domU.mfn), 0 if none. */
  get consoleGfn(): number { return this.startInfo.get('console_domU_mfn'); }
  /** Our end of the console event channel (start_info console.domU.evtchn), 0 if none. */
  get consoleEvtchn(): number { return this.startInfo.get('console_domU_evtchn'); }
  /** gfn of start_info in the builder's layout. */
  static readonly START_INFO_GFN = START_INFO_GFN;

  /** Take a free gfn of the initial RAM (a trivial page allocator for kernels). */
  allocGfn(): number {
    const g = this.freeGfns.pop();
    if (g === undefined) throw new Error('out of guest pages');
    return g;
  }

  /**
   * Take `n` free gfns, adjacent (g, g + 1, ..., g + n - 1, in that order)
   * if such a run is free, else any `n` (as allocGfn takes them). Adjacent
   * guest pages are usually machine-contiguous too, which lets a backend
   * move a buffer's data in one piece (one iovec). Throws, taking nothing,
   * if fewer than `n` pages are free.
   */
  allocGfnRun(n: number): number[] {
    if (!Number.isSafeInteger(n) || n < 1) throw new RangeError(`allocGfnRun: bad page count ${n}`);
    const free = this.freeGfns;
    if (free.length < n) throw new Error('out of guest pages');
    if (n === 1) return [this.allocGfn()];
    // One pass over the free set: a run starts at a free g whose g - 1 is not free.
    const isFree = new Set(free);
    let first = -1;
    for (const g of free) {
      if (isFree.has(g - 1)) continue;
      let len = 1;
      while (len < n && isFree.has(g + len)) len++;
      if (len === n && (first < 0 || g < first)) first = g;
    }
    if (first < 0) return Array.from({ length: n }, () => this.allocGfn());
    // Take the run out, keeping the others in their order (compacted in place).
    let w = 0;
    for (let r = 0; r < free.length; r++) {
      const g = free[r]!;
      if (g < first || g >= first + n) free[w++] = g;
    }
    free.length = w;
    return Array.from({ length: n }, (_, i) => first + i);
  }

  releaseGfn(g: number): void { this.freeGfns.push(g); }
  get freePageCount(): number { return this.freeGfns.length; }

  /** Write a struct to the scratch page and return its address. */
  put(v: { raw(): Uint8Array }): number {
    this.k.mem.write(this.scratch, v.raw());
    return this.scratch;
  }

  /** Read a struct back from the scratch page. */
  get<F extends Fields>(layout: Layout<F>): StructView<F> {
    return new StructView(layout, this.k.mem.read(this.scratch, layout.size));
  }

  /** Write bytes to the array area of the scratch page; returns its address. */
  putArray(b: Uint8Array): number {
    if (b.length > ARRAY_BYTES) throw new Error(`argument array of ${b.length} bytes exceeds ${ARRAY_BYTES}`);
    this.k.mem.write(this.scratch + ARRAY_AT, b);
    return this.scratch + ARRAY_AT;
  }

  readArray(len: number): Uint8Array {
    return this.k.mem.read(this.scratch + ARRAY_AT, len);
  }

  static readonly MAX_ARRAY_BYTES = ARRAY_BYTES;

  // xen_version

  version(): { major: number; minor: number } {
    const v = this.k.hypercall(__HYPERVISOR_xen_version, XENVER_version, 0);
    return { major: v >>> 16, minor: v & 0xffff };
  }

  extraversion(): string {
    check('xen_version(extraversion)', this.k.hypercall(__HYPERVISOR_xen_version, XENVER_extraversion, this.scratch));
    const b = this.k.mem.read(this.scratch, 16);
    const end = b.indexOf(0);
    return new TextDecoder().decode(b.subarray(0, end < 0 ? 16 : end));
  }

  // console_io

  /** Write text to the hypervisor console (CONSOLEIO_write). */
  print(text: string): void {
    const b = new TextEncoder().encode(text);
    for (let at = 0; at < b.length; at += ARRAY_BYTES) {
      const chunk = b.subarray(at, at + ARRAY_BYTES);
      const gpa = this.putArray(chunk);
      check('console_io(write)', this.k.hypercall(__HYPERVISOR_console_io, CONSOLEIO_write, chunk.length, gpa));
    }
  }

  // memory_op

  private reservationOp(cmd: number, gfns: readonly number[], order: number, domid: number): number {
    let done = 0;
    const per = ARRAY_BYTES / 8;
    for (let at = 0; at < gfns.length; at += per) {
      const part = gfns.slice(at, at + per);
      const list = new Uint8Array(part.length * 8);
      const dv = new DataView(list.buffer);
      part.forEach((g, i) => dv.setBigUint64(i * 8, BigInt(g), true));
      const r = StructView.alloc(XEN_MEMORY_RESERVATION)
        .set('extent_start', this.putArray(list)).set('nr_extents', part.length)
        .set('extent_order', order).set('domid', domid);
      const rc = this.k.hypercall(__HYPERVISOR_memory_op, cmd, this.put(r));
      if (rc < 0) return done > 0 ? done : rc;
      done += rc;
      if (rc < part.length) break;
    }
    return done;
  }

  /** XENMEM_populate_physmap: extents of 2^order frames at each gfn. Returns extents done (or -errno). */
  populatePhysmap(gfns: readonly number[], order = 0, domid: number = DOMID_SELF): number {
    return this.reservationOp(XENMEM_populate_physmap, gfns, order, domid);
  }

  /** XENMEM_decrease_reservation: give back the frames at these gfns (ballooning). */
  decreaseReservation(gfns: readonly number[], order = 0, domid: number = DOMID_SELF): number {
    return this.reservationOp(XENMEM_decrease_reservation, gfns, order, domid);
  }

  /** XENMEM_increase_reservation (auto-translated: frames owned, not mapped). */
  increaseReservation(count: number, order = 0, domid: number = DOMID_SELF): number {
    return this.reservationOp(XENMEM_increase_reservation, new Array<number>(count).fill(0), order, domid);
  }

  currentReservation(domid: number = DOMID_SELF): number {
    return this.k.hypercall(__HYPERVISOR_memory_op, XENMEM_current_reservation, this.put(StructView.alloc(XEN_MEMORY_DOMAIN).set('domid', domid)));
  }

  maximumReservation(domid: number = DOMID_SELF): number {
    return this.k.hypercall(__HYPERVISOR_memory_op, XENMEM_maximum_reservation, this.put(StructView.alloc(XEN_MEMORY_DOMAIN).set('domid', domid)));
  }

  /** Map this domain's shared_info frame at gfn (XENMAPSPACE_shared_info). */
  mapSharedInfo(gfn: number): number {
    const x = StructView.alloc(XEN_ADD_TO_PHYSMAP).set('domid', DOMID_SELF).set('space', XENMAPSPACE_shared_info).set('idx', 0).set('gpfn', gfn);
    return this.k.hypercall(__HYPERVISOR_memory_op, XENMEM_add_to_physmap, this.put(x));
  }

  removeFromPhysmap(gfn: number, domid: number = DOMID_SELF): number {
    const x = StructView.alloc(XEN_REMOVE_FROM_PHYSMAP).set('domid', domid).set('gpfn', gfn);
    return this.k.hypercall(__HYPERVISOR_memory_op, XENMEM_remove_from_physmap, this.put(x));
  }

  // sched_op

  yield(): void { this.k.hypercall(__HYPERVISOR_sched_op, SCHEDOP_yield, 0); }
  block(): void { this.k.hypercall(__HYPERVISOR_sched_op, SCHEDOP_block, 0); }

  /** SCHEDOP_shutdown: does not return when it succeeds. */
  shutdown(reason: number): number {
    return this.k.hypercall(__HYPERVISOR_sched_op, SCHEDOP_shutdown, this.put(StructView.alloc(SCHED_SHUTDOWN).set('reason', reason)));
  }

  // vcpu_op

  vcpuIsUp(vcpu: number): number { return this.k.hypercall(__HYPERVISOR_vcpu_op, VCPUOP_is_up, vcpu, 0); }

  runstate(vcpu: number): Runstate {
    check('vcpu_op(get_runstate_info)', this.k.hypercall(__HYPERVISOR_vcpu_op, VCPUOP_get_runstate_info, vcpu, this.scratch));
    const r = this.get(VCPU_RUNSTATE_INFO);
    const t = (i: number): bigint => r.dv.getBigUint64(VCPU_RUNSTATE_INFO.fields.time.offset + 8 * i, true);
    return { state: r.get('state'), stateEntryTime: r.getBig('state_entry_time'), time: [t(0), t(1), t(2), t(3)] };
  }
}
