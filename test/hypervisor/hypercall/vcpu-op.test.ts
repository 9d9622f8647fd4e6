/**
 * __HYPERVISOR_vcpu_op (24): common/domain.c do_vcpu_op, vcpu.h. The vCPU id
 * is checked first (-ENOENT beyond max_vcpus); is_up and get_runstate_info
 * report on any vCPU of the caller's own domain.
 */
import { beforeEach, describe, expect, it } from 'vitest';
import { TestMachine, type TestVcpu } from '../../helpers/machine.ts';
import { EFAULT, ENOENT, ENOSYS } from '../../../shared/errno.ts';
import {
  RUNSTATE_blocked, RUNSTATE_offline, RUNSTATE_runnable, RUNSTATE_running, VCPUOP_get_runstate_info, VCPUOP_is_up,
  __HYPERVISOR_vcpu_op,
} from '../../../shared/hypercall.ts';
import { runstateChange } from '../../../hypervisor/domain.ts';
import { ARG, STRADDLE, UNMAPPED } from './helpers.ts';

const VCPU = __HYPERVISOR_vcpu_op;
const SIZEOF_RUNSTATE_INFO = 48;

/** vcpu_runstate_info decoded at Xen's offsets (vcpu.h): state @0, state_entry_time @8, time[4] @16. */
function readRunstate(v: TestVcpu, at: number): { state: number; entry: bigint; time: bigint[] } {
  const b = v.api.mem.read(at, SIZEOF_RUNSTATE_INFO);
  const dv = new DataView(b.buffer);
  return {
    state: dv.getInt32(0, true),
    entry: dv.getBigUint64(8, true),
    time: [0, 1, 2, 3].map((k) => dv.getBigUint64(16 + 8 * k, true)),
  };
}

const spin = (ns: bigint, now: () => bigint): void => {
  const end = now() + ns;
  while (now() < end);
};

describe('vcpu_op', () => {
  let m: TestMachine;
  let domU: TestVcpu;
  let slot: number;
  beforeEach(async () => {
    m = new TestMachine();
    ({ slot, v: domU } = await m.domU({ vcpus: 2 }));
  });

  describe('is_up', () => {
    it('is 1 for a vCPU the builder brought up and 0 for one still down', () => {
      expect(domU.call(VCPU, VCPUOP_is_up, 0, 0)).toBe(1);
      expect(domU.call(VCPU, VCPUOP_is_up, 1, 0)).toBe(0);
      expect(m.dom0.call(VCPU, VCPUOP_is_up, 0, 0)).toBe(1);
    });

    it('a vCPU id at or beyond max_vcpus is -ENOENT', () => {
      for (const id of [2, 31, 32, 0xffffffff, 2 ** 40, -1]) {
        expect(domU.call(VCPU, VCPUOP_is_up, id, 0), `vcpu ${id}`).toBe(-ENOENT);
      }
      // Dom0 has one vCPU.
      expect(m.dom0.call(VCPU, VCPUOP_is_up, 1, 0)).toBe(-ENOENT);
    });
  });

  describe('get_runstate_info', () => {
    it('writes the 48-byte vcpu_runstate_info at Xen\'s layout, and nothing beyond it', () => {
      const now = (): bigint => m.hv.now();
      runstateChange(m.hv, slot, 0, RUNSTATE_running);
      spin(2_000_000n, now);
      runstateChange(m.hv, slot, 0, RUNSTATE_runnable);
      spin(1_000_000n, now);
      const t0 = now();
      runstateChange(m.hv, slot, 0, RUNSTATE_blocked);
      const t1 = now();
      domU.api.mem.fill(ARG, SIZEOF_RUNSTATE_INFO + 16, 0xcc);
      spin(500_000n, now);

      const before = now();
      expect(domU.call(VCPU, VCPUOP_get_runstate_info, 0, ARG)).toBe(0);
      const after = now();
      const r = readRunstate(domU, ARG);
      expect(r.state).toBe(RUNSTATE_blocked);
      expect(r.entry).toBeGreaterThanOrEqual(t0);
      expect(r.entry).toBeLessThanOrEqual(t1);
      expect(r.time[RUNSTATE_running]).toBeGreaterThanOrEqual(2_000_000n);
      expect(r.time[RUNSTATE_runnable]).toBeGreaterThanOrEqual(1_000_000n);
      // vcpu_runstate_get(): the current stint (blocked since `entry`) is included.
      expect(r.time[RUNSTATE_blocked]).toBeGreaterThanOrEqual(before - r.entry);
      expect(r.time[RUNSTATE_blocked]).toBeLessThanOrEqual(after - r.entry);
      // Past states never account more than the time elapsed before entering this one.
      expect(r.time[RUNSTATE_running] + r.time[RUNSTATE_runnable] + r.time[RUNSTATE_offline]).toBeLessThanOrEqual(r.entry);
      expect([...domU.api.mem.read(ARG + SIZEOF_RUNSTATE_INFO, 16)]).toEqual(new Array(16).fill(0xcc));
    });

    it('reports another vCPU of the caller\'s domain (vCPU 1, never run: offline)', () => {
      expect(domU.call(VCPU, VCPUOP_get_runstate_info, 1, ARG)).toBe(0);
      const r = readRunstate(domU, ARG);
      expect(r.state).toBe(RUNSTATE_offline);
      expect(r.time[RUNSTATE_running]).toBe(0n);
    });

    it('an unmapped or straddling buffer is -EFAULT and nothing is written', () => {
      expect(domU.call(VCPU, VCPUOP_get_runstate_info, 0, UNMAPPED)).toBe(-EFAULT);
      domU.api.mem.fill(STRADDLE, 4, 0x3c);
      expect(domU.call(VCPU, VCPUOP_get_runstate_info, 0, STRADDLE)).toBe(-EFAULT);
      expect([...domU.api.mem.read(STRADDLE, 4)]).toEqual([0x3c, 0x3c, 0x3c, 0x3c]);
    });

    it('a vCPU beyond max_vcpus is -ENOENT, checked before the buffer', () => {
      domU.api.mem.fill(ARG, SIZEOF_RUNSTATE_INFO, 0xcc);
      expect(domU.call(VCPU, VCPUOP_get_runstate_info, 2, ARG)).toBe(-ENOENT);
      expect(domU.call(VCPU, VCPUOP_get_runstate_info, 2, UNMAPPED)).toBe(-ENOENT);
      expect([...domU.api.mem.read(ARG, SIZEOF_RUNSTATE_INFO)]).toEqual(new Array(SIZEOF_RUNSTATE_INFO).fill(0xcc));
    });
  });

  it('an unknown sub-op on a valid vCPU is -ENOSYS; on an invalid one -ENOENT comes first', () => {
    expect(domU.call(VCPU, 99, 0, ARG)).toBe(-ENOSYS);
    expect(domU.call(VCPU, 99, 5, ARG)).toBe(-ENOENT);
  });
});
