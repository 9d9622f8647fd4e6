import { describe, expect, it } from 'vitest';
import {
  GNTMAP_host_map, GNTST_bad_domain, GNTST_bad_virt_addr, GNTST_general_error, GNTST_okay, GNTST_permission_denied,
  GNTTAB_MAP_GRANT_REF, GNTTAB_QUERY_SIZE, GNTTAB_SETUP_TABLE, GNTTABOP_copy, GNTTABOP_dump_table, GNTTABOP_get_status_frames,
  GNTTABOP_get_version, GNTTABOP_map_grant_ref, GNTTABOP_query_size, GNTTABOP_set_version, GNTTABOP_setup_table,
  GTF_permit_access,
} from '../../../shared/abi/grant-table.ts';
import { XEN_ADD_TO_PHYSMAP } from '../../../shared/abi/memory.ts';
import { EBUSY, EFAULT, EINVAL, ENOSYS } from '../../../shared/errno.ts';
import { XENMAPSPACE_grant_table, XENMEM_add_to_physmap, __HYPERVISOR_grant_table_op, __HYPERVISOR_memory_op } from '../../../shared/hypercall.ts';
import { StructView } from '../../../shared/layout.ts';
import { DOMID_SELF, PAGE_SIZE } from '../../../shared/types.ts';
import { GuestFault } from '../../../shared/guest/api.ts';
import { INVALID_GFN } from '../../../hypervisor/gnttab/setup.ts';
import { PGT_grant_table } from '../../../hypervisor/state.ts';
import type { TestVcpu } from '../../helpers/machine.ts';
import { TestMachine } from '../../helpers/machine.ts';
import { acct, expectSound, gpaOf, HOLE_GFN_BASE, machine, owner, xenHeap } from './helpers.ts';

/** Scratch addresses for raw calls on a domain that has no GrantTable: RAM gfns 200+ (untouched by any library). */
const ARG = 200 * PAGE_SIZE;
const LIST = 201 * PAGE_SIZE;

function query(v: TestVcpu, dom: number, at = ARG): { rc: number; q: StructView<typeof GNTTAB_QUERY_SIZE.fields> } {
  v.api.mem.write(at, StructView.alloc(GNTTAB_QUERY_SIZE).set('dom', dom).set('status', 77).raw());
  const rc = v.call(__HYPERVISOR_grant_table_op, GNTTABOP_query_size, at, 1);
  return { rc, q: new StructView(GNTTAB_QUERY_SIZE, v.api.mem.read(at, GNTTAB_QUERY_SIZE.size)) };
}

function setup(v: TestVcpu, dom: number, nr: number, list = LIST): { rc: number; status: number; frames: bigint[] } {
  v.api.mem.write(ARG, StructView.alloc(GNTTAB_SETUP_TABLE).set('dom', dom).set('nr_frames', nr).set('frame_list', list).set('status', 77).raw());
  const rc = v.call(__HYPERVISOR_grant_table_op, GNTTABOP_setup_table, ARG, 1);
  const status = new StructView(GNTTAB_SETUP_TABLE, v.api.mem.read(ARG, GNTTAB_SETUP_TABLE.size)).get('status');
  const frames: bigint[] = [];
  for (let i = 0; i < nr && status === GNTST_okay; i++) frames.push(v.api.mem.readU64(list + i * 8));
  return { rc, status, frames };
}

function addToPhysmap(v: TestVcpu, idx: number, gpfn: number, domid: number = DOMID_SELF): number {
  v.api.mem.write(ARG, StructView.alloc(XEN_ADD_TO_PHYSMAP).set('domid', domid).set('space', XENMAPSPACE_grant_table).set('idx', idx).set('gpfn', gpfn).raw());
  return v.call(__HYPERVISOR_memory_op, XENMEM_add_to_physmap, ARG);
}

