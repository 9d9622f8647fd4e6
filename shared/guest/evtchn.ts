/**
 * Event channels for PV guest kernels (Dom0 and DomU alike): binding ports,
 * per-port handlers, and the upcall scan as Xen guests do it (clear
 * evtchn_upcall_pending, take the selector, then each pending and unmasked
 * word), on the 2-level ABI in this domain's shared_info page.
 */
import {
  EVTCHN_ALLOC_UNBOUND, EVTCHN_BIND_INTERDOMAIN, EVTCHN_BIND_IPI, EVTCHN_BIND_VCPU, EVTCHN_BIND_VIRQ, EVTCHN_PORT,
  EVTCHN_STATUS, EVTCHNOP_alloc_unbound, EVTCHNOP_bind_interdomain, EVTCHNOP_bind_ipi, EVTCHNOP_bind_vcpu,
  EVTCHNOP_bind_virq, EVTCHNOP_close, EVTCHNOP_send, EVTCHNOP_status, EVTCHNOP_unmask,
} from '../abi/event-channel.ts';
import { SHARED_INFO, VCPU_INFO, VCPU_TIME_INFO, vcpuInfoOffset } from '../abi/shared-info.ts';
import { SCHED_POLL } from '../abi/sched.ts';
import { SCHEDOP_poll, __HYPERVISOR_event_channel_op, __HYPERVISOR_sched_op, __HYPERVISOR_set_timer_op } from '../hypercall.ts';
import { StructView } from '../layout.ts';
import { DOMID_SELF, PAGE_SIZE } from '../types.ts';
import { check, type Xen } from './xen.ts';

export type EventHandler = (port: number) => void;

export interface PortStatus {
  readonly status: number;
  readonly vcpu: number;
  readonly remoteDom: number;
  readonly remotePort: number;
  readonly virq: number;
}

const PENDING = SHARED_INFO.fields.evtchn_pending.offset;
const MASK = SHARED_INFO.fields.evtchn_mask.offset;
const SEL = VCPU_INFO.fields.evtchn_pending_sel.offset;
const UPCALL = VCPU_INFO.fields.evtchn_upcall_pending.offset;

export class EventChannels {
  /** Guest-physical address of this domain's shared_info. */
  readonly sharedInfo: number;
  private readonly handlers = new Map<number, EventHandler>();

  /** Map shared_info at `gfn` (default: just above the initial RAM) and take over event handling. */
  constructor(readonly xen: Xen, gfn: number = xen.nrPages) {
    check('add_to_physmap(shared_info)', xen.mapSharedInfo(gfn));
    this.sharedInfo = gfn * PAGE_SIZE;
  }

  private op(name: string, cmd: number, v: { raw(): Uint8Array }): number {
    return check(`event_channel_op(${name})`, this.xen.k.hypercall(__HYPERVISOR_event_channel_op, cmd, this.xen.put(v)));
  }

  /** A port of ours that `remoteDom` may bind to. */
  allocUnbound(remoteDom: number, dom: number = DOMID_SELF): number {
    this.op('alloc_unbound', EVTCHNOP_alloc_unbound, StructView.alloc(EVTCHN_ALLOC_UNBOUND).set('dom', dom).set('remote_dom', remoteDom));
    return this.xen.get(EVTCHN_ALLOC_UNBOUND).get('port');
  }

  bindInterdomain(remoteDom: number, remotePort: number): number {
    this.op('bind_interdomain', EVTCHNOP_bind_interdomain, StructView.alloc(EVTCHN_BIND_INTERDOMAIN).set('remote_dom', remoteDom).set('remote_port', remotePort));
    return this.xen.get(EVTCHN_BIND_INTERDOMAIN).get('local_port');
  }

  bindVirq(virq: number, vcpu = 0): number {
    this.op('bind_virq', EVTCHNOP_bind_virq, StructView.alloc(EVTCHN_BIND_VIRQ).set('virq', virq).set('vcpu', vcpu));
    return this.xen.get(EVTCHN_BIND_VIRQ).get('port');
  }

