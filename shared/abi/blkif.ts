import { array, defineLayout, i16, u16, u32, u64, u8 } from '../layout.ts';
import { ringSize } from './ring.ts';
import { PAGE_SIZE } from '../types.ts';

/**
 * The block interface (xen/include/public/io/blkif.h), x86_64/Arm layout
 * ("x86_64-abi": u64 aligned to 8). One ring entry is the union of a request
 * (112 bytes) and a response (16 bytes).
 */

/** XEN_IO_PROTO_ABI_X86_64 (io/protocols.h): the frontend's "protocol" key. */
export const XEN_IO_PROTO_ABI_X86_64 = 'x86_64-abi';

/** Operations (BLKIF_OP_*). Explicit numbers, never renumbered. */
export const BLKIF_OP_READ = 0;
export const BLKIF_OP_WRITE = 1;
export const BLKIF_OP_WRITE_BARRIER = 2;
export const BLKIF_OP_FLUSH_DISKCACHE = 3;
export const BLKIF_OP_RESERVED_1 = 4;
export const BLKIF_OP_DISCARD = 5;
export const BLKIF_OP_INDIRECT = 6;

/** Response status (BLKIF_RSP_*). */
export const BLKIF_RSP_EOPNOTSUPP = -2;
export const BLKIF_RSP_ERROR = -1;
export const BLKIF_RSP_OKAY = 0;

/** BLKIF_MAX_SEGMENTS_PER_REQUEST: segments in a direct request. */
export const BLKIF_MAX_SEGMENTS_PER_REQUEST = 11;
/** BLKIF_MAX_INDIRECT_PAGES_PER_REQUEST: grefs of indirect pages in one indirect request. */
export const BLKIF_MAX_INDIRECT_PAGES_PER_REQUEST = 8;
/** Segments described by one indirect page: PAGE_SIZE / sizeof(struct blkif_request_segment). */
export const SEGS_PER_INDIRECT_FRAME = PAGE_SIZE / 8;
/** Linux blkback's MAX_INDIRECT_SEGMENTS: what it advertises in feature-max-indirect-segments. */
export const BLKBACK_MAX_INDIRECT_SEGMENTS = 256;
/** Linux's XENBUS_MAX_RING_GRANT_ORDER: blkback's max-ring-page-order default. */
export const XENBUS_MAX_RING_GRANT_ORDER = 4;

/** The sector unit of sector_number and first_sect/last_sect. */
export const BLKIF_SECTOR_SIZE = 512;
export const SECTORS_PER_PAGE = PAGE_SIZE / BLKIF_SECTOR_SIZE;

/** BLKIF_DISCARD_SECURE: the discard request's flag bit. */
export const BLKIF_DISCARD_SECURE = 1;

/** VDISK_* bits of the backend's "info" key. */
export const VDISK_CDROM = 1;
export const VDISK_REMOVABLE = 2;
export const VDISK_READONLY = 4;

/**
 * struct blkif_request_segment: the gref of a page and the inclusive sector
 * range within it that the segment covers.
 *   grant_ref_t gref; uint8_t first_sect, last_sect;   (+2 pad)
 */
export const BLKIF_REQUEST_SEGMENT = defineLayout({ name: 'blkif_request_segment', header: 'xen/include/public/io/blkif.h', size: 8 }, {
  gref: u32(0),
  first_sect: u8(4),
  last_sect: u8(5),
});

/**
 * struct blkif_request (READ, WRITE, WRITE_BARRIER, FLUSH_DISKCACHE):
 *   uint8_t operation; uint8_t nr_segments; blkif_vdev_t handle; (pad)
 *   uint64_t id; blkif_sector_t sector_number;
 *   struct blkif_request_segment seg[BLKIF_MAX_SEGMENTS_PER_REQUEST];
 */
export const BLKIF_REQUEST = defineLayout({ name: 'blkif_request', header: 'xen/include/public/io/blkif.h', size: 112 }, {
  operation: u8(0),
  nr_segments: u8(1),
  handle: u16(2),
  id: u64(8),
  sector_number: u64(16),
  seg: array('u64', 24, BLKIF_MAX_SEGMENTS_PER_REQUEST),
});

/**
 * struct blkif_request_discard (the union member, behind the same operation byte):
 *   uint8_t flag; blkif_vdev_t handle; (pad) uint64_t id;
 *   blkif_sector_t sector_number; uint64_t nr_sectors;
 */
export const BLKIF_REQUEST_DISCARD = defineLayout({ name: 'blkif_request_discard', header: 'xen/include/public/io/blkif.h', size: 112 }, {
  operation: u8(0),
  flag: u8(1),
  handle: u16(2),
  id: u64(8),
  sector_number: u64(16),
  nr_sectors: u64(24),
});

/**
 * struct blkif_request_indirect:
 *   uint8_t indirect_op; uint16_t nr_segments; (pad) uint64_t id;
 *   blkif_sector_t sector_number; blkif_vdev_t handle; (pad)
 *   grant_ref_t indirect_grefs[BLKIF_MAX_INDIRECT_PAGES_PER_REQUEST]; (pad)
 */
export const BLKIF_REQUEST_INDIRECT = defineLayout({ name: 'blkif_request_indirect', header: 'xen/include/public/io/blkif.h', size: 112 }, {
  operation: u8(0),
  indirect_op: u8(1),
  nr_segments: u16(2),
  id: u64(8),
  sector_number: u64(16),
  handle: u16(24),
  indirect_grefs: array('u32', 28, BLKIF_MAX_INDIRECT_PAGES_PER_REQUEST),
});

/**
 * struct blkif_response:
 *   uint64_t id; uint8_t operation; (pad) int16_t status;
 */
export const BLKIF_RESPONSE = defineLayout({ name: 'blkif_response', header: 'xen/include/public/io/blkif.h', size: 16 }, {
  id: u64(0),
  operation: u8(8),
  status: i16(10),
});

/** The size of one ring entry: the union of request and response. */
export const BLKIF_RING_ENTRY_SIZE = 112;

/** __CONST_RING_SIZE(blkif, PAGE_SIZE << order): 32 entries per one-page ring. */
export function blkifRingSize(pageOrder: number): number {
  return ringSize(PAGE_SIZE << pageOrder, BLKIF_RING_ENTRY_SIZE);
}
