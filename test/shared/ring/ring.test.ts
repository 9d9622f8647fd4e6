/**
 * The io/ring.h ring library (shared/ring/ring.ts), macro by macro, then as
 * a protocol: honest ends checked against a reference model at the 2^32 wrap,
 * and each end against a hostile peer that writes the shared indexes at will.
 * The notification (lost wake-up) property is in ring-notify.test.ts.
 */
import { describe, expect, it } from 'vitest';
import fc from 'fast-check';
import { BackRing, FrontRing, needsNotify, ringGeometry, sharedRingInit } from '../../../shared/ring/ring.ts';
import { ringSize, SRING_HEADER } from '../../../shared/abi/ring.ts';
import { BLKIF_RING_ENTRY_SIZE, blkifRingSize } from '../../../shared/abi/blkif.ts';
import { FlatRingMemory, flatRingAt, indexes, payload, REQ_TAG, RSP_TAG, setIndexes } from '../../helpers/flat-ring-memory.ts';

const U32 = 0x1_0000_0000;
const u32 = (n: number): number => ((n % U32) + U32) % U32;
const HDR = SRING_HEADER.size;
const ENTRY = 16;
/** Indexes that put the 2^32 wrap inside every run. */
const nearWrap = fc.integer({ min: 0xffff_ffff - 40, max: 0xffff_ffff });
const anyStart = fc.oneof(nearWrap, fc.constant(0), fc.integer({ min: 0, max: 0xffff_ffff }));
const ringSizes = fc.constantFrom(1, 2, 4, 8, 32);

const REQ = REQ_TAG;
const RSP = RSP_TAG;

function pair(start: number, size: number) {
  const { mem, g } = flatRingAt(start, size, ENTRY);
  return { mem, g, front: new FrontRing(mem, g, start), back: new BackRing(mem, g, start) };
}

describe('SHARED_RING_INIT', () => {
  it('sets both producers to 0 and both event indexes to 1, zeroes the header padding, leaves the entries alone', () => {
    const base = 0x7000;
    const mem = new FlatRingMemory(base, HDR + 4 * ENTRY);
    mem.bytes.fill(0xa5);
    sharedRingInit(mem, base);
    expect(indexes(mem, base)).toEqual({ reqProd: 0, reqEvent: 1, rspProd: 0, rspEvent: 1 });
    expect(mem.bytes.subarray(16, HDR).every((b) => b === 0)).toBe(true);
    expect(mem.bytes.subarray(HDR).every((b) => b === 0xa5)).toBe(true);
  });

  it('FRONT_RING_INIT and BACK_RING_INIT over it: all free, nothing to consume, final checks arm at 1', () => {
    const { mem, g, front, back } = pair(0, 32);
    expect(front.freeRequests()).toBe(32);
    expect(front.full).toBe(false);
    expect(back.unconsumedRequests()).toBe(0);
    expect(front.unconsumedResponses()).toBe(0);
    expect(back.finalCheckForRequests()).toBe(0);
    expect(front.finalCheckForResponses()).toBe(0);
    expect(indexes(mem, g.base)).toEqual({ reqProd: 0, reqEvent: 1, rspProd: 0, rspEvent: 1 });
  });
});

