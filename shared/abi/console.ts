import { bytes, defineLayout, u32 } from '../layout.ts';

/**
 * struct xencons_interface (xen/include/public/io/console.h): a PV domain's
 * console ring page, shared by the guest and xenconsoled. start_info's
 * console.domU.mfn names it and console.domU.evtchn signals it; XenStore
 * carries the same two as console/ring-ref and console/port.
 *
 *   char in[1024];                  input, xenconsoled to the guest
 *   char out[2048];                 output, the guest to xenconsoled
 *   XENCONS_RING_IDX in_cons, in_prod;
 *   XENCONS_RING_IDX out_cons, out_prod;
 *
 * Indexes are free-running u32 byte counts; the byte at index i of a ring of
 * size N lives at MASK_XENCONS_IDX(i, ring) = i & (N - 1).
 */
export const XENCONS_INTERFACE = defineLayout(
  { name: 'struct xencons_interface', header: 'xen/include/public/io/console.h', size: 3088 },
  {
    in: bytes(0, 1024),
    out: bytes(1024, 2048),
    in_cons: u32(3072),
    in_prod: u32(3076),
    out_cons: u32(3080),
    out_prod: u32(3084),
  },
);

/** sizeof(intf->in), sizeof(intf->out). */
export const XENCONS_IN_SIZE = 1024;
export const XENCONS_OUT_SIZE = 2048;
