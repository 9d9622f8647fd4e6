/**
 * __HYPERVISOR_xen_version (17): Xen's common/kernel.c do_xen_version, version.h
 * layouts. Every sub-op a guest may use, the privileged one a DomU is denied,
 * and what bad pointers and unknown sub-ops get.
 */
import { beforeEach, describe, expect, it } from 'vitest';
import { TestMachine, type TestVcpu } from '../../helpers/machine.ts';
import { EFAULT, EINVAL, ENOSYS } from '../../../shared/errno.ts';
import {
  XENVER_capabilities, XENVER_changeset, XENVER_commandline, XENVER_compile_info, XENVER_extraversion,
  XENVER_get_features, XENVER_guest_handle, XENVER_pagesize, XENVER_platform_parameters, XENVER_version,
  __HYPERVISOR_xen_version,
} from '../../../shared/hypercall.ts';
import { PAGE_SIZE } from '../../../shared/types.ts';
import { VcpuCtx } from '../../../hypervisor/vcpu/context.ts';
import { RecordingSched } from '../../helpers/machine.ts';
import { doHypercall } from '../../../hypervisor/hypercall/table.ts';
import { makeGuestMemory } from '../../../hypervisor/vcpu/guest-memory.ts';
import { liveSlot } from '../../../hypervisor/domain.ts';
import { ARG, STRADDLE, UNMAPPED } from './helpers.ts';

const XV = __HYPERVISOR_xen_version;
/** XENFEAT_auto_translated_physmap (features.h): every domain here names gfns, not mfns. */
const XENFEAT_auto_translated_physmap = 2;

const cstr = (b: Uint8Array): string => {
  const end = b.indexOf(0);
  return new TextDecoder().decode(end < 0 ? b : b.subarray(0, end));
};