  bindIpi(vcpu = 0): number {
    this.op('bind_ipi', EVTCHNOP_bind_ipi, StructView.alloc(EVTCHN_BIND_IPI).set('vcpu', vcpu));
    return this.xen.get(EVTCHN_BIND_IPI).get('port');
  }

  bindVcpu(port: number, vcpu: number): void {
    this.op('bind_vcpu', EVTCHNOP_bind_vcpu, StructView.alloc(EVTCHN_BIND_VCPU).set('port', port).set('vcpu', vcpu));
  }

  close(port: number): void {
    this.handlers.delete(port);
    this.op('close', EVTCHNOP_close, StructView.alloc(EVTCHN_PORT).set('port', port));
  }

  /** Notify the other end (EVTCHNOP_send). */
  send(port: number): void {
    this.op('send', EVTCHNOP_send, StructView.alloc(EVTCHN_PORT).set('port', port));
  }

  status(port: number, dom: number = DOMID_SELF): PortStatus {
    this.op('status', EVTCHNOP_status, StructView.alloc(EVTCHN_STATUS).set('dom', dom).set('port', port));
    const s = this.xen.get(EVTCHN_STATUS);
    return { status: s.get('status'), vcpu: s.get('vcpu'), remoteDom: s.get('u_interdomain_dom'), remotePort: s.get('u_interdomain_port'), virq: s.get('u_virq') };
  }

  /** Mask a port: a guest-side bit (Xen only reads it). */
  mask(port: number): void {
    this.xen.k.mem.atomicOr32(this.wordAddr(MASK, port), 1 << (port & 31));
  }

  /**
   * Unmask through the hypervisor (EVTCHNOP_unmask), which clears the mask bit
   * itself and redelivers an event that arrived while masked. The mask bit must
   * still be set when the hypervisor looks, so it is not cleared here first.
   */
  unmask(port: number): void {
    this.op('unmask', EVTCHNOP_unmask, StructView.alloc(EVTCHN_PORT).set('port', port));
  }

  /**
   * Clear a port's pending bit (Linux's clear_evtchn): whatever event it
   * holds is dropped. A guest-side bit, like the mask. For an event that is
   * not the peer's, as the one bind_interdomain raises on the new port.
   */
  clear(port: number): void {
    this.xen.k.mem.atomicAnd32(this.wordAddr(PENDING, port), ~(1 << (port & 31)));
  }

  isPending(port: number): boolean {
    return (this.xen.k.mem.atomicLoad32(this.wordAddr(PENDING, port)) & (1 << (port & 31))) !== 0;
  }

  /**
   * Handle `port`'s events with `handler` from now on. An event that came
   * while the port had no handler is still pending (dispatch leaves it); if
   * the port is unmasked it is raised again (mask, then EVTCHNOP_unmask,
   * which redelivers a pending port), so the next dispatch runs the handler.
   * A port the kernel masked stays masked: its unmask delivers the event.
   */
  on(port: number, handler: EventHandler): void {
    this.handlers.set(port, handler);
    if (this.isPending(port) && !this.isMasked(port)) {
      this.mask(port);
      this.unmask(port);
    }
  }

  /** No handler for `port` from now on: its events stay pending until `on` gives it one. */
  off(port: number): void { this.handlers.delete(port); }

  /** The ports that have a handler (what an event loop sleeps on), lowest first. */
  handledPorts(): number[] {
    return [...this.handlers.keys()].sort((a, b) => a - b);
  }

  isMasked(port: number): boolean {
    return (this.xen.k.mem.atomicLoad32(this.wordAddr(MASK, port)) & (1 << (port & 31))) !== 0;
  }

  /** 32-bit word holding `port`'s bit in a 64-bit-word bitmap at `base` of shared_info. */
  private wordAddr(base: number, port: number): number {
    return this.sharedInfo + base + (port >>> 6) * 8 + ((port >>> 5) & 1) * 4;
  }

