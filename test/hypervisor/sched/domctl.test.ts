/**
 * The scheduler's hypercalls on the test's thread (no scheduler thread needed:
 * they validate, store in shared memory and post to the scheduler's ring):
 * XEN_DOMCTL_scheduler_op (16), XEN_DOMCTL_setvcpuaffinity (9) and
 * XEN_SYSCTL_sched_id, with Xen's numbers, layouts and errno values.
 */
import { describe, expect, it } from 'vitest';
import { EFAULT, EINVAL, EPERM, ESRCH } from '../../../shared/errno.ts';
import {
  XEN_DOMCTL_SCHEDOP_getvcpuinfo, XEN_DOMCTL_SCHEDOP_putinfo, XEN_DOMCTL_SCHEDOP_putvcpuinfo, XEN_DOMCTL_SCHEDULER_OP,
  XEN_DOMCTL_VCPUAFFINITY, XEN_VCPUAFFINITY_HARD, XEN_VCPUAFFINITY_SOFT,
} from '../../../shared/abi/domctl.ts';
import {
  XEN_DOMCTL_scheduler_op, XEN_DOMCTL_setvcpuaffinity, XEN_SCHEDULER_CREDIT, XEN_SCHEDULER_CREDIT2, XEN_SCHEDULER_NULL,
} from '../../../shared/hypercall.ts';
import { StructView } from '../../../shared/layout.ts';
import { XenError } from '../../../shared/guest/xen.ts';
import { XenCtrl } from '../../../dom0/libxc.ts';
import { storedAffinity, storedParams } from '../../../hypervisor/sched/params.ts';
import { SCHED_EV_AFFINITY, SCHED_EV_PARAMS, schedTake } from '../../../hypervisor/sched/ring.ts';
import type { SchedName } from '../../../hypervisor/config.ts';
import { TestMachine } from '../../helpers/machine.ts';

const IDS: Record<SchedName, number> = { credit: XEN_SCHEDULER_CREDIT, credit2: XEN_SCHEDULER_CREDIT2, null: XEN_SCHEDULER_NULL };

function rawSchedOp(c: XenCtrl, domid: number, schedId: number, cmd: number, weight = 0, cap = 0): number {
  return c.domctlRaw(XEN_DOMCTL_scheduler_op, domid, (u) => {
    new StructView(XEN_DOMCTL_SCHEDULER_OP, u).set('sched_id', schedId).set('cmd', cmd).set('credit_weight', weight).set('credit_cap', cap);
  }).rc;
}

function rc(f: () => unknown): number {
  try {
    f();
    return 0;
  } catch (e) {
    if (e instanceof XenError) return e.rc;
    throw e;
  }
}

async function machine(sched: SchedName = 'credit', vcpus = 2) {
  const m = new TestMachine({ sched, pcpus: 4 });
  const d = await m.domU({ vcpus });
  while (schedTake(m.hv)) { /* drop what building posted */ }
  return { m, ...d };
}

describe('sysctl sched_id', () => {
  for (const name of ['credit', 'credit2', 'null'] as const) {
    it(`reports ${IDS[name]} for sched=${name}`, () => {
      expect(new TestMachine({ sched: name }).ctrl.schedId()).toBe(IDS[name]);
    });
  }
});