describe('ring sizes (__CONST_RING_SIZE)', () => {
  it('blkif: 32, 64, 128, 256, 512 entries for ring-page-order 0..4', () => {
    expect([0, 1, 2, 3, 4].map(blkifRingSize)).toEqual([32, 64, 128, 256, 512]);
    expect([0, 1, 2, 3, 4].map((o) => ringGeometry(0, 4096 << o, BLKIF_RING_ENTRY_SIZE).size)).toEqual([32, 64, 128, 256, 512]);
  });

  it('netif: tx (12-byte entries) and rx (8-byte entries) 256 per page', () => {
    expect(ringGeometry(0, 4096, 12).size).toBe(256);
    expect(ringGeometry(0, 4096, 8).size).toBe(256);
  });

  it('rounds (page - 64) / entry down to a power of two, and ringGeometry agrees with ringSize', () => {
    expect(ringGeometry(0x9000, 4096, 100)).toEqual({ base: 0x9000, size: 32, entrySize: 100 }); // 40 -> 32
    expect(ringGeometry(0, 4096, 4032).size).toBe(1);
    fc.assert(fc.property(fc.integer({ min: 0, max: 6 }), fc.integer({ min: 1, max: 4032 }), (order, entry) => {
      const bytes = 4096 << order;
      const raw = Math.floor((bytes - 64) / entry);
      const n = ringGeometry(0, bytes, entry).size;
      expect(n).toBe(ringSize(bytes, entry));
      expect(n & (n - 1)).toBe(0);
      expect(n <= raw && 2 * n > raw).toBe(true);
    }));
  });

  it('refuses a ring with no room for one entry, and ends refuse a size that is not a power of two', () => {
    expect(() => ringGeometry(0, 4096, 4033)).toThrow(RangeError);
    expect(ringSize(4096, 4033)).toBe(0);
    const mem = new FlatRingMemory(0, 4096);
    for (const size of [0, 3, 6, 1.5, -2]) {
      expect(() => new FrontRing(mem, { base: 0, size, entrySize: 8 })).toThrow(RangeError);
      expect(() => new BackRing(mem, { base: 0, size, entrySize: 8 })).toThrow(RangeError);
    }
  });
});

