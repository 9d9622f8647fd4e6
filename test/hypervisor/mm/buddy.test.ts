import { describe, expect, it } from 'vitest';
import fc from 'fast-check';
import { buddyAlloc, buddyFree, buddyFreeCount, buddyFreeMap, buddyInit, NO_FRAME, type BuddyArrays } from '../../../hypervisor/mm/buddy.ts';

function arrays(nrFrames: number, maxOrder = 10): BuddyArrays {
  return {
    nrFrames, maxOrder,
    order: new Int32Array(nrFrames), next: new Int32Array(nrFrames), prev: new Int32Array(nrFrames),
    heads: new Int32Array(maxOrder + 1),
  };
}

describe('buddy allocator', () => {
  it('starts with every frame free, in maximal aligned blocks, for any size', () => {
    fc.assert(fc.property(fc.integer({ min: 1, max: 5000 }), (n) => {
      const b = arrays(n);
      buddyInit(b);
      expect(buddyFreeCount(b)).toBe(n);
      expect(buddyFreeMap(b).every((x) => x === 1)).toBe(true);
    }));
  });

  it('never hands out a frame twice, keeps blocks aligned, and coalesces back to the start state', () => {
    fc.assert(fc.property(
      fc.integer({ min: 16, max: 3000 }),
      fc.array(fc.record({ alloc: fc.boolean(), order: fc.integer({ min: 0, max: 6 }), pick: fc.nat() }), { maxLength: 200 }),
      (n, ops) => {
        const b = arrays(n);
        buddyInit(b);
        const held: Array<{ m: number; k: number }> = [];
        const inUse = new Uint8Array(n);
        for (const op of ops) {
          if (op.alloc) {
            const m = buddyAlloc(b, op.order);
            if (m === NO_FRAME) {
              // Refusal is only right when no free block of that order or larger exists.
              for (let j = op.order; j <= b.maxOrder; j++) expect(b.heads[j]).toBe(NO_FRAME);
              continue;
            }
            expect(m % (1 << op.order)).toBe(0);
            expect(m + (1 << op.order)).toBeLessThanOrEqual(n);
            for (let i = m; i < m + (1 << op.order); i++) {
              expect(inUse[i]).toBe(0);
              inUse[i] = 1;
            }
            held.push({ m, k: op.order });
          } else if (held.length > 0) {
            const [h] = held.splice(op.pick % held.length, 1);
            for (let i = h.m; i < h.m + (1 << h.k); i++) inUse[i] = 0;
            buddyFree(b, h.m, h.k);
          }
          const free = buddyFreeMap(b);
          for (let i = 0; i < n; i++) expect(free[i] + inUse[i]).toBe(1);
        }
        for (const h of held) buddyFree(b, h.m, h.k);
        const fresh = arrays(n);
        buddyInit(fresh);
        // Fully coalesced: the same block structure as a fresh allocator.
        expect(Array.from(b.order)).toEqual(Array.from(fresh.order));
      },
    ), { numRuns: 150 });
  });

  it('rejects orders it cannot serve', () => {
    const b = arrays(64, 4);
    buddyInit(b);
    expect(buddyAlloc(b, 5)).toBe(NO_FRAME);
    expect(buddyAlloc(b, -1)).toBe(NO_FRAME);
    expect(buddyAlloc(b, 1.5)).toBe(NO_FRAME);
    expect(buddyFreeCount(b)).toBe(64);
  });
});
