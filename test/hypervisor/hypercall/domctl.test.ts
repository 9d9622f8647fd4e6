/**
 * __HYPERVISOR_domctl (36): common/domctl.c do_domctl (Xen 4.17).
 *
 * Order of checks, as Xen: copy in (-EFAULT), interface_version (-EACCES), look
 * the domain up (-ESRCH; not for createdomain, and getdomaininfo may go on
 * without one), privilege (-EPERM: a DomU may use no domctl), then the command.
 * A failing domctl creates, frees and changes nothing.
 */
import { beforeEach, describe, expect, it } from 'vitest';
import { TestMachine, type TestVcpu } from '../../helpers/machine.ts';
import { EACCES, EEXIST, EFAULT, EINVAL, ENOENT, ENOMEM, ENOSYS, EOVERFLOW, EPERM, ESRCH } from '../../../shared/errno.ts';
import {
  XEN_DOMCTL_createdomain, XEN_DOMCTL_destroydomain, XEN_DOMCTL_getdomaininfo, XEN_DOMCTL_max_mem,
  XEN_DOMCTL_max_vcpus, XEN_DOMCTL_pausedomain, XEN_DOMCTL_unpausedomain, VCPUOP_is_up, __HYPERVISOR_domctl,
  __HYPERVISOR_vcpu_op,
} from '../../../shared/hypercall.ts';
import {
  DOMCTL_U, XEN_DOMCTL, XEN_DOMCTL_CDF_hap, XEN_DOMCTL_CDF_hvm, XEN_DOMCTL_CDF_iommu, XEN_DOMCTL_CDF_nested_virt,
  XEN_DOMCTL_CDF_vpmu, XEN_DOMCTL_CDF_xs_domain, XEN_DOMCTL_CREATEDOMAIN, XEN_DOMCTL_GETDOMAININFO,
  XEN_DOMCTL_INTERFACE_VERSION, XEN_DOMCTL_MAX_MEM, XEN_DOMCTL_MAX_VCPUS, XEN_DOMINF_paused, XEN_DOMINF_xs_domain,
} from '../../../shared/abi/domctl.ts';
import { StructView } from '../../../shared/layout.ts';
import type { XenCtrl } from '../../../dom0/libxc.ts';
import { ARG, STRADDLE, UNMAPPED, ctrlOf, expectUnchanged, put, snapshot } from './helpers.ts';

type CreateFields = Partial<Record<'ssidref' | 'flags' | 'iommu_opts' | 'max_vcpus' | 'max_evtchn_port' | 'max_grant_frames' | 'max_maptrack_frames' | 'grant_opts' | 'vmtrace_size', number>>;

/** A createdomain as libxl fills it: one vCPU, default grant limits, grant v1; `f` overrides. */
function create(c: XenCtrl, domid = 0, f: CreateFields = {}, handle?: Uint8Array): { rc: number; domid: number } {
  const { rc, op } = c.domctlRaw(XEN_DOMCTL_createdomain, domid, (u) => {
    const v = new StructView(XEN_DOMCTL_CREATEDOMAIN, u).set('max_vcpus', 1).set('max_grant_frames', -1)
      .set('max_maptrack_frames', -1).set('grant_opts', 1);
    for (const [k, x] of Object.entries(f)) v.set(k as keyof CreateFields, x);
    if (handle) v.setBytes('handle', handle);
  });
  return { rc, domid: op.get('domain') };
}

const getinfo = (c: XenCtrl, domid: number) => {
  const { rc, op } = c.domctlRaw(XEN_DOMCTL_getdomaininfo, domid);
  return { rc, domain: op.get('domain'), info: new StructView(XEN_DOMCTL_GETDOMAININFO, op.raw(), DOMCTL_U) };
};

