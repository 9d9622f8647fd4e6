/**
 * The hypercall table (hypervisor/hypercall/table.ts): Xen's numbers route to
 * their handlers, unknown numbers are -ENOSYS, and register values no guest
 * register could hold get an error code instead of reaching a handler. Guest
 * input never throws inside the hypervisor.
 */
import { beforeEach, describe, expect, it } from 'vitest';
import { TestMachine, type TestVcpu } from '../../helpers/machine.ts';
import { EINVAL, ENOSYS, EPERM, ESRCH } from '../../../shared/errno.ts';
import {
  CONSOLEIO_write, NR_hypercalls, SCHEDOP_yield, VCPUOP_is_up, XENMEM_current_reservation, XENMEM_increase_reservation,
  XENVER_pagesize, XEN_DOMCTL_pausedomain, XEN_SYSCTL_physinfo,
  XENVER_version, __HYPERVISOR_console_io, __HYPERVISOR_domctl, __HYPERVISOR_memory_op, __HYPERVISOR_sched_op,
  __HYPERVISOR_sysctl, __HYPERVISOR_vcpu_op, __HYPERVISOR_xen_version,
} from '../../../shared/hypercall.ts';
import { XEN_DOMCTL_INTERFACE_VERSION } from '../../../shared/abi/domctl.ts';
import { XEN_SYSCTL_INTERFACE_VERSION } from '../../../shared/abi/sysctl.ts';
import { registerHypercall } from '../../../hypervisor/hypercall/table.ts';
import { XEN_MEMORY_RESERVATION } from '../../../shared/abi/memory.ts';
import { StructView } from '../../../shared/layout.ts';
import { DOMID_SELF } from '../../../shared/types.ts';
import { ARG, HOSTILE_REGS, expectUnchanged, put, snapshot } from './helpers.ts';

const IMPLEMENTED: ReadonlyArray<readonly [string, number]> = [
  ['memory_op', __HYPERVISOR_memory_op],
  ['xen_version', __HYPERVISOR_xen_version],
  ['console_io', __HYPERVISOR_console_io],
  ['vcpu_op', __HYPERVISOR_vcpu_op],
  ['sched_op', __HYPERVISOR_sched_op],
  ['sysctl', __HYPERVISOR_sysctl],
  ['domctl', __HYPERVISOR_domctl],
];

