/**
 * Shared pieces of the event-channel tests: raw EVTCHNOP calls marshalled into
 * a vCPU's own guest memory (so every error code is visible, not thrown), and
 * readers of the 2-level bits in the guest's shared_info page, read through
 * the guest's own memory accessors as a guest kernel would.
 *
 * Layout: raw arguments go at ARG (gfn 200, see ../hypercall/helpers.ts); the
 * guest library (EventChannels) marshals at its scratch page (gfn 4) and maps
 * shared_info at gfn 256 (just above a 1 MiB guest's RAM) unless told otherwise.
 */
import { expect } from 'vitest';
import type { TestMachine, TestVcpu } from '../../helpers/machine.ts';
import {
  EVTCHN_ALLOC_UNBOUND, EVTCHN_BIND_INTERDOMAIN, EVTCHN_BIND_IPI, EVTCHN_BIND_VCPU, EVTCHN_BIND_VIRQ, EVTCHN_PORT,
  EVTCHN_RESET, EVTCHN_STATUS, EVTCHNOP_alloc_unbound, EVTCHNOP_bind_interdomain, EVTCHNOP_bind_ipi,
  EVTCHNOP_bind_vcpu, EVTCHNOP_bind_virq, EVTCHNOP_close, EVTCHNOP_reset, EVTCHNOP_send, EVTCHNOP_status,
  EVTCHNOP_unmask,
} from '../../../shared/abi/event-channel.ts';
import { SHARED_INFO, VCPU_INFO, vcpuInfoOffset } from '../../../shared/abi/shared-info.ts';
import { __HYPERVISOR_event_channel_op } from '../../../shared/hypercall.ts';
import { StructView } from '../../../shared/layout.ts';
import { DOMID_SELF } from '../../../shared/types.ts';
import { EVTCHN_2L_PORTS } from '../../../hypervisor/state.ts';
import { EventChannels } from '../../../shared/guest/evtchn.ts';
import { ARG, get, put } from '../hypercall/helpers.ts';

export const EVTCHN = __HYPERVISOR_event_channel_op;

/** Result of a raw op: the status, and the out-field the op fills (port, local_port), if any. */
export interface Raw { readonly rc: number; readonly port: number }

export function allocUnbound(v: TestVcpu, remoteDom: number, dom: number = DOMID_SELF): Raw {
  const rc = v.call(EVTCHN, EVTCHNOP_alloc_unbound, put(v, ARG, StructView.alloc(EVTCHN_ALLOC_UNBOUND).set('dom', dom).set('remote_dom', remoteDom).set('port', 0xdead)));
  return { rc, port: get(v, EVTCHN_ALLOC_UNBOUND, ARG).get('port') };
}

export function bindInterdomain(v: TestVcpu, remoteDom: number, remotePort: number): Raw {
  const rc = v.call(EVTCHN, EVTCHNOP_bind_interdomain, put(v, ARG, StructView.alloc(EVTCHN_BIND_INTERDOMAIN).set('remote_dom', remoteDom).set('remote_port', remotePort).set('local_port', 0xdead)));
  return { rc, port: get(v, EVTCHN_BIND_INTERDOMAIN, ARG).get('local_port') };
}

export function bindVirq(v: TestVcpu, virq: number, vcpu = 0): Raw {
  const rc = v.call(EVTCHN, EVTCHNOP_bind_virq, put(v, ARG, StructView.alloc(EVTCHN_BIND_VIRQ).set('virq', virq).set('vcpu', vcpu).set('port', 0xdead)));
  return { rc, port: get(v, EVTCHN_BIND_VIRQ, ARG).get('port') };
}

export function bindIpi(v: TestVcpu, vcpu = 0): Raw {
  const rc = v.call(EVTCHN, EVTCHNOP_bind_ipi, put(v, ARG, StructView.alloc(EVTCHN_BIND_IPI).set('vcpu', vcpu).set('port', 0xdead)));
  return { rc, port: get(v, EVTCHN_BIND_IPI, ARG).get('port') };
}

const portOp = (cmd: number) => (v: TestVcpu, port: number): number =>
  v.call(EVTCHN, cmd, put(v, ARG, StructView.alloc(EVTCHN_PORT).set('port', port)));
export const close = portOp(EVTCHNOP_close);
export const send = portOp(EVTCHNOP_send);
/** EVTCHNOP_unmask exactly as Xen defines it: the guest leaves the mask bit set and Xen clears it. */
export const unmask = portOp(EVTCHNOP_unmask);

export function bindVcpu(v: TestVcpu, port: number, vcpu: number): number {
  return v.call(EVTCHN, EVTCHNOP_bind_vcpu, put(v, ARG, StructView.alloc(EVTCHN_BIND_VCPU).set('port', port).set('vcpu', vcpu)));
}

export function reset(v: TestVcpu, dom: number = DOMID_SELF): number {
  return v.call(EVTCHN, EVTCHNOP_reset, put(v, ARG, StructView.alloc(EVTCHN_RESET).set('dom', dom)));
}

