/**
 * Shared pieces of the hypercall tests: raw struct marshalling into a vCPU's
 * own guest memory, guest addresses that are (and are not) mapped, and a
 * snapshot of everything a failing hypercall must leave untouched.
 *
 * Layout the tests rely on (the builder's, shared/guest/image.ts): every PV
 * domain here has 256 pages of RAM at gfns 0..255 (1 MiB); gfn 4 is the Xen
 * library's scratch page; the tests marshal their own arguments at ARG_GFN and
 * above, which no library code touches.
 */
import { expect } from 'vitest';
import type { TestMachine, TestVcpu } from '../../helpers/machine.ts';
import { StructView, type Fields, type Layout } from '../../../shared/layout.ts';
import { PAGE_SIZE } from '../../../shared/types.ts';
import { XenCtrl } from '../../../dom0/libxc.ts';
import { GuestFault } from '../../../shared/guest/api.ts';

/** RAM pages of every domain the tests build (1 MiB). */
export const RAM_PAGES = 256;
/** First gfn the tests use for their own argument structs. */
export const ARG_GFN = 200;
export const ARG = ARG_GFN * PAGE_SIZE;
/** A second argument page, for arrays and out-buffers. */
export const BUF = (ARG_GFN + 1) * PAGE_SIZE;
/** Below the P2M size (4096 in TEST_CONFIG) but never populated: any access faults. */
export const UNMAPPED_GFN = 4000;
export const UNMAPPED = UNMAPPED_GFN * PAGE_SIZE;
/** The last 4 bytes of RAM: any struct wider than 4 bytes placed here runs into an unmapped page. */
export const STRADDLE = RAM_PAGES * PAGE_SIZE - 4;

/** Write a struct into the vCPU's guest memory at gpa. */
export function put<F extends Fields>(v: TestVcpu, gpa: number, s: StructView<F>): number {
  v.api.mem.write(gpa, s.raw());
  return gpa;
}

/** Read a struct back from the vCPU's guest memory. */
export function get<F extends Fields>(v: TestVcpu, layout: Layout<F>, gpa: number): StructView<F> {
  return new StructView(layout, v.api.mem.read(gpa, layout.size));
}

/** Little-endian u64 array as guest bytes. */
export function u64s(values: readonly (number | bigint)[]): Uint8Array {
  const b = new Uint8Array(values.length * 8);
  const dv = new DataView(b.buffer);
  values.forEach((x, i) => dv.setBigUint64(i * 8, BigInt(x), true));
  return b;
}

/** A control library bound to any vCPU (a DomU's, to show what it may not do). */
export const ctrlOf = (v: TestVcpu): XenCtrl => new XenCtrl(v.xen);

/**
 * What a failing hypercall must not change: free frames, and every domain's
 * id, page counts and state flags (read through Dom0's getdomaininfolist).
 */
export interface Snapshot {
  readonly free: number;
  readonly domains: ReadonlyArray<readonly [number, number, number, number]>;
}

export function snapshot(m: TestMachine): Snapshot {
  return {
    free: m.freePages(),
    domains: m.ctrl.listDomains().map((d) => [d.domid, d.totPages, d.maxPages, d.flags] as const),
  };
}

/** Nothing changed since `before`, and the frame accounting is intact. */
export function expectUnchanged(m: TestMachine, before: Snapshot): void {
  expect(snapshot(m)).toEqual(before);
  expect(m.checkInvariants()).toEqual([]);
}

/** Register values no guest register can hold: each must get an error code, never a throw. */
export const HOSTILE_REGS: ReadonlyArray<readonly [string, unknown]> = [
  ['a string', '12'],
  ['NaN', NaN],
  ['Infinity', Infinity],
  ['a fraction', 1.5],
  ['an unsafe integer', 2 ** 60],
  ['an object', { valueOf: () => { throw new Error('coerced'); } }],
  ['an array', [1]],
  ['null', null],
  ['a symbol', Symbol('r')],
  ['a function', () => 1],
  ['a boolean', true],
];

/** Can the vCPU's domain read guest frame gfn (is it in its physmap)? */
export function canRead(v: TestVcpu, gfn: number): boolean {
  try {
    v.api.mem.readU8(gfn * PAGE_SIZE);
    return true;
  } catch (e) {
    if (e instanceof GuestFault) return false;
    throw e;
  }
}
