import { describe, expect, it } from 'vitest';
import {
  GNTMAP_contains_pte, GNTMAP_device_map, GNTMAP_host_map, GNTMAP_readonly, GNTST_bad_domain, GNTST_bad_gntref,
  GNTST_bad_handle, GNTST_bad_page, GNTST_general_error, GNTST_no_device_space, GNTST_okay, GNTTAB_MAP_GRANT_REF,
  GNTTAB_UNMAP_GRANT_REF, GNTTABOP_map_grant_ref, GNTTABOP_unmap_grant_ref, GTF_accept_transfer, GTF_permit_access,
  GTF_readonly, GTF_reading, GTF_writing,
} from '../../../shared/abi/grant-table.ts';
import { StructView } from '../../../shared/layout.ts';
import { DOMID_SELF } from '../../../shared/types.ts';
import { GuestFault } from '../../../shared/guest/api.ts';
import { D } from '../../../hypervisor/state.ts';
import { acct, expectSound, gpaOf, HOLE_GFN_BASE, machine, owner, pin, rawOp, refs, whileRewriting, writeEntry } from './helpers.ts';
import type { Dom } from './helpers.ts';

function mapOp(host: number, flags: number, ref: number, dom: number): StructView<typeof GNTTAB_MAP_GRANT_REF.fields> {
  return StructView.alloc(GNTTAB_MAP_GRANT_REF).set('host_addr', host).set('flags', flags).set('ref', ref).set('dom', dom)
    .set('handle', 0xdeadbeef).set('status', 77);
}

function unmapOp(host: number, handle: number, dev = 0): StructView<typeof GNTTAB_UNMAP_GRANT_REF.fields> {
  return StructView.alloc(GNTTAB_UNMAP_GRANT_REF).set('host_addr', host).set('dev_bus_addr', dev).set('handle', handle).set('status', 77);
}

/** Map with raw flags through the hypercall; returns status and handle. */
function rawMap(d: Dom, gfn: number, flags: number, ref: number, dom: number): { status: number; handle: number } {
  const { rc, out } = rawOp(d, GNTTABOP_map_grant_ref, GNTTAB_MAP_GRANT_REF, [mapOp(gpaOf(gfn), flags, ref, dom)]);
  expect(rc).toBe(0);
  return { status: out[0]!.get('status'), handle: out[0]!.get('handle') };
}

function rawUnmap(d: Dom, gfn: number, handle: number, dev = 0): number {
  const { rc, out } = rawOp(d, GNTTABOP_unmap_grant_ref, GNTTAB_UNMAP_GRANT_REF, [unmapOp(gpaOf(gfn), handle, dev)]);
  expect(rc).toBe(0);
  return out[0]!.get('status');
}

/** Nothing of a failed map stayed behind: no pin, no flags, no page reference, no mapping, no handle. */
function expectNoTrace(mapper: Dom, granter: Dom, ref: number, page: number, hostGfn: number, flagsBefore: number): void {
  expect(granter.gt.entry(ref).flags).toBe(flagsBefore);
  expect(pin(granter, ref)).toBe(0);
  expect(refs(mapper.m, granter.mfn(page))).toBe(1);
  expect(mapper.mfn(hostGfn)).toBe(-1);
  expect(acct(mapper.m, mapper.slot).maptrack).toBe(0);
  expectSound(mapper.m);
}

