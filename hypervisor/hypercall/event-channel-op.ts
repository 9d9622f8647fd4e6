/** do_event_channel_op (Xen: common/event_channel.c). */
import { EFAULT, ENOSYS, ESRCH } from '../../shared/errno.ts';
import {
  EVTCHN_ALLOC_UNBOUND, EVTCHN_BIND_INTERDOMAIN, EVTCHN_BIND_IPI, EVTCHN_BIND_VCPU, EVTCHN_BIND_VIRQ, EVTCHN_PORT,
  EVTCHN_RESET, EVTCHN_STATUS, EVTCHNOP_alloc_unbound, EVTCHNOP_bind_interdomain, EVTCHNOP_bind_ipi,
  EVTCHNOP_bind_vcpu, EVTCHNOP_bind_virq, EVTCHNOP_close, EVTCHNOP_reset, EVTCHNOP_send, EVTCHNOP_status,
  EVTCHNOP_unmask, EVTCHNSTAT_closed, EVTCHNSTAT_interdomain, EVTCHNSTAT_ipi, EVTCHNSTAT_pirq, EVTCHNSTAT_unbound,
  EVTCHNSTAT_virq,
} from '../../shared/abi/event-channel.ts';
import { DOMID_SELF } from '../../shared/types.ts';
import { liveSlot } from '../domain.ts';
import {
  allocUnbound, bindInterdomain, bindIpi, bindVcpu, bindVirq, closeAll, closePort, ECS_INTERDOMAIN, ECS_IPI,
  ECS_PIRQ, ECS_UNBOUND, ECS_VIRQ, notifyVcpu, portState, portValid, sendPort, unmaskPort,
} from '../evtchn/evtchn.ts';
import { D, EV_REMOTE_DOM, EV_REMOTE_PORT } from '../state.ts';
import type { VcpuCtx } from '../vcpu/context.ts';
import { xsmCheck } from '../xsm.ts';
import { EINVAL } from '../../shared/errno.ts';

/** DOMID_SELF or a live domain the caller may act on (XSM_TARGET); slot or -errno. */
function target(ctx: VcpuCtx, domid: number): number {
  const slot = domid === DOMID_SELF ? ctx.slot : liveSlot(ctx.hv, domid);
  if (slot < 0) return -ESRCH;
  const rc = xsmCheck(ctx.hv, ctx.slot, 'evtchn_target', slot);
  return rc < 0 ? rc : slot;
}

const STATUS: Readonly<Record<number, number>> = {
  [ECS_UNBOUND]: EVTCHNSTAT_unbound, [ECS_INTERDOMAIN]: EVTCHNSTAT_interdomain, [ECS_PIRQ]: EVTCHNSTAT_pirq,
  [ECS_VIRQ]: EVTCHNSTAT_virq, [ECS_IPI]: EVTCHNSTAT_ipi,
};

function status(ctx: VcpuCtx, arg: number): number {
  const s = ctx.readStruct(EVTCHN_STATUS, arg);
  if (!s) return -EFAULT;
  const slot = target(ctx, s.get('dom'));
  if (slot < 0) return slot;
  const port = s.get('port');
  if (!portValid(port)) return -EINVAL;
  const hv = ctx.hv;
  const st = portState(hv, slot, port);
  s.set('status', STATUS[st] ?? EVTCHNSTAT_closed);
  s.set('vcpu', notifyVcpu(hv, slot, port));
  const remote = hv.evtchn[hv.ev(slot, port, EV_REMOTE_DOM)];
  if (st === ECS_UNBOUND) s.set('u_unbound_dom', remote);
  else if (st === ECS_INTERDOMAIN) s.set('u_interdomain_dom', remote).set('u_interdomain_port', hv.evtchn[hv.ev(slot, port, EV_REMOTE_PORT)]);
  else if (st === ECS_VIRQ) s.set('u_virq', remote);
  return ctx.writeStruct(s, arg) ? 0 : -EFAULT;
}

export function doEventChannelOp(ctx: VcpuCtx, cmd: number, arg: number): number {
  const hv = ctx.hv;
  switch (cmd) {
    case EVTCHNOP_alloc_unbound: {
      const a = ctx.readStruct(EVTCHN_ALLOC_UNBOUND, arg);
      if (!a) return -EFAULT;
      const slot = target(ctx, a.get('dom'));
      if (slot < 0) return slot;
      const remote = a.get('remote_dom') === DOMID_SELF ? ctx.domid : a.get('remote_dom');
      const port = allocUnbound(hv, slot, remote);
      if (port < 0) return port;
      return ctx.writeStruct(a.set('port', port), arg) ? 0 : -EFAULT;
    }
    case EVTCHNOP_bind_interdomain: {
      const b = ctx.readStruct(EVTCHN_BIND_INTERDOMAIN, arg);
      if (!b) return -EFAULT;
      const rd = b.get('remote_dom');
      const rslot = rd === DOMID_SELF ? ctx.slot : liveSlot(hv, rd);
      if (rslot < 0) return -ESRCH;
      // Xen leaves the new port's notify_vcpu_id at 0, whichever vCPU binds it.
      const port = bindInterdomain(hv, ctx.slot, 0, rslot, b.get('remote_port'));
      if (port < 0) return port;
      return ctx.writeStruct(b.set('local_port', port), arg) ? 0 : -EFAULT;
    }
    case EVTCHNOP_bind_virq: {
      const b = ctx.readStruct(EVTCHN_BIND_VIRQ, arg);
      if (!b) return -EFAULT;
      const port = bindVirq(hv, ctx.slot, b.get('virq'), b.get('vcpu'));
      if (port < 0) return port;
      return ctx.writeStruct(b.set('port', port), arg) ? 0 : -EFAULT;
    }
    case EVTCHNOP_bind_ipi: {
      const b = ctx.readStruct(EVTCHN_BIND_IPI, arg);
      if (!b) return -EFAULT;
      const port = bindIpi(hv, ctx.slot, b.get('vcpu'));
      if (port < 0) return port;
      return ctx.writeStruct(b.set('port', port), arg) ? 0 : -EFAULT;
    }
    case EVTCHNOP_close:
    case EVTCHNOP_send:
    case EVTCHNOP_unmask: {
      const p = ctx.readStruct(EVTCHN_PORT, arg);
      if (!p) return -EFAULT;
      const port = p.get('port');
      if (cmd === EVTCHNOP_close) return closePort(hv, ctx.slot, port);
      if (cmd === EVTCHNOP_send) return sendPort(hv, ctx.slot, port);
      if (!portValid(port)) return -EINVAL;
      unmaskPort(hv, ctx.slot, port);
      return 0;
    }
    case EVTCHNOP_status:
      return status(ctx, arg);
    case EVTCHNOP_bind_vcpu: {
      const b = ctx.readStruct(EVTCHN_BIND_VCPU, arg);
      if (!b) return -EFAULT;
      return bindVcpu(hv, ctx.slot, b.get('port'), b.get('vcpu'));
    }
    case EVTCHNOP_reset: {
      const r = ctx.readStruct(EVTCHN_RESET, arg);
      if (!r) return -EFAULT;
      const slot = target(ctx, r.get('dom'));
      if (slot < 0) return slot;
      // Xen's evtchn_reset: another domain must be paused by its controller.
      if (slot !== ctx.slot && Atomics.load(hv.dom, hv.d(slot, D.pause_count)) === 0) return -EINVAL;
      closeAll(hv, slot);
      return 0;
    }
    default:
      return -ENOSYS;
  }
}
