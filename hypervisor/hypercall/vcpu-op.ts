/** do_vcpu_op (Xen: common/domain.c, arch/x86/domain.c). */
import { EEXIST, EFAULT, EINVAL, ENOENT, ENOSYS, ETIME } from '../../shared/errno.ts';
import {
  VCPUOP_down, VCPUOP_get_runstate_info, VCPUOP_initialise, VCPUOP_is_up, VCPUOP_up, VCPUOP_set_singleshot_timer,
  VCPUOP_stop_singleshot_timer, VCPUOP_set_periodic_timer, VCPUOP_stop_periodic_timer, SHUTDOWN_poweroff,
} from '../../shared/hypercall.ts';
import { VCPU_SET_PERIODIC_TIMER, VCPU_SET_SINGLESHOT_TIMER, VCPU_SSHOTTMR_future } from '../../shared/abi/vcpu.ts';
import { MIN_PERIOD_NS, setPeriodic, setSingleshot } from '../timer/timers.ts';

/** Xen's STIME_DELTA_MAX bound on periodic timers (2^62 - 1 ns); anything larger is -EINVAL. */
const MAX_PERIOD_NS = (1n << 62n) - 1n;
/** Xen's s_time_t is signed: a timeout of 0 or one at/above 2^63 is already in the past. */
const STIME_MAX = (1n << 63n) - 1n;
import { VCPU_GUEST_CONTEXT } from '../../shared/abi/domctl.ts';
import { VCPU_RUNSTATE_INFO } from '../../shared/abi/vcpu.ts';
import { StructView } from '../../shared/layout.ts';
import { domainShutdown, domLock, domUnlock, vcpuInitialise } from '../domain.ts';
import { D, HvState, V, VPF_down, VPF_initialised, VT } from '../state.ts';
import type { VcpuCtx } from '../vcpu/context.ts';

/** Fill a vcpu_runstate_info for (slot, vcpu). */
export function runstateInfo(hv: HvState, slot: number, vcpu: number): StructView<typeof VCPU_RUNSTATE_INFO.fields> {
  const r = StructView.alloc(VCPU_RUNSTATE_INFO);
  const state = Atomics.load(hv.vcpu, hv.v(slot, vcpu, V.runstate));
  const entry = hv.vcpuTime[hv.vt(slot, vcpu, VT.STATE_ENTRY)];
  r.set('state', state);
  r.setBig('state_entry_time', entry);
  // vcpu_runstate_get(): the current stint counts in its state's time.
  const stint = hv.now() - entry;
  for (let k = 0; k < 4; k++) {
    const t = hv.vcpuTime[hv.vt(slot, vcpu, VT.TIME0 + k)] + (k === state && stint > 0n ? stint : 0n);
    r.dv.setBigUint64(VCPU_RUNSTATE_INFO.fields.time.offset + 8 * k, BigInt.asUintN(64, t), true);
  }
  return r;
}

export function doVcpuOp(ctx: VcpuCtx, cmd: number, vcpuid: number, arg: number): number {
  const { hv, slot } = ctx;
  if (vcpuid < 0 || vcpuid >= Atomics.load(hv.dom, hv.d(slot, D.max_vcpus))) return -ENOENT;
  const flags = (): number => Atomics.load(hv.vcpu, hv.v(slot, vcpuid, V.pause_flags));
  switch (cmd) {
    case VCPUOP_is_up:
      return flags() & VPF_down ? 0 : 1;
    case VCPUOP_get_runstate_info:
      return ctx.writeStruct(runstateInfo(hv, slot, vcpuid), arg) ? 0 : -EFAULT;
    case VCPUOP_initialise: {
      const c = ctx.readStruct(VCPU_GUEST_CONTEXT, arg);
      if (!c) return -EFAULT;
      if (flags() & VPF_initialised) return -EEXIST;
      const limit = hv.cfg.p2mEntries * 4096;
      if (c.get('entry') >= limit || c.get('arg0') >= limit) return -EINVAL;
      // Initialised but down until VCPUOP_up.
      domLock(hv, slot);
      Atomics.store(hv.vcpu, hv.v(slot, vcpuid, V.entry_gpa), c.get('entry'));
      Atomics.store(hv.vcpu, hv.v(slot, vcpuid, V.arg0_gpa), c.get('arg0'));
      Atomics.or(hv.vcpu, hv.v(slot, vcpuid, V.pause_flags), VPF_initialised);
      domUnlock(hv, slot);
      return 0;
    }
    case VCPUOP_up: {
      if (!(flags() & VPF_initialised)) return -EINVAL;
      if (!(flags() & VPF_down)) return 0;
      vcpuInitialise(hv, slot, vcpuid, Atomics.load(hv.vcpu, hv.v(slot, vcpuid, V.entry_gpa)),
        Atomics.load(hv.vcpu, hv.v(slot, vcpuid, V.arg0_gpa)), ctx.port);
      return 0;
    }
    case VCPUOP_set_singleshot_timer: {
      if (vcpuid !== ctx.vcpu) return -EINVAL;
      const t = ctx.readStruct(VCPU_SET_SINGLESHOT_TIMER, arg);
      if (!t) return -EFAULT;
      const deadline = t.getBig('timeout_abs_ns');
      if ((t.get('flags') & VCPU_SSHOTTMR_future) && deadline < hv.now()) return -ETIME;
      // Xen arms an expired timer, which fires at once; 0n here would mean "stopped".
      setSingleshot(hv, slot, vcpuid, deadline > 0n && deadline <= STIME_MAX ? deadline : 1n);
      return 0;
    }
    case VCPUOP_stop_singleshot_timer:
      if (vcpuid !== ctx.vcpu) return -EINVAL;
      setSingleshot(hv, slot, vcpuid, 0n);
      return 0;
    case VCPUOP_set_periodic_timer: {
      const t = ctx.readStruct(VCPU_SET_PERIODIC_TIMER, arg);
      if (!t) return -EFAULT;
      const period = t.getBig('period_ns');
      if (period < MIN_PERIOD_NS || period > MAX_PERIOD_NS) return -EINVAL;
      setPeriodic(hv, slot, vcpuid, period);
      return 0;
    }
    case VCPUOP_stop_periodic_timer:
      setPeriodic(hv, slot, vcpuid, 0n);
      return 0;
    case VCPUOP_down: {
      // vcpu_down(): the last online vCPU going down powers the domain off.
      const max = Atomics.load(hv.dom, hv.d(slot, D.max_vcpus));
      let othersUp = false;
      for (let v = 0; v < max; v++) {
        if (v !== vcpuid && !(Atomics.load(hv.vcpu, hv.v(slot, v, V.pause_flags)) & VPF_down)) othersUp = true;
      }
      if (!othersUp) {
        domainShutdown(hv, slot, SHUTDOWN_poweroff, ctx.port);
        return 0;
      }
      // A running PV TypeScript vCPU stops at its next preemption point.
      Atomics.or(hv.vcpu, hv.v(slot, vcpuid, V.pause_flags), VPF_down);
      return 0;
    }
    default:
      return -ENOSYS;
  }
}
