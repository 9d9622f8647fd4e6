/**
 * Control socket framing: a 4-byte big-endian length then MessagePack. Frames
 * arrive in any pieces (one byte at a time, several per chunk); a length
 * above the limit is refused before anything is buffered; a body that is not
 * MessagePack is reported as such and the next frame still decodes.
 */
import fc from 'fast-check';
import { pack } from 'msgpackr';
import { describe, expect, it } from 'vitest';
import {
  ControlError, controlSocketPath, encodeFrame, FrameDecoder, FrameError, MAX_FRAME_BYTES,
} from '../../../dom0/xl/protocol.ts';

const frame = (body: Uint8Array): Buffer => {
  const h = Buffer.alloc(4);
  h.writeUInt32BE(body.length, 0);
  return Buffer.concat([h, body]);
};

describe('framing', () => {
  it('writes the length big-endian in front of the MessagePack body', () => {
    const f = encodeFrame({ id: 1, cmd: 'list', args: {} });
    expect(f.readUInt32BE(0)).toBe(f.length - 4);
    expect(new FrameDecoder().push(f)).toEqual([{ ok: true, value: { id: 1, cmd: 'list', args: {} } }]);
  });

  it('reassembles frames fed one byte at a time', () => {
    const f = encodeFrame({ id: 7, cmd: 'xs-write', args: { path: '/a', value: Uint8Array.from([0, 1, 255]) } });
    const d = new FrameDecoder();
    const got = [];
    for (const b of f) got.push(...d.push(Uint8Array.of(b)));
    expect(got).toHaveLength(1);
    const v = (got[0] as { ok: true; value: { args: { value: Uint8Array } } }).value;
    expect([...v.args.value]).toEqual([0, 1, 255]);
    expect(d.pending).toBe(0);
  });

  it('splits concatenated frames, whatever the chunk boundaries', () => {
    fc.assert(fc.property(
      // msgpackr renames a __proto__ key (to __proto_), as it should: leave it out here.
      fc.array(fc.jsonValue().filter((v) => !JSON.stringify(v).includes('"__proto__"')), { minLength: 1, maxLength: 8 }),
      fc.array(fc.integer({ min: 1, max: 40 }), { minLength: 1, maxLength: 20 }),
      (msgs, cuts) => {
        const all = Buffer.concat(msgs.map((m) => encodeFrame({ m })));
        const d = new FrameDecoder();
        const got: unknown[] = [];
        let at = 0;
        for (let i = 0; at < all.length; i++) {
          const n = cuts[i % cuts.length];
          got.push(...d.push(all.subarray(at, at + n)).map((f) => (f.ok ? f.value : f)));
          at += n;
        }
        expect(got).toEqual(msgs.map((m) => ({ m: JSON.parse(JSON.stringify(m)) })));
      },
    ));
  });

  it('refuses an oversized length before buffering the body', () => {
    const d = new FrameDecoder();
    const h = Buffer.alloc(4);
    h.writeUInt32BE(MAX_FRAME_BYTES + 1, 0);
    expect(() => d.push(h)).toThrow(FrameError);
    const small = new FrameDecoder(16);
    expect(() => small.push(frame(new Uint8Array(17)))).toThrow(/frame of 17 bytes is above the 16-byte limit/);
  });

  it('reports a body that is not MessagePack, then decodes the next frame', () => {
    const d = new FrameDecoder();
    const bad = frame(Uint8Array.from([0x92, 0x01])); // an array of 2 with one element
    const out = d.push(Buffer.concat([bad, frame(new Uint8Array()), encodeFrame({ id: 2 })]));
    expect(out).toHaveLength(3);
    expect(out[0]).toMatchObject({ ok: false });
    expect(out[1]).toEqual({ ok: false, error: 'empty frame' });
    expect(out[2]).toEqual({ ok: true, value: { id: 2 } });
  });

  it('never throws on garbage bodies, only reports them', () => {
    fc.assert(fc.property(fc.uint8Array({ maxLength: 64 }), (body) => {
      const out = new FrameDecoder().push(frame(body));
      expect(out).toHaveLength(1);
    }));
  });

  it('refuses to send a frame above the limit', () => {
    expect(() => encodeFrame({ blob: new Uint8Array(MAX_FRAME_BYTES + 1) })).toThrow(ControlError);
  });

  it('speaks plain MessagePack that another encoder can produce', () => {
    expect(new FrameDecoder().push(frame(pack({ id: 3, cmd: 'info' })))).toEqual([{ ok: true, value: { id: 3, cmd: 'info' } }]);
  });
});

describe('errors and the socket path', () => {
  it('carries code, message and domain across the wire', () => {
    const e = new ControlError('ESRCH', 'no such domain', { domain: 'web', domid: 4 });
    expect(ControlError.fromWire(e.toWire())).toMatchObject({ code: 'ESRCH', message: 'no such domain', domain: 'web', domid: 4 });
    expect(ControlError.fromWire('junk')).toMatchObject({ code: 'EPROTO' });
  });

  it('puts the socket under the temp dir unless XENTS_CONTROL_PATH says otherwise', () => {
    expect(controlSocketPath({ XENTS_CONTROL_PATH: '/run/x.sock' })).toBe('/run/x.sock');
    expect(controlSocketPath({})).toMatch(/xents-\d+\/control\.sock$/);
  });
});
