/**
 * The blkif wire format (shared/blkif/proto.ts) against io/blkif.h's layouts:
 * round trips of every request kind and of responses, golden bytes at the
 * header's offsets, decoding of arbitrary (guest-written) entries, u64 edges.
 */
import { describe, expect, it } from 'vitest';
import fc from 'fast-check';
import {
  decodeIndirectSegments, decodeRequest, decodeResponse, DirectRwScratch, encodeIndirectSegments, encodeRequest, encodeResponse,
  REQUEST_HEAD_BYTES, requestBytes, setRequestIdLow, setRequestSegment, setRwRequestHeader,
} from '../../../shared/blkif/proto.ts';
import { directEntry } from '../../helpers/blkif-arb.ts';
import type { BlkifDiscardRequest, BlkifIndirectRequest, BlkifRequest, BlkifResponse, BlkifRwRequest, BlkifSegment } from '../../../shared/blkif/proto.ts';
import {
  BLKIF_MAX_INDIRECT_PAGES_PER_REQUEST, BLKIF_MAX_SEGMENTS_PER_REQUEST, BLKIF_OP_DISCARD, BLKIF_OP_INDIRECT, BLKIF_OP_READ,
  BLKIF_OP_WRITE, BLKIF_RING_ENTRY_SIZE, BLKIF_RSP_EOPNOTSUPP,
} from '../../../shared/abi/blkif.ts';

const ENTRY = BLKIF_RING_ENTRY_SIZE;
const u8 = fc.integer({ min: 0, max: 0xff });
const u16 = fc.integer({ min: 0, max: 0xffff });
const u32 = fc.integer({ min: 0, max: 0xffff_ffff });
const u64 = fc.bigInt({ min: 0n, max: 2n ** 64n - 1n });
/** Sector numbers and counts: exact as numbers up to 2^53 - 1. */
const sector = fc.oneof(fc.integer({ min: 0, max: Number.MAX_SAFE_INTEGER }), fc.constantFrom(0, 2 ** 32 - 1, 2 ** 32, Number.MAX_SAFE_INTEGER));

const segment: fc.Arbitrary<BlkifSegment> = fc.record({ gref: u32, firstSect: u8, lastSect: u8 });

const rw: fc.Arbitrary<BlkifRwRequest> = fc
  .record({
    operation: fc.constantFrom(0, 1, 2, 3) as fc.Arbitrary<BlkifRwRequest['operation']>,
    segs: fc.array(segment, { maxLength: BLKIF_MAX_SEGMENTS_PER_REQUEST }),
    extra: fc.integer({ min: 0, max: 255 - BLKIF_MAX_SEGMENTS_PER_REQUEST }),
    handle: u16, id: u64, sector,
  })
  // nr_segments as sent: the segments present, or more than 11 once all 11 are (decoded as sent, 11 segments).
  .map(({ extra, ...r }) => ({ kind: 'rw' as const, ...r, nrSegments: r.segs.length === BLKIF_MAX_SEGMENTS_PER_REQUEST ? r.segs.length + extra : r.segs.length }));

const discard: fc.Arbitrary<BlkifDiscardRequest> = fc.record({
  kind: fc.constant('discard' as const), operation: fc.constant(BLKIF_OP_DISCARD), flag: u8, handle: u16, id: u64, sector, nrSectors: sector,
});

const indirect: fc.Arbitrary<BlkifIndirectRequest> = fc.record({
  kind: fc.constant('indirect' as const), operation: fc.constant(BLKIF_OP_INDIRECT), indirectOp: u8, nrSegments: u16, handle: u16, id: u64, sector,
  indirectGrefs: fc.array(u32, { minLength: BLKIF_MAX_INDIRECT_PAGES_PER_REQUEST, maxLength: BLKIF_MAX_INDIRECT_PAGES_PER_REQUEST }),
});

const response: fc.Arbitrary<BlkifResponse> = fc.record({ id: u64, operation: u8, status: fc.integer({ min: -0x8000, max: 0x7fff }) });

