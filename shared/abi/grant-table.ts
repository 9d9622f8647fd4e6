import { defineLayout, i16, u16, u32, u64 } from '../layout.ts';

/**
 * struct grant_entry_v1 (xen/include/public/grant_table.h), 8 bytes, 512 per frame.
 *   uint16_t flags; domid_t domid; uint32_t frame;
 */
export const GRANT_ENTRY_V1 = defineLayout({ name: 'grant_entry_v1', header: 'xen/include/public/grant_table.h', size: 8 }, {
  flags: u16(0),
  domid: u16(2),
  frame: u32(4),
});
export const GRANT_ENTRIES_PER_FRAME_V1 = 512;
/** Refs below this are reserved: 0 console, 1 xenstore (GNTTAB_NR_RESERVED_ENTRIES). */
export const GNTTAB_NR_RESERVED_ENTRIES = 8;
export const GNTTAB_RESERVED_CONSOLE = 0;
export const GNTTAB_RESERVED_XENSTORE = 1;
/** Xen's defaults: max_grant_frames 64, max_maptrack_frames 1024. */
export const DEFAULT_MAX_GRANT_FRAMES = 64;
export const DEFAULT_MAX_MAPTRACK_FRAMES = 1024;

export const GNTTABOP_map_grant_ref = 0;
export const GNTTABOP_unmap_grant_ref = 1;
export const GNTTABOP_setup_table = 2;
export const GNTTABOP_dump_table = 3;
export const GNTTABOP_transfer = 4;
export const GNTTABOP_copy = 5;
export const GNTTABOP_query_size = 6;
export const GNTTABOP_unmap_and_replace = 7;
export const GNTTABOP_set_version = 8;
export const GNTTABOP_get_status_frames = 9;
export const GNTTABOP_get_version = 10;

/** GTF_* flags: type in bits 0-1. */
export const GTF_invalid = 0;
export const GTF_permit_access = 1;
export const GTF_accept_transfer = 2;
export const GTF_transitive = 3;
export const GTF_type_mask = 3;
export const GTF_readonly = 1 << 2;
export const GTF_reading = 1 << 3;
export const GTF_writing = 1 << 4;
export const GTF_transfer_committed = 1 << 2;
export const GTF_transfer_completed = 1 << 3;

export const GNTMAP_device_map = 1 << 0;
export const GNTMAP_host_map = 1 << 1;
export const GNTMAP_readonly = 1 << 2;
export const GNTMAP_application_map = 1 << 3;
export const GNTMAP_contains_pte = 1 << 4;

export const GNTCOPY_source_gref = 1 << 0;
export const GNTCOPY_dest_gref = 1 << 1;

/** GNTST_* per-entry statuses. */
export const GNTST_okay = 0;
export const GNTST_general_error = -1;
export const GNTST_bad_domain = -2;
export const GNTST_bad_gntref = -3;
export const GNTST_bad_handle = -4;
export const GNTST_bad_virt_addr = -5;
export const GNTST_bad_dev_addr = -6;
export const GNTST_no_device_space = -7;
export const GNTST_permission_denied = -8;
export const GNTST_bad_page = -9;
export const GNTST_bad_copy_arg = -10;
export const GNTST_address_too_big = -11;
export const GNTST_eagain = -12;
export const GNTST_no_space = -13;

/** struct gnttab_map_grant_ref, 32 bytes. */
export const GNTTAB_MAP_GRANT_REF = defineLayout({ name: 'gnttab_map_grant_ref', header: 'xen/include/public/grant_table.h', size: 32 }, {
  host_addr: u64(0),
  flags: u32(8),
  ref: u32(12),
  dom: u16(16),
  status: i16(18),
  handle: u32(20),
  dev_bus_addr: u64(24),
});

/** struct gnttab_unmap_grant_ref, 24 bytes: host_addr, dev_bus_addr, handle, status. */
export const GNTTAB_UNMAP_GRANT_REF = defineLayout({ name: 'gnttab_unmap_grant_ref', header: 'xen/include/public/grant_table.h', size: 24 }, {
  host_addr: u64(0),
  dev_bus_addr: u64(8),
  handle: u32(16),
  status: i16(20),
});

/** struct gnttab_copy, 40 bytes: source and dest {u.ref|u.gmfn, domid, offset}, len, flags, status. */
export const GNTTAB_COPY = defineLayout({ name: 'gnttab_copy', header: 'xen/include/public/grant_table.h', size: 40 }, {
  source_u: u64(0),
  source_domid: u16(8),
  source_offset: u16(10),
  dest_u: u64(16),
  dest_domid: u16(24),
  dest_offset: u16(26),
  len: u16(32),
  flags: u16(34),
  status: i16(36),
});

/** struct gnttab_transfer, 24 bytes: mfn, domid, ref, status. */
export const GNTTAB_TRANSFER = defineLayout({ name: 'gnttab_transfer', header: 'xen/include/public/grant_table.h', size: 24 }, {
  mfn: u64(0),
  domid: u16(8),
  ref: u32(12),
  status: i16(16),
});

/** struct gnttab_setup_table: dom u16 @0, nr_frames u32 @4, status i16 @8, frame_list handle @16. */
export const GNTTAB_SETUP_TABLE = defineLayout({ name: 'gnttab_setup_table', header: 'xen/include/public/grant_table.h', size: 24 }, {
  dom: u16(0),
  nr_frames: u32(4),
  status: i16(8),
  frame_list: u64(16),
});

/** struct gnttab_query_size: dom u16 @0, nr_frames u32 @4, max_nr_frames u32 @8, status i16 @12. */
export const GNTTAB_QUERY_SIZE = defineLayout({ name: 'gnttab_query_size', header: 'xen/include/public/grant_table.h', size: 16 }, {
  dom: u16(0),
  nr_frames: u32(4),
  max_nr_frames: u32(8),
  status: i16(12),
});
