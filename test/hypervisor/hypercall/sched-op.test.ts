/**
 * __HYPERVISOR_sched_op (29): common/sched/core.c do_sched_op, sched.h.
 * yield gives the pCPU away; block sleeps unless an event is already waiting;
 * shutdown records the reason (getdomaininfo flags) and never returns to the
 * guest (the vCPU parks).
 */
import { beforeEach, describe, expect, it } from 'vitest';
import { TestMachine, type TestVcpu } from '../../helpers/machine.ts';
import { EFAULT, EINVAL, ENOSYS, EPERM, ESRCH } from '../../../shared/errno.ts';
import {
  SCHEDOP_block, SCHEDOP_remote_shutdown, SCHEDOP_shutdown, SCHEDOP_yield, SHUTDOWN_crash, SHUTDOWN_poweroff,
  SHUTDOWN_reboot, SHUTDOWN_watchdog, XENMAPSPACE_shared_info, XENMEM_add_to_physmap, __HYPERVISOR_memory_op,
  __HYPERVISOR_sched_op,
} from '../../../shared/hypercall.ts';
import { SCHED_REMOTE_SHUTDOWN, SCHED_SHUTDOWN } from '../../../shared/abi/sched.ts';
import { XEN_ADD_TO_PHYSMAP } from '../../../shared/abi/memory.ts';
import { StructView } from '../../../shared/layout.ts';
import { DOMID_SELF, PAGE_SIZE } from '../../../shared/types.ts';
import { V, VPF_blocked } from '../../../hypervisor/state.ts';
import { ARG, STRADDLE, UNMAPPED, put } from './helpers.ts';

const SCHED = __HYPERVISOR_sched_op;
/** SHUTDOWN_soft_reset (sched.h), the highest reason: SHUTDOWN_MAX is 5 in Xen 4.17. */
const SHUTDOWN_soft_reset = 5;
/** Where the tests map shared_info: just above a 1 MiB guest's RAM. */
const SI_GFN = 256;