const entry = fc.uint8Array({ minLength: ENTRY, maxLength: ENTRY });
const KNOWN_OPS = new Set([0, 1, 2, 3, 5, 6]);

describe('blkif requests: encode then decode', () => {
  it('READ/WRITE/WRITE_BARRIER/FLUSH_DISKCACHE round trip', () => {
    fc.assert(fc.property(rw, (r) => { expect(decodeRequest(encodeRequest(r))).toEqual(r); }), { numRuns: 500 });
  });

  it('DISCARD round trips', () => {
    fc.assert(fc.property(discard, (r) => { expect(decodeRequest(encodeRequest(r))).toEqual(r); }), { numRuns: 500 });
  });

  it('INDIRECT round trips; unused indirect_grefs slots decode as 0', () => {
    fc.assert(fc.property(indirect, fc.nat(BLKIF_MAX_INDIRECT_PAGES_PER_REQUEST), (r, used) => {
      expect(decodeRequest(encodeRequest(r))).toEqual(r);
      const short = { ...r, indirectGrefs: r.indirectGrefs.slice(0, used) };
      const want = [...short.indirectGrefs, ...new Array<number>(BLKIF_MAX_INDIRECT_PAGES_PER_REQUEST - used).fill(0)];
      expect(decodeRequest(encodeRequest(short))).toEqual({ ...r, indirectGrefs: want });
    }), { numRuns: 500 });
  });

  it('refuses more than 11 direct segments or 8 indirect pages (a caller bug)', () => {
    const seg = { gref: 1, firstSect: 0, lastSect: 7 };
    const segs = new Array<BlkifSegment>(12).fill(seg);
    expect(() => encodeRequest({ kind: 'rw', operation: BLKIF_OP_READ, nrSegments: 12, handle: 0, id: 0n, sector: 0, segs })).toThrow(RangeError);
    expect(() => encodeRequest({
      kind: 'indirect', operation: BLKIF_OP_INDIRECT, indirectOp: BLKIF_OP_READ, nrSegments: 1, handle: 0, id: 0n, sector: 0, indirectGrefs: new Array<number>(9).fill(1),
    })).toThrow(RangeError);
  });
});

describe('blkif requests on the wire (golden bytes at io/blkif.h offsets)', () => {
  const le = (b: Uint8Array): DataView => new DataView(b.buffer, b.byteOffset, b.byteLength);

  it('a WRITE of two segments', () => {
    const b = encodeRequest({
      kind: 'rw', operation: BLKIF_OP_WRITE, nrSegments: 2, handle: 0xca01, id: 0x0102_0304_0506_0708n, sector: 0x1_2345_6789,
      segs: [{ gref: 0xdead_beef, firstSect: 1, lastSect: 7 }, { gref: 42, firstSect: 0, lastSect: 3 }],
    });
    const dv = le(b);
    expect(b.length).toBe(112);
    expect([b[0], b[1], dv.getUint16(2, true)]).toEqual([1, 2, 0xca01]);
    expect(dv.getBigUint64(8, true)).toBe(0x0102_0304_0506_0708n);
    expect(dv.getBigUint64(16, true)).toBe(0x1_2345_6789n);
    expect([dv.getUint32(24, true), b[28], b[29]]).toEqual([0xdead_beef, 1, 7]);
    expect([dv.getUint32(32, true), b[36], b[37]]).toEqual([42, 0, 3]);
    expect(b.subarray(40).every((x) => x === 0)).toBe(true);
    expect([b[4], b[5], b[6], b[7], b[30], b[31]]).toEqual([0, 0, 0, 0, 0, 0]); // padding
  });

  it('a secure DISCARD', () => {
    const b = encodeRequest({ kind: 'discard', operation: BLKIF_OP_DISCARD, flag: 1, handle: 0x33, id: 9n, sector: 2 ** 40, nrSectors: 2 ** 33 + 5 });
    const dv = le(b);
    expect([b[0], b[1], dv.getUint16(2, true)]).toEqual([5, 1, 0x33]);
    expect([dv.getBigUint64(8, true), dv.getBigUint64(16, true), dv.getBigUint64(24, true)]).toEqual([9n, 2n ** 40n, 2n ** 33n + 5n]);
    expect(b.subarray(32).every((x) => x === 0)).toBe(true);
  });

  it('an INDIRECT WRITE', () => {
    const b = encodeRequest({
      kind: 'indirect', operation: BLKIF_OP_INDIRECT, indirectOp: BLKIF_OP_WRITE, nrSegments: 0x0203, handle: 0xbeef, id: 2n ** 64n - 1n, sector: 77,
      indirectGrefs: [11, 12, 13, 14, 15, 16, 17, 0xffff_ffff],
    });
    const dv = le(b);
    expect([b[0], b[1], dv.getUint16(2, true)]).toEqual([6, 1, 0x0203]);
    expect([dv.getBigUint64(8, true), dv.getBigUint64(16, true), dv.getUint16(24, true)]).toEqual([2n ** 64n - 1n, 77n, 0xbeef]);
    expect(Array.from({ length: 8 }, (_, i) => dv.getUint32(28 + 4 * i, true))).toEqual([11, 12, 13, 14, 15, 16, 17, 0xffff_ffff]);
    expect(b.subarray(60).every((x) => x === 0)).toBe(true);
  });

  it('a response', () => {
    const b = encodeResponse({ id: 0xfeed_face_cafe_beefn, operation: BLKIF_OP_DISCARD, status: BLKIF_RSP_EOPNOTSUPP });
    const dv = le(b);
    expect(b.length).toBe(16);
    expect([dv.getBigUint64(0, true), b[8], b[9], dv.getInt16(10, true), dv.getUint32(12, true)]).toEqual([0xfeed_face_cafe_beefn, 5, 0, -2, 0]);
  });
});

