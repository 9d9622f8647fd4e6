import { bytes, defineLayout, u32 } from '../layout.ts';

/**
 * struct xenstore_domain_interface (xen/include/public/io/xs_wire.h): the
 * xenstore ring page, shared by a domain and xenstored; start_info's store_mfn
 * names it and store_evtchn signals it.
 *
 *   char req[XENSTORE_RING_SIZE];   requests to xenstored
 *   char rsp[XENSTORE_RING_SIZE];   replies and watch events
 *   XENSTORE_RING_IDX req_cons, req_prod;
 *   XENSTORE_RING_IDX rsp_cons, rsp_prod;
 *   uint32_t server_features;       XENSTORE_SERVER_FEATURE_*
 *   uint32_t connection;            XENSTORE_CONNECTED / XENSTORE_RECONNECT
 *   uint32_t error;                 XENSTORE_ERROR_*
 *
 * Indexes are free-running u32 byte counts; the byte at index i lives at
 * MASK_XENSTORE_IDX(i) = i & (XENSTORE_RING_SIZE - 1).
 */
export const XENSTORE_DOMAIN_INTERFACE = defineLayout(
  { name: 'struct xenstore_domain_interface', header: 'xen/include/public/io/xs_wire.h', size: 2076 },
  {
    req: bytes(0, 1024),
    rsp: bytes(1024, 1024),
    req_cons: u32(2048),
    req_prod: u32(2052),
    rsp_cons: u32(2056),
    rsp_prod: u32(2060),
    server_features: u32(2064),
    connection: u32(2068),
    error: u32(2072),
  },
);

export const XENSTORE_RING_SIZE = 1024;

/** server_features bits. */
export const XENSTORE_SERVER_FEATURE_RECONNECTION = 1;
export const XENSTORE_SERVER_FEATURE_ERROR = 2;

/** connection values. */
export const XENSTORE_CONNECTED = 0;
export const XENSTORE_RECONNECT = 1;

/** error values (set by xenstored with XENSTORE_SERVER_FEATURE_ERROR). */
export const XENSTORE_ERROR_NONE = 0;
export const XENSTORE_ERROR_COMM = 1;
export const XENSTORE_ERROR_RINGIDX = 2;
export const XENSTORE_ERROR_PROTO = 3;