describe('slot addressing (RING_GET_REQUEST / RING_GET_RESPONSE)', () => {
  it('slot of index i is entries + (i & (size - 1)) * entry size, at the wrap too', () => {
    const base = 0x20_0000;
    const g = ringGeometry(base, 4096, BLKIF_RING_ENTRY_SIZE);
    const mem = new FlatRingMemory(base, 4096);
    const front = new FrontRing(mem, g);
    const back = new BackRing(mem, g);
    const cases: [number, number][] = [[0, 0], [1, 1], [31, 31], [32, 0], [33, 1], [0xffff_ffff, 31], [0xffff_ffe0, 0]];
    for (const [idx, slot] of cases) {
      expect(front.slotAddr(idx)).toBe(base + 64 + slot * 112);
      expect(back.slotAddr(idx)).toBe(front.slotAddr(idx));
    }
  });

  it('every u32 index lands on a whole entry inside the ring', () => {
    fc.assert(fc.property(ringSizes, fc.integer({ min: 0, max: 0xffff_ffff }), (size, idx) => {
      const { g, front } = pair(0, size);
      const off = front.slotAddr(idx) - g.base - HDR;
      expect(off % ENTRY).toBe(0);
      expect(off / ENTRY).toBe(idx % size);
    }));
  });

  it('copyEntry is a private copy; writeEntry refuses more than one entry', () => {
    const { mem, front, back } = pair(0xffff_ffff, 4);
    front.writeEntry(0xffff_ffff, payload(7, REQ));
    const copy = back.copyEntry(0xffff_ffff, 8);
    expect(copy).toEqual(payload(7, REQ));
    mem.write(back.slotAddr(0xffff_ffff), new Uint8Array(8).fill(0xee));
    expect(copy).toEqual(payload(7, REQ));
    expect(() => front.writeEntry(0, new Uint8Array(ENTRY + 1))).toThrow(RangeError);
  });

  it('property: copyRequestPart copies any byte range of the next request\'s slot (at the wrap too) without taking it; consumeRequest takes it; a range outside the entry is refused, copying nothing', () => {
    fc.assert(fc.property(ringSizes, anyStart, fc.nat(ENTRY), fc.nat(ENTRY), (size, start, a, b) => {
      const { front, back } = pair(start, size);
      const entry = Uint8Array.from({ length: ENTRY }, (_, i) => (i * 13 + 5) & 0xff);
      front.putRequest(entry);
      front.pushRequests();
      const from = Math.min(a, b);
      const to = Math.max(a, b);
      const dst = new Uint8Array(ENTRY).fill(0xee);
      back.copyRequestPart(from, dst.subarray(from, to));
      expect(dst.subarray(from, to)).toEqual(entry.subarray(from, to));
      expect([...dst.subarray(0, from), ...dst.subarray(to)].every((x) => x === 0xee)).toBe(true);
      expect(back.reqCons).toBe(start);
      expect(back.unconsumedRequests()).toBe(1);
      const before = dst.slice();
      expect(() => back.copyRequestPart(to, new Uint8Array(ENTRY - to + 1))).toThrow(RangeError);
      expect(() => back.copyRequestPart(-1, dst.subarray(0, 1))).toThrow(RangeError);
      expect(() => back.copyRequestPart(0.5, dst.subarray(0, 1))).toThrow(RangeError);
      expect(dst).toEqual(before);
      back.consumeRequest();
      expect(back.reqCons).toBe(u32(start + 1));
      expect(back.unconsumedRequests()).toBe(0);
      // The whole-entry forms (docs/rings.md): responses and the next request, each copied and taken.
      back.putResponse(payload(1, RSP));
      back.pushResponses();
      expect(front.takeResponseInto(new Uint8Array(8))).toEqual(payload(1, RSP));
      front.putRequest(entry.map((x) => x ^ 0x5a));
      front.pushRequests();
      expect(back.takeRequestInto(new Uint8Array(ENTRY))).toEqual(entry.map((x) => x ^ 0x5a));
      expect(back.reqCons).toBe(u32(start + 2));
      back.putResponse(payload(2, RSP));
      back.pushResponses();
      expect(front.takeResponseInto(new Uint8Array(8))).toEqual(payload(2, RSP));
      expect(front.rspCons).toBe(u32(start + 2));
    }), { numRuns: 300 });
  });

  it('property: takeResponsesInto copies the next n slots in index order, across the ring\'s end and 2^32, as n copyEntryInto calls would; rsp_cons moves by n; more than the ring, or a short buffer, is refused with nothing copied', () => {
    fc.assert(fc.property(ringSizes, anyStart, fc.nat(), (size, start, k) => {
      const { mem, g, front } = pair(start, size);
      // Every slot holds its own pattern (the whole entry, so misplaced bytes show).
      for (let i = 0; i < size; i++) mem.write(g.base + HDR + i * ENTRY, Uint8Array.from({ length: ENTRY }, (_, b) => (i * 31 + b * 7 + 1) & 0xff));
      const n = k % (size + 1);
      const one = new Uint8Array(ENTRY);
      const want = new Uint8Array(n * ENTRY);
      for (let i = 0; i < n; i++) want.set(front.copyEntryInto(u32(start + i), one), i * ENTRY);
      const dst = new Uint8Array(size * ENTRY + 3).fill(0xee);
      front.takeResponsesInto(dst, n);
      expect(dst.subarray(0, n * ENTRY)).toEqual(want);
      expect(dst.subarray(n * ENTRY).every((b) => b === 0xee)).toBe(true);
      expect(front.rspCons).toBe(u32(start + n));
      // Refused: one more than the ring holds; a buffer one byte short.
      const short = new Uint8Array(Math.max(0, n * ENTRY - 1)).fill(0xee);
      expect(() => front.takeResponsesInto(dst, size + 1)).toThrow(RangeError);
      if (n > 0) expect(() => front.takeResponsesInto(short, n)).toThrow(RangeError);
      expect(short.every((b) => b === 0xee)).toBe(true);
      expect(front.rspCons).toBe(u32(start + n));
    }), { numRuns: 300 });
  });
});

