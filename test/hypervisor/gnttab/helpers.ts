/**
 * Shared pieces of the grant table tests: a machine with Dom0 and DomUs, each
 * with its own GrantTable (the guest library) on an in-thread vCPU context, so
 * every grant operation goes through the real hypercall path on this thread.
 *
 * Guest-physical layout of the 1 MiB domains (256 pages of RAM): the Xen
 * library's scratch page is gfn 2, the grant library's op page gfn 3, the
 * tests' raw argument page gfn 4; further RAM pages come from `page()`.
 * Holes: shared_info would go at 256, grant frames at 264.., mappings of
 * others' grants at 328.. (shared/guest/gnttab.ts defaults).
 */
import { expect } from 'vitest';
import { TestMachine, type TestVcpu } from '../../helpers/machine.ts';
import { GrantTable, type GrantTableOptions } from '../../../shared/guest/gnttab.ts';
import { D, G, P2M_INVALID } from '../../../hypervisor/state.ts';
import { PAGE_SIZE } from '../../../shared/types.ts';
import type { PvBuildConfig } from '../../../dom0/builder.ts';
import { StructView, type Fields, type Layout } from '../../../shared/layout.ts';
import { __HYPERVISOR_grant_table_op } from '../../../shared/hypercall.ts';
import { GRANT_ENTRY_V1 } from '../../../shared/abi/grant-table.ts';
import { entryMfn, p2mLookup } from '../../../hypervisor/mm/p2m.ts';
import { actWord, ACT_PIN, nrGrantEntries, shaWord } from '../../../hypervisor/gnttab/layout.ts';

/** First gfn of a hole no library uses (below the test P2M size of 4096, above every default hole). */
export const HOLE_GFN_BASE = 3000;

export interface Dom {
  readonly m: TestMachine;
  readonly domid: number;
  readonly slot: number;
  readonly v: TestVcpu;
  readonly gt: GrantTable;
  /** Guest-physical address of a RAM page for raw hypercall arguments. */
  readonly arg: number;
  /** A fresh RAM page of this domain, every byte `fill` (default: the gfn's low byte). */
  page(fill?: number): number;
  read(gfn: number, offset?: number, len?: number): Uint8Array;
  /** The machine frame behind one of our gfns, or -1. */
  mfn(gfn: number): number;
}

export function domOf(m: TestMachine, domid: number, slot: number, v: TestVcpu, o: GrantTableOptions = {}): Dom {
  const gt = new GrantTable(v.xen, o);
  const arg = v.xen.allocGfn() * PAGE_SIZE;
  return {
    m, domid, slot, v, gt, arg,
    page(fill?: number): number {
      const g = v.xen.allocGfn();
      v.api.mem.fill(g * PAGE_SIZE, PAGE_SIZE, fill ?? g & 0xff);
      return g;
    },
    read(gfn: number, offset = 0, len = PAGE_SIZE - offset): Uint8Array {
      return v.api.mem.read(gfn * PAGE_SIZE + offset, len);
    },
    mfn(gfn: number): number {
      const e = p2mLookup(m.hv, slot, gfn);
      return e === P2M_INVALID ? -1 : entryMfn(e);
    },
  };
}

/** A DomU built by Dom0's real builder, with its grant table. */
export async function addDomU(m: TestMachine, c: Partial<PvBuildConfig> = {}, o: GrantTableOptions = {}): Promise<Dom> {
  const u = await m.domU(c);
  return domOf(m, u.domid, u.slot, u.v, o);
}

/** A machine with Dom0 and `n` DomUs, each with a grant table mapped. */
export async function machine(n = 1, c: Partial<PvBuildConfig> = {}): Promise<{ m: TestMachine; dom0: Dom; us: Dom[] }> {
  const m = new TestMachine();
  const dom0 = domOf(m, 0, m.dom0.ctx.slot, m.dom0);
  const us: Dom[] = [];
  for (let i = 0; i < n; i++) us.push(await addDomU(m, c));
  return { m, dom0, us };
}

