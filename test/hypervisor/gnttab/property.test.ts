/**
 * Property: under any sequence of grant, revoke, map, unmap, copy, transfer
 * and destroy by Dom0 and two DomUs, every status is the one a model of the
 * grant rules predicts, every live mapping keeps its frame, the frame
 * accounting invariant holds after every step (each frame free or owned,
 * owned frames = tot_pages + xenheap_pages, no P2M entry on a free frame), and
 * once every mapping is gone and the DomUs are destroyed, every frame is back.
 */
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import {
  GNTST_bad_copy_arg, GNTST_bad_domain, GNTST_bad_page, GNTST_general_error, GNTST_okay,
} from '../../../shared/abi/grant-table.ts';
import { D } from '../../../hypervisor/state.ts';
import { slotOf } from '../../../hypervisor/domain.ts';
import { PAGE_SIZE } from '../../../shared/types.ts';
import { TestMachine } from '../../helpers/machine.ts';
import { addDomU, domOf, HOLE_GFN_BASE, xenHeap, type Dom } from './helpers.ts';

type Action =
  | { t: 'grant'; by: number; to: number; page: number; ro: boolean }
  | { t: 'revoke'; grant: number }
  | { t: 'map'; grant: number; by: number; ro: boolean; asGrantee: number }
  | { t: 'unmap'; mapping: number }
  | { t: 'copy'; grant: number; by: number; write: boolean; len: number; offset: number; asGrantee: number }
  | { t: 'transfer'; from: number; to: number; page: number }
  | { t: 'destroy'; dom: number };

const dom = fc.integer({ min: 0, max: 2 });
const idx = fc.nat(1000);
/** Mostly act as the domain the grant names (else most maps would just be refused). */
const asGrantee = fc.integer({ min: 0, max: 4 });
const action: fc.Arbitrary<Action> = fc.oneof(
  { weight: 8, arbitrary: fc.record({ t: fc.constant('grant' as const), by: dom, to: dom, page: idx, ro: fc.boolean() }) },
  { weight: 3, arbitrary: fc.record({ t: fc.constant('revoke' as const), grant: idx }) },
  { weight: 10, arbitrary: fc.record({ t: fc.constant('map' as const), grant: idx, by: dom, ro: fc.boolean(), asGrantee }) },
  { weight: 5, arbitrary: fc.record({ t: fc.constant('unmap' as const), mapping: idx }) },
  { weight: 6, arbitrary: fc.record({ t: fc.constant('copy' as const), grant: idx, by: dom, write: fc.boolean(), len: fc.integer({ min: 0, max: PAGE_SIZE }), offset: fc.integer({ min: 0, max: PAGE_SIZE }), asGrantee }) },
  { weight: 4, arbitrary: fc.record({ t: fc.constant('transfer' as const), from: dom, to: dom, page: idx }) },
  { weight: 1, arbitrary: fc.record({ t: fc.constant('destroy' as const), dom: fc.integer({ min: 1, max: 2 }) }) },
);

interface Grant { by: number; to: number; ref: number; gfn: number; ro: boolean; live: boolean }
interface Mapping { by: number; grant: Grant; handle: number; gfn: number; mfn: number }

