/** do_domctl (Xen: common/domctl.c). */
import { EACCES, EBUSY, EFAULT, EINVAL, ENOSYS, ESRCH } from '../../shared/errno.ts';
import {
  XEN_DOMCTL_createdomain, XEN_DOMCTL_destroydomain, XEN_DOMCTL_getdomaininfo, XEN_DOMCTL_getvcpuinfo,
  XEN_DOMCTL_max_mem, XEN_DOMCTL_max_vcpus, XEN_DOMCTL_pausedomain, XEN_DOMCTL_setvcpucontext,
  XEN_DOMCTL_unpausedomain, RUNSTATE_blocked, RUNSTATE_running, XEN_DOMCTL_scheduler_op, XEN_DOMCTL_setvcpuaffinity,
} from '../../shared/hypercall.ts';
import {
  DOMCTL_U, VCPU_GUEST_CONTEXT, VGCF_online, XEN_DOMCTL, XEN_DOMCTL_CDF_ALL, XEN_DOMCTL_CDF_hap, XEN_DOMCTL_CDF_hvm,
  XEN_DOMCTL_CDF_iommu, XEN_DOMCTL_CDF_nested_virt, XEN_DOMCTL_CDF_vpmu,
  XEN_DOMCTL_CREATEDOMAIN, XEN_DOMCTL_GETDOMAININFO, XEN_DOMCTL_INTERFACE_VERSION, XEN_DOMCTL_MAX_MEM,
  XEN_DOMCTL_MAX_VCPUS, XEN_DOMCTL_VCPUCONTEXT, XEN_DOMCTL_SCHEDULER_OP, XEN_DOMCTL_SCHEDOP_getinfo,
  XEN_DOMCTL_SCHEDOP_putinfo, XEN_DOMCTL_VCPUAFFINITY, XEN_VCPUAFFINITY_HARD, XEN_VCPUAFFINITY_SOFT,
} from '../../shared/abi/domctl.ts';
import { DEFAULT_MAX_GRANT_FRAMES, DEFAULT_MAX_MAPTRACK_FRAMES } from '../../shared/abi/grant-table.ts';
import { StructView } from '../../shared/layout.ts';
import { DOMID_FIRST_RESERVED } from '../../shared/types.ts';
import {
  domainCreate, domainKill, domainPause, domainUnpause, domLock, domUnlock, slotOf, vcpuInitialise,
} from '../domain.ts';
import { D, DOMSTATE_ACTIVE, HvState, SCHED_CPUMASK_WORDS, V, VPF_down, VPF_initialised, VT } from '../state.ts';
import { storeAffinity, storedAffinity, storedParams, storeParams } from '../sched/params.ts';
import { WEIGHT_MAX, WEIGHT_MIN } from '../sched/policy/base.ts';
import { SCHED_IDS } from './sysctl.ts';
import type { VcpuCtx } from '../vcpu/context.ts';
import { xsmCheck } from '../xsm.ts';
import { domainInfo } from './domain-info.ts';

