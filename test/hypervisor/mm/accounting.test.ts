/**
 * The frame-accounting invariant under random sequences of domain creation,
 * populate, decrease, foreign mapping and destroy, through the real hypercalls:
 * every frame is free or owned by exactly one domain (or Xen), tot_pages matches,
 * and destroying every domain returns every frame.
 */
import { describe, expect, it } from 'vitest';
import fc from 'fast-check';
import { TestMachine, type TestVcpu } from '../../helpers/machine.ts';

type Op =
  | { kind: 'create'; mib: number }
  | { kind: 'populate'; dom: number; gfn: number; order: number }
  | { kind: 'decrease'; dom: number; gfn: number }
  | { kind: 'map'; dom: number; gfn: number }
  | { kind: 'unmap' }
  | { kind: 'destroy'; dom: number };

const op: fc.Arbitrary<Op> = fc.oneof(
  fc.record({ kind: fc.constant('create' as const), mib: fc.integer({ min: 1, max: 2 }) }),
  fc.record({ kind: fc.constant('populate' as const), dom: fc.nat(), gfn: fc.integer({ min: 0, max: 1100 }), order: fc.integer({ min: 0, max: 3 }) }),
  fc.record({ kind: fc.constant('decrease' as const), dom: fc.nat(), gfn: fc.integer({ min: 0, max: 1100 }) }),
  fc.record({ kind: fc.constant('map' as const), dom: fc.nat(), gfn: fc.integer({ min: 0, max: 300 }) }),
  fc.record({ kind: fc.constant('unmap' as const) }),
  fc.record({ kind: fc.constant('destroy' as const), dom: fc.nat() }),
);

describe('frame accounting invariant', () => {
  it('holds after every step of random create/populate/decrease/map/destroy sequences, and nothing leaks', async () => {
    await fc.assert(fc.asyncProperty(fc.array(op, { minLength: 1, maxLength: 25 }), async (ops) => {
      const m = new TestMachine({ memMiB: 12 });
      const start = m.freePages();
      const doms: number[] = [];
      /** Each DomU's vCPU context, made once (its library read start_info at creation). */
      const vcpus = new Map<number, TestVcpu>();
      const maps: number[] = [];
      for (const o of ops) {
        switch (o.kind) {
          case 'create':
            if (doms.length < 4) {
              try {
                const d = await m.domU({ memoryMiB: o.mib, maxmemMiB: o.mib + 1 });
                doms.push(d.domid);
                vcpus.set(d.domid, d.v);
              } catch { /* out of memory is a legal outcome */ }
            }
            break;
          case 'populate':
          case 'decrease': {
            if (doms.length === 0) break;
            const d = doms[o.dom % doms.length];
            const v = vcpus.get(d)!;
            // The library marshals arguments through its scratch page: a guest that
            // balloons that page out can make no more hypercalls, so leave it.
            if (o.kind === 'decrease' && o.gfn === v.xen.scratch / 4096) break;
            const before = m.ctrl.domainInfo(d)!.totPages;
            const n = o.kind === 'populate' ? v.xen.populatePhysmap([o.gfn - (o.gfn % (1 << o.order))], o.order) : v.xen.decreaseReservation([o.gfn]);
            const after = m.ctrl.domainInfo(d)!.totPages;
            const delta = (o.kind === 'populate' ? n * (1 << o.order) : -n) || 0;
            expect(after - before).toBe(delta);
            break;
          }
          case 'map': {
            if (doms.length === 0 || maps.length > 3) break;
            const d = doms[o.dom % doms.length];
            const local = m.dom0.xen.allocGfn();
            if (m.dom0.xen.decreaseReservation([local]) !== 1) break;
            const [rc] = m.ctrl.mapForeign(d, [o.gfn], [local]);
            if (rc === 0) maps.push(local);
            else m.dom0.xen.populatePhysmap([local]);
            break;
          }
          case 'unmap': {
            const local = maps.pop();
            if (local === undefined) break;
            expect(m.dom0.xen.removeFromPhysmap(local)).toBe(0);
            expect(m.dom0.xen.populatePhysmap([local])).toBe(1);
            break;
          }
          case 'destroy': {
            if (doms.length === 0) break;
            const [d] = doms.splice(o.dom % doms.length, 1);
            await m.destroy(d);
            break;
          }
        }
        expect(m.checkInvariants()).toEqual([]);
      }
      for (const local of maps) {
        m.dom0.xen.removeFromPhysmap(local);
        m.dom0.xen.populatePhysmap([local]);
      }
      for (const d of doms) await m.destroy(d);
      expect(m.checkInvariants()).toEqual([]);
      expect(m.freePages()).toBe(start);
      expect(m.ctrl.listDomains(1)).toEqual([]);
    }), { numRuns: Number(process.env.FC_RUNS ?? 40) });
  });
});