describe('decoding guest-written entries', () => {
  it('any 112 bytes decode without throwing; unknown operations give kind "unknown" with operation and id', () => {
    fc.assert(fc.property(entry, (b) => {
      const r = decodeRequest(b);
      const dv = new DataView(b.buffer, b.byteOffset);
      expect(r.operation).toBe(b[0]);
      expect(r.id).toBe(dv.getBigUint64(8, true));
      expect(r.kind === 'unknown').toBe(!KNOWN_OPS.has(b[0]!));
      if (r.kind === 'rw') {
        expect(r.nrSegments).toBe(b[1]);
        expect(r.segs.length).toBe(Math.min(b[1]!, BLKIF_MAX_SEGMENTS_PER_REQUEST));
      }
    }), { numRuns: 1000 });
    for (const op of [4, 7, 0x80, 0xff]) {
      const b = new Uint8Array(ENTRY);
      b[0] = op;
      new DataView(b.buffer).setBigUint64(8, 0xabcdn, true);
      expect(decodeRequest(b)).toEqual({ kind: 'unknown', operation: op, id: 0xabcdn });
    }
  });

  it('decoding is stable: decode(encode(decode(bytes))) equals decode(bytes) for every known operation', () => {
    fc.assert(fc.property(entry, fc.constantFrom(0, 1, 2, 3, 5, 6), (b, op) => {
      b[0] = op;
      const r = decodeRequest(b);
      if (r.kind === 'unknown') throw new Error(`operation ${op} decoded as unknown`);
      expect(decodeRequest(encodeRequest(r))).toEqual(r);
    }), { numRuns: 500 });
  });

  it('decodes an entry that is a view into a larger buffer, and refuses one shorter than an entry', () => {
    fc.assert(fc.property(rw, fc.nat(64), (r, at) => {
      const big = new Uint8Array(at + ENTRY + 8).fill(0x5a);
      encodeRequest(r, big.subarray(at, at + ENTRY));
      expect(decodeRequest(big.subarray(at, at + ENTRY))).toEqual(r);
    }));
    expect(() => decodeRequest(new Uint8Array(ENTRY - 1))).toThrow(RangeError);
    expect(() => decodeResponse(new Uint8Array(15))).toThrow(RangeError);
  });

  it('u64 sectors: exact below 2^53, some number >= 2^53 above it (never a small one)', () => {
    fc.assert(fc.property(entry, fc.bigInt({ min: 0n, max: 2n ** 64n - 1n }), fc.bigInt({ min: 0n, max: 2n ** 64n - 1n }), (b, s, n) => {
      const dv = new DataView(b.buffer, b.byteOffset);
      dv.setBigUint64(16, s, true);
      dv.setBigUint64(24, n, true);
      const check = (got: number, want: bigint): void => {
        if (want < 2n ** 53n) expect(got).toBe(Number(want));
        else expect(got).toBeGreaterThanOrEqual(2 ** 53);
      };
      for (const op of [BLKIF_OP_READ, BLKIF_OP_DISCARD, BLKIF_OP_INDIRECT]) {
        b[0] = op;
        const r = decodeRequest(b) as Exclude<BlkifRequest, { kind: 'unknown' }>;
        check(r.sector, s);
        if (r.kind === 'discard') check(r.nrSectors, n);
      }
    }), { numRuns: 1000 });
    const b = new Uint8Array(ENTRY);
    const dv = new DataView(b.buffer);
    for (const s of [2n ** 53n, 2n ** 53n + 1n, 2n ** 64n - 1n, 0x0020_0000_0000_0000n]) {
      dv.setBigUint64(16, s, true);
      expect((decodeRequest(b) as BlkifRwRequest).sector).toBeGreaterThanOrEqual(2 ** 53);
    }
  });

  it('request and response ids survive exactly over the whole u64 range', () => {
    fc.assert(fc.property(u64, (id) => {
      const req: BlkifRwRequest = { kind: 'rw', operation: BLKIF_OP_READ, nrSegments: 0, handle: 0, id, sector: 0, segs: [] };
      const b = encodeRequest(req);
      expect(new DataView(b.buffer).getBigUint64(8, true)).toBe(id);
      expect(decodeRequest(b).id).toBe(id);
      expect(decodeResponse(encodeResponse({ id, operation: 0, status: 0 })).id).toBe(id);
    }), { numRuns: 500 });
    for (const id of [0n, 1n, 2n ** 53n + 1n, 2n ** 63n, 2n ** 64n - 1n]) {
      expect(decodeResponse(encodeResponse({ id, operation: 1, status: -1 })).id).toBe(id);
    }
  });
});

