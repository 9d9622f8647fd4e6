/**
 * __HYPERVISOR_memory_op (12): common/memory.c do_memory_op.
 *
 * The reservation ops (increase/decrease_reservation, populate_physmap) return
 * the number of extents done, never an errno: a bad argument, a bad domain, a
 * caller without rights or an extent that cannot be done stops the work, and
 * the result says how far it got (0 if nowhere). Everything else returns 0 or
 * a Xen errno. Every failure must leave the frame accounting as it was.
 */
import { beforeEach, describe, expect, it } from 'vitest';
import { TestMachine, type TestVcpu } from '../../helpers/machine.ts';
import { EEXIST, EFAULT, EINVAL, ENOENT, ENOSYS, EPERM, ESRCH } from '../../../shared/errno.ts';
import {
  XENMAPSPACE_gmfn_foreign, XENMAPSPACE_shared_info, XENMEM_add_to_physmap, XENMEM_current_reservation,
  XENMEM_decrease_reservation, XENMEM_increase_reservation, XENMEM_maximum_ram_page, XENMEM_maximum_reservation,
  XENMEM_populate_physmap, XEN_DOMCTL_createdomain, XEN_SYSCTL_physinfo, __HYPERVISOR_memory_op,
} from '../../../shared/hypercall.ts';
import { XEN_ADD_TO_PHYSMAP, XEN_MEMORY_DOMAIN, XEN_MEMORY_RESERVATION } from '../../../shared/abi/memory.ts';
import { XEN_DOMCTL_CREATEDOMAIN } from '../../../shared/abi/domctl.ts';
import { SYSCTL_U, XEN_SYSCTL_PHYSINFO } from '../../../shared/abi/sysctl.ts';
import { StructView } from '../../../shared/layout.ts';
import { DOMID_SELF, PAGE_SIZE } from '../../../shared/types.ts';
import { D, DOMSTATE_FREE } from '../../../hypervisor/state.ts';
import { entryMfn, p2mLookup } from '../../../hypervisor/mm/p2m.ts';
import {
  ARG, BUF, RAM_PAGES, STRADDLE, UNMAPPED, canRead, ctrlOf, expectUnchanged, put, snapshot, u64s,
} from './helpers.ts';

const MEM = __HYPERVISOR_memory_op;
const MiB = 256; // pages

interface Resv {
  readonly list?: ReadonlyArray<number | bigint>;
  readonly listAt?: number;
  readonly nr?: number;
  readonly order?: number;
  readonly domid?: number;
  /** start_extent, encoded in cmd bits 6 and up (a continuation). */
  readonly start?: number;
  readonly argAt?: number;
}

/** One reservation op with a xen_memory_reservation built at ARG and the extent list at BUF. */
function resv(v: TestVcpu, op: number, o: Resv = {}): number {
  const listAt = o.listAt ?? BUF;
  if (o.list) v.api.mem.write(listAt, u64s(o.list));
  const r = StructView.alloc(XEN_MEMORY_RESERVATION)
    .set('extent_start', listAt).set('nr_extents', o.nr ?? o.list?.length ?? 0)
    .set('extent_order', o.order ?? 0).set('domid', o.domid ?? DOMID_SELF);
  put(v, ARG, r);
  return v.call(MEM, op + (o.start ?? 0) * 64, o.argAt ?? ARG);
}

const range = (from: number, n: number): number[] => Array.from({ length: n }, (_, i) => from + i);