describe('RING_FREE_REQUESTS and RING_FULL', () => {
  it('count slots not holding an unanswered request, across the wrap', () => {
    const { front, back } = pair(0xffff_fffe, 4);
    expect(front.freeRequests()).toBe(4);
    for (let i = 0; i < 3; i++) front.putRequest(payload(i, REQ));
    expect(front.freeRequests()).toBe(1);
    front.pushRequests(); // publishing does not free anything
    expect(front.freeRequests()).toBe(1);
    front.putRequest(payload(3, REQ));
    expect(front.freeRequests()).toBe(0);
    expect(front.full).toBe(true);
    expect(() => front.putRequest(payload(4, REQ))).toThrow(RangeError);
    front.pushRequests();
    expect(back.unconsumedRequests()).toBe(4);
    back.takeRequest(); back.takeRequest();
    expect(front.freeRequests()).toBe(0); // taken, not yet answered
    back.putResponse(payload(0, RSP)); back.putResponse(payload(1, RSP)); back.pushResponses();
    expect(front.freeRequests()).toBe(0); // answered, not yet consumed
    front.takeResponse(); front.takeResponse();
    expect(front.freeRequests()).toBe(2);
    expect(front.full).toBe(false);
    expect(front.reqProdPvt).toBe(2);
    expect(front.rspCons).toBe(0);
  });
});

describe('RING_PUSH_*_AND_CHECK_NOTIFY', () => {
  it('needsNotify: true iff (new - event) < (new - old) as u32, i.e. the event index is in (old, new]', () => {
    const table: [number, number, number, boolean][] = [
      [0, 1, 1, true], [0, 1, 0, false], [0, 1, 2, false],
      [0, 4, 1, true], [0, 4, 4, true], [0, 4, 5, false], [10, 14, 10, false], [10, 14, 3, false],
      [5, 5, 5, false], [5, 5, 6, false], // nothing new: never
      [0xffff_fffe, 2, 0xffff_ffff, true], [0xffff_fffe, 2, 0, true], [0xffff_fffe, 2, 2, true],
      [0xffff_fffe, 2, 3, false], [0xffff_fffe, 2, 0xffff_fffe, false], [0xffff_ffff, 0, 0, true],
    ];
    for (const [o, n, e, want] of table) expect([o, n, e, needsNotify(o, n, e)]).toEqual([o, n, e, want]);
  });

  it('front and back: publish the producer and notify iff the peer\'s event index is among the entries just published', () => {
    fc.assert(fc.property(ringSizes, anyStart, fc.nat(32), fc.integer({ min: -3, max: 40 }), (size, start, want, d) => {
      const n = Math.min(want, size);
      const expected = d >= 1 && d <= n;
      const { mem, g, front, back } = pair(start, size);
      setIndexes(mem, g.base, { reqEvent: start + d });
      for (let i = 0; i < n; i++) front.putRequest(payload(i, REQ));
      expect(front.unpushed).toBe(n);
      expect(front.pushRequestsAndCheckNotify()).toBe(expected);
      expect(front.unpushed).toBe(0);
      expect(indexes(mem, g.base).reqProd).toBe(u32(start + n));
      for (let i = 0; i < n; i++) back.takeRequest();
      setIndexes(mem, g.base, { rspEvent: start + d });
      for (let i = 0; i < n; i++) back.putResponse(payload(i, RSP));
      expect(back.pushResponsesAndCheckNotify()).toBe(expected);
      expect(indexes(mem, g.base).rspProd).toBe(u32(start + n));
    }));
  });

  it('the notification test uses the producer as this end last published it: a peer scribbling on it changes nothing', () => {
    fc.assert(fc.property(ringSizes, anyStart, fc.integer({ min: 0, max: 0xffff_ffff }), fc.integer({ min: 0, max: 0xffff_ffff }), (size, start, junkReq, junkRsp) => {
      const { mem, g, front, back } = pair(start, size);
      // The back end asks to hear of the first request; after it comes, the front end publishes nothing
      // new, the back end overwrites req_prod with junk and asks for the next one (start + 2).
      setIndexes(mem, g.base, { reqEvent: start + 1 });
      front.putRequest(payload(0, REQ));
      expect(front.pushRequestsAndCheckNotify()).toBe(true);
      back.takeRequest();
      setIndexes(mem, g.base, { reqProd: junkReq, reqEvent: start + 2 });
      if (size > 1) {
        front.putRequest(payload(1, REQ));
        // ring.h would compare against the junk; the one request just published is what the back end asked for.
        expect(front.pushRequestsAndCheckNotify()).toBe(true);
        expect(indexes(mem, g.base).reqProd).toBe(u32(start + 2));
      }
      // Responses: the same, the front end scribbling on rsp_prod.
      setIndexes(mem, g.base, { rspEvent: start + 1 });
      back.putResponse(payload(0, RSP));
      expect(back.pushResponsesAndCheckNotify()).toBe(true);
      setIndexes(mem, g.base, { rspProd: junkRsp, rspEvent: start + 1 });
      // Nothing new published: no notification, whatever the junk says.
      expect(back.pushResponsesAndCheckNotify()).toBe(false);
      expect(indexes(mem, g.base).rspProd).toBe(u32(start + 1));
    }));
  });

  it('plain RING_PUSH_* publish the private producer', () => {
    const { mem, g, front, back } = pair(0xffff_ffff, 4);
    front.putRequest(payload(0, REQ)); front.putRequest(payload(1, REQ));
    front.pushRequests();
    expect(indexes(mem, g.base).reqProd).toBe(1);
    back.takeRequest(); back.putResponse(payload(0, RSP)); back.pushResponses();
    expect(indexes(mem, g.base).rspProd).toBe(0);
  });
});

