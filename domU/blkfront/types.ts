/**
 * blkfront's public types: options (Linux xen-blkfront's module parameters),
 * what the backend told us about the disk, and the one error type.
 */
import { BLKIF_RSP_EOPNOTSUPP, BLKIF_RSP_ERROR } from '../../shared/abi/blkif.ts';

export interface BlkfrontOptions {
  /** Use persistent grants if the backend offers them (Linux feature_persistent, default true). */
  readonly persistent?: boolean;
  /** Segments per indirect request (Linux max_indirect_segments, default 32; 0: no indirect requests). */
  readonly maxIndirectSegments?: number;
  /** Ring of 2^order pages, capped by the backend's max-ring-page-order (Linux max_ring_page_order, default 0). */
  readonly ringPageOrder?: number;
  /**
   * Most data and indirect pages the driver may hold at once (default 256).
   * Requests wait in the driver's queue while the budget is spent; it is
   * raised to what one largest request needs. The pages of zero-copy
   * buffers (BlockFront.allocBuffer) are the caller's and not counted.
   */
  readonly maxPages?: number;
  /** Where driver warnings go (a hostile backend's are logged once). Default: dropped. */
  readonly warn?: (msg: string, data?: Record<string, unknown>) => void;
}

/** What the backend published when it went Connected. */
export interface BlkDiskInfo {
  /** Capacity in 512-byte sectors (the backend's "sectors"). */
  readonly sectors: number;
  /** Logical sector size in bytes ("sector-size"): I/O must be aligned to it. */
  readonly sectorSize: number;
  readonly physicalSectorSize: number;
  /** VDISK_* bits ("info"). */
  readonly info: number;
  readonly readOnly: boolean;
}

/** Features in use on the current connection (both ends agreed). */
export interface BlkFeatures {
  readonly flushCache: boolean;
  readonly barrier: boolean;
  readonly discard: boolean;
  readonly persistent: boolean;
  /** Segments per indirect request in use (0: direct requests only). */
  readonly maxIndirectSegments: number;
  readonly ringPageOrder: number;
  /** Ring entries: the most requests in flight at once. */
  readonly ringSize: number;
}

export type BlkfrontErrorReason =
  /** The backend answered with a status other than BLKIF_RSP_OKAY (see `status`). */
  | 'status'
  /** The operation is not offered by the backend (flush, discard) or the disk is read-only. */
  | 'unsupported'
  /** Sector range outside the disk or not aligned to its sector size. */
  | 'range'
  /** The backend misbehaved (unknown response id, impossible rsp_prod): the ring is no longer used. */
  | 'ring-broken'
  /** The device was hot-unplugged before the request was answered. */
  | 'removed'
  /** The device was closed by the guest. */
  | 'closed'
  /** The request's pages could not be granted to the backend (our grant table is full). */
  | 'grants';

export class BlkfrontError extends Error {
  constructor(readonly reason: BlkfrontErrorReason, message: string, readonly status?: number) {
    super(message);
    this.name = 'BlkfrontError';
  }
}

/** The blkif status's name, for messages. */
export function blkifStatusName(status: number): string {
  switch (status) {
    case BLKIF_RSP_ERROR: return 'BLKIF_RSP_ERROR';
    case BLKIF_RSP_EOPNOTSUPP: return 'BLKIF_RSP_EOPNOTSUPP';
    default: return `status ${status}`;
  }
}

/** Counters, for tests and benchmarks. */
export interface BlkfrontStats {
  /** Requests put on the ring, by blkif operation (indirect ones under 'indirect'). */
  readonly requests: Record<'read' | 'write' | 'flush' | 'barrier' | 'discard' | 'indirect', number>;
  /** Segments sent (direct and indirect). */
  segments: number;
  /** Event channel notifications sent to the backend. */
  notifies: number;
  responses: number;
  /** Requests issued again on a new ring after a backend came back. */
  reissued: number;
  /** Rings set up (1 + reconnections). */
  rings: number;
}
