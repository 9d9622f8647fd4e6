import { describe, expect, it } from 'vitest';
import { TestMachine } from './../helpers/machine.ts';
import { StructView } from '../../shared/layout.ts';
import { VCPU_GUEST_CONTEXT } from '../../shared/abi/domctl.ts';
import {
  SHUTDOWN_poweroff, VCPUOP_down, VCPUOP_initialise, VCPUOP_is_up, VCPUOP_up, __HYPERVISOR_vcpu_op,
} from '../../shared/hypercall.ts';
import { EPERM } from '../../shared/errno.ts';
import { xsmCheck } from '../../hypervisor/xsm.ts';
import { D } from '../../hypervisor/state.ts';

describe('VCPUOP_down', () => {
  it('takes one vCPU down while another is up, and powers the domain off when the last goes down (vcpu_down)', async () => {
    const m = new TestMachine();
    const { domid, v } = await m.domU({ vcpus: 2 });
    const ctx = StructView.alloc(VCPU_GUEST_CONTEXT).set('entry', 0).set('arg0', 4096);
    const at = v.xen.put(ctx);
    expect(v.call(__HYPERVISOR_vcpu_op, VCPUOP_initialise, 1, at)).toBe(0);
    expect(v.call(__HYPERVISOR_vcpu_op, VCPUOP_up, 1, 0)).toBe(0);
    expect(v.call(__HYPERVISOR_vcpu_op, VCPUOP_is_up, 1, 0)).toBe(1);

    expect(v.call(__HYPERVISOR_vcpu_op, VCPUOP_down, 1, 0)).toBe(0);
    expect(v.call(__HYPERVISOR_vcpu_op, VCPUOP_is_up, 1, 0)).toBe(0);
    expect(m.ctrl.domainInfo(domid)!.shutdown).toBe(false);

    expect(v.call(__HYPERVISOR_vcpu_op, VCPUOP_down, 0, 0)).toBe(0);
    const info = m.ctrl.domainInfo(domid)!;
    expect(info.shutdown).toBe(true);
    expect(info.shutdownReason).toBe(SHUTDOWN_poweroff);
  });
});

describe('XSM_TARGET', () => {
  it("lets a domain act on the domain it is the designated device model for, and on no other", async () => {
    const m = new TestMachine();
    const dm = await m.domU();
    const guest = await m.domU();
    const other = await m.domU();
    expect(xsmCheck(m.hv, dm.slot, 'memory_adjust_reservation', guest.slot)).toBe(-EPERM);
    // The toolstack designates dm as guest's device model: dm's `target` names guest (d->target).
    Atomics.store(m.hv.dom, m.hv.d(dm.slot, D.target), guest.domid);
    expect(xsmCheck(m.hv, dm.slot, 'memory_adjust_reservation', guest.slot)).toBe(0);
    expect(xsmCheck(m.hv, dm.slot, 'memory_adjust_reservation', other.slot)).toBe(-EPERM);
    // ... and not the other way round.
    expect(xsmCheck(m.hv, guest.slot, 'memory_adjust_reservation', dm.slot)).toBe(-EPERM);
    // Privileged-only actions stay privileged-only.
    expect(xsmCheck(m.hv, dm.slot, 'domctl', guest.slot)).toBe(-EPERM);
  });
});