describe('RING_FINAL_CHECK_FOR_*', () => {
  it('with nothing waiting: sets the event index to cons + 1 (mod 2^32) and returns 0', () => {
    const { mem, g, front, back } = pair(0xffff_fffe, 4);
    front.putRequest(payload(0, REQ)); front.pushRequests();
    back.takeRequest();
    setIndexes(mem, g.base, { reqEvent: 0x1234 });
    expect(back.finalCheckForRequests()).toBe(0);
    expect(indexes(mem, g.base).reqEvent).toBe(0); // req_cons 0xffffffff + 1
    back.putResponse(payload(0, RSP)); back.pushResponses();
    front.takeResponse();
    setIndexes(mem, g.base, { rspEvent: 0x1234 });
    expect(front.finalCheckForResponses()).toBe(0);
    expect(indexes(mem, g.base).rspEvent).toBe(0);
  });

  it('with work waiting: returns it and leaves the event index alone', () => {
    const { mem, g, front, back } = pair(7, 4);
    front.putRequest(payload(0, REQ)); front.putRequest(payload(1, REQ)); front.pushRequests();
    setIndexes(mem, g.base, { reqEvent: 0x1234, rspEvent: 0x4321 });
    expect(back.finalCheckForRequests()).toBe(2);
    back.takeRequest(); back.putResponse(payload(0, RSP)); back.pushResponses();
    expect(front.finalCheckForResponses()).toBe(1);
    expect(indexes(mem, g.base)).toMatchObject({ reqEvent: 0x1234, rspEvent: 0x4321 });
  });
});

