import { bytes, defineLayout, u32, u64 } from '../layout.ts';

/**
 * start_info_t (xen/include/public/xen.h), x86_64 layout. The domain builder
 * writes it into the guest's memory; the PV kernel entry receives its gfn.
 *
 *   char magic[32];              "xen-<version>-<platform>"
 *   unsigned long nr_pages;      total pages allocated to this domain
 *   unsigned long shared_info;   MACHINE address of shared info struct
 *   uint32_t flags;              SIF_xxx
 *   xen_pfn_t store_mfn;         xenstore ring page
 *   uint32_t store_evtchn;
 *   union { struct { xen_pfn_t mfn; uint32_t evtchn; } domU;
 *           struct { uint32_t info_off; uint32_t info_size; } dom0; } console;
 *   unsigned long pt_base, nr_pt_frames, mfn_list, mod_start, mod_len;
 *   int8_t cmd_line[MAX_GUEST_CMDLINE];
 *   unsigned long first_p2m_pfn, nr_p2m_frames;
 */
export const START_INFO = defineLayout({ name: 'start_info_t', header: 'xen/include/public/xen.h', size: 1168 }, {
  magic: bytes(0, 32),
  nr_pages: u64(32),
  shared_info: u64(40),
  flags: u32(48),
  store_mfn: u64(56),
  store_evtchn: u32(64),
  console_domU_mfn: u64(72, 'console'),
  console_domU_evtchn: u32(80, 'console'),
  console_dom0_info_off: u32(72, 'console'),
  console_dom0_info_size: u32(76, 'console'),
  pt_base: u64(88),
  nr_pt_frames: u64(96),
  mfn_list: u64(104),
  mod_start: u64(112),
  mod_len: u64(120),
  cmd_line: bytes(128, 1024),
  first_p2m_pfn: u64(1152),
  nr_p2m_frames: u64(1160),
});
export const MAX_GUEST_CMDLINE = 1024;
export const SIF_PRIVILEGED = 1 << 0;
export const SIF_INITDOMAIN = 1 << 1;
export const SIF_MULTIBOOT_MOD = 1 << 2;
export const SIF_MOD_START_PFN = 1 << 3;
export const SIF_VIRT_P2M_4TOOLS = 1 << 4;

/** The platform string of our guests' ABI: PV TypeScript on the x86_64 layout. */
export const XEN_GUEST_PLATFORM = 'x86_64';
/** start_info magic: Xen's ABI version is "3.0" since Xen 3.0 (xen-3.0-x86_64). */
export const START_INFO_MAGIC = `xen-3.0-${XEN_GUEST_PLATFORM}`;

