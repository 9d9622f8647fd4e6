import { defineLayout, u16, u32, u64 } from '../layout.ts';

/**
 * struct xen_memory_reservation (xen/include/public/memory.h), 32 bytes.
 *   XEN_GUEST_HANDLE(xen_pfn_t) extent_start; xen_ulong_t nr_extents;
 *   unsigned int extent_order; unsigned int mem_flags; domid_t domid;
 */
export const XEN_MEMORY_RESERVATION = defineLayout({ name: 'xen_memory_reservation', header: 'xen/include/public/memory.h', size: 32 }, {
  extent_start: u64(0),
  nr_extents: u64(8),
  extent_order: u32(16),
  mem_flags: u32(20),
  domid: u16(24),
});

/** struct xen_memory_domain: the argument of current/maximum_reservation. */
export const XEN_MEMORY_DOMAIN = defineLayout({ name: 'xen_memory_domain', header: 'xen/include/public/memory.h', size: 2 }, {
  domid: u16(0),
});

/**
 * struct xen_add_to_physmap, 24 bytes.
 *   domid_t domid; uint16_t size; unsigned int space; xen_ulong_t idx; xen_pfn_t gpfn;
 */
export const XEN_ADD_TO_PHYSMAP = defineLayout({ name: 'xen_add_to_physmap', header: 'xen/include/public/memory.h', size: 24 }, {
  domid: u16(0),
  size: u16(2),
  space: u32(4),
  idx: u64(8),
  gpfn: u64(16),
});

/**
 * struct xen_add_to_physmap_batch, 32 bytes.
 *   domid_t domid; uint16_t space; uint16_t size;
 *   union { domid_t foreign_domid; uint16_t res0; } u;
 *   XEN_GUEST_HANDLE(xen_ulong_t) idxs; XEN_GUEST_HANDLE(xen_pfn_t) gpfns;
 *   XEN_GUEST_HANDLE(int) errs;
 */
export const XEN_ADD_TO_PHYSMAP_BATCH = defineLayout({ name: 'xen_add_to_physmap_batch', header: 'xen/include/public/memory.h', size: 32 }, {
  domid: u16(0),
  space: u16(2),
  size: u16(4),
  foreign_domid: u16(6),
  idxs: u64(8),
  gpfns: u64(16),
  errs: u64(24),
});

/** struct xen_remove_from_physmap, 16 bytes: domid_t domid; xen_pfn_t gpfn. */
export const XEN_REMOVE_FROM_PHYSMAP = defineLayout({ name: 'xen_remove_from_physmap', header: 'xen/include/public/memory.h', size: 16 }, {
  domid: u16(0),
  gpfn: u64(8),
});
