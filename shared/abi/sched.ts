import { defineLayout, u16, u32, u64 } from '../layout.ts';

/** struct sched_shutdown (xen/include/public/sched.h): unsigned int reason. */
export const SCHED_SHUTDOWN = defineLayout({ name: 'sched_shutdown', header: 'xen/include/public/sched.h', size: 4 }, {
  reason: u32(0),
});

/** struct sched_poll, 24 bytes: ports handle, nr_ports, timeout (absolute ns, 0 none). */
export const SCHED_POLL = defineLayout({ name: 'sched_poll', header: 'xen/include/public/sched.h', size: 24 }, {
  ports: u64(0),
  nr_ports: u32(8),
  timeout: u64(16),
});

/** struct sched_remote_shutdown, 8 bytes: domid_t domain_id; unsigned int reason. */
export const SCHED_REMOTE_SHUTDOWN = defineLayout({ name: 'sched_remote_shutdown', header: 'xen/include/public/sched.h', size: 8 }, {
  domain_id: u16(0),
  reason: u32(4),
});
