/**
 * blkfront's xenstore side of the handshake (Linux blkfront's
 * talk_to_blkback and blkfront_connect reads): where the backend is, its
 * state and offers, the ring keys we publish, and the disk it describes.
 * Only xenstore I/O: which step runs when is handshake.ts's table; the
 * device (blkfront.ts) makes the ring and port and moves our state.
 */
import { BLKIF_MAX_SEGMENTS_PER_REQUEST, BLKIF_SECTOR_SIZE, VDISK_READONLY, XEN_IO_PROTO_ABI_X86_64 } from '../../shared/abi/blkif.ts';
import { XenbusError, type TxId, type XenbusClient } from '../../shared/xenbus/client.ts';
import { parseXenbusState } from '../../shared/xenbus/state.ts';
import { PAGE_SIZE, type GrantRef } from '../../shared/types.ts';
import type { BackendState } from './handshake.ts';
import { MAX_INDIRECT_SEGMENTS } from './requests.ts';
import type { BlkDiskInfo } from './types.ts';

const SECTOR = BLKIF_SECTOR_SIZE;

/** What the backend publishes for Connected, as blkfront_connect reads it. */
export interface BackendDisk {
  readonly disk: BlkDiskInfo;
  readonly flushCache: boolean;
  readonly barrier: boolean;
  readonly discard: boolean;
  /** Segments per indirect request both ends accept (0: direct requests only). */
  readonly maxIndirectSegments: number;
}

export class BackendDir {
  /** The backend's directory (our `backend` key; '' until read). */
  path = '';
  /** The backend's domain (our `backend-id` key; -1 until read). */
  id = -1;

  constructor(private readonly xs: XenbusClient, readonly frontPath: string) {}

  /** Read our `backend` and `backend-id` keys; returns the backend's path. */
  async readPath(): Promise<string> {
    this.path = await this.xs.read(`${this.frontPath}/backend`);
    this.id = Number(await this.xs.read(`${this.frontPath}/backend-id`));
    return this.path;
  }

  /** The backend's XenbusState, 'unknown' for a value we do not know, 'gone' if it has no state node. */
  async readState(): Promise<BackendState> {
    const v = await this.xs.tryRead(`${this.path}/state`);
    return v === undefined ? 'gone' : parseXenbusState(v);
  }

  /** A backend key, undefined if absent. */
  async key(key: string): Promise<string | undefined> {
    return this.xs.tryRead(`${this.path}/${key}`);
  }

  /** A backend key as a non-negative safe integer, `dflt` if absent or not one. */
  async number(key: string, dflt: number): Promise<number> {
    const v = await this.key(key);
    const n = v === undefined ? NaN : Number(v.trim());
    return Number.isSafeInteger(n) && n >= 0 ? n : dflt;
  }

  /**
   * Publish a ring of 2^order pages in one transaction: ring-ref (order 0)
   * or ring-page-order and ring-ref0..N, event-channel, protocol,
   * feature-persistent (ours). Stale ring keys of an earlier ring go first.
   * Rejects (nothing published) on a xenstore error.
   */
  async publishRing(refs: readonly GrantRef[], order: number, port: number, persistent: boolean): Promise<void> {
    const xs = this.xs;
    const front = this.frontPath;
    await xs.transaction(async (tx) => {
      await this.rmQuiet(`${front}/ring-ref`, tx);
      await this.rmQuiet(`${front}/ring-page-order`, tx);
      for (let i = 0; i < 1 << 4; i++) await this.rmQuiet(`${front}/ring-ref${i}`, tx);
      if (order === 0) {
        await xs.write(`${front}/ring-ref`, String(refs[0]), tx);
      } else {
        await xs.write(`${front}/ring-page-order`, String(order), tx);
        for (let i = 0; i < refs.length; i++) await xs.write(`${front}/ring-ref${i}`, String(refs[i]), tx);
      }
      await xs.write(`${front}/event-channel`, String(port), tx);
      await xs.write(`${front}/protocol`, XEN_IO_PROTO_ABI_X86_64, tx);
      await xs.write(`${front}/feature-persistent`, persistent ? '1' : '0', tx);
    });
  }

  private async rmQuiet(path: string, tx: TxId): Promise<void> {
    try {
      await this.xs.rm(path, tx);
    } catch (e) {
      if (!(e instanceof XenbusError && e.errno === 'ENOENT')) throw e;
    }
  }

  /**
   * Read the disk and the features the backend offers. Indirect segments are
   * capped by `maxIndirect` (ours) and MAX_INDIRECT_SEGMENTS, and are 0 unless
   * more than BLKIF_MAX_SEGMENTS_PER_REQUEST; a sector-size that is not a
   * multiple of 512 up to a page reads as 512.
   */
  async readDisk(maxIndirect: number): Promise<BackendDisk> {
    const sectors = await this.number('sectors', 0);
    const info = await this.number('info', 0);
    const sectorSize = await this.number('sector-size', SECTOR);
    const physicalSectorSize = await this.number('physical-sector-size', sectorSize);
    const flushCache = (await this.number('feature-flush-cache', 0)) === 1;
    const barrier = (await this.number('feature-barrier', 0)) === 1;
    const discard = (await this.number('feature-discard', 0)) === 1;
    const backIndirect = await this.number('feature-max-indirect-segments', 0);
    let indirect = Math.min(maxIndirect, backIndirect, MAX_INDIRECT_SEGMENTS);
    if (indirect <= BLKIF_MAX_SEGMENTS_PER_REQUEST) indirect = 0;
    const validSize = sectorSize >= SECTOR && sectorSize % SECTOR === 0 && sectorSize <= PAGE_SIZE;
    const disk = { sectors, sectorSize: validSize ? sectorSize : SECTOR, physicalSectorSize, info, readOnly: (info & VDISK_READONLY) !== 0 };
    return { disk, flushCache, barrier, discard, maxIndirectSegments: indirect };
  }
}