describe('XEN_DOMCTL_scheduler_op', () => {
  it('getinfo returns the defaults, weight 256 and no cap', async () => {
    const { m, domid } = await machine();
    expect(m.ctrl.schedGetParams(domid, XEN_SCHEDULER_CREDIT)).toEqual({ weight: 256, cap: 0 });
  });

  it('putinfo stores weight and cap, tells the scheduler thread, and getinfo reads them back', async () => {
    const { m, domid, slot } = await machine();
    m.ctrl.schedSetParams(domid, XEN_SCHEDULER_CREDIT, { weight: 512, cap: 150 });
    expect(m.ctrl.schedGetParams(domid, XEN_SCHEDULER_CREDIT)).toEqual({ weight: 512, cap: 150 });
    expect(storedParams(m.hv, slot)).toEqual({ weight: 512, cap: 150 });
    expect(schedTake(m.hv)).toMatchObject({ kind: SCHED_EV_PARAMS, slot });
  });

  it('weight 0 leaves the weight as it is; under credit cap 0xffff leaves the cap as it is', async () => {
    const { m, domid } = await machine();
    m.ctrl.schedSetParams(domid, XEN_SCHEDULER_CREDIT, { weight: 700, cap: 50 });
    m.ctrl.schedSetParams(domid, XEN_SCHEDULER_CREDIT, { weight: 0, cap: 0xffff });
    expect(m.ctrl.schedGetParams(domid, XEN_SCHEDULER_CREDIT)).toEqual({ weight: 700, cap: 50 });
    m.ctrl.schedSetParams(domid, XEN_SCHEDULER_CREDIT, { weight: 65535, cap: 0 });
    expect(m.ctrl.schedGetParams(domid, XEN_SCHEDULER_CREDIT)).toEqual({ weight: 65535, cap: 0 });
  });

  it('cap above 100 x vCPUs is -EINVAL and changes nothing, weight included', async () => {
    const { m, domid } = await machine('credit', 2);
    expect(rawSchedOp(m.ctrl, domid, XEN_SCHEDULER_CREDIT, XEN_DOMCTL_SCHEDOP_putinfo, 300, 201)).toBe(-EINVAL);
    expect(m.ctrl.schedGetParams(domid, XEN_SCHEDULER_CREDIT)).toEqual({ weight: 256, cap: 0 });
    expect(rawSchedOp(m.ctrl, domid, XEN_SCHEDULER_CREDIT, XEN_DOMCTL_SCHEDOP_putinfo, 300, 200)).toBe(0);
    expect(schedTake(m.hv)).toMatchObject({ kind: SCHED_EV_PARAMS });
    expect(schedTake(m.hv)).toBeNull(); // the refused one posted nothing
  });

  it('credit2: the same parameters; cap 0xffff is a cap, and too large', async () => {
    const { m, domid } = await machine('credit2', 1);
    m.ctrl.schedSetParams(domid, XEN_SCHEDULER_CREDIT2, { weight: 128, cap: 25 });
    expect(m.ctrl.schedGetParams(domid, XEN_SCHEDULER_CREDIT2)).toEqual({ weight: 128, cap: 25 });
    expect(rawSchedOp(m.ctrl, domid, XEN_SCHEDULER_CREDIT2, XEN_DOMCTL_SCHEDOP_putinfo, 0, 0xffff)).toBe(-EINVAL);
  });

  it('a sched_id other than the host\'s is -EINVAL (sched_adjust)', async () => {
    const { m, domid } = await machine('credit');
    expect(rc(() => m.ctrl.schedGetParams(domid, XEN_SCHEDULER_CREDIT2))).toBe(-EINVAL);
    expect(rawSchedOp(m.ctrl, domid, 8 /* RTDS */, XEN_DOMCTL_SCHEDOP_putinfo, 512)).toBe(-EINVAL);
    expect(m.ctrl.schedGetParams(domid, XEN_SCHEDULER_CREDIT).weight).toBe(256);
  });

  it('the per-vCPU commands and unknown commands are -EINVAL; null has no parameters', async () => {
    const { m, domid } = await machine('credit');
    expect(rawSchedOp(m.ctrl, domid, XEN_SCHEDULER_CREDIT, XEN_DOMCTL_SCHEDOP_putvcpuinfo)).toBe(-EINVAL);
    expect(rawSchedOp(m.ctrl, domid, XEN_SCHEDULER_CREDIT, XEN_DOMCTL_SCHEDOP_getvcpuinfo)).toBe(-EINVAL);
    expect(rawSchedOp(m.ctrl, domid, XEN_SCHEDULER_CREDIT, 77)).toBe(-EINVAL);
    const n = await machine('null');
    expect(rc(() => n.m.ctrl.schedGetParams(n.domid, XEN_SCHEDULER_NULL))).toBe(-EINVAL);
  });

  it('a missing domain is -ESRCH; a DomU may not use it (-EPERM)', async () => {
    const { m, domid, v } = await machine();
    expect(rc(() => m.ctrl.schedGetParams(777, XEN_SCHEDULER_CREDIT))).toBe(-ESRCH);
    expect(rc(() => new XenCtrl(v.xen).schedSetParams(domid, XEN_SCHEDULER_CREDIT, { weight: 9999, cap: 0 }))).toBe(-EPERM);
  });

  it('parameters of a destroyed domain do not leak into the next one in its slot', async () => {
    const { m, domid, slot } = await machine();
    m.ctrl.schedSetParams(domid, XEN_SCHEDULER_CREDIT, { weight: 999, cap: 0 });
    await m.destroy(domid);
    const d2 = await m.domU();
    expect(d2.slot).toBe(slot);
    expect(m.ctrl.schedGetParams(d2.domid, XEN_SCHEDULER_CREDIT)).toEqual({ weight: 256, cap: 0 });
  });
});

