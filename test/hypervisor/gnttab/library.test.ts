import { describe, expect, it } from 'vitest';
import {
  GNTST_bad_domain, GNTST_okay, GTF_accept_transfer, GTF_permit_access, GTF_readonly,
} from '../../../shared/abi/grant-table.ts';
import { DOMID_SELF } from '../../../shared/types.ts';
import { GrantTable } from '../../../shared/guest/gnttab.ts';
import { INVALID_GFN } from '../../../hypervisor/gnttab/setup.ts';
import { TestMachine } from '../../helpers/machine.ts';
import { acct, expectSound, machine } from './helpers.ts';

describe('shared/guest/gnttab.ts (the guest library)', () => {
  it('maps frame 0 at nrPages + 8 and never hands out the reserved refs 0-7', async () => {
    const { m, us: [u] } = await machine(1);
    expect(u!.gt.frameGfn).toBe(256 + 8);
    expect(u!.gt.maxFrames).toBe(64);
    expect(u!.gt.frames).toBe(1);
    expect(u!.gt.freeRefCount).toBe(512 - 8);
    expect(u!.mfn(u!.gt.frameGfn)).toBe(m.hv.grantFrames[u!.slot * 64]);
    const refs = Array.from({ length: 504 }, () => u!.gt.grantAccess(0, 10));
    expect(refs[0]).toBe(8);
    expect(Math.min(...refs)).toBe(8);
    expect(new Set(refs).size).toBe(504);
    expect(acct(m, u!.slot).grantFrames).toBe(1);
  });

  it('grows the table a frame at a time when refs run out, up to max_grant_frames, then throws', async () => {
    const { m, us: [u] } = await machine(1);
    for (let i = 0; i < 504; i++) u!.gt.grantAccess(0, 10);
    expect(u!.gt.grantAccess(0, 10)).toBe(512);
    expect(u!.gt.frames).toBe(2);
    expect(acct(m, u!.slot)).toMatchObject({ grantFrames: 2, xenheap: 2 });
    expect(u!.mfn(u!.gt.frameGfn + 1)).toBe(m.hv.grantFrames[u!.slot * 64 + 1]);
    const total = 64 * 512 - 8;
    for (let i = 505; i < total; i++) u!.gt.grantAccess(0, 10);
    expect(u!.gt.frames).toBe(64);
    expect(() => u!.gt.grantAccess(0, 10)).toThrow(/out of grant references/);
    expect(u!.gt.entry(64 * 512 - 1)).toEqual({ flags: GTF_permit_access, domid: 0, frame: 10 });
    expectSound(m);
  });

  it('publishes domid, frame and flags; endAccess clears the flags and recycles the ref', async () => {
    const { us: [u] } = await machine(1);
    const r1 = u!.gt.grantAccess(3, 123, true);
    expect(u!.gt.entry(r1)).toEqual({ flags: GTF_permit_access | GTF_readonly, domid: 3, frame: 123 });
    const r2 = u!.gt.grantTransfer(0, 456);
    expect(u!.gt.entry(r2)).toEqual({ flags: GTF_accept_transfer, domid: 0, frame: 456 });
    expect(u!.gt.endAccess(r1)).toBe(true);
    expect(u!.gt.entry(r1).flags).toBe(0);
    expect(u!.gt.grantAccess(0, 1)).toBe(r1);
  });

  it('map() places mappings in its hole and gives a gfn back when a map fails or is unmapped', async () => {
    const m = new TestMachine();
    const dom0 = new GrantTable(m.dom0.xen, { mapSlots: 2 });
    const u = await m.domU();
    const gu = new GrantTable(u.v.xen);
    const ref = gu.grantAccess(0, 10);
    const a = dom0.map(u.domid, ref);
    expect(a.gfn).toBe(dom0.frameGfn + 64);
    expect(dom0.map(99, ref).status).toBe(GNTST_bad_domain); // its gfn goes back
    const b = dom0.map(u.domid, ref);
    expect(b.gfn).toBe(dom0.frameGfn + 65);
    expect(() => dom0.map(u.domid, ref)).toThrow(/no free gfn/);
    expect(dom0.unmap(a)).toBe(GNTST_okay);
    expect(dom0.map(u.domid, ref).gfn).toBe(a.gfn);
  });

  it('querySize and setupTable report as the hypervisor keeps them', async () => {
    const { m, dom0, us: [u] } = await machine(1);
    expect(u!.gt.querySize()).toEqual({ status: GNTST_okay, nrFrames: 1, maxFrames: 64 });
    expect(dom0.gt.querySize(u!.domid)).toEqual({ status: GNTST_okay, nrFrames: 1, maxFrames: 64 });
    const s = u!.gt.setupTable(3);
    expect(s.status).toBe(GNTST_okay);
    expect(s.frames).toEqual([BigInt(u!.gt.frameGfn), INVALID_GFN, INVALID_GFN]);
    expect(u!.gt.querySize(DOMID_SELF).nrFrames).toBe(3);
    // The library maps further frames where it expects them.
    u!.gt.grow(3);
    expect(u!.gt.setupTable(3).frames).toEqual([0, 1, 2].map((i) => BigInt(u!.gt.frameGfn + i)));
    expectSound(m);
  });
});
