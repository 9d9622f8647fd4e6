/** do_domctl (Xen: common/domctl.c). */
import { EACCES, EBUSY, EFAULT, EINVAL, ENOSYS, ESRCH } from '../../shared/errno.ts';
import {
  XEN_DOMCTL_createdomain, XEN_DOMCTL_destroydomain, XEN_DOMCTL_getdomaininfo, XEN_DOMCTL_getvcpuinfo,
  XEN_DOMCTL_max_mem, XEN_DOMCTL_max_vcpus, XEN_DOMCTL_pausedomain, XEN_DOMCTL_setvcpucontext,
  XEN_DOMCTL_unpausedomain, RUNSTATE_blocked, RUNSTATE_running,
} from '../../shared/hypercall.ts';
import {
  DOMCTL_U, VCPU_GUEST_CONTEXT, VGCF_online, XEN_DOMCTL, XEN_DOMCTL_CDF_ALL, XEN_DOMCTL_CDF_hvm,
  XEN_DOMCTL_CREATEDOMAIN, XEN_DOMCTL_GETDOMAININFO, XEN_DOMCTL_INTERFACE_VERSION, XEN_DOMCTL_MAX_MEM,
  XEN_DOMCTL_MAX_VCPUS, XEN_DOMCTL_VCPUCONTEXT,
} from '../../shared/abi/domctl.ts';
import { DEFAULT_MAX_GRANT_FRAMES, DEFAULT_MAX_MAPTRACK_FRAMES } from '../../shared/abi/grant-table.ts';
import { StructView } from '../../shared/layout.ts';
import { DOMID_FIRST_RESERVED } from '../../shared/types.ts';
import {
  domainCreate, domainKill, domainPause, domainUnpause, domLock, domUnlock, slotOf, vcpuInitialise,
} from '../domain.ts';
import { D, DOMSTATE_ACTIVE, HvState, V, VPF_down, VPF_initialised, VT } from '../state.ts';
import type { VcpuCtx } from '../vcpu/context.ts';
import { xsmCheck } from '../xsm.ts';
import { domainInfo } from './domain-info.ts';

type Domctl = StructView<typeof XEN_DOMCTL.fields>;
const sub = <F extends typeof XEN_DOMCTL_CREATEDOMAIN.fields | typeof XEN_DOMCTL_GETDOMAININFO.fields | typeof XEN_DOMCTL_MAX_MEM.fields | typeof XEN_DOMCTL_MAX_VCPUS.fields | typeof XEN_DOMCTL_VCPUCONTEXT.fields>(
  op: Domctl, layout: { name: string; header: string; size: number; fields: F },
): StructView<F> => new StructView(layout, op.raw(), DOMCTL_U);

/** max_grant_frames / max_maptrack_frames a domain may be given (Xen's opt_max_* limits). */
const GRANT_FRAMES_LIMIT = DEFAULT_MAX_GRANT_FRAMES;
const MAPTRACK_FRAMES_LIMIT = DEFAULT_MAX_MAPTRACK_FRAMES;

function createdomain(ctx: VcpuCtx, op: Domctl): number {
  const c = sub(op, XEN_DOMCTL_CREATEDOMAIN);
  const cdf = c.get('flags');
  const maxVcpus = c.get('max_vcpus');
  if (cdf & ~XEN_DOMCTL_CDF_ALL) return -EINVAL;
  // HVM guests need the hardware-assisted vCPU, which this host does not have yet.
  if (cdf & XEN_DOMCTL_CDF_hvm) return -EINVAL;
  if (maxVcpus < 1 || maxVcpus > ctx.hv.cfg.maxVcpus) return -EINVAL;
  const mg = c.get('max_grant_frames');
  const mm = c.get('max_maptrack_frames');
  if (mg > GRANT_FRAMES_LIMIT || mm > MAPTRACK_FRAMES_LIMIT) return -EINVAL;
  if ((c.get('grant_opts') & 0xf) > 2) return -EINVAL;
  const r = domainCreate(ctx.hv, {
    domid: op.get('domain'),
    cdf,
    maxVcpus,
    ssidref: c.get('ssidref'),
    handle: c.bytes('handle'),
    maxEvtchnPort: c.get('max_evtchn_port'),
    maxGrantFrames: mg,
    maxMaptrackFrames: mm,
    privileged: false,
  });
  if (typeof r === 'number') return r;
  op.set('domain', r.domid);
  return 0;
}

function setvcpucontext(ctx: VcpuCtx, slot: number, op: Domctl): number {
  const hv = ctx.hv;
  const vc = sub(op, XEN_DOMCTL_VCPUCONTEXT);
  const vcpu = vc.get('vcpu');
  if (slot === ctx.slot || vcpu >= Atomics.load(hv.dom, hv.d(slot, D.max_vcpus))) return -EINVAL;
  const handle = vc.get('ctxt');
  if (handle === 0) return -EINVAL;
  const c = ctx.readStruct(VCPU_GUEST_CONTEXT, handle);
  if (!c) return -EFAULT;
  const limit = hv.cfg.p2mEntries * 4096;
  if (c.get('entry') >= limit || c.get('arg0') >= limit) return -EINVAL;
  // A PV TypeScript vCPU cannot be re-pointed once its thread runs the kernel.
  if (Atomics.load(hv.vcpu, hv.v(slot, vcpu, V.pause_flags)) & VPF_initialised) return -EBUSY;
  if (c.get('flags') & VGCF_online) {
    vcpuInitialise(hv, slot, vcpu, c.get('entry'), c.get('arg0'), ctx.port);
  } else {
    domLock(hv, slot);
    Atomics.store(hv.vcpu, hv.v(slot, vcpu, V.entry_gpa), c.get('entry'));
    Atomics.store(hv.vcpu, hv.v(slot, vcpu, V.arg0_gpa), c.get('arg0'));
    Atomics.or(hv.vcpu, hv.v(slot, vcpu, V.pause_flags), VPF_initialised);
    domUnlock(hv, slot);
  }
  return 0;
}

