/**
 * Property: under any interleaving of send / dispatch / mask / unmask on a set
 * of ports (spread over two selector words and both halves of each u64), no
 * event is lost and none is duplicated. The model is the 2-level ABI's: a send
 * to a pending port coalesces; a dispatch handles every pending unmasked port
 * exactly once (in port order) and leaves masked ones pending; unmask of a
 * pending port makes it deliverable. Unmask is EVTCHNOP_unmask as Xen defines it
 * (mask bit still set when the hypercall is made).
 *
 * After every step the guest-visible state must match the model, and whenever a
 * port is deliverable the guest must have been told: its selector bit and
 * evtchn_upcall_pending are set, so SCHEDOP_block would not sleep.
 */
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { TestMachine } from '../../helpers/machine.ts';
import { EventChannels } from '../../../shared/guest/evtchn.ts';
import { bindIpi, bits, send, unmask } from './helpers.ts';

/** Word 0 low/high halves, word 1 low/high halves, and a word-1 port near the top. */
const PORTS = [1, 2, 31, 32, 33, 63, 64, 65, 96, 127] as const;

type Op =
  | { readonly k: 'send'; readonly i: number }
  | { readonly k: 'mask'; readonly i: number }
  | { readonly k: 'unmask'; readonly i: number }
  | { readonly k: 'dispatch' };

const idx = fc.nat(PORTS.length - 1);
const op: fc.Arbitrary<Op> = fc.oneof(
  { weight: 4, arbitrary: idx.map((i): Op => ({ k: 'send', i })) },
  { weight: 2, arbitrary: idx.map((i): Op => ({ k: 'mask', i })) },
  { weight: 2, arbitrary: idx.map((i): Op => ({ k: 'unmask', i })) },
  { weight: 2, arbitrary: fc.constant<Op>({ k: 'dispatch' }) },
);

describe('property: 2-level event delivery never loses or duplicates an event', () => {
  it('random interleavings of send / dispatch / mask / unmask', async () => {
    const m = new TestMachine();
    const a = await m.domU();
    const ea = new EventChannels(a.v.xen);
    for (let p = 1; p <= 127; p++) expect(bindIpi(a.v).port).toBe(p);
    const handled: number[] = [];
    for (const p of PORTS) ea.on(p, (q) => handled.push(q));
    const si = ea.sharedInfo;

    /** A fresh guest-visible state for each run: nothing pending, nothing masked, no upcall. */
    const clean = (): void => {
      a.v.api.mem.fill(si + 2048, 16, 0);
      a.v.api.mem.fill(si + 2560, 16, 0);
      a.v.api.mem.writeU8(si, 0);
      a.v.api.mem.writeU64(si + 8, 0n);
    };

    fc.assert(fc.property(fc.array(op, { maxLength: 60 }), (ops) => {
      clean();
      const pending = new Set<number>();
      const masked = new Set<number>();
      /** Events made pending (a send that did not coalesce) and events handled, per port. */
      const raised = new Map<number, number>();
      const delivered = new Map<number, number>();
      const bump = (mp: Map<number, number>, p: number): void => { mp.set(p, (mp.get(p) ?? 0) + 1); };

      const dispatch = (): void => {
        handled.length = 0;
        ea.dispatch();
        const want = PORTS.filter((p) => pending.has(p) && !masked.has(p));
        expect(handled).toEqual(want);
        for (const p of want) { pending.delete(p); bump(delivered, p); }
      };

      const check = (): void => {
        for (const p of PORTS) {
          const b = bits(a.v, ea, p);
          expect(b.pending, `port ${p} pending`).toBe(pending.has(p));
          expect(b.masked, `port ${p} masked`).toBe(masked.has(p));
          if (pending.has(p) && !masked.has(p)) {
            expect(b.sel, `port ${p}: selector bit of a deliverable port`).toBe(true);
            expect(b.upcall, `port ${p}: upcall_pending with a deliverable port`).toBe(1);
          }
        }
        if (PORTS.some((p) => pending.has(p) && !masked.has(p))) {
          const before = a.v.sched.wouldSleep;
          a.v.xen.block();
          expect(a.v.sched.wouldSleep, 'block must not sleep with a deliverable event').toBe(before);
        }
      };

      for (const o of ops) {
        switch (o.k) {
          case 'send': {
            const p = PORTS[o.i];
            expect(send(a.v, p)).toBe(0);
            if (!pending.has(p)) { pending.add(p); bump(raised, p); }
            break;
          }
          case 'mask': {
            const p = PORTS[o.i];
            ea.mask(p);
            masked.add(p);
            break;
          }
          case 'unmask': {
            const p = PORTS[o.i];
            if (!masked.has(p)) ea.mask(p); // Xen's protocol: the mask bit is set when EVTCHNOP_unmask is made
            expect(unmask(a.v, p)).toBe(0);
            masked.delete(p);
            break;
          }
          case 'dispatch':
            dispatch();
            break;
        }
        check();
      }
      // Unmask everything and drain: every event ever raised is delivered exactly once.
      for (const p of PORTS) {
        if (masked.has(p)) {
          expect(unmask(a.v, p)).toBe(0);
          masked.delete(p);
        }
      }
      check();
      dispatch();
      expect(pending.size).toBe(0);
      for (const p of PORTS) expect(delivered.get(p) ?? 0, `port ${p}`).toBe(raised.get(p) ?? 0);
      check();
    }), { numRuns: 200 });
  });
});
