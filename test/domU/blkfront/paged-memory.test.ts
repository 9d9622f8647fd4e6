/**
 * blkfront's view of a multi-page ring whose pages are not adjacent in the
 * guest's physmap (pagedRingMemory): ring offsets [0, n * 4096) map page by
 * page onto the pages given, reads and writes split at page boundaries, and
 * nothing outside the ring's range is reachable.
 */
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { pagedRingMemory } from '../../../domU/blkfront/paged-memory.ts';
import { FlatRingMemory } from '../../helpers/flat-ring-memory.ts';

const PAGE = 4096;

describe('pagedRingMemory', () => {
  it('maps ring offsets onto scattered pages, splitting at page boundaries (model check)', () => {
    fc.assert(fc.property(
      fc.shuffledSubarray([0, 1, 2, 3, 4, 5, 6, 7], { minLength: 4, maxLength: 4 }),
      fc.array(fc.record({ at: fc.integer({ min: 0, max: 4 * PAGE - 1 }), len: fc.integer({ min: 1, max: 300 }), seed: fc.integer({ min: 0, max: 255 }) }), { maxLength: 20 }),
      (order, writes) => {
        const flat = new FlatRingMemory(0x10000, 8 * PAGE);
        const pages = order.map((p) => 0x10000 + p * PAGE);
        const mem = pagedRingMemory(flat, pages);
        const model = new Uint8Array(4 * PAGE);
        for (const w of writes) {
          const len = Math.min(w.len, 4 * PAGE - w.at);
          const data = Uint8Array.from({ length: len }, (_, i) => (w.seed + i) & 0xff);
          mem.write(w.at, data);
          model.set(data, w.at);
        }
        // Every ring byte is where the page list says, in the underlying memory.
        for (let p = 0; p < 4; p++) expect(flat.read(pages[p]!, PAGE)).toEqual(model.subarray(p * PAGE, (p + 1) * PAGE));
        // And reads through the view (read and readInto) agree with the model anywhere.
        const a = writes[0]?.at ?? 0;
        const len = Math.min(5000, 4 * PAGE - a);
        expect(mem.read(a, len)).toEqual(model.subarray(a, a + len));
        const dst = new Uint8Array(len);
        mem.readInto!(a, dst);
        expect(dst).toEqual(model.subarray(a, a + len));
      },
    ), { numRuns: 100 });
  });

  it('index words go to page 0; offsets outside the ring are refused', () => {
    const flat = new FlatRingMemory(0x10000, 4 * PAGE);
    const mem = pagedRingMemory(flat, [0x10000 + 3 * PAGE, 0x10000 + PAGE]);
    mem.atomicStore32(8, 0xdeadbeef);
    expect(flat.atomicLoad32(0x10000 + 3 * PAGE + 8)).toBe(0xdeadbeef);
    expect(mem.atomicLoad32(8)).toBe(0xdeadbeef);
    expect(() => mem.read(2 * PAGE - 4, 8)).toThrow(RangeError);
    expect(() => mem.write(-1, new Uint8Array(1))).toThrow(RangeError);
    expect(() => mem.atomicLoad32(2 * PAGE)).toThrow(RangeError);
  });
});