function getvcpuinfo(hv: HvState, slot: number, op: Domctl): number {
  const b = op.raw();
  const dv = new DataView(b.buffer, b.byteOffset + DOMCTL_U, 24);
  const vcpu = dv.getUint32(0, true);
  if (vcpu >= Atomics.load(hv.dom, hv.d(slot, D.max_vcpus))) return -EINVAL;
  const rs = Atomics.load(hv.vcpu, hv.v(slot, vcpu, V.runstate));
  dv.setUint8(4, Atomics.load(hv.vcpu, hv.v(slot, vcpu, V.pause_flags)) & VPF_down ? 0 : 1);
  dv.setUint8(5, rs === RUNSTATE_blocked ? 1 : 0);
  dv.setUint8(6, rs === RUNSTATE_running ? 1 : 0);
  let t = hv.vcpuTime[hv.vt(slot, vcpu, VT.TIME0 + RUNSTATE_running)];
  if (rs === RUNSTATE_running) t += hv.now() - hv.vcpuTime[hv.vt(slot, vcpu, VT.STATE_ENTRY)];
  dv.setBigUint64(8, t, true);
  dv.setUint32(16, Math.max(0, Atomics.load(hv.vcpu, hv.v(slot, vcpu, V.pcpu))), true);
  return 0;
}

/** getdomaininfo (4.17): the requested domain, else the first one above it; -ESRCH if none. */
function getdomaininfo(ctx: VcpuCtx, op: Domctl): number {
  const want = op.get('domain');
  if (want >= DOMID_FIRST_RESERVED) return -EINVAL;
  let slot = slotOf(ctx.hv, want);
  for (let d = want + 1; slot < 0 && d < DOMID_FIRST_RESERVED; d++) {
    const s = ctx.hv.domidMap[d];
    if (s >= 0) slot = slotOf(ctx.hv, d);
  }
  if (slot < 0) return -ESRCH;
  const rc = xsmCheck(ctx.hv, ctx.slot, 'domctl', slot);
  if (rc < 0) return rc;
  const info = domainInfo(ctx.hv, slot);
  op.raw().set(info.raw(), DOMCTL_U);
  op.set('domain', info.get('domain'));
  return 0;
}

export function doDomctl(ctx: VcpuCtx, arg: number): number {
  const op = ctx.readStruct(XEN_DOMCTL, arg);
  if (!op) return -EFAULT;
  if (op.get('interface_version') !== XEN_DOMCTL_INTERFACE_VERSION) return -EACCES;
  const cmd = op.get('cmd');
  const hv = ctx.hv;
  let rc: number;
  let copyBack = false;
  if (cmd === XEN_DOMCTL_createdomain) {
    rc = xsmCheck(hv, ctx.slot, 'domctl');
    if (rc === 0) {
      rc = createdomain(ctx, op);
      copyBack = rc === 0;
    }
  } else if (cmd === XEN_DOMCTL_getdomaininfo) {
    rc = getdomaininfo(ctx, op);
    copyBack = rc === 0;
  } else {
    const slot = slotOf(hv, op.get('domain'));
    if (slot < 0) return -ESRCH;
    rc = xsmCheck(hv, ctx.slot, 'domctl', slot);
    if (rc < 0) return rc;
    const live = Atomics.load(hv.dom, hv.d(slot, D.state)) === DOMSTATE_ACTIVE;
    switch (cmd) {
      case XEN_DOMCTL_destroydomain:
        rc = slot === ctx.slot ? -EINVAL : domainKill(hv, slot, ctx.port);
        break;
      case XEN_DOMCTL_pausedomain:
        rc = slot === ctx.slot || !live ? -EINVAL : domainPause(hv, slot);
        break;
      case XEN_DOMCTL_unpausedomain:
        rc = !live ? -EINVAL : domainUnpause(hv, slot, ctx.port);
        break;
      case XEN_DOMCTL_max_mem: {
        const kb = sub(op, XEN_DOMCTL_MAX_MEM).getBig('max_memkb');
        const pages = kb >> 2n;
        Atomics.store(hv.dom, hv.d(slot, D.max_pages), pages > 0x7fffffffn ? 0x7fffffff : Number(pages));
        rc = 0;
        break;
      }
      case XEN_DOMCTL_max_vcpus: {
        const max = sub(op, XEN_DOMCTL_MAX_VCPUS).get('max');
        let inUse = 0;
        for (let v = 0; v < hv.cfg.maxVcpus; v++) {
          if (Atomics.load(hv.vcpu, hv.v(slot, v, V.pause_flags)) & VPF_initialised) inUse = v + 1;
        }
        rc = max < 1 || max > hv.cfg.maxVcpus || max < inUse ? -EINVAL : 0;
        if (rc === 0) Atomics.store(hv.dom, hv.d(slot, D.max_vcpus), max);
        break;
      }
      case XEN_DOMCTL_setvcpucontext:
        rc = !live ? -EINVAL : setvcpucontext(ctx, slot, op);
        break;
      case XEN_DOMCTL_getvcpuinfo:
        rc = getvcpuinfo(hv, slot, op);
        copyBack = rc === 0;
        break;
      default:
        rc = -ENOSYS;
    }
  }
  if (copyBack && !ctx.writeStruct(op, arg)) return -EFAULT;
  return rc;
}