export interface RawStatus {
  readonly rc: number;
  readonly status: number;
  readonly vcpu: number;
  /** u.unbound.dom / u.interdomain.dom (same offset). */
  readonly dom: number;
  readonly remotePort: number;
  readonly virq: number;
}

export function status(v: TestVcpu, port: number, dom: number = DOMID_SELF): RawStatus {
  const rc = v.call(EVTCHN, EVTCHNOP_status, put(v, ARG, StructView.alloc(EVTCHN_STATUS).set('dom', dom).set('port', port)));
  const s = get(v, EVTCHN_STATUS, ARG);
  return { rc, status: s.get('status'), vcpu: s.get('vcpu'), dom: s.get('u_unbound_dom'), remotePort: s.get('u_interdomain_port'), virq: s.get('u_virq') };
}

/** The 2-level bits of one port as the guest sees them in its shared_info page. */
export interface PortBits {
  readonly pending: boolean;
  readonly masked: boolean;
  /** Bit port/64 of vcpu_info[vcpu].evtchn_pending_sel. */
  readonly sel: boolean;
  /** vcpu_info[vcpu].evtchn_upcall_pending. */
  readonly upcall: number;
}

const PENDING = SHARED_INFO.fields.evtchn_pending.offset;
const MASK = SHARED_INFO.fields.evtchn_mask.offset;
const SEL = VCPU_INFO.fields.evtchn_pending_sel.offset;
const UPCALL = VCPU_INFO.fields.evtchn_upcall_pending.offset;

/** Read bit `bit` of the u64 bitmap at guest address `base`, one byte at a time (no assumption on word size). */
function bitAt(v: TestVcpu, base: number, bit: number): boolean {
  return ((v.api.mem.readU8(base + (bit >>> 3)) >>> (bit & 7)) & 1) === 1;
}

export function bits(v: TestVcpu, ev: EventChannels, port: number, vcpu = 0): PortBits {
  const si = ev.sharedInfo;
  const vi = si + vcpuInfoOffset(vcpu);
  return {
    pending: bitAt(v, si + PENDING, port),
    masked: bitAt(v, si + MASK, port),
    sel: bitAt(v, vi + SEL, port >>> 6),
    upcall: v.api.mem.readU8(vi + UPCALL),
  };
}

/** The guest clears its own upcall flag and/or selector bit (as a guest's upcall handler does). */
export function clearUpcall(v: TestVcpu, ev: EventChannels, vcpu = 0): void {
  v.api.mem.writeU8(ev.sharedInfo + vcpuInfoOffset(vcpu) + UPCALL, 0);
}
export function clearSel(v: TestVcpu, ev: EventChannels, vcpu = 0): void {
  v.api.mem.writeU64(ev.sharedInfo + vcpuInfoOffset(vcpu) + SEL, 0n);
}

/**
 * Acknowledge every event `ev`'s domain has on vCPU `vcpu`: each pending,
 * unmasked port cleared (handler or not: EventChannels.dispatch leaves the
 * ports it has no handler for), then the selector and upcall flag. Returns
 * how many ports it cleared. Tests use it to start a step from clean bits.
 */
export function takeAll(v: TestVcpu, ev: EventChannels, vcpu = 0): number {
  let n = 0;
  for (let p = 1; p < EVTCHN_2L_PORTS; p++) {
    if (ev.isPending(p) && !ev.isMasked(p)) {
      ev.clear(p);
      n++;
    }
  }
  clearSel(v, ev, vcpu);
  clearUpcall(v, ev, vcpu);
  return n;
}

/** The whole event area of shared_info (vcpu_info[], pending[], mask[]) as bytes: to show nothing changed. */
export function eventArea(v: TestVcpu, ev: EventChannels): Uint8Array {
  return v.api.mem.read(ev.sharedInfo, MASK + 512);
}

/** A connected interdomain pair: a's unbound port, bound by b. b's bind-time event is dispatched away. */
export function connect(a: { v: TestVcpu; domid: number }, b: { v: TestVcpu; domid: number }): { pa: number; pb: number } {
  const u = allocUnbound(a.v, b.domid);
  expect(u.rc).toBe(0);
  const i = bindInterdomain(b.v, a.domid, u.port);
  expect(i.rc).toBe(0);
  return { pa: u.port, pb: i.port };
}

/** A DomU as TestMachine.domU() returns it. */
export type Dom = { domid: number; slot: number; v: TestVcpu };

/** Two DomUs, each with its shared_info mapped and its event channel library. */
export async function pairWithEvents(m: TestMachine): Promise<{ a: Dom; b: Dom; ea: EventChannels; eb: EventChannels }> {
  const a = await m.domU();
  const b = await m.domU();
  return { a, b, ea: new EventChannels(a.v.xen), eb: new EventChannels(b.v.xen) };
}

/** Build n DomUs on the machine. */
export async function domUs(m: TestMachine, n: number, vcpus = 1): Promise<Array<{ domid: number; slot: number; v: TestVcpu }>> {
  const out: Array<{ domid: number; slot: number; v: TestVcpu }> = [];
  for (let i = 0; i < n; i++) out.push(await m.domU({ vcpus }));
  return out;
}
