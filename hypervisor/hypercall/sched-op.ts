/** do_sched_op (Xen: common/sched/core.c). */
import { EFAULT, EINVAL, ENOSYS, ESRCH } from '../../shared/errno.ts';
import {
  SCHEDOP_block, SCHEDOP_poll, SCHEDOP_remote_shutdown, SCHEDOP_shutdown, SCHEDOP_yield, SHUTDOWN_MAX,
} from '../../shared/hypercall.ts';
import { SCHED_POLL, SCHED_REMOTE_SHUTDOWN, SCHED_SHUTDOWN } from '../../shared/abi/sched.ts';
import { portPending, portValid } from '../evtchn/evtchn.ts';
import { domainShutdown, liveSlot } from '../domain.ts';
import { HvState, V, VPF_blocked, VPF_killed, VPF_shutdown } from '../state.ts';
import type { VcpuCtx } from '../vcpu/context.ts';
import { xsmCheck } from '../xsm.ts';
import { vcpuInfoOffset, VCPU_INFO } from '../../shared/abi/shared-info.ts';
import { PAGE_SIZE } from '../../shared/types.ts';
import { D } from '../state.ts';

/** Has the vCPU an event to look at? (its pending word, or evtchn_upcall_pending in vcpu_info). */
export function vcpuHasWork(hv: HvState, slot: number, vcpu: number): boolean {
  if (Atomics.load(hv.vcpu, hv.v(slot, vcpu, V.pending)) !== 0) return true;
  if (Atomics.load(hv.vcpu, hv.v(slot, vcpu, V.pause_flags)) & (VPF_killed | VPF_shutdown)) return true;
  const si = Atomics.load(hv.dom, hv.d(slot, D.shared_info_mfn));
  if (si < 0 || vcpu >= 32) return false;
  const at = si * PAGE_SIZE + vcpuInfoOffset(vcpu) + VCPU_INFO.fields.evtchn_upcall_pending.offset;
  return hv.mem8[at] !== 0;
}

function block(ctx: VcpuCtx): number {
  const { hv, slot, vcpu } = ctx;
  // SCHEDOP_block re-enables event delivery (local_event_delivery_enable): clear evtchn_upcall_mask.
  const si = Atomics.load(hv.dom, hv.d(slot, D.shared_info_mfn));
  if (si >= 0 && vcpu < 32) Atomics.store(hv.mem8, si * PAGE_SIZE + vcpuInfoOffset(vcpu) + VCPU_INFO.fields.evtchn_upcall_mask.offset, 0);
  const f = hv.v(slot, vcpu, V.pause_flags);
  Atomics.or(hv.vcpu, f, VPF_blocked);
  // Check for work after setting blocked, so a kick between the two is not lost.
  ctx.sched.block(() => vcpuHasWork(hv, slot, vcpu));
  Atomics.and(hv.vcpu, f, ~VPF_blocked);
  Atomics.store(hv.vcpu, hv.v(slot, vcpu, V.pending), 0);
  return 0;
}

/** Xen's limit on ports per SCHEDOP_poll (sched.h: 128). */
export const SCHED_POLL_MAX_PORTS = 128;

/**
 * SCHEDOP_poll: sleep until one of the ports is pending or system time reaches
 * the timeout (absolute ns; 0 none). Returns 0 either way, as Xen does.
 */
function poll(ctx: VcpuCtx, arg: number): number {
  const p = ctx.readStruct(SCHED_POLL, arg);
  if (!p) return -EFAULT;
  const n = p.get('nr_ports');
  if (n > SCHED_POLL_MAX_PORTS) return -EINVAL;
  const raw = ctx.copyFrom(p.get('ports'), n * 4);
  if (!raw) return -EFAULT;
  const dv = new DataView(raw.buffer);
  const ports: number[] = [];
  for (let i = 0; i < n; i++) {
    const port = dv.getUint32(i * 4, true);
    if (!portValid(port)) return -EINVAL;
    ports.push(port);
  }
  const { hv, slot, vcpu } = ctx;
  const pending = (): boolean => ports.some((q) => portPending(hv, slot, q)) ||
    (Atomics.load(hv.vcpu, hv.v(slot, vcpu, V.pause_flags)) & (VPF_killed | VPF_shutdown)) !== 0;
  if (pending()) return 0;
  const pi = hv.v(slot, vcpu, V.polling);
  Atomics.store(hv.vcpu, pi, 1);
  try {
    ctx.sched.block(pending, BigInt(p.getBig('timeout')));
  } finally {
    Atomics.store(hv.vcpu, pi, 0);
  }
  return 0;
}

export function doSchedOp(ctx: VcpuCtx, cmd: number, arg: number): number {
  switch (cmd) {
    case SCHEDOP_yield:
      ctx.sched.yield();
      return 0;
    case SCHEDOP_block:
      return block(ctx);
    case SCHEDOP_shutdown: {
      const s = ctx.readStruct(SCHED_SHUTDOWN, arg);
      if (!s) return -EFAULT;
      const reason = s.get('reason');
      if (reason > SHUTDOWN_MAX) return -EINVAL;
      domainShutdown(ctx.hv, ctx.slot, reason, ctx.port);
      ctx.sched.park();
      return 0;
    }
    case SCHEDOP_poll:
      return poll(ctx, arg);
    case SCHEDOP_remote_shutdown: {
      const s = ctx.readStruct(SCHED_REMOTE_SHUTDOWN, arg);
      if (!s) return -EFAULT;
      const target = liveSlot(ctx.hv, s.get('domain_id'));
      if (target < 0) return -ESRCH;
      const rc = xsmCheck(ctx.hv, ctx.slot, 'remote_shutdown', target);
      if (rc < 0) return rc;
      const reason = s.get('reason');
      if (reason > SHUTDOWN_MAX) return -EINVAL;
      domainShutdown(ctx.hv, target, reason, ctx.port);
      return 0;
    }
    default:
      return -ENOSYS;
  }
}
