/**
 * The console ring's byte streams (shared/console/ring.ts), from both ends,
 * over a fake page: sizes per ring, wrap of the data and of the u32 indexes,
 * partial writes when full, and impossible indexes.
 */
import { describe, expect, it } from 'vitest';
import { consRingRead, consRingSize, consRingUsed, consRingWrite } from '../../../shared/console/ring.ts';
import { XENCONS_INTERFACE } from '../../../shared/abi/console.ts';
import { FakeRingMemory } from '../../helpers/fake-ring-memory.ts';

const F = XENCONS_INTERFACE.fields;
const bytes = (n: number, seed = 0): Uint8Array => Uint8Array.from({ length: n }, (_, i) => (i * 7 + seed) & 0xff);

function page(start = 0): FakeRingMemory {
  const m = new FakeRingMemory();
  for (const f of ['in_cons', 'in_prod', 'out_cons', 'out_prod'] as const) m.atomicStore32(m.base + F[f].offset, start);
  return m;
}

describe('console ring byte streams', () => {
  it('out holds 2048 bytes and in 1024; a full ring takes nothing more', () => {
    const m = page();
    expect(consRingSize('out')).toBe(2048);
    expect(consRingSize('in')).toBe(1024);
    expect(consRingWrite(m, m.base, 'out', bytes(3000))).toEqual({ ok: true, written: 2048 });
    expect(consRingWrite(m, m.base, 'out', bytes(1))).toEqual({ ok: true, written: 0 });
    expect(consRingWrite(m, m.base, 'in', bytes(3000))).toEqual({ ok: true, written: 1024 });
    expect(consRingUsed(m, m.base, 'out')).toBe(2048);
    expect(consRingUsed(m, m.base, 'in')).toBe(1024);
    // The rings do not overlap: out's data starts at 1024.
    expect(m.read(m.base + F.out.offset, 4)).toEqual(bytes(4));
    expect(m.read(m.base + F.in.offset, 4)).toEqual(bytes(4));
  });

  it('streams across the data wrap and the u32 index wrap, in order', () => {
    const m = page(0xffffff00);
    const sent = bytes(10_000, 3);
    const got: number[] = [];
    let at = 0;
    while (got.length < sent.length) {
      const w = consRingWrite(m, m.base, 'out', sent.subarray(at, at + 700));
      if (!w.ok) throw new Error('corrupt');
      at += w.written;
      const r = consRingRead(m, m.base, 'out', 500);
      if (!r.ok) throw new Error('corrupt');
      got.push(...r.bytes);
    }
    expect(Uint8Array.from(got)).toEqual(sent);
    // The indexes wrapped past 2^32 and stayed equal (all consumed).
    expect(m.atomicLoad32(m.base + F.out_prod.offset)).toBe((0xffffff00 + 10_000) >>> 0);
    expect(m.atomicLoad32(m.base + F.out_cons.offset)).toBe((0xffffff00 + 10_000) >>> 0);
  });

  it('an index claiming more than the ring holds is corrupt: nothing is copied or moved', () => {
    const m = page();
    m.atomicStore32(m.base + F.out_prod.offset, 2049);
    expect(consRingRead(m, m.base, 'out')).toEqual({ ok: false, reason: 'ringidx' });
    expect(consRingWrite(m, m.base, 'out', bytes(1))).toEqual({ ok: false, reason: 'ringidx' });
    expect(consRingUsed(m, m.base, 'out')).toBeUndefined();
    expect(m.atomicLoad32(m.base + F.out_cons.offset)).toBe(0);
    // A consumer ahead of the producer is the same (prod - cons wraps to ~2^32).
    m.atomicStore32(m.base + F.in_cons.offset, 5);
    expect(consRingRead(m, m.base, 'in')).toEqual({ ok: false, reason: 'ringidx' });
  });
});
