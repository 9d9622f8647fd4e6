/**
 * A picture of a host's hypervisor state for a test that timed out on real
 * threads, in the spirit of Xen's 'q' (domains and vCPUs) and 'e' (event
 * channels) debug keys: which vCPU sleeps in what state, and which ports are
 * pending or masked. A hang whose picture shows every vCPU blocked and
 * nothing pending is an event consumed by a guest that no longer waits for
 * it; one with pending, unmasked ports and blocked vCPUs a lost wake-up.
 */
import { SHARED_INFO, VCPU_INFO, vcpuInfoOffset } from '../../shared/abi/shared-info.ts';
import { PAGE_SIZE } from '../../shared/types.ts';
import { notifyVcpu, portState } from '../../hypervisor/evtchn/evtchn.ts';
import {
  D, DOMSTATE_FREE, EVTCHN_2L_PORTS, SV, V, VPF_blocked, VPF_down, VPF_initialised, VPF_killed, VPF_shutdown, type HvState,
} from '../../hypervisor/state.ts';

const RUNSTATES = ['running', 'runnable', 'blocked', 'offline'];
/** ECS_* names (hypervisor/evtchn/evtchn.ts), as Xen's 'e' key prints them by number. */
const PORT_STATES = ['free', 'reserved', 'unbound', 'interdomain', 'pirq', 'virq', 'ipi'];
const FLAGS: ReadonlyArray<readonly [number, string]> = [
  [VPF_blocked, 'blocked'], [VPF_down, 'down'], [VPF_initialised, 'initialised'], [VPF_shutdown, 'shutdown'], [VPF_killed, 'killed'],
];

function flagNames(f: number): string {
  const names = FLAGS.filter(([bit]) => (f & bit) !== 0).map(([, n]) => n);
  return names.length > 0 ? names.join('|') : '-';
}

/** Bit `bit` of the u64 bitmap at byte `at` of machine memory. */
function bitSet(hv: HvState, at: number, bit: number): boolean {
  return ((hv.mem8[at + (bit >>> 3)]! >>> (bit & 7)) & 1) !== 0;
}

/** One line per live domain, one per vCPU, one per port in use (state, notify vCPU, pending, masked). */
export function hostStateDump(hv: HvState): string {
  const out: string[] = [`pCPU owners: ${Array.from(hv.pcpuOwner).join(' ')}`];
  for (let slot = 0; slot < hv.cfg.maxDomains; slot++) {
    const state = Atomics.load(hv.dom, hv.d(slot, D.state));
    if (state === DOMSTATE_FREE) continue;
    const si = Atomics.load(hv.dom, hv.d(slot, D.shared_info_mfn));
    out.push(`domain ${Atomics.load(hv.dom, hv.d(slot, D.domid))} (slot ${slot}): state ${state}, pause_count ${Atomics.load(hv.dom, hv.d(slot, D.pause_count))}, shared_info ${si >= 0 ? `mfn ${si}` : 'none'}`);
    const nv = Math.min(Atomics.load(hv.dom, hv.d(slot, D.max_vcpus)), hv.cfg.maxVcpus);
    for (let v = 0; v < nv; v++) {
      const w = (k: number): number => Atomics.load(hv.vcpu, hv.v(slot, v, k));
      let info = '';
      if (si >= 0 && v < 32) {
        const vi = si * PAGE_SIZE + vcpuInfoOffset(v);
        const sel = hv.mem8.subarray(vi + VCPU_INFO.fields.evtchn_pending_sel.offset, vi + VCPU_INFO.fields.evtchn_pending_sel.offset + 8);
        info = ` upcall_pending ${hv.mem8[vi + VCPU_INFO.fields.evtchn_upcall_pending.offset]} upcall_mask ${hv.mem8[vi + VCPU_INFO.fields.evtchn_upcall_mask.offset]}` +
          ` pending_sel ${Array.from(sel).reverse().map((b) => b.toString(16).padStart(2, '0')).join('')}`;
      }
      const grant = hv.schedVcpu[(slot * hv.cfg.maxVcpus + v) * SV.WORDS + SV.GRANT];
      out.push(`  vcpu${v}: ${RUNSTATES[w(V.runstate)] ?? w(V.runstate)}, flags ${flagNames(w(V.pause_flags))}, pcpu ${w(V.pcpu)}, grant ${grant},` +
        ` pending ${w(V.pending)} polling ${w(V.polling)} wake ${w(V.wake)}${info}`);
    }
    for (let port = 1; port < EVTCHN_2L_PORTS; port++) {
      const ps = portState(hv, slot, port);
      if (ps === 0) continue;
      const pend = si >= 0 && bitSet(hv, si * PAGE_SIZE + SHARED_INFO.fields.evtchn_pending.offset, port);
      const mask = si >= 0 && bitSet(hv, si * PAGE_SIZE + SHARED_INFO.fields.evtchn_mask.offset, port);
      out.push(`  port ${port}: ${PORT_STATES[ps] ?? ps}, vcpu ${notifyVcpu(hv, slot, port)}, ${pend ? 'PENDING' : 'not pending'}${mask ? ', masked' : ''}`);
    }
  }
  return out.join('\n');
}