describe('domctl', () => {
  let m: TestMachine;
  let domU: TestVcpu;
  let domUid: number;
  let freeAtBoot: number;
  beforeEach(async () => {
    m = new TestMachine();
    freeAtBoot = m.freePages();
    ({ domid: domUid, v: domU } = await m.domU());
  });
  const ids = (): number[] => m.ctrl.listDomains().map((d) => d.domid);

  describe('the common path', () => {
    it('an interface_version other than 0x15 is -EACCES, before anything else (a DomU too)', () => {
      const before = snapshot(m);
      for (const v of [m.dom0, domU]) {
        for (const version of [0, 0x14, 0x16, 0xffffffff]) {
          const op = StructView.alloc(XEN_DOMCTL).set('cmd', XEN_DOMCTL_createdomain).set('interface_version', version);
          new StructView(XEN_DOMCTL_CREATEDOMAIN, op.bytes('u')).set('max_vcpus', 1).set('grant_opts', 1);
          expect(v.call(__HYPERVISOR_domctl, put(v, ARG, op))).toBe(-EACCES);
        }
      }
      expectUnchanged(m, before);
    });

    it('an unreadable struct is -EFAULT', () => {
      expect(m.dom0.call(__HYPERVISOR_domctl, UNMAPPED)).toBe(-EFAULT);
      expect(m.dom0.call(__HYPERVISOR_domctl, STRADDLE)).toBe(-EFAULT);
    });

    it('an unknown command is -ENOSYS for Dom0, -EPERM for a DomU, and -ESRCH for a missing domain (lookup first)', () => {
      expect(m.ctrl.domctlRaw(999, domUid).rc).toBe(-ENOSYS);
      expect(ctrlOf(domU).domctlRaw(999, domUid).rc).toBe(-EPERM);
      expect(m.ctrl.domctlRaw(999, 777).rc).toBe(-ESRCH);
    });
  });

  describe('createdomain', () => {
    it('creates a paused domain with no memory, writes its id back, and destroying it returns every frame', async () => {
      const before = m.freePages();
      const handle = Uint8Array.from({ length: 16 }, (_, i) => i * 7);
      const r = create(m.ctrl, 0, {}, handle);
      expect(r.rc).toBe(0);
      expect(r.domid).toBeGreaterThan(0);
      expect(ids()).toContain(r.domid);
      const info = m.ctrl.domainInfo(r.domid)!;
      expect(info.paused).toBe(true);
      expect(info.shutdown).toBe(false);
      expect(info.totPages).toBe(0);
      expect(info.onlineVcpus).toBe(0);
      expect([...info.handle]).toEqual([...handle]);
      expect(m.checkInvariants()).toEqual([]);
      await m.destroy(r.domid);
      expect(m.freePages()).toBe(before);
      expect(m.checkInvariants()).toEqual([]);
    });

    it('auto-allocates ids after a rover that explicit ids do not move, skipping ids in use, never 0', async () => {
      // The builder's DomU took the first auto id.
      expect(domUid).toBe(1);
      expect(create(m.ctrl, 5).domid).toBe(5);
      expect(create(m.ctrl).domid).toBe(2);
      await m.destroy(2);
      // The rover is past 2: the next id is 3, not the freed 2.
      expect(create(m.ctrl).domid).toBe(3);
      expect(create(m.ctrl, 4).domid).toBe(4);
      // 4 and 5 are taken.
      expect(create(m.ctrl).domid).toBe(6);
    });

    it('a domid at or above DOMID_FIRST_RESERVED (0x7FF0) means "pick one"', () => {
      const a = create(m.ctrl, 0x7ff0);
      const b = create(m.ctrl, 0xffff);
      expect(a.rc).toBe(0);
      expect(b.rc).toBe(0);
      expect([a.domid, b.domid]).toEqual([2, 3]);
    });

    it('a domid in use is -EEXIST, and nothing is created', () => {
      const before = snapshot(m);
      expect(create(m.ctrl, domUid).rc).toBe(-EEXIST);
      expectUnchanged(m, before);
    });

    it.each([
      ['an unknown flag bit', { flags: 1 << 8 }],
      ['HVM (no hardware-assisted vCPU on this host)', { flags: XEN_DOMCTL_CDF_hvm }],
      ['HAP without HVM', { flags: XEN_DOMCTL_CDF_hap }],
      ['an IOMMU (none on this host)', { flags: XEN_DOMCTL_CDF_iommu }],
      ['IOMMU options without an IOMMU', { iommu_opts: 1 }],
      ['nested virtualisation (needs HAP)', { flags: XEN_DOMCTL_CDF_nested_virt }],
      ['a vPMU (not available)', { flags: XEN_DOMCTL_CDF_vpmu }],
      ['vmtrace (not available)', { vmtrace_size: 4096 }],
      ['no vCPUs', { max_vcpus: 0 }],
      ['more vCPUs than the limit', { max_vcpus: 33 }],
      ['max_vcpus 2^32 - 1', { max_vcpus: 0xffffffff }],
      ['more grant frames than the limit', { max_grant_frames: 65 }],
      ['more maptrack frames than the limit', { max_maptrack_frames: 1025 }],
      ['unknown grant_opts bits', { grant_opts: 0x11 }],
      ['a grant table version above 2', { grant_opts: 3 }],
    ] as Array<[string, CreateFields]>)('%s is -EINVAL, and nothing is created', (_n, f) => {
      const before = snapshot(m);
      expect(create(m.ctrl, 0, f).rc).toBe(-EINVAL);
      expect(create(m.ctrl, 9, f).rc).toBe(-EINVAL);
      expectUnchanged(m, before);
    });

    it('is -EPERM for a DomU, and nothing is created', () => {
      const before = snapshot(m);
      expect(create(ctrlOf(domU)).rc).toBe(-EPERM);
      expect(create(ctrlOf(domU), 9).rc).toBe(-EPERM);
      expectUnchanged(m, before);
    });

    it('a full domain table is -ENOMEM, and nothing is created', () => {
      // TEST_CONFIG has 8 domain slots: Dom0, the DomU and six more.
      for (let i = 0; i < m.hv.cfg.maxDomains - 2; i++) expect(create(m.ctrl).rc).toBe(0);
      const before = snapshot(m);
      expect(create(m.ctrl).rc).toBe(-ENOMEM);
      expect(create(m.ctrl, 100).rc).toBe(-ENOMEM);
      expectUnchanged(m, before);
    });

    it('XEN_DOMCTL_CDF_xs_domain shows in getdomaininfo as XEN_DOMINF_xs_domain', () => {
      const xs = create(m.ctrl, 0, { flags: XEN_DOMCTL_CDF_xs_domain });
      expect(xs.rc).toBe(0);
      expect(m.ctrl.domainInfo(xs.domid)!.flags & XEN_DOMINF_xs_domain).not.toBe(0);
      expect(m.ctrl.domainInfo(domUid)!.flags & XEN_DOMINF_xs_domain).toBe(0);
    });
  });

  describe('destroydomain', () => {
    it('destroys a domain and frees all it had; the id is then unknown (-ESRCH)', async () => {
      await m.destroy(domUid);
      expect(m.freePages()).toBe(freeAtBoot);
      expect(ids()).toEqual([0]);
      expect(m.ctrl.domctlRaw(XEN_DOMCTL_destroydomain, domUid).rc).toBe(-ESRCH);
      expect(m.checkInvariants()).toEqual([]);
    });

    it('of oneself is -EINVAL; of a missing domain -ESRCH; from a DomU -EPERM; and everyone survives', () => {
      const before = snapshot(m);
      expect(m.ctrl.domctlRaw(XEN_DOMCTL_destroydomain, 0).rc).toBe(-EINVAL);
      expect(m.ctrl.domctlRaw(XEN_DOMCTL_destroydomain, 777).rc).toBe(-ESRCH);
      expect(ctrlOf(domU).domctlRaw(XEN_DOMCTL_destroydomain, 0).rc).toBe(-EPERM);
      expect(ctrlOf(domU).domctlRaw(XEN_DOMCTL_destroydomain, domUid).rc).toBe(-EPERM);
      expectUnchanged(m, before);
    });
  });

  describe('pausedomain and unpausedomain', () => {
    const pause = (id: number, c = m.ctrl): number => c.domctlRaw(XEN_DOMCTL_pausedomain, id).rc;
    const unpause = (id: number, c = m.ctrl): number => c.domctlRaw(XEN_DOMCTL_unpausedomain, id).rc;
    const paused = (id: number): boolean => m.ctrl.domainInfo(id)!.paused;

    it('count: two pauses need two unpauses; unpausing a domain that is not paused is -EINVAL', () => {
      expect(paused(domUid)).toBe(false);
      expect(pause(domUid)).toBe(0);
      expect(pause(domUid)).toBe(0);
      expect(paused(domUid)).toBe(true);
      expect(unpause(domUid)).toBe(0);
      expect(paused(domUid)).toBe(true);
      expect(unpause(domUid)).toBe(0);
      expect(paused(domUid)).toBe(false);
      expect(unpause(domUid)).toBe(-EINVAL);
      expect(paused(domUid)).toBe(false);
    });

    it('a new domain starts paused once: one unpause starts it', () => {
      const { domid } = create(m.ctrl);
      expect(paused(domid)).toBe(true);
      expect(unpause(domid)).toBe(0);
      expect(paused(domid)).toBe(false);
      expect(unpause(domid)).toBe(-EINVAL);
    });

    it('the toolstack pause count stops at 255 with -EOVERFLOW', () => {
      for (let i = 0; i < 255; i++) expect(pause(domUid)).toBe(0);
      expect(pause(domUid)).toBe(-EOVERFLOW);
      for (let i = 0; i < 255; i++) expect(unpause(domUid)).toBe(0);
      expect(paused(domUid)).toBe(false);
    });

    it('pausing oneself is -EINVAL; a missing domain -ESRCH; a DomU gets -EPERM, and nothing is paused', () => {
      expect(pause(0)).toBe(-EINVAL);
      expect(pause(777)).toBe(-ESRCH);
      expect(unpause(777)).toBe(-ESRCH);
      expect(pause(0, ctrlOf(domU))).toBe(-EPERM);
      expect(pause(domUid, ctrlOf(domU))).toBe(-EPERM);
      expect(unpause(domUid, ctrlOf(domU))).toBe(-EPERM);
      expect(paused(0)).toBe(false);
      expect(paused(domUid)).toBe(false);
    });
  });

  describe('getdomaininfo', () => {
    it('describes the domain: id, pages, vCPUs online, paused flag', () => {
      const r = getinfo(m.ctrl, domUid);
      expect(r.rc).toBe(0);
      expect(r.domain).toBe(domUid);
      expect(r.info.get('domain')).toBe(domUid);
      expect(r.info.get('tot_pages')).toBe(256);
      expect(r.info.get('max_pages')).toBe(256);
      expect(r.info.get('nr_online_vcpus')).toBe(1);
      expect(r.info.get('flags') & XEN_DOMINF_paused).toBe(0);
    });

    it('of a missing domid returns the first domain above it, with op.domain set to that id (4.17)', () => {
      expect(create(m.ctrl, 10).rc).toBe(0);
      expect(create(m.ctrl, 20).rc).toBe(0);
      for (const [ask, got] of [[2, 10], [11, 20], [19, 20]]) {
        const r = getinfo(m.ctrl, ask);
        expect(r.rc).toBe(0);
        expect(r.domain).toBe(got);
        expect(r.info.get('domain')).toBe(got);
      }
      // libxc's exact lookup sees that as "no such domain".
      expect(m.ctrl.domainInfo(11)).toBeNull();
    });

    it('is -ESRCH with no domain at or above the id, and -EINVAL for a reserved id', () => {
      expect(getinfo(m.ctrl, domUid + 1).rc).toBe(-ESRCH);
      expect(getinfo(m.ctrl, 0x7fef).rc).toBe(-ESRCH);
      expect(getinfo(m.ctrl, 0x7ff0).rc).toBe(-EINVAL);
      expect(getinfo(m.ctrl, 0xffff).rc).toBe(-EINVAL);
    });

    it('is -EPERM for a DomU, whatever the id: its own, another, a missing or a reserved one', () => {
      const c = ctrlOf(domU);
      for (const id of [domUid, 0, domUid + 1, 0x7ff0]) expect(getinfo(c, id).rc, `d${id}`).toBe(-EPERM);
    });
  });

  describe('max_mem', () => {
    const maxMem = (id: number, kib: number | bigint, c = m.ctrl): number =>
      c.domctlRaw(XEN_DOMCTL_max_mem, id, (u) => { new StructView(XEN_DOMCTL_MAX_MEM, u).setBig('max_memkb', BigInt(kib)); }).rc;

    it('sets max_pages to max_memkb / 4 (rounded down), which the domain sees as its maximum reservation', () => {
      expect(maxMem(domUid, 2048)).toBe(0);
      expect(domU.xen.maximumReservation()).toBe(512);
      expect(maxMem(domUid, 4095)).toBe(0);
      expect(domU.xen.maximumReservation()).toBe(1023);
      expect(domU.xen.populatePhysmap([300, 301])).toBe(2);
    });

    it('below tot_pages is accepted: nothing is taken away, but nothing more can be allocated', () => {
      const before = m.ctrl.domainInfo(domUid)!.totPages;
      expect(maxMem(domUid, 512)).toBe(0);
      expect(m.ctrl.domainInfo(domUid)!.maxPages).toBe(128);
      expect(m.ctrl.domainInfo(domUid)!.totPages).toBe(before);
      const free = m.freePages();
      expect(domU.xen.populatePhysmap([300])).toBe(0);
      expect(m.freePages()).toBe(free);
      // Giving memory back still works.
      expect(domU.xen.decreaseReservation([10])).toBe(1);
    });

    it('a huge max_memkb saturates instead of wrapping: the domain is effectively unlimited', () => {
      expect(maxMem(domUid, 2n ** 64n - 1n)).toBe(0);
      expect(domU.xen.maximumReservation()).toBeGreaterThanOrEqual(m.hv.nrFrames);
      expect(domU.xen.populatePhysmap([300])).toBe(1);
    });

    it('a missing domain is -ESRCH; a DomU gets -EPERM even for itself; max_pages unchanged', () => {
      expect(maxMem(777, 1 << 20)).toBe(-ESRCH);
      expect(maxMem(domUid, 1 << 20, ctrlOf(domU))).toBe(-EPERM);
      expect(m.ctrl.domainInfo(domUid)!.maxPages).toBe(256);
    });
  });

  describe('max_vcpus', () => {
    const maxVcpus = (id: number, max: number, c = m.ctrl): number =>
      c.domctlRaw(XEN_DOMCTL_max_vcpus, id, (u) => { new StructView(XEN_DOMCTL_MAX_VCPUS, u).set('max', max); }).rc;

    it('accepts the value chosen at createdomain; any other is -EINVAL (4.17 sets max_vcpus in createdomain)', () => {
      const { domid } = create(m.ctrl, 0, { max_vcpus: 2 });
      expect(maxVcpus(domid, 2)).toBe(0);
      expect(maxVcpus(domid, 3)).toBe(-EINVAL);
      expect(maxVcpus(domid, 1)).toBe(-EINVAL);
      expect(maxVcpus(domid, 0)).toBe(-EINVAL);
      expect(m.ctrl.domainInfo(domid)!.maxVcpuId).toBe(1);
    });

    it('of oneself is -EINVAL; a missing domain -ESRCH; a DomU -EPERM; the DomU\'s vCPU count is unchanged', () => {
      expect(maxVcpus(0, 1)).toBe(-EINVAL);
      expect(maxVcpus(777, 1)).toBe(-ESRCH);
      expect(maxVcpus(domUid, 4, ctrlOf(domU))).toBe(-EPERM);
      expect(maxVcpus(domUid, 4)).toBe(-EINVAL);
      expect(domU.call(__HYPERVISOR_vcpu_op, VCPUOP_is_up, 1, 0)).toBe(-ENOENT);
    });
  });
});