describe('xen_version', () => {
  let m: TestMachine;
  let domU: TestVcpu;
  beforeEach(async () => {
    m = new TestMachine();
    domU = (await m.domU()).v;
  });

  it('XENVER_version returns (major << 16) | minor, 0x00040011 for 4.17, to any domain', () => {
    expect(m.dom0.call(XV, XENVER_version, 0)).toBe(0x00040011);
    expect(domU.call(XV, XENVER_version, 0)).toBe(0x00040011);
  });

  it('XENVER_pagesize returns PAGE_SIZE with a NULL argument and -EINVAL with any other', () => {
    expect(domU.call(XV, XENVER_pagesize, 0)).toBe(4096);
    expect(domU.call(XV, XENVER_pagesize, ARG)).toBe(-EINVAL);
    // The handle is not dereferenced: an unmapped one is still just "not NULL".
    expect(domU.call(XV, XENVER_pagesize, UNMAPPED)).toBe(-EINVAL);
  });

  it('XENVER_extraversion fills the 16-byte xen_extraversion_t, NUL-terminated, and touches nothing after it', () => {
    domU.api.mem.fill(ARG, 32, 0xaa);
    expect(domU.call(XV, XENVER_extraversion, ARG)).toBe(0);
    const b = domU.api.mem.read(ARG, 32);
    expect(b.subarray(0, 16).indexOf(0)).toBeGreaterThanOrEqual(0);
    expect(cstr(b.subarray(0, 16))).toBe(domU.xen.extraversion());
    expect([...b.subarray(16)]).toEqual(new Array(16).fill(0xaa));
  });

  it('XENVER_compile_info, capabilities and changeset write their fixed-size strings', () => {
    domU.api.mem.fill(ARG, 1024 + 16, 0xaa);
    expect(domU.call(XV, XENVER_compile_info, ARG)).toBe(0);
    const ci = domU.api.mem.read(ARG, 144);
    for (const [at, size] of [[0, 64], [64, 16], [80, 32], [112, 32]] as const) {
      expect(ci.subarray(at, at + size).indexOf(0), `compile_info field at ${at}`).toBeGreaterThanOrEqual(0);
    }
    expect(domU.call(XV, XENVER_capabilities, ARG)).toBe(0);
    const caps = domU.api.mem.read(ARG, 1024 + 16);
    // A 64-bit PV guest is what we run: the "xen-3.0-x86_64" ABI.
    expect(cstr(caps.subarray(0, 1024)).split(' ')).toContain('xen-3.0-x86_64');
    expect([...caps.subarray(1024)]).toEqual(new Array(16).fill(0xaa));
    expect(domU.call(XV, XENVER_changeset, ARG)).toBe(0);
    expect(domU.api.mem.read(ARG, 64).indexOf(0)).toBeGreaterThanOrEqual(0);
  });

  it('XENVER_platform_parameters reports HYPERVISOR_VIRT_START of x86_64', () => {
    expect(domU.call(XV, XENVER_platform_parameters, ARG)).toBe(0);
    expect(domU.api.mem.readU64(ARG)).toBe(0xffff800000000000n);
  });

  it('XENVER_get_features fills submap 0 (auto-translated physmap) and rejects other submaps with -EINVAL', () => {
    domU.api.mem.writeU32(ARG, 0);
    domU.api.mem.writeU32(ARG + 4, 0xdeadbeef);
    expect(domU.call(XV, XENVER_get_features, ARG)).toBe(0);
    expect(domU.api.mem.readU32(ARG)).toBe(0);
    expect(domU.api.mem.readU32(ARG + 4) & (1 << XENFEAT_auto_translated_physmap)).not.toBe(0);

    domU.api.mem.writeU32(ARG, 1);
    domU.api.mem.writeU32(ARG + 4, 0x12345678);
    expect(domU.call(XV, XENVER_get_features, ARG)).toBe(-EINVAL);
    // Nothing copied back on failure.
    expect(domU.api.mem.readU32(ARG + 4)).toBe(0x12345678);
  });

  it('XENVER_guest_handle returns the calling domain\'s handle from createdomain', () => {
    const handle = Uint8Array.from({ length: 16 }, (_, i) => 0xa0 + i);
    const domid = m.ctrl.createDomain({ handle });
    // Give the new domain one page to receive the answer in, and a vCPU context to ask from.
    m.ctrl.maxMem(domid, 4);
    expect(m.ctrl.xen.populatePhysmap([5], 0, domid)).toBe(1);
    const slot = liveSlot(m.hv, domid);
    const ctx = new VcpuCtx(m.hv, slot, 0, m.port, new RecordingSched());
    expect(doHypercall(ctx, XV, XENVER_guest_handle, 5 * PAGE_SIZE)).toBe(0);
    expect([...makeGuestMemory(m.hv, slot).read(5 * PAGE_SIZE, 16)]).toEqual([...handle]);
    // Dom0 was created with an all-zero handle.
    m.dom0.api.mem.fill(ARG, 16, 0xff);
    expect(m.dom0.call(XV, XENVER_guest_handle, ARG)).toBe(0);
    expect([...m.dom0.api.mem.read(ARG, 16)]).toEqual(new Array(16).fill(0));
  });

  it('XENVER_commandline: Dom0 reads the 1024-byte command line; a DomU is denied with "<denied>" and rc 0 (XSM deny, not -EPERM)', () => {
    m.dom0.api.mem.fill(ARG, 1024, 0xaa);
    expect(m.dom0.call(XV, XENVER_commandline, ARG)).toBe(0);
    const line = m.dom0.api.mem.read(ARG, 1024);
    expect(line.indexOf(0)).toBeGreaterThanOrEqual(0);
    expect(line.indexOf(0xaa)).toBe(-1);

    domU.api.mem.fill(ARG, 16, 0xaa);
    expect(domU.call(XV, XENVER_commandline, ARG)).toBe(0);
    const denied = domU.api.mem.read(ARG, 16);
    expect(cstr(denied)).toBe('<denied>');
    // Only strlen("<denied>") + 1 bytes are copied.
    expect([...denied.subarray(9)]).toEqual(new Array(7).fill(0xaa));
  });

  it.each([
    ['extraversion', XENVER_extraversion],
    ['compile_info', XENVER_compile_info],
    ['capabilities', XENVER_capabilities],
    ['changeset', XENVER_changeset],
    ['platform_parameters', XENVER_platform_parameters],
    ['get_features', XENVER_get_features],
    ['guest_handle', XENVER_guest_handle],
    ['commandline', XENVER_commandline],
  ])('XENVER_%s to an unmapped or straddling buffer gets -EFAULT and writes nothing', (_n, cmd) => {
    expect(domU.call(XV, cmd, UNMAPPED)).toBe(-EFAULT);
    domU.api.mem.fill(STRADDLE, 4, 0x5a);
    expect(domU.call(XV, cmd, STRADDLE)).toBe(-EFAULT);
    expect([...domU.api.mem.read(STRADDLE, 4)]).toEqual(new Array(4).fill(0x5a));
  });

  it('an unknown sub-op gets -ENOSYS', () => {
    expect(domU.call(XV, 99, ARG)).toBe(-ENOSYS);
    expect(m.dom0.call(XV, 0x7fffffff, 0)).toBe(-ENOSYS);
  });
});