describe('overflow checks', () => {
  it('RING_REQUEST_PROD_OVERFLOW: more than size past rsp_prod_pvt is bogus (-1), exactly size is not', () => {
    const s = 0xffff_fffd;
    const { mem, g, back } = pair(s, 4);
    expect(back.requestProdOverflow(u32(s + 4))).toBe(false);
    expect(back.requestProdOverflow(u32(s + 5))).toBe(true);
    expect(back.requestProdOverflow(u32(s - 1))).toBe(true);
    setIndexes(mem, g.base, { reqProd: s + 4 });
    expect(back.unconsumedRequests()).toBe(4);
    setIndexes(mem, g.base, { reqProd: s + 5 });
    expect(back.unconsumedRequests()).toBe(-1);
    expect(back.finalCheckForRequests()).toBe(-1);
  });

  it('a request producer that moved back behind req_cons is bogus', () => {
    const s = 0xffff_ffff;
    const { mem, g, back } = pair(s, 4);
    setIndexes(mem, g.base, { reqProd: s + 3 });
    back.takeRequest(); back.takeRequest(); // req_cons = s + 2 = 1
    expect(back.unconsumedRequests()).toBe(1);
    setIndexes(mem, g.base, { reqProd: s + 1 });
    expect(back.requestProdOverflow(u32(s + 1))).toBe(true);
    expect(back.unconsumedRequests()).toBe(-1);
    setIndexes(mem, g.base, { reqProd: s + 2 });
    expect(back.unconsumedRequests()).toBe(0);
  });

  it('RING_REQUEST_CONS_OVERFLOW: size requests taken and unanswered means stop consuming', () => {
    const s = 0xffff_fffe;
    const { front, back } = pair(s, 4);
    for (let i = 0; i < 4; i++) front.putRequest(payload(i, REQ));
    front.pushRequests();
    for (let i = 0; i < 3; i++) back.takeRequest();
    expect(back.requestConsOverflow()).toBe(false);
    back.takeRequest();
    expect(back.requestConsOverflow()).toBe(true);
    expect(back.requestConsOverflow(u32(s + 3))).toBe(false);
    expect(back.requestConsOverflow(u32(s + 5))).toBe(true);
    back.putResponse(payload(0, RSP));
    expect(back.requestConsOverflow()).toBe(false);
  });

  it('RING_RESPONSE_PROD_OVERFLOW: responses past what was requested (so past size too) are bogus (-1)', () => {
    const s = 0xffff_fffe;
    const { mem, g, front } = pair(s, 8);
    for (let i = 0; i < 3; i++) front.putRequest(payload(i, REQ));
    front.pushRequests();
    expect(front.responseProdOverflow(u32(s + 3))).toBe(false);
    expect(front.responseProdOverflow(u32(s + 4))).toBe(true);
    expect(front.responseProdOverflow(u32(s + 9))).toBe(true); // ring.h's own test: > size
    expect(front.responseProdOverflow(u32(s - 1))).toBe(true);
    setIndexes(mem, g.base, { rspProd: s + 3 });
    expect(front.unconsumedResponses()).toBe(3);
    setIndexes(mem, g.base, { rspProd: s + 4 });
    expect(front.unconsumedResponses()).toBe(-1);
    expect(front.finalCheckForResponses()).toBe(-1);
  });
});

/** One step of the honest protocol, as the model test drives it. */
type Op =
  | { t: 'put'; n: number } | { t: 'push'; notify: boolean } | { t: 'frontTake'; n: number } | { t: 'frontFinal' }
  | { t: 'backTake'; n: number } | { t: 'backPut'; n: number } | { t: 'backPush'; notify: boolean } | { t: 'backFinal' };

const opArb: fc.Arbitrary<Op> = fc.oneof(
  fc.record({ t: fc.constant('put' as const), n: fc.integer({ min: 1, max: 40 }) }),
  fc.record({ t: fc.constant('push' as const), notify: fc.boolean() }),
  fc.record({ t: fc.constant('frontTake' as const), n: fc.integer({ min: 1, max: 40 }) }),
  fc.record({ t: fc.constant('frontFinal' as const) }),
  fc.record({ t: fc.constant('backTake' as const), n: fc.integer({ min: 1, max: 40 }) }),
  fc.record({ t: fc.constant('backPut' as const), n: fc.integer({ min: 1, max: 40 }) }),
  fc.record({ t: fc.constant('backPush' as const), notify: fc.boolean() }),
  fc.record({ t: fc.constant('backFinal' as const) }),
);

/**
 * The protocol with unbounded integers: how many requests were filled,
 * published, taken, answered (filled), published and consumed, and where
 * each side's event index stands (counted from the start index).
 */
