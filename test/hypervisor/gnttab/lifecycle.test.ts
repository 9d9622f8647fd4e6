import { describe, expect, it } from 'vitest';
import {
  GNTST_bad_domain, GNTST_general_error, GNTST_okay, GTF_permit_access, GTF_reading, GTF_writing,
} from '../../../shared/abi/grant-table.ts';
import { DOMSTATE_DEAD, D, OWNER_XEN } from '../../../hypervisor/state.ts';
import { slotOf } from '../../../hypervisor/domain.ts';
import { TestMachine } from '../../helpers/machine.ts';
import { acct, addDomU, domOf, expectSound, HOLE_GFN_BASE, owner, pin, refs, xenHeap, type Dom } from './helpers.ts';

async function base(): Promise<{ m: TestMachine; dom0: Dom; free: number; heap: number }> {
  const m = new TestMachine();
  const dom0 = domOf(m, 0, m.dom0.ctx.slot, m.dom0);
  return { m, dom0, free: m.freePages(), heap: xenHeap(m) };
}

const state = (m: TestMachine, slot: number): number => Atomics.load(m.hv.dom, m.hv.d(slot, D.state));

describe('grant tables across domain destruction', () => {
  it('destroying a mapper releases its mappings: the granter\'s flags and pins clear, its page keeps one reference', async () => {
    const { m, free, heap } = await base();
    const a = await addDomU(m);
    const b = await addDomU(m);
    const page = b.page(0x44);
    const ref = b.gt.grantAccess(a.domid, page);
    const ro = b.gt.grantAccess(a.domid, page, true);
    expect(a.gt.map(b.domid, ref).status).toBe(GNTST_okay);
    expect(a.gt.map(b.domid, ro, { readonly: true }).status).toBe(GNTST_okay);
    expect(refs(m, b.mfn(page))).toBe(3);
    expect(b.gt.endAccess(ref)).toBe(false);
    await m.destroy(a.domid);
    expect(slotOf(m.hv, a.domid)).toBe(-1); // nothing kept it: gone at once
    expect(b.gt.entry(ref).flags).toBe(GTF_permit_access);
    expect(pin(b, ref)).toBe(0);
    expect(pin(b, ro)).toBe(0);
    expect(refs(m, b.mfn(page))).toBe(1);
    expect(b.gt.endAccess(ref)).toBe(true);
    expectSound(m);
    await m.destroy(b.domid);
    expect(m.freePages()).toBe(free);
    expect(xenHeap(m)).toBe(heap);
    expectSound(m);
  });

  it('destroying a granter whose page Dom0 maps leaves the page allocated (a zombie) until Dom0 unmaps', async () => {
    const { m, dom0, free, heap } = await base();
    const u = await addDomU(m);
    const page = u.page(0x5e);
    const mfn = u.mfn(page);
    const mp = dom0.gt.map(u.domid, u.gt.grantAccess(0, page));
    await m.destroy(u.domid);
    // The grant frames went; the granted page did not.
    expect(state(m, u.slot)).toBe(DOMSTATE_DEAD);
    expect(acct(m, u.slot)).toMatchObject({ tot: 1, xenheap: 0, grantFrames: 0 });
    expect(owner(m, mfn)).toBe(u.domid);
    expect(refs(m, mfn)).toBe(1);
    expect(dom0.read(mp.gfn, 0, 2)).toEqual(new Uint8Array([0x5e, 0x5e]));
    dom0.v.api.mem.writeU8(mp.gpa, 1); // still a writable mapping
    expect(m.ctrl.domainInfo(u.domid)?.dying).toBe(true);
    // The zombie's page, and Dom0's first maptrack frame (Dom0 keeps it for later mappings).
    expect(m.freePages()).toBe(free - 2);
    expectSound(m);
    // No new mappings of a dead domain's grants.
    expect(dom0.gt.map(u.domid, 8).status).toBe(GNTST_bad_domain);
    expect(dom0.gt.unmap(mp)).toBe(GNTST_okay);
    expect(m.hv.ftOwner[mfn]).toBe(-1);
    expect(slotOf(m.hv, u.domid)).toBe(-1);
    expect(m.ctrl.domainInfo(u.domid)).toBeNull();
    expect(m.freePages()).toBe(free - 1);
    expect(xenHeap(m)).toBe(heap + 1);
    expectSound(m);
  });

  it('live mappings in both directions: no frame leaked, none freed while mapped', async () => {
    const { m, free, heap } = await base();
    const a = await addDomU(m);
    const b = await addDomU(m);
    const pa = a.page(0xaa);
    const pb = b.page(0xbb);
    const aMapsB = a.gt.map(b.domid, b.gt.grantAccess(a.domid, pb));
    const bMapsA = b.gt.map(a.domid, a.gt.grantAccess(b.domid, pa));
    expect([aMapsB.status, bMapsA.status]).toEqual([GNTST_okay, GNTST_okay]);
    await m.destroy(a.domid);
    expectSound(m); // includes: no P2M entry of b maps a free frame
    expect(state(m, a.slot)).toBe(DOMSTATE_DEAD);
    expect(acct(m, a.slot).tot).toBe(1);
    expect(b.read(bMapsA.gfn, 0, 1)[0]).toBe(0xaa);
    // a's mapping of b's page is gone: b may revoke.
    expect(refs(m, b.mfn(pb))).toBe(1);
    expect(b.gt.entry(8).flags).toBe(GTF_permit_access);
    expect(b.gt.unmap(bMapsA)).toBe(GNTST_okay);
    expect(slotOf(m.hv, a.domid)).toBe(-1);
    expectSound(m);
    await m.destroy(b.domid);
    expect(m.freePages()).toBe(free);
    expect(xenHeap(m)).toBe(heap);
    expectSound(m);
  });

  it('a zombie granter is freed when its last mapper is destroyed rather than unmapping', async () => {
    const { m, free, heap } = await base();
    const a = await addDomU(m);
    const b = await addDomU(m);
    expect(b.gt.map(a.domid, a.gt.grantAccess(b.domid, a.page())).status).toBe(GNTST_okay);
    expect(b.gt.map(a.domid, a.gt.grantAccess(b.domid, a.page()), { readonly: true }).status).toBe(GNTST_okay);
    await m.destroy(a.domid);
    expect(acct(m, a.slot).tot).toBe(2);
    await m.destroy(b.domid);
    expect(slotOf(m.hv, a.domid)).toBe(-1);
    expect(slotOf(m.hv, b.domid)).toBe(-1);
    expect(m.freePages()).toBe(free);
    expect(xenHeap(m)).toBe(heap);
    expectSound(m);
  });

  it('a zombie cannot receive a transfer (dying: GNTST_general_error)', async () => {
    const { m, dom0 } = await base();
    const tx = await addDomU(m);
    const rx = await addDomU(m, { maxmemMiB: 2 });
    const ref = rx.gt.grantTransfer(tx.domid, HOLE_GFN_BASE);
    const mp = dom0.gt.map(rx.domid, rx.gt.grantAccess(0, rx.page()));
    await m.destroy(rx.domid);
    expect(state(m, rx.slot)).toBe(DOMSTATE_DEAD);
    const tot = acct(m, tx.slot).tot;
    expect(tx.gt.transfer([{ gfn: tx.page(), domid: rx.domid, ref }])).toEqual([GNTST_general_error]);
    expect(acct(m, tx.slot).tot).toBe(tot - 1);
    expect(acct(m, rx.slot).tot).toBe(1);
    expect(dom0.gt.unmap(mp)).toBe(GNTST_okay);
    expectSound(m);
  });

  it('frees grant table, active and maptrack frames of a destroyed domain, however many', async () => {
    const { m, free, heap } = await base();
    const a = await addDomU(m);
    const b = await addDomU(m, {}, { mapSlots: 600 });
    a.gt.grow(5);
    const page = a.page();
    const grants = Array.from({ length: 600 }, () => a.gt.grantAccess(b.domid, page, true));
    const maps = b.gt.mapBatch(grants.map((ref) => ({ domid: a.domid, ref, readonly: true })));
    expect(maps.every((x) => x.status === GNTST_okay)).toBe(true);
    expect(Atomics.load(m.hv.dom, m.hv.d(b.slot, D.nr_maptrack_frames))).toBe(3);
    expect(acct(m, a.slot).xenheap).toBe(5);
    await m.destroy(b.domid);
    expect(refs(m, a.mfn(page))).toBe(1);
    expect(grants.every((r) => a.gt.entry(r).flags === (GTF_permit_access | 4))).toBe(true);
    await m.destroy(a.domid);
    expect(m.freePages()).toBe(free);
    expect(xenHeap(m)).toBe(heap);
    expectSound(m);
  });

  it('a grant frame Dom0 maps as a foreign frame outlives its domain as a hypervisor page, freed on unmap', async () => {
    const { m, free, heap } = await base();
    const u = await addDomU(m);
    const gfn = u.gt.frameGfn;
    const mfn = u.mfn(gfn);
    const local = m.dom0.xen.allocGfn();
    expect(m.dom0.xen.decreaseReservation([local])).toBe(1);
    expect(m.ctrl.mapForeign(u.domid, [gfn], [local])).toEqual([0]);
    u.gt.grantAccess(0, 77);
    expect(m.dom0.api.mem.readU32(local * 4096 + 8 * 8 + 4)).toBe(77); // ref 8's frame field
    await m.destroy(u.domid);
    expect(slotOf(m.hv, u.domid)).toBe(-1); // the grant frame does not make it a zombie
    expect(owner(m, mfn)).toBe(OWNER_XEN);
    expect(refs(m, mfn)).toBe(1);
    expectSound(m);
    expect(m.dom0.xen.removeFromPhysmap(local)).toBe(0);
    expect(m.hv.ftOwner[mfn]).toBe(-1);
    expect(m.dom0.xen.populatePhysmap([local])).toBe(1);
    expect(m.freePages()).toBe(free);
    expect(xenHeap(m)).toBe(heap);
    expectSound(m);
  });

  it('a domain mapping its own grants, and holding transferred pages, is cleaned up completely', async () => {
    const { m, free, heap } = await base();
    const tx = await addDomU(m);
    const u = await addDomU(m, { maxmemMiB: 2 });
    const page = u.page();
    expect(u.gt.map(u.domid, u.gt.grantAccess(u.domid, page)).status).toBe(GNTST_okay);
    const ref = u.gt.grantTransfer(tx.domid, HOLE_GFN_BASE);
    expect(tx.gt.transfer([{ gfn: tx.page(), domid: u.domid, ref }])).toEqual([GNTST_okay]);
    expect(u.gt.entry(8).flags).toBe(GTF_permit_access | GTF_reading | GTF_writing);
    await m.destroy(u.domid);
    expect(slotOf(m.hv, u.domid)).toBe(-1);
    await m.destroy(tx.domid);
    expect(m.freePages()).toBe(free);
    expect(xenHeap(m)).toBe(heap);
    expectSound(m);
  });
});