describe('sched_op', () => {
  let m: TestMachine;
  let domU: TestVcpu;
  let domid: number;
  let slot: number;
  beforeEach(async () => {
    m = new TestMachine();
    ({ domid, slot, v: domU } = await m.domU());
  });

  const shutdown = (v: TestVcpu, reason: number, at = ARG): number => {
    put(v, ARG, StructView.alloc(SCHED_SHUTDOWN).set('reason', reason));
    return v.call(SCHED, SCHEDOP_shutdown, at);
  };
  const info = (id = domid) => m.ctrl.domainInfo(id)!;

  it('yield returns 0 and gives the pCPU away once', () => {
    expect(domU.call(SCHED, SCHEDOP_yield, 0)).toBe(0);
    expect(domU.sched.yields).toBe(1);
    expect(domU.sched.blocks).toBe(0);
  });

  describe('block', () => {
    const mapSharedInfo = (): void => {
      const x = StructView.alloc(XEN_ADD_TO_PHYSMAP).set('domid', DOMID_SELF).set('space', XENMAPSPACE_shared_info).set('gpfn', SI_GFN);
      expect(domU.call(__HYPERVISOR_memory_op, XENMEM_add_to_physmap, put(domU, ARG, x))).toBe(0);
    };

    it('with nothing pending, would sleep; on return the vCPU is no longer marked blocked', () => {
      expect(domU.call(SCHED, SCHEDOP_block, 0)).toBe(0);
      expect(domU.sched.blocks).toBe(1);
      expect(domU.sched.wouldSleep).toBe(1);
      expect(m.hv.vcpu[m.hv.v(slot, 0, V.pause_flags)] & VPF_blocked).toBe(0);
    });

    it('returns at once when an event is already pending for the vCPU, and consumes the pending word', () => {
      Atomics.store(m.hv.vcpu, m.hv.v(slot, 0, V.pending), 1);
      expect(domU.call(SCHED, SCHEDOP_block, 0)).toBe(0);
      expect(domU.sched.wouldSleep).toBe(0);
      expect(Atomics.load(m.hv.vcpu, m.hv.v(slot, 0, V.pending))).toBe(0);
      // The next block has nothing to wake it.
      expect(domU.call(SCHED, SCHEDOP_block, 0)).toBe(0);
      expect(domU.sched.wouldSleep).toBe(1);
    });

    it('returns at once when the guest\'s vcpu_info[0].evtchn_upcall_pending is set in its shared_info page', () => {
      mapSharedInfo();
      domU.api.mem.writeU8(SI_GFN * PAGE_SIZE + 0 * 64 + 0, 1);
      expect(domU.call(SCHED, SCHEDOP_block, 0)).toBe(0);
      expect(domU.sched.wouldSleep).toBe(0);
    });

    it('another vCPU\'s upcall_pending (vcpu_info[1], 64 bytes on) does not wake vCPU 0', () => {
      mapSharedInfo();
      domU.api.mem.writeU8(SI_GFN * PAGE_SIZE + 1 * 64 + 0, 1);
      // evtchn_upcall_mask (byte 1) and a pending selector are not "pending" either.
      domU.api.mem.writeU8(SI_GFN * PAGE_SIZE + 1, 1);
      expect(domU.call(SCHED, SCHEDOP_block, 0)).toBe(0);
      expect(domU.sched.wouldSleep).toBe(1);
    });
  });

  describe('shutdown', () => {
    it.each([
      ['poweroff', SHUTDOWN_poweroff],
      ['reboot', SHUTDOWN_reboot],
      ['crash', SHUTDOWN_crash],
      ['watchdog', SHUTDOWN_watchdog],
      ['soft_reset', SHUTDOWN_soft_reset],
    ])('(%s) marks the domain shut down with its reason and parks the vCPU', (_n, reason) => {
      expect(info().shutdown).toBe(false);
      expect(shutdown(domU, reason)).toBe(0);
      expect(domU.sched.parks).toBe(1);
      const i = info();
      expect(i.shutdown).toBe(true);
      expect(i.shutdownReason).toBe(reason);
      expect((i.flags >>> 16) & 0xff).toBe(reason);
      expect(i.dying).toBe(false);
      // Shutting down does not free anything: the toolstack destroys the domain.
      expect(i.totPages).toBe(256);
    });

    it('the first reason wins', () => {
      expect(shutdown(domU, SHUTDOWN_reboot)).toBe(0);
      expect(shutdown(domU, SHUTDOWN_crash)).toBe(0);
      expect(info().shutdownReason).toBe(SHUTDOWN_reboot);
    });

    it('a reason above SHUTDOWN_MAX is -EINVAL: the domain keeps running and the vCPU is not parked', () => {
      for (const reason of [SHUTDOWN_soft_reset + 1, 255, 0xffffffff]) {
        expect(shutdown(domU, reason)).toBe(-EINVAL);
      }
      expect(domU.sched.parks).toBe(0);
      expect(info().shutdown).toBe(false);
    });

    it('an unreadable argument is -EFAULT and nothing happens', () => {
      expect(shutdown(domU, SHUTDOWN_poweroff, UNMAPPED)).toBe(-EFAULT);
      // The 4-byte struct_shutdown half in the last page of RAM, half past it.
      expect(shutdown(domU, SHUTDOWN_poweroff, STRADDLE + 2)).toBe(-EFAULT);
      expect(domU.sched.parks).toBe(0);
      expect(info().shutdown).toBe(false);
    });

    it('Dom0 shutting down halts the host with its reason', () => {
      expect(m.port.requests.some((r) => r.kind === 'halt')).toBe(false);
      expect(shutdown(m.dom0, SHUTDOWN_reboot)).toBe(0);
      expect(m.port.requests.filter((r) => r.kind === 'halt')).toEqual([{ kind: 'halt', code: SHUTDOWN_reboot }]);
      expect(info(0).shutdownReason).toBe(SHUTDOWN_reboot);
    });

    it('a shut-down domain\'s vCPU no longer sleeps in block (it must reach its parking point)', () => {
      expect(shutdown(domU, SHUTDOWN_poweroff)).toBe(0);
      expect(domU.call(SCHED, SCHEDOP_block, 0)).toBe(0);
      expect(domU.sched.wouldSleep).toBe(0);
    });
  });

  describe('remote_shutdown', () => {
    const remote = (v: TestVcpu, target: number, reason: number): number => {
      put(v, ARG, StructView.alloc(SCHED_REMOTE_SHUTDOWN).set('domain_id', target).set('reason', reason));
      return v.call(SCHED, SCHEDOP_remote_shutdown, ARG);
    };

    it('Dom0 shuts a DomU down with a reason, without parking itself', () => {
      expect(remote(m.dom0, domid, SHUTDOWN_crash)).toBe(0);
      expect(info().shutdown).toBe(true);
      expect(info().shutdownReason).toBe(SHUTDOWN_crash);
      expect(m.dom0.sched.parks).toBe(0);
      expect(info(0).shutdown).toBe(false);
    });

    it('a DomU gets -EPERM (Dom0 untouched); a missing domain is -ESRCH', () => {
      expect(remote(domU, 0, SHUTDOWN_poweroff)).toBe(-EPERM);
      expect(info(0).shutdown).toBe(false);
      expect(m.port.requests.some((r) => r.kind === 'halt')).toBe(false);
      expect(remote(m.dom0, 999, SHUTDOWN_poweroff)).toBe(-ESRCH);
    });
  });

  it('an unknown sub-op is -ENOSYS', () => {
    expect(domU.call(SCHED, 99, 0)).toBe(-ENOSYS);
    expect(domU.sched.yields + domU.sched.blocks + domU.sched.parks).toBe(0);
  });
});
