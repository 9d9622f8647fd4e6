/** getdomaininfo() (Xen: common/domctl.c): one xen_domctl_getdomaininfo for a domain. */
import { StructView } from '../../shared/layout.ts';
import {
  XEN_DOMCTL_GETDOMAININFO, XEN_DOMINF_blocked, XEN_DOMINF_dying, XEN_DOMINF_hvm_guest, XEN_DOMINF_paused,
  XEN_DOMINF_running, XEN_DOMINF_shutdown, XEN_DOMINF_shutdownmask, XEN_DOMINF_shutdownshift, XEN_DOMINF_xs_domain,
} from '../../shared/abi/domctl.ts';
import { RUNSTATE_blocked, RUNSTATE_running } from '../../shared/hypercall.ts';
import {
  D, D_HANDLE_OFFSET, D_WORDS, DOMF_hvm, DOMF_xs_domain, DOMSTATE_DEAD, DOMSTATE_DYING, HvState, V, VPF_down, VT,
} from '../state.ts';

export type DomainInfo = StructView<typeof XEN_DOMCTL_GETDOMAININFO.fields>;

export function domainInfo(hv: HvState, slot: number): DomainInfo {
  const info = StructView.alloc(XEN_DOMCTL_GETDOMAININFO);
  const w = (f: number): number => Atomics.load(hv.dom, hv.d(slot, f));
  const maxV = w(D.max_vcpus);
  let online = 0;
  let maxId = -1;
  let anyRunning = false;
  let allBlocked = true;
  let cpu = 0n;
  for (let v = 0; v < maxV; v++) {
    maxId = v;
    cpu += hv.vcpuTime[hv.vt(slot, v, VT.TIME0 + RUNSTATE_running)];
    const rs = Atomics.load(hv.vcpu, hv.v(slot, v, V.runstate));
    if (rs === RUNSTATE_running) cpu += hv.now() - hv.vcpuTime[hv.vt(slot, v, VT.STATE_ENTRY)];
    if (Atomics.load(hv.vcpu, hv.v(slot, v, V.pause_flags)) & VPF_down) continue;
    online++;
    if (rs === RUNSTATE_running) anyRunning = true;
    if (rs !== RUNSTATE_blocked) allBlocked = false;
  }
  const state = w(D.state);
  let flags = 0;
  if (state === DOMSTATE_DYING || state === DOMSTATE_DEAD) flags |= XEN_DOMINF_dying;
  if (w(D.flags) & DOMF_hvm) flags |= XEN_DOMINF_hvm_guest;
  if (w(D.flags) & DOMF_xs_domain) flags |= XEN_DOMINF_xs_domain;
  if (w(D.is_shut_down)) {
    flags |= XEN_DOMINF_shutdown;
    flags |= (w(D.shutdown_code) & XEN_DOMINF_shutdownmask) << XEN_DOMINF_shutdownshift;
  }
  if (w(D.pause_count) > 0) flags |= XEN_DOMINF_paused;
  if (online > 0) {
    if (allBlocked) flags |= XEN_DOMINF_blocked;
    if (anyRunning) flags |= XEN_DOMINF_running;
  }
  info.set('domain', w(D.domid));
  info.set('flags', flags);
  info.set('tot_pages', w(D.tot_pages));
  info.set('max_pages', w(D.max_pages));
  info.set('shared_info_frame', w(D.shared_info_mfn) >= 0 ? w(D.shared_info_mfn) : 0);
  info.setBig('cpu_time', cpu);
  info.set('nr_online_vcpus', online);
  info.set('max_vcpu_id', maxId < 0 ? 0xffffffff : maxId);
  info.set('ssidref', w(D.ssidref));
  const at = slot * D_WORDS * 4 + D_HANDLE_OFFSET;
  info.setBytes('handle', hv.domBytes.subarray(at, at + 16));
  info.set('gpaddr_bits', Math.ceil(Math.log2(hv.cfg.p2mEntries * 4096)));
  return info;
}
