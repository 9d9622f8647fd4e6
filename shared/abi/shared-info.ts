import { array, defineLayout, i8, u32, u64, u8 } from '../layout.ts';

/**
 * struct vcpu_time_info (xen.h), 32 bytes.
 */
export const VCPU_TIME_INFO = defineLayout({ name: 'vcpu_time_info', header: 'xen/include/public/xen.h', size: 32 }, {
  version: u32(0),
  pad0: u32(4),
  tsc_timestamp: u64(8),
  system_time: u64(16),
  tsc_to_system_mul: u32(24),
  tsc_shift: i8(28),
  flags: u8(29),
});

/**
 * struct vcpu_info (xen.h), x86_64: 64 bytes.
 *   uint8_t evtchn_upcall_pending; uint8_t evtchn_upcall_mask;
 *   xen_ulong_t evtchn_pending_sel; struct arch_vcpu_info arch (cr2, pad);
 *   struct vcpu_time_info time;
 */
export const VCPU_INFO = defineLayout({ name: 'vcpu_info', header: 'xen/include/public/xen.h', size: 64 }, {
  evtchn_upcall_pending: u8(0),
  evtchn_upcall_mask: u8(1),
  evtchn_pending_sel: u64(8),
  arch_cr2: u64(16),
  arch_pad: u64(24),
  time_version: u32(32),
  time_system_time: u64(48),
});

/** XEN_LEGACY_MAX_VCPUS: vcpu_info slots in shared_info. */
export const XEN_LEGACY_MAX_VCPUS = 32;
/** 2-level event channel ABI: 64 words of 64 bits. */
export const EVTCHN_2L_NR_CHANNELS = 4096;

/**
 * struct shared_info (xen.h), x86_64: 3136 bytes.
 *   struct vcpu_info vcpu_info[32]; xen_ulong_t evtchn_pending[64];
 *   xen_ulong_t evtchn_mask[64]; uint32_t wc_version, wc_sec, wc_nsec, wc_sec_hi;
 *   struct arch_shared_info arch;
 */
export const SHARED_INFO = defineLayout({ name: 'shared_info', header: 'xen/include/public/xen.h', size: 3136 }, {
  vcpu_info: array('u64', 0, (XEN_LEGACY_MAX_VCPUS * 64) / 8),
  evtchn_pending: array('u64', 2048, 64),
  evtchn_mask: array('u64', 2560, 64),
  wc_version: u32(3072),
  wc_sec: u32(3076),
  wc_nsec: u32(3080),
  wc_sec_hi: u32(3084),
  arch_max_pfn: u64(3088),
  arch_pfn_to_mfn_frame_list_list: u64(3096),
  arch_nmi_reason: u64(3104),
  arch_p2m_cr3: u64(3112),
  arch_p2m_vaddr: u64(3120),
  arch_p2m_generation: u64(3128),
});

/** Byte offset of vcpu_info[v] inside shared_info. */
export const vcpuInfoOffset = (v: number): number => v * VCPU_INFO.size;