type Domctl = StructView<typeof XEN_DOMCTL.fields>;
const sub = <F extends typeof XEN_DOMCTL_CREATEDOMAIN.fields | typeof XEN_DOMCTL_GETDOMAININFO.fields | typeof XEN_DOMCTL_MAX_MEM.fields | typeof XEN_DOMCTL_MAX_VCPUS.fields | typeof XEN_DOMCTL_VCPUCONTEXT.fields | typeof XEN_DOMCTL_SCHEDULER_OP.fields | typeof XEN_DOMCTL_VCPUAFFINITY.fields>(
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
  // sanitise_domain_config(): HVM needs the hardware-assisted vCPU, which this host does not
  // have yet; HAP is for HVM only and nested virt needs HAP; no IOMMU, vPMU or vmtrace here.
  if (cdf & (XEN_DOMCTL_CDF_hvm | XEN_DOMCTL_CDF_hap | XEN_DOMCTL_CDF_nested_virt | XEN_DOMCTL_CDF_iommu | XEN_DOMCTL_CDF_vpmu)) return -EINVAL;
  if (c.get('iommu_opts') !== 0 || c.get('vmtrace_size') !== 0) return -EINVAL;
  if (maxVcpus < 1 || maxVcpus > ctx.hv.cfg.maxVcpus) return -EINVAL;
  const mg = c.get('max_grant_frames');
  const mm = c.get('max_maptrack_frames');
  if (mg > GRANT_FRAMES_LIMIT || mm > MAPTRACK_FRAMES_LIMIT) return -EINVAL;
  const grantOpts = c.get('grant_opts');
  if (grantOpts & ~0xf || (grantOpts & 0xf) > 2) return -EINVAL;
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

/**
 * getdomaininfo (4.17): the requested domain, else the first one above it; -ESRCH if none.
 * Privilege is checked first, as xsm_domctl() runs before the lookup for this command.
 */
function getdomaininfo(ctx: VcpuCtx, op: Domctl): number {
  const denied = xsmCheck(ctx.hv, ctx.slot, 'domctl');
  if (denied < 0) return denied;
  const want = op.get('domain');
  if (want >= DOMID_FIRST_RESERVED) return -EINVAL;
  let slot = slotOf(ctx.hv, want);
  for (let d = want + 1; slot < 0 && d < DOMID_FIRST_RESERVED; d++) {
    const s = ctx.hv.domidMap[d];
    if (s >= 0) slot = slotOf(ctx.hv, d);
  }
  if (slot < 0) return -ESRCH;
  const info = domainInfo(ctx.hv, slot);
  op.raw().set(info.raw(), DOMCTL_U);
  op.set('domain', info.get('domain'));
  return 0;
}

/** xen_domctl_sched_credit.cap meaning "leave the cap as it is" (credit; libxl's CAP_DEFAULT). */
const CREDIT_CAP_UNCHANGED = 0xffff;

/**
 * XEN_DOMCTL_scheduler_op (sched_adjust(), then csched_dom_cntl() or
 * csched2_dom_cntl()): get or put a domain's weight and cap. -EINVAL if
 * sched_id is not the host's scheduler, for the per-vCPU commands, and under
 * null (no parameters). putinfo: weight 0 leaves the weight unchanged (else
 * 1..65535 by type); cap 0..100 * max_vcpus, 0 for no cap, and under credit
 * 0xffff leaves it unchanged; nothing changes unless both are valid. The
 * scheduler thread applies the new values from shared memory.
 */
function schedulerOp(hv: HvState, slot: number, op: Domctl): { rc: number; copyBack: boolean } {
  const s = sub(op, XEN_DOMCTL_SCHEDULER_OP);
  const cmd = s.get('cmd');
  if (s.get('sched_id') !== SCHED_IDS[hv.cfg.sched]) return { rc: -EINVAL, copyBack: false };
  if (hv.cfg.sched === 'null') return { rc: -EINVAL, copyBack: false };
  const cur = storedParams(hv, slot);
  if (cmd === XEN_DOMCTL_SCHEDOP_getinfo) {
    s.set('credit_weight', cur.weight).set('credit_cap', cur.cap);
    return { rc: 0, copyBack: true };
  }
  if (cmd !== XEN_DOMCTL_SCHEDOP_putinfo) return { rc: -EINVAL, copyBack: false };
  const w = s.get('credit_weight');
  const c = s.get('credit_cap');
  const weight = w === 0 ? cur.weight : w;
  const cap = hv.cfg.sched === 'credit' && c === CREDIT_CAP_UNCHANGED ? cur.cap : c;
  const maxVcpus = Atomics.load(hv.dom, hv.d(slot, D.max_vcpus));
  if (weight < WEIGHT_MIN || weight > WEIGHT_MAX || cap < 0 || cap > 100 * maxVcpus) return { rc: -EINVAL, copyBack: false };
  storeParams(hv, slot, { weight, cap });
  return { rc: 0, copyBack: false };
}

/** Bytes of a xenctl_bitmap this host reads: nr_bits rounded up, at most one cpumask. */
function bitmapBytes(nrBits: number): number {
  return Math.min(Math.ceil(nrBits / 8), SCHED_CPUMASK_WORDS * 4);
}

/** xenctl_bitmap_to_bitmap(): the pCPUs of this host set in a guest bitmap; null on a fault. */
function readCpumap(ctx: VcpuCtx, gpa: number, nrBits: number): number[] | null {
  const n = bitmapBytes(nrBits);
  const b = n > 0 ? ctx.copyFrom(gpa, n) : new Uint8Array(0);
  if (!b) return null;
  const cpus: number[] = [];
  for (let c = 0; c < Math.min(nrBits, n * 8, ctx.hv.cfg.pcpus); c++) if ((b[c >>> 3] >>> (c & 7)) & 1) cpus.push(c);
  return cpus;
}

/** cpumask_to_xenctl_bitmap(): write `cpus` as a guest bitmap of nr_bits bits (bytes past ours zeroed). */
function writeCpumap(ctx: VcpuCtx, gpa: number, nrBits: number, cpus: readonly number[]): boolean {
  const b = new Uint8Array(Math.min(Math.ceil(nrBits / 8), 4096));
  for (const c of cpus) if (c < nrBits) b[c >>> 3] |= 1 << (c & 7);
  return b.length === 0 || ctx.copyTo(gpa, b);
}

/**
 * XEN_DOMCTL_setvcpuaffinity (vcpu_affinity_domctl()): set the hard and/or
 * soft affinity. -EINVAL for a vCPU beyond max_vcpus, no flag, a flagged map
 * with a NULL bitmap, or a hard map with no pCPU of this host (bits beyond
 * the host's pCPUs are ignored, as Xen ignores offline ones). The effective
 * masks are written back into the caller's bitmaps (hard: what the scheduler
 * uses; soft: soft within hard). Soft affinity is recorded and reported; the
 * policies do not use it.
 */
function setvcpuaffinity(ctx: VcpuCtx, slot: number, op: Domctl): number {
  const hv = ctx.hv;
  const a = sub(op, XEN_DOMCTL_VCPUAFFINITY);
  const vcpu = a.get('vcpu');
  if (vcpu >= Atomics.load(hv.dom, hv.d(slot, D.max_vcpus))) return -EINVAL;
  const flags = a.get('flags');
  const setHard = (flags & XEN_VCPUAFFINITY_HARD) !== 0;
  const setSoft = (flags & XEN_VCPUAFFINITY_SOFT) !== 0;
  const hardMap = a.get('cpumap_hard_bitmap');
  const softMap = a.get('cpumap_soft_bitmap');
  if (flags === 0 || (setHard && hardMap === 0) || (setSoft && softMap === 0)) return -EINVAL;
  const cur = storedAffinity(hv, slot, vcpu);
  let hard = cur.hard;
  let soft = cur.soft;
  if (setHard) {
    const cpus = readCpumap(ctx, hardMap, a.get('cpumap_hard_nr_bits'));
    if (!cpus) return -EFAULT;
    if (cpus.length === 0) return -EINVAL;
    hard = cpus;
  }
  if (setSoft) {
    const cpus = readCpumap(ctx, softMap, a.get('cpumap_soft_nr_bits'));
    if (!cpus) return -EFAULT;
    soft = cpus;
  }
  storeAffinity(hv, slot, vcpu, { hard, soft });
  if (setHard && !writeCpumap(ctx, hardMap, a.get('cpumap_hard_nr_bits'), hard)) return -EFAULT;
  if (setSoft && !writeCpumap(ctx, softMap, a.get('cpumap_soft_nr_bits'), soft.filter((c) => hard.includes(c)))) return -EFAULT;
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
        // Since Xen 4.12 max_vcpus is fixed by createdomain: only the same value is accepted.
        const max = sub(op, XEN_DOMCTL_MAX_VCPUS).get('max');
        rc = slot === ctx.slot || max !== Atomics.load(hv.dom, hv.d(slot, D.max_vcpus)) ? -EINVAL : 0;
        break;
      }
      case XEN_DOMCTL_setvcpucontext:
        rc = !live ? -EINVAL : setvcpucontext(ctx, slot, op);
        break;
      case XEN_DOMCTL_getvcpuinfo:
        rc = getvcpuinfo(hv, slot, op);
        copyBack = rc === 0;
        break;
      case XEN_DOMCTL_scheduler_op:
        ({ rc, copyBack } = schedulerOp(hv, slot, op));
        break;
      case XEN_DOMCTL_setvcpuaffinity:
        rc = setvcpuaffinity(ctx, slot, op);
        break;
      default:
        rc = -ENOSYS;
    }
  }
  if (copyBack && !ctx.writeStruct(op, arg)) return -EFAULT;
  return rc;
}
