/**
 * The XenStore wire format: pinned numbers and header layout, and property
 * tests of the incremental parser (any fragmentation, concatenation,
 * oversized payloads) and of the payload helpers (missing NULs, bad UTF-8).
 */
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import {
  decodeHeader, decodeStrings, decodeUtf8, encodeMessage, encodeStrings, errorPayload, parseErrorPayload,
  splitStrings, XENSTORE_ABS_PATH_MAX, XENSTORE_PAYLOAD_MAX, XENSTORE_REL_PATH_MAX, XS, XS_HEADER_SIZE, XSD_ERRORS,
  XSD_SOCKMSG, XsParser, xsTypeName, type XsMessage,
} from '../../../shared/xenstore/wire.ts';

const message = (maxLen = 64): fc.Arbitrary<XsMessage> => fc.record({
  type: fc.integer({ min: 0, max: 0xffffffff }),
  reqId: fc.integer({ min: 0, max: 0xffffffff }),
  txId: fc.integer({ min: 0, max: 0xffffffff }),
  payload: fc.uint8Array({ maxLength: maxLen }),
});

/** Cut `bytes` at the given (sorted, deduplicated) points. */
function cut(bytes: Uint8Array, points: number[]): Uint8Array[] {
  const at = [...new Set(points.map((p) => p % (bytes.length + 1)))].sort((a, b) => a - b);
  const out: Uint8Array[] = [];
  let prev = 0;
  for (const p of [...at, bytes.length]) {
    out.push(bytes.subarray(prev, p));
    prev = p;
  }
  return out;
}

function concat(parts: Uint8Array[]): Uint8Array {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let at = 0;
  for (const p of parts) {
    out.set(p, at);
    at += p.length;
  }
  return out;
}

function drain(p: XsParser): XsMessage[] {
  const out: XsMessage[] = [];
  for (let r = p.next(); r.kind === 'message'; r = p.next()) out.push(r.msg);
  return out;
}

describe('xenstore wire: numbers and layout (io/xs_wire.h)', () => {
  it('message types keep Xen\'s numbers; unknown numbers decode to "unknown"', () => {
    expect(XS).toEqual({
      XS_CONTROL: 0, XS_DIRECTORY: 1, XS_READ: 2, XS_GET_PERMS: 3, XS_WATCH: 4, XS_UNWATCH: 5,
      XS_TRANSACTION_START: 6, XS_TRANSACTION_END: 7, XS_INTRODUCE: 8, XS_RELEASE: 9, XS_GET_DOMAIN_PATH: 10,
      XS_WRITE: 11, XS_MKDIR: 12, XS_RM: 13, XS_SET_PERMS: 14, XS_WATCH_EVENT: 15, XS_ERROR: 16,
      XS_IS_DOMAIN_INTRODUCED: 17, XS_RESUME: 18, XS_SET_TARGET: 19, XS_RESET_WATCHES: 21, XS_DIRECTORY_PART: 22,
    });
    for (const [name, n] of Object.entries(XS)) expect(xsTypeName(n)).toBe(name);
    for (const n of [20, 23, 0xffff, 0xffffffff, -1]) expect(xsTypeName(n)).toBe('unknown');
  });

  it('struct xsd_sockmsg is 16 bytes: type, req_id, tx_id, len, little-endian', () => {
    expect(XSD_SOCKMSG.size).toBe(16);
    expect(XS_HEADER_SIZE).toBe(16);
    expect(Object.fromEntries(Object.entries(XSD_SOCKMSG.fields).map(([k, f]) => [k, f.offset]))).toEqual({ type: 0, req_id: 4, tx_id: 8, len: 12 });
    const b = encodeMessage({ type: 2, reqId: 0x01020304, txId: 7, payload: encodeStrings(['/a']) });
    expect([...b.subarray(0, 16)]).toEqual([2, 0, 0, 0, 4, 3, 2, 1, 7, 0, 0, 0, 3, 0, 0, 0]);
    expect(decodeHeader(b)).toEqual({ type: 2, reqId: 0x01020304, txId: 7, len: 3 });
    expect([XENSTORE_PAYLOAD_MAX, XENSTORE_ABS_PATH_MAX, XENSTORE_REL_PATH_MAX]).toEqual([4096, 3072, 2048]);
  });

  it('error payloads are errno names with a NUL; anything else parses as "unknown"', () => {
    for (const name of Object.keys(XSD_ERRORS) as Array<keyof typeof XSD_ERRORS>) {
      expect(new TextDecoder().decode(errorPayload(name))).toBe(`${name}\0`);
      expect(parseErrorPayload(errorPayload(name))).toBe(name);
    }
    for (const bad of ['EWHAT\0', 'ENOENT', 'ENOENT\0x\0', '', 'toString\0', '__proto__\0']) {
      expect(parseErrorPayload(new TextEncoder().encode(bad)), JSON.stringify(bad)).toBe('unknown');
    }
  });
});

