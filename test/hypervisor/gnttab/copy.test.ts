import { describe, expect, it } from 'vitest';
import {
  GNTST_bad_copy_arg, GNTST_bad_domain, GNTST_bad_gntref, GNTST_bad_page,
  GNTST_general_error, GNTST_okay, GNTST_permission_denied, GNTTAB_COPY, GNTTABOP_copy, GTF_permit_access,
  GTF_readonly, GTF_reading, GTF_writing,
} from '../../../shared/abi/grant-table.ts';
import { EFAULT } from '../../../shared/errno.ts';
import { StructView } from '../../../shared/layout.ts';
import { DOMID_SELF, PAGE_SIZE } from '../../../shared/types.ts';
import { expectSound, gpaOf, HOLE_GFN_BASE, machine, pin, rawOp } from './helpers.ts';

const pattern = (n: number, seed: number): Uint8Array => Uint8Array.from({ length: n }, (_, i) => (i * 7 + seed) & 0xff);

describe('GNTTABOP_copy', () => {
  it('copies from a grant into our own page and back into the grant; flags are clear again afterwards', async () => {
    const { m, dom0, us: [u] } = await machine(1);
    const granted = u!.page(0);
    u!.v.api.mem.write(gpaOf(granted), pattern(PAGE_SIZE, 1));
    const ref = u!.gt.grantAccess(0, granted);
    const mine = dom0.page(0);
    expect(dom0.gt.copy([{ source: { ref, domid: u!.domid }, dest: { gfn: mine }, len: PAGE_SIZE }])).toEqual([GNTST_okay]);
    expect(dom0.read(mine)).toEqual(pattern(PAGE_SIZE, 1));
    expect(u!.gt.entry(ref).flags).toBe(GTF_permit_access);
    expect(pin(u!, ref)).toBe(0);
    // Into the grant, at an offset.
    dom0.v.api.mem.write(gpaOf(mine) + 100, pattern(50, 9));
    expect(dom0.gt.copy([{ source: { gfn: mine, offset: 100 }, dest: { ref, domid: u!.domid, offset: 4000 }, len: 50 }])).toEqual([GNTST_okay]);
    expect(u!.read(granted, 4000, 50)).toEqual(pattern(50, 9));
    expect(u!.read(granted, 3999, 1)).toEqual(pattern(PAGE_SIZE, 1).subarray(3999, 4000));
    expect(u!.read(granted, 4050, 1)).toEqual(pattern(PAGE_SIZE, 1).subarray(4050, 4051));
    expect(u!.gt.entry(ref).flags).toBe(GTF_permit_access);
    expect(u!.gt.endAccess(ref)).toBe(true);
    expectSound(m);
  });

  it('copies grant to grant between two other domains, and own page to own page', async () => {
    const { m, dom0, us: [a, b] } = await machine(2);
    const pa = a!.page(0);
    a!.v.api.mem.write(gpaOf(pa), pattern(PAGE_SIZE, 3));
    const pb = b!.page(0);
    const ra = a!.gt.grantAccess(0, pa, true);
    const rb = b!.gt.grantAccess(0, pb);
    expect(dom0.gt.copy([{ source: { ref: ra, domid: a!.domid }, dest: { ref: rb, domid: b!.domid }, len: PAGE_SIZE }])).toEqual([GNTST_okay]);
    expect(b!.read(pb)).toEqual(pattern(PAGE_SIZE, 3));
    const x = dom0.page(0xee);
    const y = dom0.page(0);
    expect(dom0.gt.copy([{ source: { gfn: x, offset: 10 }, dest: { gfn: y, offset: 20 }, len: 30 }])).toEqual([GNTST_okay]);
    expect(dom0.read(y, 20, 30)).toEqual(new Uint8Array(30).fill(0xee));
    expect(dom0.read(y, 19, 1)[0]).toBe(0);
    expect(dom0.read(y, 50, 1)[0]).toBe(0);
    expectSound(m);
  });

  it('offset + len past the page is GNTST_bad_copy_arg and copies nothing; up to the page end is fine', async () => {
    const { m, dom0, us: [u] } = await machine(1);
    const granted = u!.page(0x11);
    const ref = u!.gt.grantAccess(0, granted);
    const mine = dom0.page(0);
    const src = { ref, domid: u!.domid };
    expect(dom0.gt.copy([
      { source: { ...src, offset: 1 }, dest: { gfn: mine }, len: PAGE_SIZE },
      { source: src, dest: { gfn: mine, offset: 4095 }, len: 2 },
      { source: { ...src, offset: 4096 }, dest: { gfn: mine }, len: 0 },
      { source: { ...src, offset: 0xffff }, dest: { gfn: mine }, len: 0xffff },
    ])).toEqual([GNTST_bad_copy_arg, GNTST_bad_copy_arg, GNTST_okay, GNTST_bad_copy_arg]);
    expect(dom0.read(mine)).toEqual(new Uint8Array(PAGE_SIZE));
    expect(u!.gt.entry(ref).flags).toBe(GTF_permit_access);
    expect(pin(u!, ref)).toBe(0);
    expect(dom0.gt.copy([{ source: { ...src, offset: 4000 }, dest: { gfn: mine, offset: 4000 }, len: 96 }])).toEqual([GNTST_okay]);
    expect(dom0.read(mine, 4000, 96)).toEqual(new Uint8Array(96).fill(0x11));
    expect(dom0.read(mine, 3999, 1)[0]).toBe(0);
    expectSound(m);
  });

  it('a read-only grant is a fine source but is refused as a destination (Xen: GNTST_general_error)', async () => {
    const { m, dom0, us: [u] } = await machine(1);
    const granted = u!.page(0x33);
    const ref = u!.gt.grantAccess(0, granted, true);
    const mine = dom0.page(0x44);
    expect(dom0.gt.copy([{ source: { ref, domid: u!.domid }, dest: { gfn: mine }, len: 8 }])).toEqual([GNTST_okay]);
    expect(dom0.read(mine, 0, 8)).toEqual(new Uint8Array(8).fill(0x33));
    expect(dom0.gt.copy([{ source: { gfn: mine }, dest: { ref, domid: u!.domid }, len: 8 }])).toEqual([GNTST_general_error]);
    expect(u!.read(granted, 0, 8)).toEqual(new Uint8Array(8).fill(0x33));
    expect(u!.gt.entry(ref).flags).toBe(GTF_permit_access | GTF_readonly);
    expectSound(m);
  });

  it('checks domains, refs and frames with Xen\'s statuses', async () => {
    const { m, dom0, us: [a, b] } = await machine(2);
    const pa = a!.page();
    const forB = a!.gt.grantAccess(b!.domid, pa);
    const mine = dom0.page(0);
    const mineCopy = dom0.read(mine);
    const src = (ref: number, domid = a!.domid) => ({ ref, domid });
    expect(dom0.gt.copy([
      // A grant naming another domain.
      { source: src(forB), dest: { gfn: mine }, len: 8 },
      // Refs past the table.
      { source: src(512), dest: { gfn: mine }, len: 8 },
      // No such domain.
      { source: src(forB, 99), dest: { gfn: mine }, len: 8 },
      // Our own frame that is not RAM, or not there.
      { source: { gfn: HOLE_GFN_BASE }, dest: { gfn: mine }, len: 8 },
      { source: { gfn: mine }, dest: { gfn: 1 << 40 }, len: 8 },
      { source: { gfn: mine }, dest: { gfn: dom0.gt.frameGfn }, len: 8 },
    ])).toEqual([GNTST_general_error, GNTST_bad_gntref, GNTST_bad_domain, GNTST_bad_page, GNTST_bad_page, GNTST_bad_page]);
    expect(dom0.read(mine)).toEqual(mineCopy);
    expect(a!.gt.entry(forB).flags).toBe(GTF_permit_access);
    expectSound(m);
  });

  it('a frame named by gmfn must be DOMID_SELF\'s (GNTST_permission_denied, even with our own domid)', async () => {
    const { dom0, us: [u] } = await machine(1);
    const theirs = u!.page(0x99);
    const own = dom0.page(0x98);
    const mine = dom0.page(0);
    const op = (gfn: number, sdom: number) => StructView.alloc(GNTTAB_COPY).set('source_u', gfn).set('source_domid', sdom)
      .set('dest_u', mine).set('dest_domid', DOMID_SELF).set('len', 8).set('flags', 0).set('status', 77);
    const { rc, out } = rawOp(dom0, GNTTABOP_copy, GNTTAB_COPY, [op(theirs, u!.domid), op(own, 0)]);
    expect(rc).toBe(0);
    expect(out.map((o) => o.get('status'))).toEqual([GNTST_permission_denied, GNTST_permission_denied]);
    expect(dom0.read(mine, 0, 8)).toEqual(new Uint8Array(8));
    expect(rawOp(dom0, GNTTABOP_copy, GNTTAB_COPY, [op(own, DOMID_SELF)]).out[0]!.get('status')).toBe(GNTST_okay);
    expect(dom0.read(mine, 0, 8)).toEqual(new Uint8Array(8).fill(0x98));
  });

  it('a grant mapped by the copier stays pinned and flagged across a copy; one mapped by another domain is refused', async () => {
    const { m, dom0, us: [u, other] } = await machine(2);
    const granted = u!.page(0x21);
    const ref = u!.gt.grantAccess(0, granted, true);
    const mp = dom0.gt.map(u!.domid, ref, { readonly: true });
    const mine = dom0.page(0);
    expect(dom0.gt.copy([{ source: { ref, domid: u!.domid }, dest: { gfn: mine }, len: 16 }])).toEqual([GNTST_okay]);
    expect(pin(u!, ref)).toBe(1 << 8);
    expect(u!.gt.entry(ref).flags).toBe(GTF_permit_access | GTF_readonly | GTF_reading);
    expect(other!.gt.copy([{ source: { ref, domid: u!.domid }, dest: { gfn: other!.page(0) }, len: 16 }])).toEqual([GNTST_general_error]);
    expect(dom0.gt.unmap(mp)).toBe(GNTST_okay);
    expect(u!.gt.entry(ref).flags).toBe(GTF_permit_access | GTF_readonly);
    expectSound(m);
  });

  it('source and destination may be the same grant (a move inside the page)', async () => {
    const { m, dom0, us: [u] } = await machine(1);
    const granted = u!.page(0);
    u!.v.api.mem.write(gpaOf(granted), pattern(64, 5));
    const ref = u!.gt.grantAccess(0, granted);
    const g = { ref, domid: u!.domid };
    expect(dom0.gt.copy([{ source: g, dest: { ...g, offset: 1000 }, len: 64 }])).toEqual([GNTST_okay]);
    expect(u!.read(granted, 1000, 64)).toEqual(pattern(64, 5));
    expect(u!.gt.entry(ref).flags).toBe(GTF_permit_access);
    expect(pin(u!, ref)).toBe(0);
    expectSound(m);
  });

  it('while the bytes move, the grants show GTF_reading / GTF_writing, so a racing revoke fails', async () => {
    const { m, dom0, us: [a, b] } = await machine(2);
    const ra = a!.gt.grantAccess(0, a!.page(0x12));
    const rb = b!.gt.grantAccess(0, b!.page(0));
    // Run the granters' revokes at the moment the hypervisor copies (the copy is one copyWithin).
    const seen: Array<[number, number, boolean, boolean]> = [];
    const mem8 = m.hv.mem8 as Uint8Array & { copyWithin: Uint8Array['copyWithin'] };
    mem8.copyWithin = function (this: Uint8Array, t: number, s: number, e?: number) {
      seen.push([a!.gt.entry(ra).flags, b!.gt.entry(rb).flags, a!.gt.endAccess(ra), b!.gt.endAccess(rb)]);
      return Uint8Array.prototype.copyWithin.call(this, t, s, e);
    };
    try {
      expect(dom0.gt.copy([{ source: { ref: ra, domid: a!.domid }, dest: { ref: rb, domid: b!.domid }, len: 64 }])).toEqual([GNTST_okay]);
    } finally {
      delete (mem8 as Partial<typeof mem8>).copyWithin;
    }
    expect(seen).toEqual([[GTF_permit_access | GTF_reading, GTF_permit_access | GTF_reading | GTF_writing, false, false]]);
    expect(b!.read(b!.gt.entry(rb).frame, 0, 64)).toEqual(new Uint8Array(64).fill(0x12));
    // Afterwards both revokes succeed.
    expect([a!.gt.endAccess(ra), b!.gt.endAccess(rb)]).toEqual([true, true]);
    expectSound(m);
  });

  it('an unreadable op array is -EFAULT; entries before the unreadable one take effect', async () => {
    const { dom0 } = await machine(0);
    const x = dom0.page(0x5c);
    const y = dom0.page(0);
    const op = StructView.alloc(GNTTAB_COPY).set('source_u', x).set('source_domid', DOMID_SELF).set('dest_u', y)
      .set('dest_domid', DOMID_SELF).set('len', 4).set('status', 77);
    // Two entries straddling the end of RAM: the first is readable, the second runs into the hole.
    const at = 256 * PAGE_SIZE - GNTTAB_COPY.size;
    dom0.v.api.mem.write(at, op.raw());
    expect(dom0.v.call(20, GNTTABOP_copy, at, 2)).toBe(-EFAULT);
    expect(dom0.read(y, 0, 4)).toEqual(new Uint8Array(4).fill(0x5c));
    expect(dom0.v.api.mem.readU16(at + GNTTAB_COPY.fields.status.offset)).toBe(GNTST_okay);
    expect(dom0.v.call(20, GNTTABOP_copy, HOLE_GFN_BASE * PAGE_SIZE, 1)).toBe(-EFAULT);
  });

  it('len 0 with valid sides is a successful no-op', async () => {
    const { dom0, us: [u] } = await machine(1);
    const ref = u!.gt.grantAccess(0, u!.page(1));
    const mine = dom0.page(2);
    expect(dom0.gt.copy([{ source: { ref, domid: u!.domid }, dest: { gfn: mine }, len: 0 }])).toEqual([GNTST_okay]);
    expect(dom0.read(mine, 0, 1)[0]).toBe(2);
    expect(u!.gt.entry(ref).flags & (GTF_reading | GTF_writing)).toBe(0);
  });
});