  /**
   * The upcall: clear evtchn_upcall_pending, take the selector, then for each
   * selected word handle every pending, unmasked port that has a handler
   * (clearing its pending bit before the handler runs). A port without one
   * keeps its pending bit, as Linux leaves a port no irq is bound to: `on`
   * delivers it later, and nothing is lost to a handler set after a wait.
   * Returns how many ports were handled.
   *
   * With evtchn_upcall_pending clear there is nothing to take: the hypervisor
   * sets it after the selector bit whenever that bit was clear, and a bit
   * already set stays covered by the flag that announced it until a dispatch
   * clears both. So a look that finds it clear costs one byte load (kernel
   * loops call this on every round of a spin).
   */
  dispatch(vcpu: number = this.xen.k.vcpuId): number {
    const mem = this.xen.k.mem;
    const vi = this.sharedInfo + vcpuInfoOffset(vcpu);
    if (mem.readU8(vi + UPCALL) === 0) return 0;
    mem.atomicXchg8(vi + UPCALL, 0);
    const selLo = mem.atomicXchg32(vi + SEL, 0);
    const selHi = mem.atomicXchg32(vi + SEL + 4, 0);
    let handled = 0;
    for (let w = 0; w < 64; w++) {
      if (!(((w < 32 ? selLo : selHi) >>> (w & 31)) & 1)) continue;
      for (let half = 0; half < 2; half++) {
        const at = this.sharedInfo + w * 8 + half * 4;
        let bits = mem.atomicLoad32(at + PENDING) & ~mem.atomicLoad32(at + MASK);
        while (bits !== 0) {
          const b = 31 - Math.clz32(bits & -bits);
          bits &= bits - 1;
          const port = w * 64 + half * 32 + b;
          const handler = this.handlers.get(port);
          if (handler === undefined) continue; // stays pending for `on`
          mem.atomicAnd32(at + PENDING, ~(1 << b));
          handled++;
          handler(port);
        }
      }
    }
    return handled;
  }

  /** SCHEDOP_block, then dispatch: the idle loop of an event-driven kernel. */
  wait(): number {
    this.xen.block();
    return this.dispatch();
  }

  /** SCHEDOP_poll on `ports` until one is pending or system time reaches `deadline` (0n: none). */
  poll(ports: readonly number[], deadline = 0n): void {
    const list = new Uint8Array(ports.length * 4);
    const dv = new DataView(list.buffer);
    ports.forEach((p, i) => dv.setUint32(i * 4, p, true));
    const at = this.xen.putArray(list);
    const sp = StructView.alloc(SCHED_POLL).set('ports', at).set('nr_ports', ports.length).setBig('timeout', deadline);
    check('sched_op(poll)', this.xen.k.hypercall(__HYPERVISOR_sched_op, SCHEDOP_poll, this.xen.put(sp)));
  }

  /**
   * Xen system time (ns) from this vCPU's vcpu_time_info and the TSC (pvclock):
   * system_time + ((tsc - tsc_timestamp) << shift) * mul >> 32.
   */
  systemTime(vcpu: number = this.xen.k.vcpuId): bigint {
    const t = new StructView(VCPU_TIME_INFO, this.xen.k.mem.read(this.sharedInfo + vcpuInfoOffset(vcpu) + VCPU_INFO.fields.time_version.offset, VCPU_TIME_INFO.size));
    const shift = t.get('tsc_shift');
    let delta = this.xen.k.rdtsc() - t.getBig('tsc_timestamp');
    delta = shift >= 0 ? delta << BigInt(shift) : delta >> BigInt(-shift);
    return t.getBig('system_time') + ((delta * BigInt(t.get('tsc_to_system_mul'))) >> 32n);
  }

  /** set_timer_op: a VIRQ_TIMER at absolute system time `deadline` (0n stops it). */
  setTimer(deadline: bigint): void {
    check('set_timer_op', this.xen.k.hypercall(__HYPERVISOR_set_timer_op, deadline));
  }
}