describe('GNTTABOP_query_size and GNTTABOP_setup_table', () => {
  it('a new domain has no grant frames until it asks; the maximum is Xen\'s default 64', async () => {
    const m = new TestMachine();
    const u = await m.domU();
    const { rc, q } = query(u.v, DOMID_SELF);
    expect(rc).toBe(0);
    expect([q.get('status'), q.get('nr_frames'), q.get('max_nr_frames')]).toEqual([GNTST_okay, 0, 64]);
    expect(acct(m, u.slot).xenheap).toBe(0);
  });

  it('setup_table grows the table; frames count in xenheap_pages, not tot_pages; unmapped frames read INVALID_GFN', async () => {
    const m = new TestMachine();
    const u = await m.domU();
    const tot = acct(m, u.slot).tot;
    const heap = xenHeap(m);
    const r = setup(u.v, DOMID_SELF, 4);
    expect([r.rc, r.status]).toEqual([0, GNTST_okay]);
    expect(r.frames).toEqual([INVALID_GFN, INVALID_GFN, INVALID_GFN, INVALID_GFN]);
    expect(acct(m, u.slot)).toMatchObject({ tot, xenheap: 4, grantFrames: 4 });
    // 4 grant frames shared with the domain + 8 active-entry frames of the hypervisor's own.
    expect(xenHeap(m)).toBe(heap + 12);
    expect(query(u.v, DOMID_SELF).q.get('nr_frames')).toBe(4);
    for (let i = 0; i < 4; i++) {
      const mfn = m.hv.grantFrames[u.slot * 64 + i]!;
      expect(owner(m, mfn)).toBe(u.domid);
      expect(m.hv.ftType[mfn]).toBe(PGT_grant_table);
    }
    expectSound(m);
    // Smaller requests do not shrink it; mapped frames report their gfn.
    expect(addToPhysmap(u.v, 1, HOLE_GFN_BASE)).toBe(0);
    const again = setup(u.v, DOMID_SELF, 2);
    expect(again.status).toBe(GNTST_okay);
    expect(again.frames).toEqual([INVALID_GFN, BigInt(HOLE_GFN_BASE)]);
    expect(acct(m, u.slot).grantFrames).toBe(4);
  });

  it('setup_table beyond max_grant_frames is GNTST_general_error and changes nothing', async () => {
    const m = new TestMachine();
    const u = await m.domU();
    const free = m.freePages();
    const r = setup(u.v, DOMID_SELF, 65);
    expect([r.rc, r.status]).toEqual([0, GNTST_general_error]);
    expect(m.freePages()).toBe(free);
    expect(acct(m, u.slot).grantFrames).toBe(0);
    expect(setup(u.v, DOMID_SELF, 64).status).toBe(GNTST_okay);
    expect(acct(m, u.slot)).toMatchObject({ grantFrames: 64, xenheap: 64 });
    expectSound(m);
  });

  it('setup_table with an unwritable frame_list: GNTST_bad_virt_addr (the table has grown)', async () => {
    const m = new TestMachine();
    const u = await m.domU();
    const r = setup(u.v, DOMID_SELF, 2, 4000 * PAGE_SIZE);
    expect([r.rc, r.status]).toEqual([0, GNTST_bad_virt_addr]);
    expect(acct(m, u.slot).grantFrames).toBe(2);
    // nr_frames 0: nothing to write, okay.
    expect(setup(u.v, DOMID_SELF, 0, 4000 * PAGE_SIZE).status).toBe(GNTST_okay);
  });

  it('another domain\'s table: Dom0 may, a DomU may not (XSM_TARGET); unknown domains are GNTST_bad_domain', async () => {
    const m = new TestMachine();
    const a = await m.domU();
    const b = await m.domU();
    expect(query(a.v, b.domid).q.get('status')).toBe(GNTST_permission_denied);
    expect(setup(a.v, b.domid, 1).status).toBe(GNTST_permission_denied);
    expect(acct(m, b.slot).grantFrames).toBe(0);
    expect(query(m.dom0, b.domid, 250 * PAGE_SIZE).q.get('max_nr_frames')).toBe(64);
    expect(query(a.v, 77).q.get('status')).toBe(GNTST_bad_domain);
    expect(setup(a.v, 77, 1).status).toBe(GNTST_bad_domain);
    // Dom0 sets up b's table (the toolstack seeding a guest's grants).
    const d0 = m.dom0;
    d0.api.mem.write(250 * PAGE_SIZE, StructView.alloc(GNTTAB_SETUP_TABLE).set('dom', b.domid).set('nr_frames', 1).set('frame_list', 251 * PAGE_SIZE).raw());
    expect(d0.call(__HYPERVISOR_grant_table_op, GNTTABOP_setup_table, 250 * PAGE_SIZE, 1)).toBe(0);
    expect(acct(m, b.slot).grantFrames).toBe(1);
    expectSound(m);
  });

  it('count must be 1; an unreadable argument is -EFAULT; an unwritable one too', async () => {
    const m = new TestMachine();
    const u = await m.domU();
    expect(u.v.call(__HYPERVISOR_grant_table_op, GNTTABOP_query_size, ARG, 0)).toBe(-EINVAL);
    expect(u.v.call(__HYPERVISOR_grant_table_op, GNTTABOP_query_size, ARG, 2)).toBe(-EINVAL);
    expect(u.v.call(__HYPERVISOR_grant_table_op, GNTTABOP_setup_table, ARG, 2)).toBe(-EINVAL);
    expect(u.v.call(__HYPERVISOR_grant_table_op, GNTTABOP_query_size, 4000 * PAGE_SIZE, 1)).toBe(-EFAULT);
    expect(u.v.call(__HYPERVISOR_grant_table_op, GNTTABOP_setup_table, 4000 * PAGE_SIZE, 1)).toBe(-EFAULT);
    // Straddling the end of RAM.
    expect(u.v.call(__HYPERVISOR_grant_table_op, GNTTABOP_query_size, 256 * PAGE_SIZE - 8, 1)).toBe(-EFAULT);
  });
});