describe('hypercall table', () => {
  let m: TestMachine;
  let domU: TestVcpu;
  let domid: number;
  beforeEach(async () => {
    m = new TestMachine();
    ({ domid, v: domU } = await m.domU());
  });

  it('uses Xen\'s hypercall numbers (xen.h)', () => {
    expect(Object.fromEntries(IMPLEMENTED)).toEqual({
      memory_op: 12, xen_version: 17, console_io: 18, vcpu_op: 24, sched_op: 29, sysctl: 35, domctl: 36,
    });
  });

  it('routes each number to its handler', () => {
    expect(domU.call(__HYPERVISOR_xen_version, XENVER_version, 0)).toBe(0x00040011);
    expect(domU.call(__HYPERVISOR_xen_version, XENVER_pagesize, 0)).toBe(4096);
    domU.api.mem.writeU16(ARG, domid);
    expect(domU.call(__HYPERVISOR_memory_op, XENMEM_current_reservation, ARG)).toBe(256);
    expect(domU.call(__HYPERVISOR_vcpu_op, VCPUOP_is_up, 0, 0)).toBe(1);
    expect(domU.call(__HYPERVISOR_sched_op, SCHEDOP_yield, 0)).toBe(0);
    expect(domU.sched.yields).toBe(1);
    expect(domU.call(__HYPERVISOR_console_io, CONSOLEIO_write, 0, 0)).toBe(0);
    // domctl and sysctl: cmd @0, interface_version @4 (domctl's domain @8).
    const hdr = (v: TestVcpu, cmd: number, version: number, dom = 0): number => {
      v.api.mem.writeU32(ARG, cmd);
      v.api.mem.writeU32(ARG + 4, version);
      v.api.mem.writeU16(ARG + 8, dom);
      return ARG;
    };
    expect(m.dom0.call(__HYPERVISOR_domctl, hdr(m.dom0, XEN_DOMCTL_pausedomain, XEN_DOMCTL_INTERFACE_VERSION, 999))).toBe(-ESRCH);
    expect(domU.call(__HYPERVISOR_domctl, hdr(domU, XEN_DOMCTL_pausedomain, XEN_DOMCTL_INTERFACE_VERSION, 0))).toBe(-EPERM);
    expect(m.dom0.call(__HYPERVISOR_sysctl, hdr(m.dom0, XEN_SYSCTL_physinfo, XEN_SYSCTL_INTERFACE_VERSION))).toBe(0);
    expect(domU.call(__HYPERVISOR_sysctl, hdr(domU, XEN_SYSCTL_physinfo, XEN_SYSCTL_INTERFACE_VERSION))).toBe(-EPERM);
  });

  it('unknown hypercall numbers are -ENOSYS, whatever the arguments', () => {
    const before = snapshot(m);
    // Unimplemented Xen numbers, unused numbers, and numbers past the table.
    for (const op of [0, 1, 59, 63, NR_hypercalls, 64, 4096, 0x7fffffff, -1, 2 ** 53, -(2 ** 53)]) {
      expect(domU.call(op, ARG, ARG, ARG, ARG, ARG), `hypercall ${op}`).toBe(-ENOSYS);
      expect(domU.call(op, 'not a register', NaN), `hypercall ${op}`).toBe(-ENOSYS);
    }
    expectUnchanged(m, before);
  });

  it.each(HOSTILE_REGS)('%s as the hypercall number is -ENOSYS, never a throw', (_n, bad) => {
    expect(() => domU.call(bad)).not.toThrow();
    expect(domU.call(bad, XENVER_version, 0)).toBe(-ENOSYS);
  });

  describe.each(IMPLEMENTED)('%s (%i)', (_name, op) => {
    it.each(HOSTILE_REGS)('%s in any argument register is -EINVAL, never a throw, and changes nothing', (_n, bad) => {
      const before = snapshot(m);
      for (let pos = 0; pos < 5; pos++) {
        const args: unknown[] = [0, ARG, 0, 0, 0];
        args[pos] = bad;
        for (const v of [domU, m.dom0]) {
          let rc: number | undefined;
          expect(() => { rc = v.call(op, ...args); }).not.toThrow();
          expect(rc, `argument ${pos + 1}`).toBe(-EINVAL);
        }
      }
      expect(domU.sched.yields + domU.sched.blocks + domU.sched.parks).toBe(0);
      expectUnchanged(m, before);
    });
  });

  it('takes bigint registers as 64-bit values: in range they work, wider ones are truncated to 64 bits', () => {
    expect(domU.call(BigInt(__HYPERVISOR_xen_version), BigInt(XENVER_version), 0n)).toBe(0x00040011);
    // 2^64 + 17 is 17 in a 64-bit register.
    expect(domU.call((1n << 64n) + 17n, 0n, 0n)).toBe(0x00040011);
    // A NULL handle through a bigint.
    expect(domU.call(17n, BigInt(XENVER_pagesize), 1n << 64n)).toBe(4096);
  });

  it('huge bigint and negative register values reach handlers as out-of-range numbers: errors, never throws', () => {
    const before = snapshot(m);
    const huge = [2n ** 63n, 2n ** 64n - 1n, -1n, 2n ** 200n + 8n, -1, -(2 ** 40)];
    for (const v of [domU, m.dom0]) {
      for (const x of huge) {
        for (const op of IMPLEMENTED.map(([, n]) => n)) {
          for (let pos = 0; pos < 3; pos++) {
            const args: unknown[] = [XENVER_version, 0, 0];
            args[pos] = x;
            let rc = 0;
            expect(() => { rc = v.call(op, ...args); }).not.toThrow();
            expect(Number.isInteger(rc)).toBe(true);
          }
        }
      }
    }
    // None of those could name a real buffer or a real domain: nothing moved.
    expect(domU.sched.parks + m.dom0.sched.parks).toBe(0);
    expectUnchanged(m, before);
  });

  it('a negative number in a register is a huge unsigned value to the hypervisor, never a negative index or count', async () => {
    const { v, domid: id } = await m.domU({ maxmemMiB: 2 });
    // increase_reservation of one extent, with cmd = -64: op bits 0, "start_extent" -1 if taken as signed.
    put(v, ARG, StructView.alloc(XEN_MEMORY_RESERVATION).set('nr_extents', 1).set('domid', DOMID_SELF));
    expect(v.call(__HYPERVISOR_memory_op, XENMEM_increase_reservation, ARG)).toBe(1);
    const before = snapshot(m);
    expect(m.ctrl.domainInfo(id)!.totPages).toBe(257);
    for (const cmd of [-64, -(2 ** 40), -1]) {
      const rc = v.call(__HYPERVISOR_memory_op, cmd, ARG);
      expect(rc === -ENOSYS || rc > 1).toBe(true);
    }
    expectUnchanged(m, before);
  });

  it('registerHypercall adds a handler for a free number, which gets integer registers; bad numbers are refused', () => {
    const seen: number[][] = [];
    registerHypercall(62, (_ctx, a1, a2, a3, a4, a5) => {
      seen.push([a1, a2, a3, a4, a5]);
      return 7;
    });
    expect(domU.call(62, 1, 2n, undefined, 4, 5)).toBe(7);
    expect(seen).toEqual([[1, 2, 0, 4, 5]]);
    expect(domU.call(62, 'x')).toBe(-EINVAL);
    expect(seen).toHaveLength(1);
    expect(() => registerHypercall(NR_hypercalls, () => 0)).toThrow();
    expect(() => registerHypercall(-1, () => 0)).toThrow();
    expect(() => registerHypercall(1.5, () => 0)).toThrow();
  });
});