describe('XEN_DOMCTL_setvcpuaffinity', () => {
  it('pins a vCPU (hard affinity), reports the effective mask and tells the scheduler thread', async () => {
    const { m, domid, slot } = await machine();
    expect(m.ctrl.setVcpuAffinity(domid, 1, [2, 3])).toEqual({ hard: [2, 3], soft: [] });
    expect(storedAffinity(m.hv, slot, 1).hard).toEqual([2, 3]);
    expect(storedAffinity(m.hv, slot, 0).hard).toEqual([0, 1, 2, 3]); // other vCPUs untouched
    expect(schedTake(m.hv)).toMatchObject({ kind: SCHED_EV_AFFINITY, vidx: slot * m.hv.cfg.maxVcpus + 1 });
  });

  it('pCPUs the host does not have are ignored, as Xen ignores offline ones; none left is -EINVAL', async () => {
    const { m, domid, slot } = await machine();
    expect(m.ctrl.setVcpuAffinity(domid, 0, [1, 5, 200])).toEqual({ hard: [1], soft: [] });
    expect(rc(() => m.ctrl.setVcpuAffinity(domid, 0, [4, 100]))).toBe(-EINVAL);
    expect(rc(() => m.ctrl.setVcpuAffinity(domid, 0, []))).toBe(-EINVAL);
    expect(storedAffinity(m.hv, slot, 0).hard).toEqual([1]);
  });

  it('soft affinity is recorded; the reported soft mask is the part inside the hard one', async () => {
    const { m, domid, slot } = await machine();
    expect(m.ctrl.setVcpuAffinity(domid, 0, [0, 1], [1, 2])).toEqual({ hard: [0, 1], soft: [1] });
    expect(storedAffinity(m.hv, slot, 0).soft).toEqual([1, 2]);
    expect(m.ctrl.setVcpuAffinity(domid, 0, null, [3])).toEqual({ hard: [], soft: [] }); // soft only: hard kept
    expect(storedAffinity(m.hv, slot, 0)).toEqual({ hard: [0, 1], soft: [3] });
  });

  const raw = (c: XenCtrl, domid: number, f: (a: StructView<typeof XEN_DOMCTL_VCPUAFFINITY.fields>) => void): number =>
    c.domctlRaw(XEN_DOMCTL_setvcpuaffinity, domid, (u) => f(new StructView(XEN_DOMCTL_VCPUAFFINITY, u))).rc;

  it('no flag, a flagged NULL bitmap, or a vCPU beyond max_vcpus is -EINVAL; an unmapped bitmap -EFAULT', async () => {
    const { m, domid } = await machine('credit', 2);
    const map = m.ctrl.xen.putArray(new Uint8Array([1]));
    expect(raw(m.ctrl, domid, (a) => a.set('vcpu', 0).set('flags', 0).set('cpumap_hard_bitmap', map).set('cpumap_hard_nr_bits', 8))).toBe(-EINVAL);
    expect(raw(m.ctrl, domid, (a) => a.set('vcpu', 0).set('flags', XEN_VCPUAFFINITY_HARD).set('cpumap_hard_nr_bits', 8))).toBe(-EINVAL);
    expect(raw(m.ctrl, domid, (a) => a.set('vcpu', 0).set('flags', XEN_VCPUAFFINITY_SOFT).set('cpumap_soft_nr_bits', 8))).toBe(-EINVAL);
    expect(raw(m.ctrl, domid, (a) => a.set('vcpu', 2).set('flags', XEN_VCPUAFFINITY_HARD).set('cpumap_hard_bitmap', map).set('cpumap_hard_nr_bits', 8))).toBe(-EINVAL);
    expect(raw(m.ctrl, domid, (a) => a.set('vcpu', 0).set('flags', XEN_VCPUAFFINITY_HARD).set('cpumap_hard_bitmap', 4000 * 4096).set('cpumap_hard_nr_bits', 8))).toBe(-EFAULT);
    expect(raw(m.ctrl, domid, (a) => a.set('vcpu', 0).set('flags', XEN_VCPUAFFINITY_HARD).set('cpumap_hard_bitmap', map).set('cpumap_hard_nr_bits', 8))).toBe(0);
  });

  it('bits beyond nr_bits are not read', async () => {
    const { m, domid, slot } = await machine();
    const map = m.ctrl.xen.putArray(new Uint8Array([0b1110]));
    expect(raw(m.ctrl, domid, (a) => a.set('vcpu', 0).set('flags', XEN_VCPUAFFINITY_HARD).set('cpumap_hard_bitmap', map).set('cpumap_hard_nr_bits', 2))).toBe(0);
    expect(storedAffinity(m.hv, slot, 0).hard).toEqual([1]);
  });

  it('a DomU may not pin (-EPERM)', async () => {
    const { domid, v } = await machine();
    expect(rc(() => new XenCtrl(v.xen).setVcpuAffinity(domid, 0, [0]))).toBe(-EPERM);
  });
});
