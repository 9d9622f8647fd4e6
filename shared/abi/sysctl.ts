import { array, defineLayout, u16, u32, u64, u8 } from '../layout.ts';

/** XEN_SYSCTL_INTERFACE_VERSION in Xen 4.17; a mismatch gets -EACCES. */
export const XEN_SYSCTL_INTERFACE_VERSION = 0x00000015;

/** struct xen_sysctl (xen/include/public/sysctl.h), 136 bytes: cmd, interface_version, union u[128] @8. */
export const XEN_SYSCTL = defineLayout({ name: 'xen_sysctl', header: 'xen/include/public/sysctl.h', size: 136 }, {
  cmd: u32(0),
  interface_version: u32(4),
});
export const SYSCTL_U = 8;

/** struct xen_sysctl_readconsole, 24 bytes. */
export const XEN_SYSCTL_READCONSOLE = defineLayout({ name: 'xen_sysctl_readconsole', header: 'xen/include/public/sysctl.h', size: 24 }, {
  clear: u8(0),
  incremental: u8(1),
  index: u32(4),
  buffer: u64(8),
  count: u32(16),
});

/** struct xen_sysctl_physinfo, 112 bytes. */
export const XEN_SYSCTL_PHYSINFO = defineLayout({ name: 'xen_sysctl_physinfo', header: 'xen/include/public/sysctl.h', size: 112 }, {
  threads_per_core: u32(0),
  cores_per_socket: u32(4),
  nr_cpus: u32(8),
  max_cpu_id: u32(12),
  nr_nodes: u32(16),
  max_node_id: u32(20),
  cpu_khz: u32(24),
  capabilities: u32(28),
  arch_capabilities: u32(32),
  total_pages: u64(40),
  free_pages: u64(48),
  scrub_pages: u64(56),
  outstanding_pages: u64(64),
  max_mfn: u64(72),
  hw_cap: array('u32', 80, 8),
});
export const XEN_SYSCTL_PHYSCAP_hvm = 1 << 0;
export const XEN_SYSCTL_PHYSCAP_pv = 1 << 1;
export const XEN_SYSCTL_PHYSCAP_directio = 1 << 2;
export const XEN_SYSCTL_PHYSCAP_hap = 1 << 3;
export const XEN_SYSCTL_PHYSCAP_shadow = 1 << 4;
export const XEN_SYSCTL_PHYSCAP_gnttab_v1 = 1 << 8;

/** struct xen_sysctl_sched_id: uint32_t sched_id (OUT). */
export const XEN_SYSCTL_SCHED_ID = defineLayout({ name: 'xen_sysctl_sched_id', header: 'xen/include/public/sysctl.h', size: 4 }, {
  sched_id: u32(0),
});

/** struct xen_sysctl_getdomaininfolist, 24 bytes. */
export const XEN_SYSCTL_GETDOMAININFOLIST = defineLayout({ name: 'xen_sysctl_getdomaininfolist', header: 'xen/include/public/sysctl.h', size: 24 }, {
  first_domain: u16(0),
  max_domains: u32(4),
  buffer: u64(8),
  num_domains: u32(16),
});