describe('xenstore wire: incremental parser (properties)', () => {
  it('any concatenation of messages, cut anywhere, parses back to the same messages', () => {
    fc.assert(fc.property(fc.array(message(), { maxLength: 8 }), fc.array(fc.nat(), { maxLength: 20 }), (msgs, points) => {
      const stream = concat(msgs.map(encodeMessage));
      const p = new XsParser();
      const got: XsMessage[] = [];
      for (const frag of cut(stream, points)) {
        p.push(frag);
        got.push(...drain(p));
      }
      expect(got).toEqual(msgs);
      expect(p.buffered).toBe(0);
      expect(p.next().kind).toBe('incomplete');
    }), { numRuns: 300 });
  });

  it('byte-at-a-time delivery works and holds no more than one message\'s bytes', () => {
    fc.assert(fc.property(fc.array(message(200), { minLength: 1, maxLength: 4 }), (msgs) => {
      const stream = concat(msgs.map(encodeMessage));
      const p = new XsParser();
      const got: XsMessage[] = [];
      let maxBuffered = 0;
      for (let i = 0; i < stream.length; i++) {
        p.push(stream.subarray(i, i + 1));
        maxBuffered = Math.max(maxBuffered, p.buffered);
        got.push(...drain(p));
      }
      expect(got).toEqual(msgs);
      expect(maxBuffered).toBeLessThanOrEqual(XS_HEADER_SIZE + Math.max(...msgs.map((m) => m.payload.length)));
    }), { numRuns: 100 });
  });

  it('a payload of exactly 4096 bytes is fine; a header announcing more is fatal, after the messages before it', () => {
    fc.assert(fc.property(
      fc.array(message(), { maxLength: 4 }),
      fc.integer({ min: XENSTORE_PAYLOAD_MAX + 1, max: 0xffffffff }),
      fc.array(fc.nat(), { maxLength: 10 }),
      fc.uint8Array({ maxLength: 64 }),
      (before, badLen, points, after) => {
        const bad = new Uint8Array(16);
        new DataView(bad.buffer).setUint32(12, badLen, true);
        const stream = concat([...before.map(encodeMessage), bad, after]);
        const p = new XsParser();
        const got: XsMessage[] = [];
        let fatal: number | undefined;
        for (const frag of cut(stream, points)) {
          p.push(frag);
          for (;;) {
            const r = p.next();
            if (r.kind === 'message') got.push(r.msg);
            else {
              if (r.kind === 'fatal') fatal = r.len;
              break;
            }
          }
        }
        expect(got).toEqual(before);
        expect(fatal).toBe(badLen);
        expect(p.failed).toBe(true);
        p.push(encodeMessage({ type: 2, reqId: 1, txId: 0, payload: new Uint8Array(1) }));
        expect(p.next().kind).toBe('fatal');
        expect(p.buffered).toBe(0);
      },
    ), { numRuns: 200 });
    const p = new XsParser();
    p.push(encodeMessage({ type: 11, reqId: 1, txId: 0, payload: new Uint8Array(XENSTORE_PAYLOAD_MAX) }));
    expect(p.next().kind).toBe('message');
  });
});

describe('xenstore wire: payload helpers', () => {
  it('splitStrings: NUL-terminated strings plus an unterminated rest (a missing NUL is visible)', () => {
    fc.assert(fc.property(fc.array(fc.string({ unit: 'grapheme-ascii' }).filter((s) => !s.includes('\0'))), fc.string({ unit: 'grapheme-ascii' }).filter((s) => !s.includes('\0')), (strs, tail) => {
      const enc = new TextEncoder();
      const payload = concat([encodeStrings(strs), enc.encode(tail)]);
      const { strings, rest } = splitStrings(payload);
      expect(strings.map((s) => new TextDecoder().decode(s))).toEqual(strs);
      expect(new TextDecoder().decode(rest)).toBe(tail);
    }));
    expect(splitStrings(new Uint8Array(0))).toEqual({ strings: [], rest: new Uint8Array(0) });
  });

  it('checked UTF-8: round-trips any string, refuses malformed bytes', () => {
    fc.assert(fc.property(fc.array(fc.string({ unit: 'binary', maxLength: 20 }).filter((s) => !s.includes('\0')), { maxLength: 5 }), (strs) => {
      expect(decodeStrings(encodeStrings(strs))?.strings).toEqual(strs.map((s) => new TextDecoder().decode(new TextEncoder().encode(s))));
    }));
    for (const bad of [[0xc3, 0x28], [0xff], [0xed, 0xa0, 0x80], [0xe2, 0x82], [0xf8, 0x88, 0x80, 0x80, 0x80]]) {
      expect(decodeUtf8(new Uint8Array(bad)), JSON.stringify(bad)).toBeUndefined();
      expect(decodeStrings(new Uint8Array([...bad, 0]))).toBeUndefined();
    }
  });
});