describe('XENMAPSPACE_grant_table', () => {
  it('maps grant frame idx at gpfn, growing the table to idx + 1; the guest reads and writes its entries there', async () => {
    const { m, dom0 } = await machine(0);
    const raw = await m.domU();
    expect(addToPhysmap(raw.v, 2, HOLE_GFN_BASE)).toBe(0);
    expect(acct(m, raw.slot)).toMatchObject({ grantFrames: 3, xenheap: 3 });
    // Publish ref 2*512 + 5 by hand in frame 2 and let Dom0 map it.
    const page = 100;
    raw.v.api.mem.fill(page * PAGE_SIZE, PAGE_SIZE, 0x77);
    const at = gpaOf(HOLE_GFN_BASE) + 5 * 8;
    raw.v.api.mem.writeU32(at + 4, page);
    raw.v.api.mem.atomicStore32(at, GTF_permit_access);
    const mp = dom0.gt.map(raw.domid, 2 * 512 + 5);
    expect(mp.status).toBe(GNTST_okay);
    expect(dom0.read(mp.gfn, 0, 1)[0]).toBe(0x77);
    expect(dom0.gt.unmap(mp)).toBe(GNTST_okay);
    expectSound(m);
  });

  it('moves a frame mapped elsewhere; replaces (frees) RAM at gpfn; refuses a grant mapping there', async () => {
    const { m, us: [u] } = await machine(1);
    const raw = await m.domU();
    expect(addToPhysmap(raw.v, 0, HOLE_GFN_BASE)).toBe(0);
    expect(addToPhysmap(raw.v, 0, HOLE_GFN_BASE)).toBe(0); // same place again: fine
    expect(addToPhysmap(raw.v, 0, HOLE_GFN_BASE + 1)).toBe(0);
    expect(() => raw.v.api.mem.readU8(gpaOf(HOLE_GFN_BASE))).toThrow(GuestFault);
    expect(raw.v.api.mem.readU8(gpaOf(HOLE_GFN_BASE + 1))).toBe(0);
    // Over RAM: the RAM page is freed (Xen's guest_remove_page), the frame takes its place.
    const tot = acct(m, raw.slot).tot;
    const free = m.freePages();
    expect(addToPhysmap(raw.v, 0, 150)).toBe(0);
    expect(acct(m, raw.slot).tot).toBe(tot - 1);
    expect(m.freePages()).toBe(free + 1);
    expectSound(m);
    // Over a grant mapping: -EBUSY, the mapping stays.
    const ref = u!.gt.grantAccess(raw.domid, u!.page(9));
    raw.v.api.mem.write(ARG, StructView.alloc(GNTTAB_MAP_GRANT_REF).set('host_addr', gpaOf(HOLE_GFN_BASE + 5)).set('flags', GNTMAP_host_map).set('ref', ref).set('dom', u!.domid).raw());
    expect(raw.v.call(__HYPERVISOR_grant_table_op, GNTTABOP_map_grant_ref, ARG, 1)).toBe(0);
    expect(new StructView(GNTTAB_MAP_GRANT_REF, raw.v.api.mem.read(ARG, 32)).get('status')).toBe(GNTST_okay);
    expect(addToPhysmap(raw.v, 1, HOLE_GFN_BASE + 5)).toBe(-EBUSY);
    expect(raw.v.api.mem.readU8(gpaOf(HOLE_GFN_BASE + 5))).toBe(9);
    expectSound(m);
  });

  it('rejects idx at or past max_grant_frames, a v2 status frame, and gpfns outside the physmap', async () => {
    const m = new TestMachine();
    const u = await m.domU();
    expect(addToPhysmap(u.v, 64, HOLE_GFN_BASE)).toBe(-EINVAL);
    expect(addToPhysmap(u.v, 0x80000000, HOLE_GFN_BASE)).toBe(-EINVAL);
    expect(addToPhysmap(u.v, 0, m.hv.cfg.p2mEntries)).toBe(-EINVAL);
    expect(acct(m, u.slot).grantFrames).toBe(0);
    expect(addToPhysmap(u.v, 63, HOLE_GFN_BASE)).toBe(0);
    expect(acct(m, u.slot).grantFrames).toBe(64);
    expectSound(m);
  });

  it('removing a grant frame from the physmap unhooks it and frees nothing; it can be mapped again', async () => {
    const m = new TestMachine();
    const u = await m.domU();
    expect(addToPhysmap(u.v, 0, HOLE_GFN_BASE)).toBe(0);
    u.v.api.mem.writeU32(gpaOf(HOLE_GFN_BASE) + 64, 0xcafe);
    const before = { ...acct(m, u.slot), free: m.freePages() };
    expect(u.v.xen.removeFromPhysmap(HOLE_GFN_BASE)).toBe(0);
    expect({ ...acct(m, u.slot), free: m.freePages() }).toEqual(before);
    expect(() => u.v.api.mem.readU8(gpaOf(HOLE_GFN_BASE))).toThrow(GuestFault);
    expectSound(m);
    // decrease_reservation of a grant frame gfn (a balloon driver's mistake) likewise.
    expect(addToPhysmap(u.v, 0, HOLE_GFN_BASE + 1)).toBe(0);
    expect(u.v.api.mem.readU32(gpaOf(HOLE_GFN_BASE + 1) + 64)).toBe(0xcafe);
    expect(u.v.xen.decreaseReservation([HOLE_GFN_BASE + 1])).toBe(1);
    expect({ ...acct(m, u.slot), free: m.freePages() }).toEqual(before);
    expectSound(m);
  });

  it('Dom0 may map a DomU\'s grant frame into the DomU\'s physmap; another DomU may not', async () => {
    const m = new TestMachine();
    const a = await m.domU();
    const b = await m.domU();
    expect(addToPhysmap(b.v, 0, HOLE_GFN_BASE, a.domid)).toBeLessThan(0);
    expect(acct(m, a.slot).grantFrames).toBe(0);
    m.dom0.api.mem.write(250 * PAGE_SIZE, StructView.alloc(XEN_ADD_TO_PHYSMAP).set('domid', a.domid).set('space', XENMAPSPACE_grant_table).set('idx', 0).set('gpfn', HOLE_GFN_BASE).raw());
    expect(m.dom0.call(__HYPERVISOR_memory_op, XENMEM_add_to_physmap, 250 * PAGE_SIZE)).toBe(0);
    expect(a.v.api.mem.readU32(gpaOf(HOLE_GFN_BASE))).toBe(0);
    expectSound(m);
  });
});