class Model {
  reqFilled = 0; reqPub = 0; reqTaken = 0; rspFilled = 0; rspPub = 0; rspTaken = 0;
  reqEvent = 1; rspEvent = 1;
  constructor(readonly size: number) {}
  get free(): number { return this.size - (this.reqFilled - this.rspTaken); }
}

describe('honest ends against the reference model, at the 2^32 wrap', () => {
  it('deliver every request and response once, in order, with its payload; counts, events and notifications match', () => {
    fc.assert(fc.property(ringSizes, anyStart, fc.array(opArb, { maxLength: 150, size: 'max' }), (size, start, ops) => {
      const { mem, g, front, back } = pair(start, size);
      const m = new Model(size);
      const at = (n: number): number => u32(start + n);
      const check = (): void => {
        expect(front.freeRequests()).toBe(m.free);
        expect(front.full).toBe(m.free === 0);
        expect(back.unconsumedRequests()).toBe(m.reqPub - m.reqTaken);
        expect(front.unconsumedResponses()).toBe(m.rspPub - m.rspTaken);
        expect(back.requestConsOverflow()).toBe(m.reqTaken - m.rspFilled >= size);
        expect(back.requestProdOverflow(back.reqProd)).toBe(false); // an honest peer never looks bogus
        expect(front.responseProdOverflow(front.rspProd)).toBe(false);
        expect(indexes(mem, g.base)).toEqual({ reqProd: at(m.reqPub), reqEvent: at(m.reqEvent), rspProd: at(m.rspPub), rspEvent: at(m.rspEvent) });
        expect([front.reqProdPvt, front.rspCons, back.reqCons, back.rspProdPvt]).toEqual([at(m.reqFilled), at(m.rspTaken), at(m.reqTaken), at(m.rspFilled)]);
      };
      for (const op of ops) {
        switch (op.t) {
          case 'put': {
            const k = Math.min(op.n, m.free);
            for (let i = 0; i < k; i++) expect(front.putRequest(payload(m.reqFilled + i, REQ))).toBe(at(m.reqFilled + i));
            m.reqFilled += k;
            break;
          }
          case 'push': {
            const old = m.reqPub;
            if (op.notify) expect(front.pushRequestsAndCheckNotify()).toBe(m.reqEvent > old && m.reqEvent <= m.reqFilled);
            else front.pushRequests();
            m.reqPub = m.reqFilled;
            break;
          }
          case 'backTake': {
            const k = Math.min(op.n, back.unconsumedRequests());
            for (let i = 0; i < k; i++) expect(back.takeRequest(8)).toEqual(payload(m.reqTaken + i, REQ));
            m.reqTaken += k;
            break;
          }
          case 'backPut': {
            const k = Math.min(op.n, m.reqTaken - m.rspFilled);
            for (let i = 0; i < k; i++) expect(back.putResponse(payload(m.rspFilled + i, RSP))).toBe(at(m.rspFilled + i));
            m.rspFilled += k;
            break;
          }
          case 'backPush': {
            const old = m.rspPub;
            if (op.notify) expect(back.pushResponsesAndCheckNotify()).toBe(m.rspEvent > old && m.rspEvent <= m.rspFilled);
            else back.pushResponses();
            m.rspPub = m.rspFilled;
            break;
          }
          case 'frontTake': {
            const k = Math.min(op.n, front.unconsumedResponses());
            for (let i = 0; i < k; i++) expect(front.takeResponse(8)).toEqual(payload(m.rspTaken + i, RSP));
            m.rspTaken += k;
            break;
          }
          case 'backFinal': {
            const want = m.reqPub - m.reqTaken;
            expect(back.finalCheckForRequests()).toBe(want);
            if (want === 0) m.reqEvent = m.reqTaken + 1;
            break;
          }
          case 'frontFinal': {
            const want = m.rspPub - m.rspTaken;
            expect(front.finalCheckForResponses()).toBe(want);
            if (want === 0) m.rspEvent = m.rspTaken + 1;
            break;
          }
        }
        check();
      }
    }), { numRuns: 300 });
  });
});

