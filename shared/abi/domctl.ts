import { bytes, defineLayout, i32, u16, u32, u64, u8 } from '../layout.ts';

/** XEN_DOMCTL_INTERFACE_VERSION in Xen 4.17; a mismatch gets -EACCES. */
export const XEN_DOMCTL_INTERFACE_VERSION = 0x00000015;

/**
 * struct xen_domctl (xen/include/public/domctl.h), 144 bytes:
 *   uint32_t cmd; uint32_t interface_version; domid_t domain; uint16_t _pad[3];
 *   union { ...; uint8_t pad[128]; } u;
 */
export const XEN_DOMCTL = defineLayout({ name: 'xen_domctl', header: 'xen/include/public/domctl.h', size: 144 }, {
  cmd: u32(0),
  interface_version: u32(4),
  domain: u16(8),
  u: bytes(16, 128),
});
/** Offset of the union inside xen_domctl: sub-struct offsets below are relative to it. */
export const DOMCTL_U = 16;

/**
 * struct xen_domctl_createdomain, 64 bytes:
 *   uint32_t ssidref; xen_domain_handle_t handle; uint32_t flags, iommu_opts,
 *   max_vcpus, max_evtchn_port; int32_t max_grant_frames, max_maptrack_frames;
 *   uint32_t grant_opts, vmtrace_size, cpupool_id; struct xen_arch_domainconfig arch;
 */
export const XEN_DOMCTL_CREATEDOMAIN = defineLayout({ name: 'xen_domctl_createdomain', header: 'xen/include/public/domctl.h', size: 64 }, {
  ssidref: u32(0),
  handle: bytes(4, 16),
  flags: u32(20),
  iommu_opts: u32(24),
  max_vcpus: u32(28),
  max_evtchn_port: u32(32),
  max_grant_frames: i32(36),
  max_maptrack_frames: i32(40),
  grant_opts: u32(44),
  vmtrace_size: u32(48),
  cpupool_id: u32(52),
  arch_emulation_flags: u32(56),
  arch_misc_flags: u32(60),
});
export const XEN_DOMCTL_CDF_hvm = 1 << 0;
export const XEN_DOMCTL_CDF_hap = 1 << 1;
export const XEN_DOMCTL_CDF_s3_integrity = 1 << 2;
export const XEN_DOMCTL_CDF_oos_off = 1 << 3;
export const XEN_DOMCTL_CDF_xs_domain = 1 << 4;
export const XEN_DOMCTL_CDF_iommu = 1 << 5;
export const XEN_DOMCTL_CDF_nested_virt = 1 << 6;
export const XEN_DOMCTL_CDF_vpmu = 1 << 7;
export const XEN_DOMCTL_CDF_MAX = XEN_DOMCTL_CDF_vpmu;
/** Every createdomain flag bit Xen 4.17 defines. */
export const XEN_DOMCTL_CDF_ALL = (XEN_DOMCTL_CDF_MAX << 1) - 1;

/**
 * struct xen_domctl_getdomaininfo, 112 bytes; also the element of the sysctl
 * getdomaininfolist buffer.
 */
export const XEN_DOMCTL_GETDOMAININFO = defineLayout({ name: 'xen_domctl_getdomaininfo', header: 'xen/include/public/domctl.h', size: 112 }, {
  domain: u16(0),
  flags: u32(4),
  tot_pages: u64(8),
  max_pages: u64(16),
  outstanding_pages: u64(24),
  shr_pages: u64(32),
  paged_pages: u64(40),
  shared_info_frame: u64(48),
  cpu_time: u64(56),
  nr_online_vcpus: u32(64),
  max_vcpu_id: u32(68),
  ssidref: u32(72),
  handle: bytes(76, 16),
  cpupool: u32(92),
  gpaddr_bits: u8(96),
  arch_emulation_flags: u32(104),
  arch_misc_flags: u32(108),
});
export const XEN_DOMINF_dying = 1 << 0;
export const XEN_DOMINF_hvm_guest = 1 << 1;
export const XEN_DOMINF_shutdown = 1 << 2;
export const XEN_DOMINF_paused = 1 << 3;
export const XEN_DOMINF_blocked = 1 << 4;
export const XEN_DOMINF_running = 1 << 5;
export const XEN_DOMINF_debugged = 1 << 6;
export const XEN_DOMINF_xs_domain = 1 << 7;
export const XEN_DOMINF_hap = 1 << 8;
export const XEN_DOMINF_shutdownshift = 16;
export const XEN_DOMINF_shutdownmask = 255;