describe('do_grant_table_op argument checks', () => {
  it('unknown and unimplemented commands are -ENOSYS; continuation bits in cmd are -EINVAL', async () => {
    const m = new TestMachine();
    const u = await m.domU();
    for (const cmd of [GNTTABOP_dump_table, GNTTABOP_set_version, GNTTABOP_get_status_frames, GNTTABOP_get_version, 11, 12, 13, 99, 0xfff]) {
      expect(u.v.call(__HYPERVISOR_grant_table_op, cmd, ARG, 1)).toBe(-ENOSYS);
    }
    expect(u.v.call(__HYPERVISOR_grant_table_op, GNTTABOP_copy | (1 << 12), ARG, 1)).toBe(-EINVAL);
    expect(u.v.call(__HYPERVISOR_grant_table_op, 2 ** 40, ARG, 1)).toBe(-EINVAL);
    expect(u.v.call(__HYPERVISOR_grant_table_op, -1, ARG, 1)).toBe(-EINVAL);
  });

  it('count negative or above 512 is -EINVAL; 0 does nothing', async () => {
    const m = new TestMachine();
    const u = await m.domU();
    const free = m.freePages();
    for (const cmd of [GNTTABOP_map_grant_ref, GNTTABOP_copy, 1, 4, 7]) {
      expect(u.v.call(__HYPERVISOR_grant_table_op, cmd, ARG, -1)).toBe(-EINVAL);
      expect(u.v.call(__HYPERVISOR_grant_table_op, cmd, ARG, 513)).toBe(-EINVAL);
      expect(u.v.call(__HYPERVISOR_grant_table_op, cmd, ARG, 2 ** 32 - 1)).toBe(-EINVAL);
      expect(u.v.call(__HYPERVISOR_grant_table_op, cmd, 4000 * PAGE_SIZE, 0)).toBe(0);
    }
    expect(m.freePages()).toBe(free);
  });

  it('register values no guest can pass are -EINVAL, never a throw', async () => {
    const m = new TestMachine();
    const u = await m.domU();
    for (const bad of ['1', NaN, 1.5, {}, null]) {
      expect(u.v.call(__HYPERVISOR_grant_table_op, bad, ARG, 1)).toBe(-EINVAL);
      expect(u.v.call(__HYPERVISOR_grant_table_op, GNTTABOP_copy, bad, 1)).toBe(-EINVAL);
      expect(u.v.call(__HYPERVISOR_grant_table_op, GNTTABOP_copy, ARG, bad)).toBe(-EINVAL);
    }
  });
});
