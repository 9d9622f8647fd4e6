/**
 * The real blkfront against a backend whose answers are whatever a property
 * test picks, request by request: the right answer, any other status, an id
 * nothing was asked with, an operation no request has, or the answer twice.
 * Every I/O settles (done, failed with the status, 'unsupported', or
 * 'ring-broken'); nothing escapes blkfront's handlers; with honest answers
 * only, the data read is the disk's and nothing is 'ring-broken'; after a
 * hostile answer the ring is stopped, logged, and later I/O is refused.
 */
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import type { BlkifResponse } from '../../../shared/blkif/proto.ts';
import { bench, outcome, pattern, sameBytes } from './setup.ts';

const SECTORS = 4096;

/** What the backend does with one answer. */
type Answer =
  | { readonly kind: 'right' }
  | { readonly kind: 'status'; readonly status: number }
  | { readonly kind: 'unknown-id'; readonly id: bigint }
  | { readonly kind: 'bad-op'; readonly op: number }
  | { readonly kind: 'twice' };

const answer: fc.Arbitrary<Answer> = fc.oneof(
  { arbitrary: fc.constant({ kind: 'right' as const }), weight: 12 },
  { arbitrary: fc.oneof(fc.constantFrom(-1, -2), fc.integer({ min: -32768, max: 32767 }).filter((s) => s !== 0)).map((status) => ({ kind: 'status' as const, status })), weight: 2 },
  // Ids from 2^40 up: none of blkfront's shadow ids (small integers).
  { arbitrary: fc.bigInt({ min: 1n << 40n, max: (1n << 64n) - 1n }).map((id) => ({ kind: 'unknown-id' as const, id })), weight: 1 },
  // Operations blkif.h does not define: no request has them.
  { arbitrary: fc.oneof(fc.constant(4), fc.integer({ min: 7, max: 255 })).map((op) => ({ kind: 'bad-op' as const, op })), weight: 1 },
  { arbitrary: fc.constant({ kind: 'twice' as const }), weight: 1 },
);

type Io =
  | { readonly kind: 'read'; readonly sector: number; readonly count: number }
  | { readonly kind: 'write'; readonly sector: number; readonly count: number }
  | { readonly kind: 'flush' }
  | { readonly kind: 'discard'; readonly sector: number; readonly count: number };

const range = fc.integer({ min: 1, max: 300 }).chain((count) => fc.record({ sector: fc.nat(SECTORS - count), count: fc.constant(count) }));
const io: fc.Arbitrary<Io> = fc.oneof(
  { arbitrary: range.map((r) => ({ kind: 'read' as const, ...r })), weight: 4 },
  { arbitrary: range.map((r) => ({ kind: 'write' as const, ...r })), weight: 4 },
  { arbitrary: fc.constant({ kind: 'flush' as const }), weight: 1 },
  { arbitrary: range.map((r) => ({ kind: 'discard' as const, ...r })), weight: 1 },
);

const hostile = (a: Answer): boolean => a.kind === 'unknown-id' || a.kind === 'bad-op' || a.kind === 'twice';

describe('blkfront: a hostile backend, answer by answer', () => {
  it('every I/O settles with a known outcome; honest answers give the disk\'s data; a hostile one stops the ring', async () => {
    await fc.assert(fc.asyncProperty(fc.array(answer, { minLength: 1, maxLength: 24 }), fc.array(io, { minLength: 1, maxLength: 12 }), async (answers, ios) => {
      const t = await bench({ sectors: SECTORS });
      const dev = await t.connect();
      for (let i = 0; i < t.back.disk.length; i += 512) t.back.disk.set(pattern(i / 512, 1, 3), i);
      let n = 0;
      const used: Answer[] = [];
      t.back.misbehave.respond = (_req, rsp): BlkifResponse[] => {
        const a = answers[n++ % answers.length]!;
        used.push(a);
        switch (a.kind) {
          case 'right': return [rsp];
          case 'status': return [{ ...rsp, status: a.status }];
          case 'unknown-id': return [{ ...rsp, id: a.id }];
          case 'bad-op': return [{ ...rsp, operation: a.op }];
          case 'twice': return [rsp, rsp];
        }
      };
      // Reads check their data against the disk as it was (writes here touch other sectors or the same: compare only if no write overlaps).
      const before = t.back.disk.slice();
      const overlapsWrite = (s: number, c: number): boolean =>
        ios.some((x) => (x.kind === 'write' || x.kind === 'discard') && x.sector < s + c && s < x.sector + x.count);
      const runs = ios.map((x) => {
        switch (x.kind) {
          case 'read': return dev.read(x.sector, x.count).then((b) => {
            if (!overlapsWrite(x.sector, x.count)) expect(sameBytes(b, before.subarray(x.sector * 512, (x.sector + x.count) * 512))).toBe(true);
          });
          case 'write': return dev.write(x.sector, pattern(x.sector, x.count, 9));
          case 'flush': return dev.flush();
          case 'discard': return dev.discard(x.sector, x.count);
        }
      });
      const outcomes = await t.run(Promise.all(runs.map(outcome)), 2000);
      for (const o of outcomes) expect(o).toMatch(/^(ok|status -?\d+|unsupported|ring-broken)$/);
      if (!used.some(hostile)) {
        expect(outcomes).not.toContain('ring-broken');
        // All OKAY: every I/O done; any other status: the I/O it answered failed.
        if (used.every((a) => a.kind === 'right')) expect(outcomes.every((o) => o === 'ok')).toBe(true);
        else expect(outcomes.some((o) => o !== 'ok')).toBe(true);
      } else {
        // Stopped: logged, and new I/O is refused.
        expect(t.warnings.length).toBeGreaterThan(0);
        expect(await outcome(t.run(dev.read(0, 1)))).toBe('ring-broken');
      }
    }), { numRuns: 30 });
  }, 120_000);
});