describe('memory_op', () => {
  let m: TestMachine;
  let freeAtBoot: number;
  beforeEach(() => {
    m = new TestMachine();
    freeAtBoot = m.freePages();
  });

  const tot = (domid: number): number => m.ctrl.domainInfo(domid)!.totPages;

  describe('populate_physmap', () => {
    it('gives each gfn a fresh zeroed frame the guest can use; returns the extents done; tot_pages and free frames move by exactly that', async () => {
      const { domid, v } = await m.domU({ maxmemMiB: 2 });
      const free = m.freePages();
      expect(canRead(v, 300)).toBe(false);
      expect(resv(v, XENMEM_populate_physmap, { list: [300, 301, 302] })).toBe(3);
      expect(tot(domid)).toBe(RAM_PAGES + 3);
      expect(m.freePages()).toBe(free - 3);
      for (const g of [300, 301, 302]) {
        expect(v.api.mem.readU32(g * PAGE_SIZE + 100)).toBe(0);
        v.api.mem.writeU32(g * PAGE_SIZE + 100, 0xc0de0000 + g);
      }
      for (const g of [300, 301, 302]) expect(v.api.mem.readU32(g * PAGE_SIZE + 100)).toBe(0xc0de0000 + g);
      expect(m.checkInvariants()).toEqual([]);
    });

    it('an extent of order k is 2^k consecutive gfns', async () => {
      const { domid, v } = await m.domU({ maxmemMiB: 2 });
      expect(resv(v, XENMEM_populate_physmap, { list: [304], order: 2 })).toBe(1);
      expect(tot(domid)).toBe(RAM_PAGES + 4);
      expect([303, 304, 305, 306, 307, 308].map((g) => canRead(v, g))).toEqual([false, true, true, true, true, false]);
      expect(m.checkInvariants()).toEqual([]);
    });

    it('stops at max_pages: a domain at its limit gets 0; one with headroom gets exactly its headroom', async () => {
      const a = await m.domU();
      const before = snapshot(m);
      expect(resv(a.v, XENMEM_populate_physmap, { list: [300] })).toBe(0);
      expectUnchanged(m, before);

      const b = await m.domU({ maxmemMiB: 2 });
      const free = m.freePages();
      expect(resv(b.v, XENMEM_populate_physmap, { list: range(300, 300) })).toBe(MiB);
      expect(tot(b.domid)).toBe(2 * MiB);
      expect(m.freePages()).toBe(free - MiB);
      expect(canRead(b.v, 300 + MiB - 1)).toBe(true);
      expect(canRead(b.v, 300 + MiB)).toBe(false);
      expect(m.checkInvariants()).toEqual([]);
    });

    it('an extent_order above the DomU limit (9) does nothing; the limit is the caller\'s, so Dom0 may go higher for the same domain', async () => {
      const { domid, v } = await m.domU({ maxmemMiB: 8 });
      const before = snapshot(m);
      expect(resv(v, XENMEM_populate_physmap, { list: [1024], order: 10 })).toBe(0);
      expectUnchanged(m, before);
      expect(resv(v, XENMEM_populate_physmap, { list: [512], order: 9 })).toBe(1);
      expect(tot(domid)).toBe(MiB + 512);
      expect(resv(m.dom0, XENMEM_populate_physmap, { list: [1024], order: 10, domid })).toBe(1);
      expect(tot(domid)).toBe(MiB + 512 + 1024);
      expect(canRead(v, 2047)).toBe(true);
      expect(m.checkInvariants()).toEqual([]);
    });

    it('a gfn outside the physmap stops the batch at that extent, with nothing allocated for it', async () => {
      const { domid, v } = await m.domU({ maxmemMiB: 2 });
      const free = m.freePages();
      const p2mEntries = m.hv.cfg.p2mEntries;
      const bads = [p2mEntries, 2 ** 53, 2n ** 64n - 1n];
      bads.forEach((bad, i) => {
        expect(resv(v, XENMEM_populate_physmap, { list: [310 + 2 * i, bad, 311 + 2 * i] })).toBe(1);
        expect(canRead(v, 310 + 2 * i)).toBe(true);
        expect(canRead(v, 311 + 2 * i)).toBe(false);
      });
      expect(tot(domid)).toBe(MiB + bads.length);
      expect(m.freePages()).toBe(free - bads.length);
      expect(m.checkInvariants()).toEqual([]);
    });

    it('an extent list that runs into unmapped memory stops at the first entry it cannot read', async () => {
      const { domid, v } = await m.domU({ maxmemMiB: 2 });
      // Two readable entries in the last 16 bytes of RAM; the third would be past the end.
      const at = RAM_PAGES * PAGE_SIZE - 16;
      expect(resv(v, XENMEM_populate_physmap, { list: [320, 321], listAt: at, nr: 3 })).toBe(2);
      expect(tot(domid)).toBe(MiB + 2);
      expect(m.checkInvariants()).toEqual([]);
    });

    it('an unreadable argument, a missing domain or another domain\'s memory does nothing and returns 0', async () => {
      const a = await m.domU({ maxmemMiB: 2 });
      const b = await m.domU({ maxmemMiB: 2 });
      const before = snapshot(m);
      expect(resv(a.v, XENMEM_populate_physmap, { list: [300], argAt: UNMAPPED })).toBe(0);
      expect(resv(a.v, XENMEM_populate_physmap, { list: [300], argAt: STRADDLE })).toBe(0);
      expect(resv(a.v, XENMEM_populate_physmap, { listAt: UNMAPPED, nr: 1 })).toBe(0);
      expect(resv(a.v, XENMEM_populate_physmap, { list: [300], domid: 999 })).toBe(0);
      // A DomU may not populate another domain: Xen returns start_extent (0), not -EPERM.
      expect(resv(a.v, XENMEM_populate_physmap, { list: [300], domid: b.domid })).toBe(0);
      expect(resv(a.v, XENMEM_populate_physmap, { list: [300], domid: 0 })).toBe(0);
      expectUnchanged(m, before);
    });

    it('nr_extents too large to encode in a continuation (> UINT_MAX >> 6) does nothing', async () => {
      const { v } = await m.domU({ maxmemMiB: 2 });
      const before = snapshot(m);
      expect(resv(v, XENMEM_populate_physmap, { list: [300], nr: 2 ** 26 })).toBe(0);
      expectUnchanged(m, before);
    });

    it('a start_extent in the command resumes there: earlier extents are skipped, and the result counts from 0', async () => {
      const { domid, v } = await m.domU({ maxmemMiB: 2 });
      expect(resv(v, XENMEM_populate_physmap, { list: [300, 301, 302, 303], start: 2 })).toBe(4);
      expect([300, 301, 302, 303].map((g) => canRead(v, g))).toEqual([false, false, true, true]);
      expect(tot(domid)).toBe(MiB + 2);
      // start_extent at or past nr_extents: nothing to do, start_extent comes back.
      const before = snapshot(m);
      expect(resv(v, XENMEM_populate_physmap, { list: [304, 305], start: 9 })).toBe(9);
      expectUnchanged(m, before);
    });

    it('DOMID_SELF and the caller\'s own domid name the same domain', async () => {
      const { domid, v } = await m.domU({ maxmemMiB: 2 });
      expect(resv(v, XENMEM_populate_physmap, { list: [300], domid: DOMID_SELF })).toBe(1);
      expect(resv(v, XENMEM_populate_physmap, { list: [301], domid })).toBe(1);
      expect(tot(domid)).toBe(MiB + 2);
    });
  });

  describe('decrease_reservation', () => {
    it('frees the frames at the gfns: the guest loses them, tot_pages drops and the heap gains exactly that', async () => {
      const { domid, v } = await m.domU();
      const free = m.freePages();
      expect(resv(v, XENMEM_decrease_reservation, { list: [10, 11] })).toBe(2);
      expect(canRead(v, 10)).toBe(false);
      expect(canRead(v, 11)).toBe(false);
      expect(tot(domid)).toBe(MiB - 2);
      expect(m.freePages()).toBe(free + 2);
      expect(m.checkInvariants()).toEqual([]);
    });

    it('stops at the first unpopulated gfn and leaves the extents after it alone', async () => {
      const { domid, v } = await m.domU();
      v.api.mem.writeU32(13 * PAGE_SIZE, 0x13131313);
      const free = m.freePages();
      expect(resv(v, XENMEM_decrease_reservation, { list: [12, 300, 13] })).toBe(1);
      expect(canRead(v, 12)).toBe(false);
      expect(v.api.mem.readU32(13 * PAGE_SIZE)).toBe(0x13131313);
      expect(tot(domid)).toBe(MiB - 1);
      expect(m.freePages()).toBe(free + 1);
      expect(m.checkInvariants()).toEqual([]);
    });

    it('an extent of order 1 frees both pages; one running off populated memory frees its populated page but does not count', async () => {
      const { domid, v } = await m.domU();
      expect(resv(v, XENMEM_decrease_reservation, { list: [20], order: 1 })).toBe(1);
      expect(tot(domid)).toBe(MiB - 2);
      // gfn 255 is the last populated page; 256 is not: Xen removes 255, then stops.
      expect(resv(v, XENMEM_decrease_reservation, { list: [255], order: 1 })).toBe(0);
      expect(canRead(v, 255)).toBe(false);
      expect(tot(domid)).toBe(MiB - 3);
      expect(m.checkInvariants()).toEqual([]);
    });

    it('an extent_order above the DomU limit does nothing', async () => {
      const { v } = await m.domU();
      const before = snapshot(m);
      expect(resv(v, XENMEM_decrease_reservation, { list: [0], order: 10 })).toBe(0);
      expectUnchanged(m, before);
    });

    it('an unreadable argument, a missing domain or another domain\'s memory does nothing and returns 0', async () => {
      const a = await m.domU();
      const b = await m.domU();
      const before = snapshot(m);
      expect(resv(a.v, XENMEM_decrease_reservation, { list: [10], argAt: UNMAPPED })).toBe(0);
      expect(resv(a.v, XENMEM_decrease_reservation, { listAt: UNMAPPED, nr: 1 })).toBe(0);
      expect(resv(a.v, XENMEM_decrease_reservation, { list: [10], domid: 999 })).toBe(0);
      expect(resv(a.v, XENMEM_decrease_reservation, { list: [10], domid: b.domid })).toBe(0);
      expect(resv(a.v, XENMEM_decrease_reservation, { list: [10], domid: 0 })).toBe(0);
      expect(canRead(b.v, 10)).toBe(true);
      expectUnchanged(m, before);
    });
  });

  describe('increase_reservation', () => {
    it('gives an auto-translated domain frames it owns but has not mapped, up to max_pages; destroy returns them', async () => {
      const { domid, v } = await m.domU({ maxmemMiB: 2 });
      const free = m.freePages();
      expect(resv(v, XENMEM_increase_reservation, { nr: 3 })).toBe(3);
      expect(tot(domid)).toBe(MiB + 3);
      expect(m.freePages()).toBe(free - 3);
      expect(canRead(v, RAM_PAGES)).toBe(false);
      expect(m.checkInvariants()).toEqual([]);
      // The rest of the headroom, and no more.
      expect(resv(v, XENMEM_increase_reservation, { nr: 300 })).toBe(MiB - 3);
      expect(tot(domid)).toBe(2 * MiB);
      await m.destroy(domid);
      expect(m.freePages()).toBe(freeAtBoot);
      expect(m.checkInvariants()).toEqual([]);
    });

    it('an extent_order above the DomU limit, or another domain, does nothing', async () => {
      const a = await m.domU({ maxmemMiB: 8 });
      const before = snapshot(m);
      expect(resv(a.v, XENMEM_increase_reservation, { nr: 1, order: 10 })).toBe(0);
      expect(resv(a.v, XENMEM_increase_reservation, { nr: 1, domid: 0 })).toBe(0);
      expectUnchanged(m, before);
    });
  });

  describe('current_reservation and maximum_reservation', () => {
    const stat = (v: TestVcpu, op: number, domid: number, cmdExtra = 0, at = ARG): number => {
      put(v, ARG, StructView.alloc(XEN_MEMORY_DOMAIN).set('domid', domid));
      return v.call(MEM, op + cmdExtra, at);
    };

    it('return tot_pages and max_pages, for DOMID_SELF or the own domid, and for any domain when Dom0 asks', async () => {
      const { domid, v } = await m.domU({ maxmemMiB: 2 });
      for (const who of [DOMID_SELF, domid]) {
        expect(stat(v, XENMEM_current_reservation, who)).toBe(MiB);
        expect(stat(v, XENMEM_maximum_reservation, who)).toBe(2 * MiB);
      }
      expect(stat(m.dom0, XENMEM_current_reservation, domid)).toBe(MiB);
      expect(stat(m.dom0, XENMEM_maximum_reservation, domid)).toBe(2 * MiB);
      resv(v, XENMEM_populate_physmap, { list: [300, 301] });
      expect(stat(m.dom0, XENMEM_current_reservation, domid)).toBe(MiB + 2);
    });

    it('a missing domain is -ESRCH (even for a DomU: lookup comes before privilege); another domain is -EPERM for a DomU', async () => {
      const a = await m.domU();
      const b = await m.domU();
      for (const op of [XENMEM_current_reservation, XENMEM_maximum_reservation]) {
        expect(stat(m.dom0, op, 999)).toBe(-ESRCH);
        expect(stat(a.v, op, 999)).toBe(-ESRCH);
        expect(stat(a.v, op, b.domid)).toBe(-EPERM);
        expect(stat(a.v, op, 0)).toBe(-EPERM);
      }
    });

    it('an unreadable argument is -EFAULT; a start_extent in the command is -EINVAL', async () => {
      const { v } = await m.domU();
      for (const op of [XENMEM_current_reservation, XENMEM_maximum_reservation]) {
        expect(stat(v, op, DOMID_SELF, 0, UNMAPPED)).toBe(-EFAULT);
        expect(stat(v, op, DOMID_SELF, 1 << 6)).toBe(-EINVAL);
      }
    });
  });

  it('maximum_ram_page returns the number of machine frames (max_mfn + 1)', async () => {
    const { v } = await m.domU();
    const { op } = m.ctrl.sysctlRaw(XEN_SYSCTL_physinfo);
    const maxMfn = new StructView(XEN_SYSCTL_PHYSINFO, op.raw(), SYSCTL_U).get('max_mfn');
    expect(v.call(MEM, XENMEM_maximum_ram_page, 0)).toBe(maxMfn + 1);
  });

  describe('add_to_physmap (XENMAPSPACE_shared_info)', () => {
    const map = (v: TestVcpu, gpfn: number | bigint, o: { domid?: number; idx?: number; space?: number; at?: number } = {}): number => {
      const x = StructView.alloc(XEN_ADD_TO_PHYSMAP).set('domid', o.domid ?? DOMID_SELF)
        .set('space', o.space ?? XENMAPSPACE_shared_info).set('idx', o.idx ?? 0);
      x.setBig('gpfn', BigInt(gpfn));
      put(v, ARG, x);
      return v.call(MEM, XENMEM_add_to_physmap, o.at ?? ARG);
    };
    const siMfn = (slot: number): number => m.hv.dom[m.hv.d(slot, D.shared_info_mfn)];

    it('maps the domain\'s own shared_info frame at gpfn: guest and hypervisor see the same bytes, and no RAM is charged', async () => {
      const { domid, slot, v } = await m.domU();
      const free = m.freePages();
      expect(map(v, 300)).toBe(0);
      expect(entryMfn(p2mLookup(m.hv, slot, 300))).toBe(siMfn(slot));
      expect(tot(domid)).toBe(MiB);
      expect(m.freePages()).toBe(free);
      // The hypervisor sets wc_version (offset 3072); the guest reads it through its mapping.
      m.hv.mem8[siMfn(slot) * PAGE_SIZE + 3072] = 0x5c;
      expect(v.api.mem.readU32(300 * PAGE_SIZE + 3072)).toBe(0x5c);
      // The guest writes evtchn_mask[0] (offset 2560); the hypervisor sees it.
      v.api.mem.writeU8(300 * PAGE_SIZE + 2560, 0xa5);
      expect(m.hv.mem8[siMfn(slot) * PAGE_SIZE + 2560]).toBe(0xa5);
      expect(m.checkInvariants()).toEqual([]);
    });

    it('mapping it at another gfn moves it: only one mapping remains', async () => {
      const { slot, v } = await m.domU();
      expect(map(v, 300)).toBe(0);
      v.api.mem.writeU8(300 * PAGE_SIZE + 2560, 0x77);
      expect(map(v, 301)).toBe(0);
      expect(canRead(v, 300)).toBe(false);
      expect(v.api.mem.readU8(301 * PAGE_SIZE + 2560)).toBe(0x77);
      let mappings = 0;
      for (let g = 0; g < m.hv.cfg.p2mEntries; g++) if (entryMfn(p2mLookup(m.hv, slot, g)) === siMfn(slot)) mappings++;
      expect(mappings).toBe(1);
    });

    it('mapping it over a populated RAM gfn frees that RAM page', async () => {
      const { domid, v } = await m.domU();
      expect(map(v, 300)).toBe(0);
      const free = m.freePages();
      expect(map(v, 20)).toBe(0);
      expect(tot(domid)).toBe(MiB - 1);
      expect(m.freePages()).toBe(free + 1);
      expect(canRead(v, 300)).toBe(false);
      expect(m.checkInvariants()).toEqual([]);
    });

    it('idx other than 0, or a gpfn outside the physmap, is -EINVAL and changes nothing', async () => {
      const { v } = await m.domU();
      const before = snapshot(m);
      expect(map(v, 300, { idx: 1 })).toBe(-EINVAL);
      expect(map(v, m.hv.cfg.p2mEntries)).toBe(-EINVAL);
      expect(map(v, 2n ** 64n - 1n)).toBe(-EINVAL);
      expect(canRead(v, 300)).toBe(false);
      expectUnchanged(m, before);
    });

    it('another domain is -EPERM for a DomU, a missing one -ESRCH, an unreadable argument -EFAULT', async () => {
      const a = await m.domU();
      const b = await m.domU();
      const before = snapshot(m);
      expect(map(a.v, 300, { domid: b.domid })).toBe(-EPERM);
      expect(map(a.v, 300, { domid: 0 })).toBe(-EPERM);
      expect(map(a.v, 300, { domid: 999 })).toBe(-ESRCH);
      expect(map(a.v, 300, { at: UNMAPPED })).toBe(-EFAULT);
      expect(map(a.v, 300, { at: STRADDLE })).toBe(-EFAULT);
      expect(canRead(b.v, 300)).toBe(false);
      expectUnchanged(m, before);
    });

    it('XENMAPSPACE_gmfn_foreign is only for add_to_physmap_batch: -ENOSYS here', async () => {
      const { v } = await m.domU();
      const before = snapshot(m);
      expect(map(m.dom0, 300, { space: XENMAPSPACE_gmfn_foreign, idx: 5 })).toBe(-ENOSYS);
      expect(map(v, 300, { space: XENMAPSPACE_gmfn_foreign, idx: 5 })).toBe(-ENOSYS);
      expectUnchanged(m, before);
    });

    it('destroying a domain with shared_info mapped returns every frame', async () => {
      const { domid, v } = await m.domU();
      expect(map(v, 300)).toBe(0);
      await m.destroy(domid);
      expect(m.freePages()).toBe(freeAtBoot);
      expect(m.checkInvariants()).toEqual([]);
    });
  });

  describe('add_to_physmap_batch (XENMAPSPACE_gmfn_foreign) and remove_from_physmap', () => {
    const mfnOf = (slot: number, gfn: number): number => entryMfn(p2mLookup(m.hv, slot, gfn));

    it('Dom0 maps a DomU frame: errs[i] is 0, Dom0 sees the DomU\'s data, and the frame gains a reference', async () => {
      const { domid, slot, v } = await m.domU();
      v.api.mem.writeU32(5 * PAGE_SIZE, 0xfeedf00d);
      const mfn = mfnOf(slot, 5);
      const refs = m.hv.ftCount[mfn];
      expect(m.ctrl.mapForeign(domid, [5], [300])).toEqual([0]);
      expect(m.dom0.api.mem.readU32(300 * PAGE_SIZE)).toBe(0xfeedf00d);
      expect(m.hv.ftCount[mfn]).toBe(refs + 1);
      expect(m.dom0.xen.removeFromPhysmap(300)).toBe(0);
      expect(m.hv.ftCount[mfn]).toBe(refs);
      expect(canRead(m.dom0, 300)).toBe(false);
      expect(m.checkInvariants()).toEqual([]);
    });

    it('a DomU mapping a foreign frame gets -EPERM in errs: no reference taken, nothing mapped', async () => {
      const a = await m.domU();
      const b = await m.domU();
      const dom0Mfn = mfnOf(m.dom0.ctx.slot, 5);
      const bMfn = mfnOf(b.slot, 5);
      const refs = [m.hv.ftCount[dom0Mfn], m.hv.ftCount[bMfn]];
      const before = snapshot(m);
      expect(ctrlOf(a.v).mapForeign(0, [5], [300])).toEqual([-EPERM]);
      expect(ctrlOf(a.v).mapForeign(b.domid, [5, 6], [300, 301])).toEqual([-EPERM, -EPERM]);
      expect([m.hv.ftCount[dom0Mfn], m.hv.ftCount[bMfn]]).toEqual(refs);
      expect(canRead(a.v, 300)).toBe(false);
      expect(canRead(a.v, 301)).toBe(false);
      expectUnchanged(m, before);
    });

    it('per entry: a missing foreign domain is -ESRCH, an unpopulated foreign gfn -EINVAL; the good entries still map', async () => {
      const { domid } = await m.domU();
      expect(m.ctrl.mapForeign(999, [5], [300])).toEqual([-ESRCH]);
      expect(m.ctrl.mapForeign(domid, [5, 3000, 6], [300, 301, 302])).toEqual([0, -EINVAL, 0]);
      expect([300, 301, 302].map((g) => canRead(m.dom0, g))).toEqual([true, false, true]);
      expect(m.dom0.xen.removeFromPhysmap(300)).toBe(0);
      expect(m.dom0.xen.removeFromPhysmap(302)).toBe(0);
      expect(m.checkInvariants()).toEqual([]);
    });

    it('remove_from_physmap of an empty gfn is -ENOENT and changes nothing', async () => {
      const { v } = await m.domU();
      const before = snapshot(m);
      expect(v.xen.removeFromPhysmap(300)).toBe(-ENOENT);
      expect(m.dom0.xen.removeFromPhysmap(300)).toBe(-ENOENT);
      expectUnchanged(m, before);
    });

    it('Dom0\'s mapping keeps a destroyed domain\'s frame alive until unmapped; then the domain goes and nothing leaks', async () => {
      const { domid, slot, v } = await m.domU();
      v.api.mem.writeU32(5 * PAGE_SIZE + 64, 0xabad1dea);
      const mfn = mfnOf(slot, 5);
      expect(m.ctrl.mapForeign(domid, [5], [300])).toEqual([0]);

      await m.destroy(domid);
      // Every frame but the mapped one is back; that one is still the dead domain's, with its data.
      expect(m.freePages()).toBe(freeAtBoot - 1);
      expect(m.hv.ftOwner[mfn]).toBe(domid);
      expect(m.dom0.api.mem.readU32(300 * PAGE_SIZE + 64)).toBe(0xabad1dea);
      const zombie = m.ctrl.domainInfo(domid);
      expect(zombie?.dying).toBe(true);
      expect(zombie?.totPages).toBe(1);
      expect(m.checkInvariants()).toEqual([]);
      // Its domid is still taken, and destroying it again is a no-op that succeeds.
      const { rc } = m.ctrl.domctlRaw(XEN_DOMCTL_createdomain, domid, (u) => {
        new StructView(XEN_DOMCTL_CREATEDOMAIN, u).set('max_vcpus', 1).set('max_grant_frames', -1).set('max_maptrack_frames', -1).set('grant_opts', 1);
      });
      expect(rc).toBe(-EEXIST);
      await m.destroy(domid);

      expect(m.dom0.xen.removeFromPhysmap(300)).toBe(0);
      expect(m.freePages()).toBe(freeAtBoot);
      expect(m.ctrl.domainInfo(domid)).toBeNull();
      expect(m.ctrl.listDomains().map((d) => d.domid)).toEqual([0]);
      expect(m.hv.dom[m.hv.d(slot, D.state)]).toBe(DOMSTATE_FREE);
      expect(m.checkInvariants()).toEqual([]);
    });
  });

  it('an unknown sub-op is -ENOSYS', async () => {
    const { v } = await m.domU();
    expect(v.call(MEM, 0x3f, ARG)).toBe(-ENOSYS);
    expect(m.dom0.call(MEM, 50, ARG)).toBe(-ENOSYS);
  });
});
