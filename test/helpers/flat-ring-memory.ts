/**
 * A flat "guest memory" holding exactly one shared ring (io/ring.h): the
 * 64-byte header then `size` entries of `entrySize` bytes, at `base`. Any
 * access outside those bytes faults (throws), so a test catches a ring end
 * that reads or writes past its ring.
 */
import type { RingGeometry, RingMemory } from '../../shared/ring/ring.ts';
import { sharedRingInit } from '../../shared/ring/ring.ts';
import { SRING_HEADER } from '../../shared/abi/ring.ts';

const F = SRING_HEADER.fields;

export class FlatRingMemory implements RingMemory {
  readonly bytes: Uint8Array;
  private readonly dv: DataView;
  /** Once set, entry reads and writes must each lie within one entry slot, or cover whole slots (never the header). */
  private entries: { start: number; entrySize: number } | undefined;
  constructor(readonly base: number, length: number) {
    this.bytes = new Uint8Array(length);
    this.dv = new DataView(this.bytes.buffer);
  }
  private at(gpa: number, len: number): number {
    const off = gpa - this.base;
    if (!Number.isInteger(off) || off < 0 || off + len > this.bytes.length) throw new Error(`fault at 0x${gpa.toString(16)} (+${len})`);
    return off;
  }
  private inSlot(gpa: number, len: number): void {
    const e = this.entries;
    if (e === undefined) return;
    const off = gpa - this.base - e.start;
    const at = off % e.entrySize;
    // Within one slot (a whole entry, or part of one: BackRing.copyRequestPart), or a run of
    // whole slots (a batch copy: FrontRing.takeResponsesInto).
    if (off < 0 || (len <= e.entrySize ? at + len > e.entrySize : at !== 0 || len % e.entrySize !== 0)) {
      throw new Error(`entry access at 0x${gpa.toString(16)} (+${len}) is not within one entry slot or a run of whole slots`);
    }
  }
  /** From now on, fault any read or write (not an index load/store) that is not within one entry slot or a run of whole slots. */
  restrictToEntries(start: number, entrySize: number): void { this.entries = { start, entrySize }; }
  read(gpa: number, len: number): Uint8Array { const o = this.at(gpa, len); this.inSlot(gpa, len); return this.bytes.slice(o, o + len); }
  write(gpa: number, data: Uint8Array): void { const o = this.at(gpa, data.length); this.inSlot(gpa, data.length); this.bytes.set(data, o); }
  atomicLoad32(gpa: number): number { return this.dv.getUint32(this.at(gpa, 4), true); }
  atomicStore32(gpa: number, v: number): void { this.dv.setUint32(this.at(gpa, 4), v >>> 0, true); }
}

/** The shared header's four indexes, as the peer sees them. */
export interface SharedIndexes { reqProd: number; reqEvent: number; rspProd: number; rspEvent: number }

/** A ring of `size` entries over its own flat memory, initialised at index `start`. */
export interface FlatRing { readonly mem: FlatRingMemory; readonly g: RingGeometry }

/**
 * SHARED_RING_INIT, then both producers moved to `start` and both event
 * indexes to `start + 1`: the state of a fresh ring whose ends have already
 * exchanged `start` requests and responses (what FrontRing/BackRing attach to
 * with their `start` argument).
 */
export function flatRingAt(start: number, size: number, entrySize: number, base = 0x10_0000): FlatRing {
  const mem = new FlatRingMemory(base, SRING_HEADER.size + size * entrySize);
  sharedRingInit(mem, base);
  setIndexes(mem, base, { reqProd: start, rspProd: start, reqEvent: start + 1, rspEvent: start + 1 });
  mem.restrictToEntries(SRING_HEADER.size, entrySize);
  return { mem, g: { base, size, entrySize } };
}

export function setIndexes(mem: RingMemory, base: number, ix: Partial<SharedIndexes>): void {
  if (ix.reqProd !== undefined) mem.atomicStore32(base + F.req_prod.offset, ix.reqProd >>> 0);
  if (ix.reqEvent !== undefined) mem.atomicStore32(base + F.req_event.offset, ix.reqEvent >>> 0);
  if (ix.rspProd !== undefined) mem.atomicStore32(base + F.rsp_prod.offset, ix.rspProd >>> 0);
  if (ix.rspEvent !== undefined) mem.atomicStore32(base + F.rsp_event.offset, ix.rspEvent >>> 0);
}

export function indexes(mem: RingMemory, base: number): SharedIndexes {
  return {
    reqProd: mem.atomicLoad32(base + F.req_prod.offset), reqEvent: mem.atomicLoad32(base + F.req_event.offset),
    rspProd: mem.atomicLoad32(base + F.rsp_prod.offset), rspEvent: mem.atomicLoad32(base + F.rsp_event.offset),
  };
}

/** A test entry's payload: its sequence number and a check word mixed with `tag` (REQ_TAG or RSP_TAG). */
export function payload(seq: number, tag: number): Uint8Array {
  const b = new Uint8Array(8);
  const dv = new DataView(b.buffer);
  dv.setUint32(0, seq >>> 0, true);
  dv.setUint32(4, (Math.imul(seq, 0x9e37_79b1) ^ tag) >>> 0, true);
  return b;
}
export const REQ_TAG = 0x5245_5131;
export const RSP_TAG = 0x5253_5031;
