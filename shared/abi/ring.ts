import { defineLayout, u32 } from '../layout.ts';

/**
 * The shared ring header of DEFINE_RING_TYPES (xen/include/public/io/ring.h):
 *   RING_IDX req_prod, req_event, rsp_prod, rsp_event;
 *   uint8_t pvt[4]? / __pad[44] ... entries start at 64.
 */
export const SRING_HEADER = defineLayout({ name: 'sring header', header: 'xen/include/public/io/ring.h', size: 64 }, {
  req_prod: u32(0),
  req_event: u32(4),
  rsp_prod: u32(8),
  rsp_event: u32(12),
});

/** Number of entries of a ring of `pageBytes` with entries of `entrySize`: a power of two. */
export function ringSize(pageBytes: number, entrySize: number): number {
  const raw = Math.floor((pageBytes - SRING_HEADER.size) / entrySize);
  if (raw < 1) return 0;
  return 2 ** Math.floor(Math.log2(raw));
}