/** A peer's write of a shared index: anywhere, or near where our own indexes stand (the edges). */
const hostileIdx = fc.oneof(fc.integer({ min: 0, max: 0xffff_ffff }), fc.integer({ min: -70, max: 70 }).map((d) => ({ near: d })));
const resolve = (v: number | { near: number }, around: number): number => (typeof v === 'number' ? v : u32(around + v.near));

describe('against a hostile peer that writes the shared indexes at will', () => {
  it('a back end never reads outside the ring, never has more than size requests outstanding, and reports -1 for an impossible req_prod', () => {
    fc.assert(fc.property(ringSizes, anyStart, fc.array(fc.tuple(hostileIdx, hostileIdx, fc.nat(40), fc.nat(40)), { maxLength: 60, size: 'max' }), (size, start, steps) => {
      const { mem, g, back } = pair(start, size);
      for (const [prodW, eventW, takeN, answerN] of steps) {
        const prod = resolve(prodW, back.reqCons);
        setIndexes(mem, g.base, { reqProd: prod, rspEvent: resolve(eventW, back.rspProdPvt) });
        const ahead = u32(prod - back.rspProdPvt);
        const impossible = ahead > size || u32(back.reqCons - back.rspProdPvt) > ahead;
        const n = back.unconsumedRequests();
        expect(n).toBe(impossible ? -1 : u32(prod - back.reqCons));
        expect(back.finalCheckForRequests()).toBe(n);
        for (let i = 0; i < Math.min(takeN, n); i++) {
          expect(back.requestConsOverflow()).toBe(false);
          back.takeRequest(); // FlatRingMemory faults outside the ring's entry slots
        }
        expect(u32(back.reqCons - back.rspProdPvt)).toBeLessThanOrEqual(size);
        const answer = Math.min(answerN, u32(back.reqCons - back.rspProdPvt));
        for (let i = 0; i < answer; i++) back.putResponse(payload(i, RSP));
        expect(typeof back.pushResponsesAndCheckNotify()).toBe('boolean');
      }
    }), { numRuns: 300 });
  });

  it('a front end never reads outside the ring, never counts more responses than requests outstanding, and reports -1 for an impossible rsp_prod', () => {
    fc.assert(fc.property(ringSizes, anyStart, fc.array(fc.tuple(hostileIdx, hostileIdx, fc.nat(40), fc.nat(40)), { maxLength: 60, size: 'max' }), (size, start, steps) => {
      const { mem, g, front } = pair(start, size);
      for (const [prodW, eventW, putN, takeN] of steps) {
        const free = front.freeRequests();
        for (let i = 0; i < Math.min(putN, free); i++) front.putRequest(payload(i, REQ));
        setIndexes(mem, g.base, { reqEvent: resolve(eventW, front.reqProdPvt) });
        expect(typeof front.pushRequestsAndCheckNotify()).toBe('boolean');
        const prod = resolve(prodW, front.rspCons);
        const freeBefore = front.freeRequests();
        setIndexes(mem, g.base, { rspProd: prod });
        expect(front.freeRequests()).toBe(freeBefore); // shared writes never touch private state
        const outstanding = u32(front.reqProdPvt - front.rspCons);
        const impossible = u32(prod - front.rspCons) > outstanding;
        const n = front.unconsumedResponses();
        expect(n).toBe(impossible ? -1 : u32(prod - front.rspCons));
        expect(n).toBeLessThanOrEqual(size);
        expect(front.finalCheckForResponses()).toBe(n);
        for (let i = 0; i < Math.min(takeN, n); i++) front.takeResponse();
        expect(front.freeRequests()).toBeGreaterThanOrEqual(0);
        expect(front.freeRequests()).toBeLessThanOrEqual(size);
      }
    }), { numRuns: 300 });
  });
});
