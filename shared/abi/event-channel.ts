import { defineLayout, u16, u32 } from '../layout.ts';

/** EVTCHNOP_* (xen/include/public/event_channel.h). */
export const EVTCHNOP_bind_interdomain = 0;
export const EVTCHNOP_bind_virq = 1;
export const EVTCHNOP_bind_pirq = 2;
export const EVTCHNOP_close = 3;
export const EVTCHNOP_send = 4;
export const EVTCHNOP_status = 5;
export const EVTCHNOP_alloc_unbound = 6;
export const EVTCHNOP_bind_ipi = 7;
export const EVTCHNOP_bind_vcpu = 8;
export const EVTCHNOP_unmask = 9;
export const EVTCHNOP_reset = 10;

/** EVTCHNSTAT_* returned by EVTCHNOP_status. */
export const EVTCHNSTAT_closed = 0;
export const EVTCHNSTAT_unbound = 1;
export const EVTCHNSTAT_interdomain = 2;
export const EVTCHNSTAT_pirq = 3;
export const EVTCHNSTAT_virq = 4;
export const EVTCHNSTAT_ipi = 5;

/** VIRQ_* (xen.h). Global VIRQs bind on vCPU 0 only. */
export const VIRQ_TIMER = 0;
export const VIRQ_DEBUG = 1;
export const VIRQ_CONSOLE = 2;
export const VIRQ_DOM_EXC = 3;
export const VIRQ_TBUF = 4;
export const VIRQ_DEBUGGER = 6;
export const VIRQ_XENOPROF = 7;
export const VIRQ_CON_RING = 8;
export const VIRQ_PCPU_STATE = 9;
export const VIRQ_MEM_EVENT = 10;
export const VIRQ_ARGO = 11;
export const VIRQ_ENOMEM = 12;
export const VIRQ_XENPMU = 13;
/** Per-vCPU VIRQs; every other one is global. */
export const PER_VCPU_VIRQS: ReadonlySet<number> = new Set([VIRQ_TIMER, VIRQ_DEBUG, VIRQ_XENOPROF, VIRQ_XENPMU]);

/** struct evtchn_alloc_unbound: domid_t dom, remote_dom; evtchn_port_t port (OUT). */
export const EVTCHN_ALLOC_UNBOUND = defineLayout({ name: 'evtchn_alloc_unbound', header: 'xen/include/public/event_channel.h', size: 8 }, {
  dom: u16(0), remote_dom: u16(2), port: u32(4),
});
/** struct evtchn_bind_interdomain: domid_t remote_dom; evtchn_port_t remote_port, local_port (OUT). */
export const EVTCHN_BIND_INTERDOMAIN = defineLayout({ name: 'evtchn_bind_interdomain', header: 'xen/include/public/event_channel.h', size: 12 }, {
  remote_dom: u16(0), remote_port: u32(4), local_port: u32(8),
});
/** struct evtchn_bind_virq: uint32_t virq, vcpu; evtchn_port_t port (OUT). */
export const EVTCHN_BIND_VIRQ = defineLayout({ name: 'evtchn_bind_virq', header: 'xen/include/public/event_channel.h', size: 12 }, {
  virq: u32(0), vcpu: u32(4), port: u32(8),
});
/** struct evtchn_bind_ipi: uint32_t vcpu; evtchn_port_t port (OUT). */
export const EVTCHN_BIND_IPI = defineLayout({ name: 'evtchn_bind_ipi', header: 'xen/include/public/event_channel.h', size: 8 }, {
  vcpu: u32(0), port: u32(4),
});
/** struct evtchn_close / evtchn_send / evtchn_unmask: evtchn_port_t port. */
export const EVTCHN_PORT = defineLayout({ name: 'evtchn_close/send/unmask', header: 'xen/include/public/event_channel.h', size: 4 }, {
  port: u32(0),
});
/** struct evtchn_status, 24 bytes. */
export const EVTCHN_STATUS = defineLayout({ name: 'evtchn_status', header: 'xen/include/public/event_channel.h', size: 24 }, {
  dom: u16(0), port: u32(4), status: u32(8), vcpu: u32(12),
  u_unbound_dom: u16(16, 'u'),
  u_interdomain_dom: u16(16, 'u'),
  u_interdomain_port: u32(20, 'u'),
  u_virq: u32(16, 'u'),
});
/** struct evtchn_bind_vcpu: evtchn_port_t port; uint32_t vcpu. */
export const EVTCHN_BIND_VCPU = defineLayout({ name: 'evtchn_bind_vcpu', header: 'xen/include/public/event_channel.h', size: 8 }, {
  port: u32(0), vcpu: u32(4),
});
/** struct evtchn_reset: domid_t dom. */
export const EVTCHN_RESET = defineLayout({ name: 'evtchn_reset', header: 'xen/include/public/event_channel.h', size: 2 }, {
  dom: u16(0),
});