/** struct xen_domctl_max_mem: uint64_aligned_t max_memkb. */
export const XEN_DOMCTL_MAX_MEM = defineLayout({ name: 'xen_domctl_max_mem', header: 'xen/include/public/domctl.h', size: 8 }, {
  max_memkb: u64(0),
});

/** struct xen_domctl_max_vcpus: uint32_t max. */
export const XEN_DOMCTL_MAX_VCPUS = defineLayout({ name: 'xen_domctl_max_vcpus', header: 'xen/include/public/domctl.h', size: 4 }, {
  max: u32(0),
});

/** struct xen_domctl_vcpucontext: uint32_t vcpu; XEN_GUEST_HANDLE_64(vcpu_guest_context_t) ctxt. */
export const XEN_DOMCTL_VCPUCONTEXT = defineLayout({ name: 'xen_domctl_vcpucontext', header: 'xen/include/public/domctl.h', size: 16 }, {
  vcpu: u32(0),
  ctxt: u64(8),
});

/** struct xen_domctl_vcpuaffinity, 40 bytes (two xenctl_bitmap). */
export const XEN_DOMCTL_VCPUAFFINITY = defineLayout({ name: 'xen_domctl_vcpuaffinity', header: 'xen/include/public/domctl.h', size: 40 }, {
  vcpu: u32(0),
  flags: u32(4),
  cpumap_hard_bitmap: u64(8),
  cpumap_hard_nr_bits: u32(16),
  cpumap_soft_bitmap: u64(24),
  cpumap_soft_nr_bits: u32(32),
});
export const XEN_VCPUAFFINITY_HARD = 1 << 0;
export const XEN_VCPUAFFINITY_SOFT = 1 << 1;
export const XEN_VCPUAFFINITY_FORCE = 1 << 2;

/** struct xen_domctl_scheduler_op, 24 bytes. */
export const XEN_DOMCTL_SCHEDULER_OP = defineLayout({ name: 'xen_domctl_scheduler_op', header: 'xen/include/public/domctl.h', size: 24 }, {
  sched_id: u32(0),
  cmd: u32(4),
  credit_weight: u16(8, 'u'),
  credit_cap: u16(10, 'u'),
});
export const XEN_DOMCTL_SCHEDOP_putinfo = 0;
export const XEN_DOMCTL_SCHEDOP_getinfo = 1;
export const XEN_DOMCTL_SCHEDOP_putvcpuinfo = 2;
export const XEN_DOMCTL_SCHEDOP_getvcpuinfo = 3;

/**
 * vcpu_guest_context for PV TypeScript guests (our architecture's equivalent of
 * x86's struct vcpu_guest_context). A PV TS "CPU" starts at an entry point in
 * guest memory: the gfn of a kernel image header (see shared/guest/image.ts),
 * with the start_info gfn in the first argument register, as x86_64 PV passes
 * start_info in %rsi.
 *   uint64_t flags;   VGCF_online ...
 *   uint64_t entry;   guest-physical address of the kernel image header
 *   uint64_t arg0;    guest-physical address of start_info
 */
export const VCPU_GUEST_CONTEXT = defineLayout({ name: 'vcpu_guest_context (pvts)', header: 'shared/abi/domctl.ts', size: 32 }, {
  flags: u64(0),
  entry: u64(8),
  arg0: u64(16),
});
/** VGCF_online: the vCPU is brought up by setvcpucontext (x86 VGCF_online = 1<<5). */
export const VGCF_online = 1 << 5;