describe('GNTTABOP_map_grant_ref / unmap_grant_ref', () => {
  it('maps a writable grant: shared bytes both ways, GTF_reading|GTF_writing, a page reference, a handle', async () => {
    const { m, dom0, us: [u] } = await machine(1);
    const page = u!.page(0x5a);
    const ref = u!.gt.grantAccess(0, page);
    const mfn = u!.mfn(page);
    const mp = dom0.gt.map(u!.domid, ref);
    expect(mp.status).toBe(GNTST_okay);
    expect(dom0.mfn(mp.gfn)).toBe(mfn); // the same frame, not a copy
    expect(u!.gt.entry(ref).flags).toBe(GTF_permit_access | GTF_reading | GTF_writing);
    expect(pin(u!, ref)).toBe(1); // one host writable pin
    expect(refs(m, mfn)).toBe(2);
    expect(acct(m, dom0.slot).maptrack).toBe(1);
    expect(dom0.read(mp.gfn, 100, 2)).toEqual(new Uint8Array([0x5a, 0x5a]));
    dom0.v.api.mem.writeU32(mp.gpa + 8, 0x01020304);
    expect(u!.v.api.mem.readU32(gpaOf(page) + 8)).toBe(0x01020304);
    expectSound(m);

    expect(dom0.gt.unmap(mp)).toBe(GNTST_okay);
    expect(u!.gt.entry(ref).flags).toBe(GTF_permit_access);
    expect(pin(u!, ref)).toBe(0);
    expect(refs(m, mfn)).toBe(1);
    expect(dom0.mfn(mp.gfn)).toBe(-1);
    expect(() => dom0.v.api.mem.readU8(mp.gpa)).toThrow(GuestFault);
    expect(acct(m, dom0.slot).maptrack).toBe(0);
    expect(u!.gt.endAccess(ref)).toBe(true);
    expectSound(m);
  });

  it('writes back handle, status and dev_bus_addr 0, leaving the other fields as they were', async () => {
    const { dom0, us: [u] } = await machine(1);
    const ref = u!.gt.grantAccess(0, u!.page());
    const { rc, out } = rawOp(dom0, GNTTABOP_map_grant_ref, GNTTAB_MAP_GRANT_REF,
      [mapOp(gpaOf(HOLE_GFN_BASE), GNTMAP_host_map, ref, u!.domid).set('dev_bus_addr', 0x1234)]);
    expect(rc).toBe(0);
    const o = out[0]!;
    expect(o.get('status')).toBe(GNTST_okay);
    expect(o.get('handle')).not.toBe(0xdeadbeef);
    expect(o.get('dev_bus_addr')).toBe(0);
    expect(o.get('host_addr')).toBe(gpaOf(HOLE_GFN_BASE));
    expect(o.get('ref')).toBe(ref);
    expect(o.get('dom')).toBe(u!.domid);
  });

  it('maps read-only: GTF_reading only, and a write through the mapping faults', async () => {
    const { m, dom0, us: [u] } = await machine(1);
    const page = u!.page(7);
    const ref = u!.gt.grantAccess(0, page);
    const mp = dom0.gt.map(u!.domid, ref, { readonly: true });
    expect(mp.status).toBe(GNTST_okay);
    expect(u!.gt.entry(ref).flags).toBe(GTF_permit_access | GTF_reading);
    expect(pin(u!, ref)).toBe(1 << 8); // one host read-only pin
    expect(dom0.v.api.mem.readU8(mp.gpa + 5)).toBe(7);
    expect(() => dom0.v.api.mem.writeU8(mp.gpa + 5, 9)).toThrow(GuestFault);
    expect(() => dom0.v.api.mem.write(mp.gpa, new Uint8Array(4))).toThrow(GuestFault);
    expect(u!.read(page, 5, 1)[0]).toBe(7);
    expect(dom0.gt.unmap(mp)).toBe(GNTST_okay);
    expect(u!.gt.entry(ref).flags).toBe(GTF_permit_access);
    expectSound(m);
  });

  it('a read-only grant maps read-only, but a writable map of it is refused (Xen: GNTST_general_error)', async () => {
    const { dom0, us: [u] } = await machine(1);
    const page = u!.page();
    const ref = u!.gt.grantAccess(0, page, true);
    const rw = dom0.gt.map(u!.domid, ref);
    expect(rw.status).toBe(GNTST_general_error);
    expectNoTrace(dom0, u!, ref, page, rw.gfn, GTF_permit_access | GTF_readonly);
    const ro = dom0.gt.map(u!.domid, ref, { readonly: true });
    expect(ro.status).toBe(GNTST_okay);
    expect(u!.gt.entry(ref).flags).toBe(GTF_permit_access | GTF_readonly | GTF_reading);
    // Even with a read pin held, a writable map of a read-only grant stays refused.
    expect(dom0.gt.map(u!.domid, ref).status).toBe(GNTST_general_error);
    expect(pin(u!, ref)).toBe(1 << 8);
    expect(dom0.gt.unmap(ro)).toBe(GNTST_okay);
  });

  it('a grant meant for another domain cannot be mapped (Xen: GNTST_general_error) and leaves no trace', async () => {
    const { m, dom0, us: [a, b] } = await machine(2);
    const page = a!.page();
    const ref = a!.gt.grantAccess(b!.domid, page);
    const r = dom0.gt.map(a!.domid, ref);
    expect(r.status).toBe(GNTST_general_error);
    expectNoTrace(dom0, a!, ref, page, r.gfn, GTF_permit_access);
    // The domain it names can.
    const ok = b!.gt.map(a!.domid, ref);
    expect(ok.status).toBe(GNTST_okay);
    // While b holds the pin, nobody else can map the entry, whatever it says.
    expect(dom0.gt.map(a!.domid, ref).status).toBe(GNTST_general_error);
    expect(b!.gt.unmap(ok)).toBe(GNTST_okay);
    expectSound(m);
  });

  it('refuses entries that are not permit_access: invalid, accept_transfer', async () => {
    const { dom0, us: [u] } = await machine(1);
    const page = u!.page();
    const ref = u!.gt.grantAccess(0, page);
    writeEntry(u!, ref, 0, 0, page);
    expect(dom0.gt.map(u!.domid, ref).status).toBe(GNTST_general_error);
    writeEntry(u!, ref, GTF_accept_transfer, 0, page);
    expect(dom0.gt.map(u!.domid, ref).status).toBe(GNTST_general_error);
    expect(u!.gt.entry(ref).flags).toBe(GTF_accept_transfer);
    expect(pin(u!, ref)).toBe(0);
  });

  it('checks refs, flags and domains with Xen\'s statuses', async () => {
    const { m, dom0, us: [u] } = await machine(1);
    const page = u!.page();
    const ref = u!.gt.grantAccess(0, page);
    const hole = HOLE_GFN_BASE;
    // Beyond the table (one frame: 512 entries).
    expect(rawMap(dom0, hole, GNTMAP_host_map, 512, u!.domid).status).toBe(GNTST_bad_gntref);
    expect(rawMap(dom0, hole, GNTMAP_host_map, 0xffffffff, u!.domid).status).toBe(GNTST_bad_gntref);
    // Neither host_map nor device_map.
    expect(rawMap(dom0, hole, 0, ref, u!.domid).status).toBe(GNTST_bad_gntref);
    expect(rawMap(dom0, hole, GNTMAP_readonly, ref, u!.domid).status).toBe(GNTST_bad_gntref);
    // Auto-translated mappers: no device or PTE mappings.
    expect(rawMap(dom0, hole, GNTMAP_host_map | GNTMAP_device_map, ref, u!.domid).status).toBe(GNTST_general_error);
    expect(rawMap(dom0, hole, GNTMAP_device_map, ref, u!.domid).status).toBe(GNTST_general_error);
    expect(rawMap(dom0, hole, GNTMAP_host_map | GNTMAP_contains_pte, ref, u!.domid).status).toBe(GNTST_general_error);
    // Domains that are not there (DOMID_SELF is not accepted by map, as in Xen).
    expect(rawMap(dom0, hole, GNTMAP_host_map, ref, 77).status).toBe(GNTST_bad_domain);
    expect(rawMap(dom0, hole, GNTMAP_host_map, ref, DOMID_SELF).status).toBe(GNTST_bad_domain);
    expect(rawMap(dom0, hole, GNTMAP_host_map, ref, 0x7ff2).status).toBe(GNTST_bad_domain);
    expectNoTrace(dom0, u!, ref, page, hole, GTF_permit_access);
    // A table with no frames at all (a domain that never set one up).
    const raw = await m.domU();
    expect(acct(m, raw.slot).grantFrames).toBe(0);
    expect(rawMap(dom0, hole, GNTMAP_host_map, 8, raw.domid).status).toBe(GNTST_bad_gntref);
  });

  it('GNTST_bad_page when the granted gfn is not the granter\'s own RAM; the flags are restored', async () => {
    const { m, dom0, us: [u] } = await machine(1);
    const ref = u!.gt.grantAccess(0, HOLE_GFN_BASE); // unpopulated
    expect(dom0.gt.map(u!.domid, ref).status).toBe(GNTST_bad_page);
    expect(u!.gt.entry(ref).flags).toBe(GTF_permit_access);
    writeEntry(u!, ref, GTF_permit_access, 0, 1 << 30); // beyond the physmap
    expect(dom0.gt.map(u!.domid, ref).status).toBe(GNTST_bad_page);
    writeEntry(u!, ref, GTF_permit_access, 0, u!.gt.frameGfn); // its own grant table frame
    expect(dom0.gt.map(u!.domid, ref).status).toBe(GNTST_bad_page);
    // A page it has mapped from someone else cannot be granted on.
    const d0page = dom0.page();
    const r0 = dom0.gt.grantAccess(u!.domid, d0page);
    const mine = u!.gt.map(0, r0);
    expect(mine.status).toBe(GNTST_okay);
    writeEntry(u!, ref, GTF_permit_access, 0, mine.gfn);
    expect(dom0.gt.map(u!.domid, ref).status).toBe(GNTST_bad_page);
    expect(u!.gt.entry(ref).flags).toBe(GTF_permit_access);
    expect(pin(u!, ref)).toBe(0);
    expect(u!.gt.unmap(mine)).toBe(GNTST_okay);
    expectSound(m);
  });

  it('GNTST_general_error when host_addr is out of range or already populated; everything is undone', async () => {
    const { m, dom0, us: [u] } = await machine(1);
    const page = u!.page();
    const ref = u!.gt.grantAccess(0, page);
    const busy = dom0.page(3);
    expect(dom0.gt.map(u!.domid, ref, { gfn: busy }).status).toBe(GNTST_general_error);
    expect(dom0.read(busy, 0, 1)[0]).toBe(3); // RAM untouched
    expectNoTrace(dom0, u!, ref, page, HOLE_GFN_BASE, GTF_permit_access);
    expect(dom0.gt.map(u!.domid, ref, { gfn: m.hv.cfg.p2mEntries }).status).toBe(GNTST_general_error);
    expectNoTrace(dom0, u!, ref, page, HOLE_GFN_BASE, GTF_permit_access);
    // A second mapping of the same grant over the first's gfn fails and leaves the first intact.
    const first = dom0.gt.map(u!.domid, ref);
    expect(dom0.gt.map(u!.domid, ref, { gfn: first.gfn }).status).toBe(GNTST_general_error);
    expect(pin(u!, ref)).toBe(1);
    expect(u!.gt.entry(ref).flags).toBe(GTF_permit_access | GTF_reading | GTF_writing);
    expect(dom0.gt.unmap(first)).toBe(GNTST_okay);
    expectSound(m);
  });

  it('two mappings of one grant share the pin; the flags clear only when the last goes', async () => {
    const { m, dom0, us: [u] } = await machine(1);
    const page = u!.page();
    const ref = u!.gt.grantAccess(0, page);
    const rw = dom0.gt.map(u!.domid, ref);
    const ro = dom0.gt.map(u!.domid, ref, { readonly: true });
    expect([rw.status, ro.status]).toEqual([GNTST_okay, GNTST_okay]);
    expect(rw.handle).not.toBe(ro.handle);
    expect(pin(u!, ref)).toBe(1 + (1 << 8));
    expect(refs(m, u!.mfn(page))).toBe(3);
    expect(dom0.gt.unmap(rw)).toBe(GNTST_okay);
    // No writer left: GTF_writing clears, GTF_reading stays for the read-only mapping.
    expect(u!.gt.entry(ref).flags).toBe(GTF_permit_access | GTF_reading);
    expect(u!.gt.endAccess(ref)).toBe(false);
    expect(dom0.gt.unmap(ro)).toBe(GNTST_okay);
    expect(u!.gt.entry(ref).flags).toBe(GTF_permit_access);
    expect(refs(m, u!.mfn(page))).toBe(1);
    expectSound(m);
  });

  it('unmap: unknown, free and already-unmapped handles are GNTST_bad_handle', async () => {
    const { m, dom0, us: [u] } = await machine(1);
    const ref = u!.gt.grantAccess(0, u!.page());
    // No maptrack frame yet: every handle is out of range.
    expect(rawUnmap(dom0, HOLE_GFN_BASE, 0)).toBe(GNTST_bad_handle);
    const mp = dom0.gt.map(u!.domid, ref);
    expect(rawUnmap(dom0, mp.gfn, mp.handle + 1)).toBe(GNTST_bad_handle); // allocated frame, free entry
    expect(rawUnmap(dom0, mp.gfn, 256)).toBe(GNTST_bad_handle); // past the one maptrack frame
    expect(rawUnmap(dom0, mp.gfn, 0xffffffff)).toBe(GNTST_bad_handle);
    expect(rawUnmap(dom0, mp.gfn, mp.handle)).toBe(GNTST_okay);
    expect(rawUnmap(dom0, mp.gfn, mp.handle)).toBe(GNTST_bad_handle); // twice
    expect(pin(u!, ref)).toBe(0);
    expect(u!.gt.entry(ref).flags).toBe(GTF_permit_access);
    // Handles are per mapper: u cannot unmap Dom0's mapping.
    const again = dom0.gt.map(u!.domid, ref);
    expect(rawUnmap(u!, again.gfn, again.handle)).toBe(GNTST_bad_handle);
    expect(pin(u!, ref)).toBe(1);
    expect(dom0.gt.unmap(again)).toBe(GNTST_okay);
    expectSound(m);
  });

  it('unmap with the wrong host_addr or a dev_bus_addr fails and keeps the mapping; host_addr 0 is a no-op (Xen)', async () => {
    const { m, dom0, us: [u] } = await machine(1);
    const ref = u!.gt.grantAccess(0, u!.page());
    const mp = dom0.gt.map(u!.domid, ref);
    expect(rawUnmap(dom0, mp.gfn + 1, mp.handle)).toBe(GNTST_general_error);
    expect(rawUnmap(dom0, mp.gfn, mp.handle, 0x1000)).toBe(GNTST_general_error);
    expect(rawUnmap(dom0, 0, mp.handle)).toBe(GNTST_okay);
    expect(pin(u!, ref)).toBe(1);
    expect(dom0.mfn(mp.gfn)).toBe(u!.mfn(u!.gt.entry(ref).frame));
    expect(rawUnmap(dom0, mp.gfn, mp.handle)).toBe(GNTST_okay);
    expect(pin(u!, ref)).toBe(0);
    expectSound(m);
  });

  it('the granter cannot revoke an entry while it is mapped', async () => {
    const { m, dom0, us: [u] } = await machine(1);
    const ref = u!.gt.grantAccess(0, u!.page());
    const mp = dom0.gt.map(u!.domid, ref, { readonly: true });
    expect(u!.gt.endAccess(ref)).toBe(false);
    expect(u!.gt.entry(ref).flags).toBe(GTF_permit_access | GTF_reading);
    expect(dom0.gt.unmap(mp)).toBe(GNTST_okay);
    expect(u!.gt.endAccess(ref)).toBe(true);
    expect(u!.gt.entry(ref).flags).toBe(0);
    // Revoked: no new mapping.
    expect(dom0.gt.map(u!.domid, ref).status).toBe(GNTST_general_error);
    expectSound(m);
  });

  it('a frontend rewriting its mapped entry cannot redirect or widen the mapping', async () => {
    const { m, dom0, us: [u, other] } = await machine(2);
    const p1 = u!.page(0x11);
    const p2 = u!.page(0x22);
    const ref = u!.gt.grantAccess(0, p1, true);
    const mp = dom0.gt.map(u!.domid, ref, { readonly: true });
    expect(mp.status).toBe(GNTST_okay);
    // The frontend rewrites frame, domid and drops readonly, with plain stores, while mapped.
    writeEntry(u!, ref, GTF_permit_access | GTF_reading, other!.domid, p2);
    // The mapping still shows the page granted at map time, read-only.
    expect(dom0.mfn(mp.gfn)).toBe(u!.mfn(p1));
    expect(dom0.read(mp.gfn, 0, 1)[0]).toBe(0x11);
    expect(() => dom0.v.api.mem.writeU8(mp.gpa, 0)).toThrow(GuestFault);
    // The entry is pinned for Dom0: the domain it now names cannot map it.
    expect(other!.gt.map(u!.domid, ref).status).toBe(GNTST_general_error);
    // Dom0 maps again while pinned: it gets the pinned frame, not the rewritten one.
    const again = dom0.gt.map(u!.domid, ref, { readonly: true });
    expect(again.status).toBe(GNTST_okay);
    expect(dom0.mfn(again.gfn)).toBe(u!.mfn(p1));
    expect(dom0.gt.unmap(mp)).toBe(GNTST_okay);
    expect(dom0.gt.unmap(again)).toBe(GNTST_okay);
    // Unpinned: the hypervisor cleared only its own bits and kept the frontend's word.
    const e = u!.gt.entry(ref);
    expect(e).toEqual({ flags: GTF_permit_access, domid: other!.domid, frame: p2 });
    expect(pin(u!, ref)).toBe(0);
    // Now the entry is read afresh: the domain it names maps p2.
    const fresh = other!.gt.map(u!.domid, ref);
    expect(fresh.status).toBe(GNTST_okay);
    expect(other!.mfn(fresh.gfn)).toBe(u!.mfn(p2));
    expect(other!.gt.unmap(fresh)).toBe(GNTST_okay);
    expectSound(m);
  });

  it('gives up after 5 compare-and-swaps against a granter rewriting the entry, leaving no pin', async () => {
    const { m, dom0, us: [u] } = await machine(1);
    const page = u!.page();
    const ref = u!.gt.grantAccess(0, page);
    const { result, tries } = whileRewriting(u!, ref, () => dom0.gt.map(u!.domid, ref));
    expect(result.status).toBe(GNTST_general_error);
    expect(tries).toBe(5);
    expect(u!.gt.entry(ref).flags & (GTF_reading | GTF_writing)).toBe(0);
    expectNoTrace(dom0, u!, ref, page, result.gfn, u!.gt.entry(ref).flags);
    // A granter that stops rewriting can be mapped again.
    const ok = dom0.gt.map(u!.domid, ref);
    expect(ok.status).toBe(GNTST_okay);
    expect(dom0.gt.unmap(ok)).toBe(GNTST_okay);
    expectSound(m);
  });

  it('a granter can grant itself (loopback mapping)', async () => {
    const { m, us: [u] } = await machine(1);
    const page = u!.page(0x42);
    const ref = u!.gt.grantAccess(u!.domid, page);
    const mp = u!.gt.map(u!.domid, ref);
    expect(mp.status).toBe(GNTST_okay);
    expect(u!.mfn(mp.gfn)).toBe(u!.mfn(page));
    expect(u!.gt.unmap(mp)).toBe(GNTST_okay);
    expectSound(m);
  });

  it('grows the maptrack a frame at a time and reuses handles', async () => {
    const { m, dom0, us: [u] } = await machine(1);
    const page = u!.page();
    // 300 grants of one page (one grant could not take 300 pins: see the overflow test).
    const grants = Array.from({ length: 300 }, () => u!.gt.grantAccess(0, page, true));
    const maps = dom0.gt.mapBatch(grants.map((ref, i) => ({ domid: u!.domid, ref, readonly: true, gfn: HOLE_GFN_BASE + i })));
    expect(maps.every((x) => x.status === GNTST_okay)).toBe(true);
    expect(new Set(maps.map((x) => x.handle)).size).toBe(300);
    expect(Atomics.load(m.hv.dom, m.hv.d(dom0.slot, D.nr_maptrack_frames))).toBe(2);
    expect(acct(m, dom0.slot).maptrack).toBe(300);
    expect(refs(m, u!.mfn(page))).toBe(301);
    expect(dom0.gt.unmapBatch(maps)).toEqual(maps.map(() => GNTST_okay));
    expect(refs(m, u!.mfn(page))).toBe(1);
    const again = dom0.gt.map(u!.domid, grants[0]!, { readonly: true });
    expect(maps.map((x) => x.handle)).toContain(again.handle);
    expect(Atomics.load(m.hv.dom, m.hv.d(dom0.slot, D.nr_maptrack_frames))).toBe(2);
    expect(dom0.gt.unmap(again)).toBe(GNTST_okay);
    expectSound(m);
  });

  it('GNTST_no_device_space once max_maptrack_frames is used up', async () => {
    const { m, dom0, us: [u] } = await machine(1);
    // As createdomain's max_maptrack_frames = 1 would set it.
    Atomics.store(m.hv.dom, m.hv.d(dom0.slot, D.max_maptrack_frames), 1);
    const page = u!.page();
    const grants = Array.from({ length: 257 }, () => u!.gt.grantAccess(0, page, true));
    const got = dom0.gt.mapBatch(grants.map((ref, i) => ({ domid: u!.domid, ref, readonly: true, gfn: HOLE_GFN_BASE + i })));
    expect(got.slice(0, 256).every((x) => x.status === GNTST_okay)).toBe(true);
    expect(got[256]!.status).toBe(GNTST_no_device_space);
    expect(dom0.mfn(HOLE_GFN_BASE + 256)).toBe(-1);
    expect(pin(u!, grants[256]!)).toBe(0);
    expect(u!.gt.entry(grants[256]!).flags).toBe(GTF_permit_access | GTF_readonly);
    expect(dom0.gt.unmapBatch(got.slice(0, 256))).toEqual(new Array(256).fill(GNTST_okay));
    expect(grants.every((r) => u!.gt.entry(r).flags === (GTF_permit_access | GTF_readonly))).toBe(true);
    expectSound(m);
  });

  it('refuses a pin that would overflow its 8-bit counter (Xen\'s 0x80808080 check)', async () => {
    const { m, dom0, us: [u] } = await machine(1);
    const ref = u!.gt.grantAccess(0, u!.page());
    const reqs = Array.from({ length: 129 }, (_, i) => ({ domid: u!.domid, ref, gfn: HOLE_GFN_BASE + i }));
    const got = dom0.gt.mapBatch(reqs);
    expect(got.slice(0, 128).every((x) => x.status === GNTST_okay)).toBe(true);
    expect(got[128]!.status).toBe(GNTST_general_error);
    expect(pin(u!, ref)).toBe(128);
    expect(dom0.gt.unmapBatch(got.slice(0, 128)).every((s) => s === GNTST_okay)).toBe(true);
    expect(pin(u!, ref)).toBe(0);
    expectSound(m);
  });

  it('keeps page ownership with the granter and counts nothing against the mapper', async () => {
    const { m, dom0, us: [u] } = await machine(1);
    const page = u!.page();
    const before = [acct(m, dom0.slot).tot, acct(m, u!.slot).tot];
    const mp = dom0.gt.map(u!.domid, u!.gt.grantAccess(0, page));
    expect(owner(m, u!.mfn(page))).toBe(u!.domid);
    expect([acct(m, dom0.slot).tot, acct(m, u!.slot).tot]).toEqual(before);
    expect(dom0.gt.unmap(mp)).toBe(GNTST_okay);
  });

  it('a mapped page the granter gives back stays allocated until unmapped', async () => {
    const { m, dom0, us: [u] } = await machine(1);
    const page = u!.page(0x66);
    const mfn = u!.mfn(page);
    const ref = u!.gt.grantAccess(0, page);
    const mp = dom0.gt.map(u!.domid, ref);
    const tot = acct(m, u!.slot).tot;
    expect(u!.v.xen.decreaseReservation([page])).toBe(1);
    // Gone from the granter's physmap but still its frame, still counted, still mapped by Dom0.
    expect(u!.mfn(page)).toBe(-1);
    expect(owner(m, mfn)).toBe(u!.domid);
    expect(acct(m, u!.slot).tot).toBe(tot);
    expect(dom0.read(mp.gfn, 0, 1)[0]).toBe(0x66);
    expectSound(m);
    const free = m.freePages();
    expect(dom0.gt.unmap(mp)).toBe(GNTST_okay);
    expect(m.freePages()).toBe(free + 1);
    expect(acct(m, u!.slot).tot).toBe(tot - 1);
    expectSound(m);
  });

  it('processes a batch in order, each entry with its own status', async () => {
    const { m, dom0, us: [u] } = await machine(1);
    const ref = u!.gt.grantAccess(0, u!.page());
    const got = dom0.gt.mapBatch([
      { domid: u!.domid, ref },
      { domid: u!.domid, ref: 9999 },
      { domid: 99, ref },
      { domid: u!.domid, ref, readonly: true },
    ]);
    expect(got.map((x) => x.status)).toEqual([GNTST_okay, GNTST_bad_gntref, GNTST_bad_domain, GNTST_okay]);
    expect(dom0.gt.unmapBatch([got[0]!, { handle: 4242, gfn: 1 }, got[3]!])).toEqual([GNTST_okay, GNTST_bad_handle, GNTST_okay]);
    expect(pin(u!, ref)).toBe(0);
    expectSound(m);
  });

  it('the host_addr offset inside the page is ignored, as Xen takes its gfn', async () => {
    const { dom0, us: [u] } = await machine(1);
    const ref = u!.gt.grantAccess(0, u!.page(0x31));
    // gfn 0 holds the kernel image: taken.
    expect(rawMap(dom0, 0, GNTMAP_host_map, ref, u!.domid).status).toBe(GNTST_general_error);
    const { out } = rawOp(dom0, GNTTABOP_map_grant_ref, GNTTAB_MAP_GRANT_REF, [mapOp(gpaOf(HOLE_GFN_BASE) + 123, GNTMAP_host_map, ref, u!.domid)]);
    expect(out[0]!.get('status')).toBe(GNTST_okay);
    expect(dom0.read(HOLE_GFN_BASE, 0, 1)[0]).toBe(0x31);
    expect(rawUnmap(dom0, HOLE_GFN_BASE, out[0]!.get('handle'))).toBe(GNTST_okay);
  });
});