describe('requestBytes: what a back end copies of an entry', () => {
  const scratchOf = (b: Uint8Array) => {
    const sc = new DirectRwScratch();
    if (!sc.decode(new DataView(b.buffer, b.byteOffset, b.byteLength))) return null;
    return { op: sc.operation, n: sc.nrSegments, h: sc.handle, sector: sc.sector, segs: sc.segs.map((x) => ({ ...x })) };
  };

  it('property: decodeRequest and DirectRwScratch.decode read no byte past requestBytes of the entry\'s head', () => {
    // Plausible direct requests (any operation, 0..255 segments) and any bytes at all.
    fc.assert(fc.property(fc.oneof(directEntry({ maxSector: 4096 }), entry), entry, (b, junk) => {
      const n = requestBytes(b.subarray(0, REQUEST_HEAD_BYTES));
      expect(n).toBeGreaterThanOrEqual(REQUEST_HEAD_BYTES);
      expect(n).toBeLessThanOrEqual(ENTRY);
      // The bytes past n replaced (a copy that left stale bytes there): nothing decodes differently.
      const stale = b.slice();
      stale.set(junk.subarray(n), n);
      expect(decodeRequest(stale)).toEqual(decodeRequest(b));
      expect(scratchOf(stale)).toEqual(scratchOf(b));
    }), { numRuns: 2000 });
  });

  it('a direct READ or WRITE uses its header and segments (one at least, eleven at most); any other operation the whole entry', () => {
    const head = (op: number, nseg: number): Uint8Array => {
      const b = new Uint8Array(REQUEST_HEAD_BYTES);
      b[0] = op;
      b[1] = nseg;
      return b;
    };
    expect(REQUEST_HEAD_BYTES).toBe(32);
    expect([0, 1, 2, 11, 12, 255].map((n) => requestBytes(head(BLKIF_OP_READ, n)))).toEqual([32, 32, 40, 112, 112, 112]);
    expect(requestBytes(head(BLKIF_OP_WRITE, 3))).toBe(48);
    for (const op of [2, 3, 4, BLKIF_OP_DISCARD, BLKIF_OP_INDIRECT, 7, 0xff]) expect(requestBytes(head(op, 1))).toBe(ENTRY);
  });
});

