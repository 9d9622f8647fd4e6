/** do_sysctl (Xen: common/sysctl.c). */
import os from 'node:os';
import { EACCES, EFAULT, ENOSYS } from '../../shared/errno.ts';
import {
  XEN_SCHEDULER_CREDIT, XEN_SCHEDULER_CREDIT2, XEN_SCHEDULER_NULL, XEN_SYSCTL_getdomaininfolist,
  XEN_SYSCTL_physinfo, XEN_SYSCTL_readconsole, XEN_SYSCTL_sched_id,
} from '../../shared/hypercall.ts';
import { XEN_DOMCTL_GETDOMAININFO } from '../../shared/abi/domctl.ts';
import {
  SYSCTL_U, XEN_SYSCTL, XEN_SYSCTL_GETDOMAININFOLIST, XEN_SYSCTL_INTERFACE_VERSION, XEN_SYSCTL_PHYSCAP_gnttab_v1,
  XEN_SYSCTL_PHYSCAP_pv, XEN_SYSCTL_PHYSINFO, XEN_SYSCTL_READCONSOLE, XEN_SYSCTL_SCHED_ID,
} from '../../shared/abi/sysctl.ts';
import { StructView } from '../../shared/layout.ts';
import { DOMID_FIRST_RESERVED } from '../../shared/types.ts';
import type { SchedName } from '../config.ts';
import { conringClear, conringRead } from '../console.ts';
import { slotOf } from '../domain.ts';
import { G } from '../state.ts';
import type { VcpuCtx } from '../vcpu/context.ts';
import { xsmCheck } from '../xsm.ts';
import { domainInfo } from './domain-info.ts';

export const SCHED_IDS: Readonly<Record<SchedName, number>> = {
  credit: XEN_SCHEDULER_CREDIT,
  credit2: XEN_SCHEDULER_CREDIT2,
  null: XEN_SCHEDULER_NULL,
};

type Sysctl = StructView<typeof XEN_SYSCTL.fields>;

function readconsole(ctx: VcpuCtx, op: Sysctl): number {
  const rc = xsmCheck(ctx.hv, ctx.slot, 'readconsole');
  if (rc < 0) return rc;
  const r = new StructView(XEN_SYSCTL_READCONSOLE, op.raw(), SYSCTL_U);
  const { data, index } = conringRead(ctx.hv, r.get('count'), r.get('incremental') !== 0, r.get('index'), false);
  // Xen copies first and clears only after the copy succeeded: a fault loses no output.
  if (!ctx.copyTo(r.get('buffer'), data)) return -EFAULT;
  if (r.get('clear') !== 0) conringClear(ctx.hv, index);
  r.set('count', data.length);
  r.set('index', index);
  return 0;
}

function physinfo(ctx: VcpuCtx, op: Sysctl): void {
  const hv = ctx.hv;
  const p = new StructView(XEN_SYSCTL_PHYSINFO, op.raw(), SYSCTL_U);
  p.raw().fill(0);
  p.set('threads_per_core', 1);
  p.set('cores_per_socket', hv.cfg.pcpus);
  p.set('nr_cpus', hv.cfg.pcpus);
  p.set('max_cpu_id', hv.cfg.pcpus - 1);
  p.set('nr_nodes', 1);
  p.set('max_node_id', 0);
  p.set('cpu_khz', (os.cpus()[0]?.speed ?? 0) * 1000);
  p.set('capabilities', XEN_SYSCTL_PHYSCAP_pv | XEN_SYSCTL_PHYSCAP_gnttab_v1);
  p.set('total_pages', hv.nrFrames);
  p.set('free_pages', Atomics.load(hv.g, G.FREE_PAGES));
  p.set('max_mfn', hv.nrFrames - 1);
}

function getdomaininfolist(ctx: VcpuCtx, op: Sysctl): number {
  const l = new StructView(XEN_SYSCTL_GETDOMAININFOLIST, op.raw(), SYSCTL_U);
  const max = l.get('max_domains');
  const buf = l.get('buffer');
  let n = 0;
  for (let d = l.get('first_domain'); d < DOMID_FIRST_RESERVED && n < max; d++) {
    if (ctx.hv.domidMap[d] < 0) continue;
    const slot = slotOf(ctx.hv, d);
    if (slot < 0) continue;
    if (!ctx.writeStruct(domainInfo(ctx.hv, slot), buf + n * XEN_DOMCTL_GETDOMAININFO.size)) return -EFAULT;
    n++;
  }
  l.set('num_domains', n);
  return 0;
}

export function doSysctl(ctx: VcpuCtx, arg: number): number {
  const op = ctx.readStruct(XEN_SYSCTL, arg);
  if (!op) return -EFAULT;
  if (op.get('interface_version') !== XEN_SYSCTL_INTERFACE_VERSION) return -EACCES;
  let rc = xsmCheck(ctx.hv, ctx.slot, 'sysctl');
  if (rc < 0) return rc;
  switch (op.get('cmd')) {
    case XEN_SYSCTL_readconsole:
      rc = readconsole(ctx, op);
      break;
    case XEN_SYSCTL_physinfo:
      physinfo(ctx, op);
      rc = 0;
      break;
    case XEN_SYSCTL_sched_id:
      new StructView(XEN_SYSCTL_SCHED_ID, op.raw(), SYSCTL_U).set('sched_id', SCHED_IDS[ctx.hv.cfg.sched]);
      rc = 0;
      break;
    case XEN_SYSCTL_getdomaininfolist:
      rc = getdomaininfolist(ctx, op);
      break;
    default:
      return -ENOSYS;
  }
  if (rc === 0 && !ctx.writeStruct(op, arg)) return -EFAULT;
  return rc;
}