async function run(actions: readonly Action[]): Promise<void> {
  const m = new TestMachine();
  const d0 = domOf(m, 0, m.dom0.ctx.slot, m.dom0, { mapSlots: 64 });
  const free0 = m.freePages();
  const heap0 = xenHeap(m);
  const doms: Dom[] = [d0, await addDomU(m, { maxmemMiB: 2 }, { mapSlots: 64 }), await addDomU(m, { maxmemMiB: 2 }, { mapSlots: 64 })];
  const alive = [true, true, true];
  /** Pages each domain owns and may use: gfns of its RAM. */
  const pages = doms.map((d) => Array.from({ length: 6 }, () => d.page()));
  const grants: Grant[] = [];
  const maps: Mapping[] = [];
  const landNext = [HOLE_GFN_BASE, HOLE_GFN_BASE + 100, HOLE_GFN_BASE + 200];
  const pick = <T>(xs: readonly T[], i: number): T | undefined => (xs.length ? xs[i % xs.length] : undefined);
  const mappedPage = (owner: number, gfn: number): boolean => maps.some((x) => x.grant.by === owner && x.grant.gfn === gfn);
  const pinnedBy = (g: Grant): number | undefined => maps.find((x) => x.grant === g)?.by;

  for (const a of actions) {
    switch (a.t) {
      case 'grant': {
        const gfn = pick(pages[a.by]!, a.page);
        if (!alive[a.by] || gfn === undefined) break;
        const ref = doms[a.by]!.gt.grantAccess(doms[a.to]!.domid, gfn, a.ro);
        // The library recycles revoked refs: forget the revoked grant this ref was.
        const old = grants.findIndex((x) => x.by === a.by && x.ref === ref);
        if (old >= 0) grants.splice(old, 1);
        grants.push({ by: a.by, to: a.to, ref, gfn, ro: a.ro, live: true });
        break;
      }
      case 'revoke': {
        const g = pick(grants.filter((x) => x.live && alive[x.by]), a.grant);
        if (!g) break;
        const busy = maps.some((x) => x.grant === g);
        expect(doms[g.by]!.gt.endAccess(g.ref as never)).toBe(!busy);
        if (!busy) g.live = false;
        break;
      }
      case 'map': {
        const g = pick(grants, a.grant);
        const by = g && a.asGrantee > 0 ? g.to : a.by;
        if (!g || !alive[by]) break;
        const d = doms[by]!;
        const r = d.gt.map(doms[g.by]!.domid, g.ref, { readonly: a.ro });
        let want: number = GNTST_okay;
        const pinner = pinnedBy(g);
        if (!alive[g.by]) want = GNTST_bad_domain;
        else if (pinner !== undefined ? pinner !== by : !g.live || g.to !== by) want = GNTST_general_error;
        else if (g.ro && !a.ro) want = GNTST_general_error;
        else if (pinner === undefined && !pages[g.by]!.includes(g.gfn)) want = GNTST_bad_page;
        expect(r.status).toBe(want);
        if (r.status === GNTST_okay) maps.push({ by, grant: g, handle: r.handle, gfn: r.gfn, mfn: d.mfn(r.gfn) });
        break;
      }
      case 'unmap': {
        const x = pick(maps, a.mapping);
        if (!x) break;
        expect(doms[x.by]!.gt.unmap(x)).toBe(GNTST_okay);
        maps.splice(maps.indexOf(x), 1);
        break;
      }
      case 'copy': {
        const g = pick(grants, a.grant);
        const by = g && a.asGrantee > 0 ? g.to : a.by;
        const own = pick(pages[by]!, a.grant);
        if (!g || !alive[by] || own === undefined) break;
        const d = doms[by]!;
        const side = { ref: g.ref, domid: doms[g.by]!.domid, offset: a.offset };
        // What the destination must hold afterwards: the source bytes as they were (the two may overlap).
        const granted = alive[g.by] && pages[g.by]!.includes(g.gfn);
        const inBounds = a.offset + a.len <= PAGE_SIZE;
        const before = !inBounds || !granted ? null : a.write ? d.read(own, 0, a.len) : doms[g.by]!.read(g.gfn, a.offset, a.len);
        const [st] = d.gt.copy([a.write
          ? { source: { gfn: own }, dest: side, len: a.len }
          : { source: side, dest: { gfn: own }, len: a.len }]);
        const pinner = pinnedBy(g);
        let want: number = GNTST_okay;
        if (!alive[g.by]) want = GNTST_bad_domain;
        else if (pinner !== undefined ? pinner !== by : !g.live || g.to !== by) want = GNTST_general_error;
        else if (a.write && g.ro) want = GNTST_general_error;
        else if (pinner === undefined && !pages[g.by]!.includes(g.gfn)) want = GNTST_bad_page;
        else if (!inBounds) want = GNTST_bad_copy_arg;
        expect(st).toBe(want);
        if (st === GNTST_okay && before) {
          expect(a.write ? doms[g.by]!.read(g.gfn, a.offset, a.len) : d.read(own, 0, a.len)).toEqual(before);
        }
        break;
      }
      case 'transfer': {
        const gfn = pick(pages[a.from]!, a.page);
        if (!alive[a.from] || a.from === 0 || gfn === undefined) break;
        const rx = doms[a.to]!;
        const land = landNext[a.to]!++;
        const ref = alive[a.to] ? rx.gt.grantTransfer(doms[a.from]!.domid, land) : 8;
        const [st] = doms[a.from]!.gt.transfer([{ gfn, domid: rx.domid, ref }]);
        let want: number = GNTST_okay;
        if (mappedPage(a.from, gfn)) want = GNTST_bad_page;
        // A destroyed domain whose pages others still map is a zombie (dying: general_error); else gone.
        else if (!alive[a.to]) want = maps.some((x) => x.grant.by === a.to) ? GNTST_general_error : GNTST_bad_domain;
        else if (a.to === 0) want = GNTST_general_error; // Dom0 has no headroom
        expect(st).toBe(want);
        if (st !== GNTST_bad_page) pages[a.from]!.splice(pages[a.from]!.indexOf(gfn), 1);
        if (st === GNTST_okay) {
          expect(rx.gt.endTransfer(ref as never)).toBe(land);
          pages[a.to]!.push(land);
        } else if (alive[a.to]) {
          expect(rx.gt.endTransfer(ref as never)).toBeNull();
        }
        break;
      }
      case 'destroy': {
        if (!alive[a.dom]) break;
        await m.destroy(doms[a.dom]!.domid);
        alive[a.dom] = false;
        for (let i = maps.length - 1; i >= 0; i--) if (maps[i]!.by === a.dom) maps.splice(i, 1);
        break;
      }
    }
    expect(m.checkInvariants()).toEqual([]);
    // Every live mapping still maps the frame it got, and the frame is owned by its granter.
    for (const x of maps) {
      expect(doms[x.by]!.mfn(x.gfn)).toBe(x.mfn);
      expect(m.hv.ftOwner[x.mfn]).toBe(doms[x.grant.by]!.domid);
    }
  }

  // Tear down: unmap what is left, destroy the DomUs; every frame comes back.
  for (const x of maps) expect(doms[x.by]!.gt.unmap(x)).toBe(GNTST_okay);
  for (const i of [1, 2]) if (alive[i]) await m.destroy(doms[i]!.domid);
  for (const i of [1, 2]) expect(slotOf(m.hv, doms[i]!.domid)).toBe(-1);
  const dom0Maptrack = Atomics.load(m.hv.dom, m.hv.d(d0.slot, D.nr_maptrack_frames));
  expect(m.freePages() + dom0Maptrack).toBe(free0);
  expect(xenHeap(m) - dom0Maptrack).toBe(heap0);
  expect(m.checkInvariants()).toEqual([]);
}

describe('grant tables: frame accounting under random operation sequences', () => {
  it('keeps every status as the model predicts and never leaks or frees a mapped frame', async () => {
    await fc.assert(fc.asyncProperty(fc.array(action, { minLength: 10, maxLength: 80 }), run), { numRuns: 150 });
  }, 120_000);
});