describe('blkif responses', () => {
  it('round trip (u8 operation, i16 status), from any offset of a larger buffer', () => {
    fc.assert(fc.property(response, fc.nat(32), (r, at) => {
      expect(decodeResponse(encodeResponse(r))).toEqual(r);
      const big = new Uint8Array(at + 16 + 4).fill(0xa5);
      encodeResponse(r, big.subarray(at, at + 16));
      expect(decodeResponse(big.subarray(at))).toEqual(r);
    }), { numRuns: 500 });
  });

  it('any 16 bytes decode', () => {
    fc.assert(fc.property(fc.uint8Array({ minLength: 16, maxLength: 16 }), (b) => {
      const r = decodeResponse(b);
      expect(r.operation).toBe(b[8]);
      expect(r.status).toBeGreaterThanOrEqual(-0x8000);
      expect(r.status).toBeLessThanOrEqual(0x7fff);
    }));
  });
});

describe('no stale bytes', () => {
  const anyRequest = fc.oneof(rw, discard, indirect);

  it('encodeRequest into a used buffer zeroes every byte of the entry it does not set, and nothing past it', () => {
    fc.assert(fc.property(anyRequest, fc.uint8Array({ minLength: ENTRY, maxLength: ENTRY + 64 }), (r, stale) => {
      const out = stale.slice();
      const fresh = encodeRequest(r);
      expect(encodeRequest(r, out)).toBe(out);
      expect(out.subarray(0, ENTRY)).toEqual(fresh);
      expect(out.subarray(ENTRY)).toEqual(stale.subarray(ENTRY));
    }), { numRuns: 500 });
  });

  it('encodeResponse into a used buffer likewise', () => {
    fc.assert(fc.property(response, fc.uint8Array({ minLength: 16, maxLength: 48 }), (r, stale) => {
      const out = stale.slice();
      expect(encodeResponse(r, out)).toBe(out);
      expect(out.subarray(0, 16)).toEqual(encodeResponse(r));
      expect(out.subarray(16)).toEqual(stale.subarray(16));
    }), { numRuns: 500 });
  });

  it('indirect segment pages: round trip, zeroed tail, refuse a short buffer', () => {
    fc.assert(fc.property(fc.array(segment, { maxLength: 600 }), fc.nat(16), (segs, slack) => {
      const out = new Uint8Array(segs.length * 8 + slack).fill(0x77);
      encodeIndirectSegments(segs, out);
      expect(out.subarray(segs.length * 8).every((x) => x === 0)).toBe(true);
      expect(decodeIndirectSegments(out, segs.length)).toEqual(segs);
    }), { numRuns: 200 });
    expect(() => decodeIndirectSegments(new Uint8Array(15), 2)).toThrow(RangeError);
    expect(() => encodeIndirectSegments([{ gref: 1, firstSect: 0, lastSect: 0 }], new Uint8Array(7))).toThrow(RangeError);
  });
});

describe("a front end's allocation-free request writer", () => {
  it('segments, header and a 32-bit id written piece by piece give the bytes encodeRequest gives', () => {
    fc.assert(fc.property(rw, fc.integer({ min: 0, max: 0xffff_ffff }), (r, id) => {
      const want = encodeRequest({ ...r, id: BigInt(id) });
      const got = new Uint8Array(BLKIF_RING_ENTRY_SIZE);
      const dv = new DataView(got.buffer);
      r.segs.forEach((g, i) => setRequestSegment(dv, i, g.gref, g.firstSect, g.lastSect));
      setRwRequestHeader(dv, r.operation, r.nrSegments, r.handle, r.sector);
      setRequestIdLow(dv, id);
      expect(got).toEqual(want);
    }), { numRuns: 300 });
  });
});