/** Frame accounting of one domain, as the hypervisor keeps it. */
export function acct(m: TestMachine, slot: number): { tot: number; xenheap: number; maptrack: number; grantFrames: number } {
  const d = (w: number): number => Atomics.load(m.hv.dom, m.hv.d(slot, w));
  return { tot: d(D.tot_pages), xenheap: d(D.xenheap_pages), maptrack: d(D.maptrack_in_use), grantFrames: d(D.nr_grant_frames) };
}

export function expectSound(m: TestMachine): void {
  expect(m.checkInvariants()).toEqual([]);
}

export const freePages = (m: TestMachine): number => Atomics.load(m.hv.g, G.FREE_PAGES);
export const xenHeap = (m: TestMachine): number => Atomics.load(m.hv.g, G.XENHEAP_PAGES);
/** References held on a machine frame (frame table count). */
export const refs = (m: TestMachine, mfn: number): number => m.hv.ftCount[mfn]!;
/** Owner domid of a machine frame (-1 free, 0x7ff2 Xen). */
export const owner = (m: TestMachine, mfn: number): number => m.hv.ftOwner[mfn]!;

/** The pin count of grant `ref` of domain `d` (0 when its table is gone). */
export function pin(d: Dom, ref: number): number {
  if (ref >= nrGrantEntries(d.m.hv, d.slot)) return 0;
  const w = actWord(d.m.hv, d.slot, ref);
  return w < 0 ? 0 : d.m.hv.mem32[w + ACT_PIN]! >>> 0;
}

/**
 * Issue grant_table_op(cmd) with raw entries written at `gpa` (default the
 * domain's argument page); returns the rc and the entries as left in memory.
 */
export function rawOp<F extends Fields>(
  d: Dom, cmd: number, layout: Layout<F>, entries: readonly StructView<F>[], gpa = d.arg, count = entries.length,
): { rc: number; out: StructView<F>[] } {
  const b = new Uint8Array(layout.size * entries.length);
  entries.forEach((e, i) => b.set(e.raw(), i * layout.size));
  if (b.length) d.v.api.mem.write(gpa, b);
  const rc = d.v.call(__HYPERVISOR_grant_table_op, cmd, gpa, count);
  const after = b.length ? d.v.api.mem.read(gpa, b.length) : b;
  return { rc, out: entries.map((_, i) => new StructView(layout, after, i * layout.size)) };
}

/** Write a grant entry of `d` directly (a guest writing its own table), bypassing the library. */
export function writeEntry(d: Dom, ref: number, flags: number, domid: number, frame: number): void {
  const a = d.gt.entryAddr(ref);
  d.v.api.mem.writeU32(a + GRANT_ENTRY_V1.fields.frame.offset, frame);
  d.v.api.mem.atomicStore32(a, (domid << 16) | flags);
}

export const gpaOf = (gfn: number): number => gfn * PAGE_SIZE;

/**
 * Run `fn` while the granter "rewrites" grant `ref`'s flags word between every
 * read the hypervisor makes and its compare-and-swap (toggling GTF_PAT, a bit
 * v1 ignores): a granter faster than the hypervisor. Returns fn's result and
 * how many swaps were tried on that word.
 */
export function whileRewriting<T>(d: Dom, ref: number, fn: () => T): { result: T; tries: number } {
  const word = shaWord(d.m.hv, d.slot, ref);
  const mem32 = d.m.hv.mem32;
  const real = Atomics.compareExchange;
  let tries = 0;
  const racing = (a: Int32Array, i: number, expected: number, replacement: number): number => {
    if (a === mem32 && i === word) {
      tries++;
      Atomics.xor(a, i, 1 << 7);
    }
    return real(a, i, expected, replacement);
  };
  (Atomics as { compareExchange: unknown }).compareExchange = racing;
  try {
    return { result: fn(), tries };
  } finally {
    (Atomics as { compareExchange: unknown }).compareExchange = real;
  }
}
