/**
 * fast-check arbitraries of blkif ring entries (112 bytes), biased toward
 * plausible requests so that checks deep in blkback are reached, with a
 * share of plain random bytes. Used by the fast-path property tests (pure)
 * and the hostile-ring test (the real engine).
 */
import fc from 'fast-check';
import { BLKIF_OP_DISCARD, BLKIF_OP_INDIRECT, BLKIF_REQUEST, BLKIF_REQUEST_DISCARD, BLKIF_REQUEST_INDIRECT } from '../../shared/abi/blkif.ts';

const RQ = BLKIF_REQUEST.fields;
const RI = BLKIF_REQUEST_INDIRECT.fields;
const RD = BLKIF_REQUEST_DISCARD.fields;

export interface EntryBias {
  /** Sector numbers mostly below this (else any u32; the high word mostly 0). */
  readonly maxSector: number;
  /** Grant references the entry mostly names (segments, indirect pages); none given: the random bytes stay. */
  readonly grefs?: readonly number[];
}

const sectorArb = (max: number) => fc.tuple(
  fc.oneof(fc.nat(max), fc.nat()),
  fc.oneof({ arbitrary: fc.constant(0), weight: 4 }, { arbitrary: fc.nat(), weight: 1 }),
);

const SAME_HEAD = [RI.indirect_op.offset, RD.flag.offset].every((o) => o === RQ.nr_segments.offset) &&
  [RI.sector_number.offset, RD.sector_number.offset].every((o) => o === RQ.sector_number.offset);
if (!SAME_HEAD) throw new Error('blkif request layouts no longer share their head (withHead)');

/**
 * A copy of `bytes` with the fields every blkif request layout has in the
 * same place: the operation (byte 0), the byte after it (nr_segments,
 * indirect_op or flag) and sector_number (offset 16, as two u32 words).
 */
function withHead(bytes: Uint8Array, op: number, byte1: number, [lo, hi]: readonly [number, number]): { e: Uint8Array; dv: DataView } {
  const e = bytes.slice();
  const dv = new DataView(e.buffer);
  dv.setUint8(RQ.operation.offset, op);
  dv.setUint8(RQ.nr_segments.offset, byte1);
  dv.setUint32(RQ.sector_number.offset, lo, true);
  dv.setUint32(RQ.sector_number.offset + 4, hi, true);
  return { e, dv };
}

/** A gref from `grefs` (4 in 5) or any u32; undefined: keep the random bytes. */
const grefArb = (grefs: readonly number[] | undefined, n: number) =>
  grefs === undefined || grefs.length === 0
    ? fc.constant(undefined)
    : fc.array(fc.oneof({ arbitrary: fc.constantFrom(...grefs), weight: 4 }, { arbitrary: fc.nat(0xffff_ffff), weight: 1 }), { minLength: n, maxLength: n });

/** READ/WRITE/FLUSH/BARRIER-shaped entries: small operations, segment counts, sectors, first/last sectors. */
export function directEntry(b: EntryBias): fc.Arbitrary<Uint8Array> {
  return fc.record({
    bytes: fc.uint8Array({ minLength: 112, maxLength: 112 }),
    op: fc.oneof(fc.constantFrom(0, 1, 2, 3, 5, 6), fc.nat(255)),
    nr: fc.oneof(fc.integer({ min: 1, max: 3 }), fc.nat(12), fc.nat(255)),
    sector: sectorArb(b.maxSector),
    sects: fc.array(fc.oneof(
      { arbitrary: fc.tuple(fc.nat(7), fc.nat(7)).map(([x, y]) => [Math.min(x, y), Math.max(x, y)] as const), weight: 19 },
      { arbitrary: fc.tuple(fc.nat(8), fc.nat(8)), weight: 1 },
    ), { minLength: 11, maxLength: 11 }),
    grefs: grefArb(b.grefs, 11),
    plain: fc.boolean(),
  }).map(({ bytes, op, nr, sector, sects, grefs, plain }) => {
    if (plain) return bytes;
    const { e, dv } = withHead(bytes, op, nr, sector);
    sects.forEach(([f, l], i) => { e[RQ.seg.offset + 8 * i + 4] = f; e[RQ.seg.offset + 8 * i + 5] = l; });
    grefs?.forEach((g, i) => dv.setUint32(RQ.seg.offset + 8 * i, g, true));
    return e;
  });
}

/** INDIRECT entries: mostly READ/WRITE indirect_ops, small segment counts, sectors; indirect pages from `grefs`. */
export function indirectEntry(b: EntryBias): fc.Arbitrary<Uint8Array> {
  return fc.record({
    bytes: fc.uint8Array({ minLength: 112, maxLength: 112 }),
    op: fc.oneof({ arbitrary: fc.constant(BLKIF_OP_INDIRECT), weight: 8 }, { arbitrary: fc.nat(255), weight: 1 }),
    iop: fc.oneof({ arbitrary: fc.constantFrom(0, 1), weight: 8 }, { arbitrary: fc.nat(255), weight: 1 }),
    nr: fc.oneof({ arbitrary: fc.integer({ min: 1, max: 8 }), weight: 3 }, { arbitrary: fc.nat(600), weight: 1 }, { arbitrary: fc.nat(65535), weight: 1 }),
    sector: sectorArb(b.maxSector),
    grefs: grefArb(b.grefs, 8),
    plain: fc.oneof({ arbitrary: fc.constant(false), weight: 4 }, { arbitrary: fc.constant(true), weight: 1 }),
  }).map(({ bytes, op, iop, nr, sector, grefs, plain }) => {
    if (plain) return bytes;
    const { e, dv } = withHead(bytes, op, iop, sector);
    dv.setUint16(RI.nr_segments.offset, nr, true);
    grefs?.forEach((g, i) => dv.setUint32(RI.indirect_grefs.offset + 4 * i, g, true));
    return e;
  });
}

/** DISCARD entries: small ranges mostly inside `maxSector`, any flag now and then. */
export function discardEntry(b: EntryBias): fc.Arbitrary<Uint8Array> {
  return fc.record({
    bytes: fc.uint8Array({ minLength: 112, maxLength: 112 }),
    flag: fc.oneof({ arbitrary: fc.constant(0), weight: 4 }, { arbitrary: fc.nat(255), weight: 1 }),
    sector: sectorArb(b.maxSector),
    count: fc.oneof({ arbitrary: fc.nat(64), weight: 4 }, { arbitrary: fc.nat(), weight: 1 }),
  }).map(({ bytes, flag, sector, count }) => {
    const { e, dv } = withHead(bytes, BLKIF_OP_DISCARD, flag, sector);
    dv.setUint32(RD.nr_sectors.offset, count, true);
    dv.setUint32(RD.nr_sectors.offset + 4, 0, true);
    return e;
  });
}
