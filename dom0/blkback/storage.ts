/**
 * What a virtual block device is backed by (the backend node's `type` and
 * `params`):
 *  - `phy`: a host file, opened at probe ('r+', or 'r' for mode r) and closed
 *    at removal. Data moves between the file and granted frames through Dom0's
 *    HostDma (preadv/pwritev straight into the mapped frames, DESIGN.md §5).
 *  - `null`: params is the size in bytes; like Linux's null_blk it touches no
 *    data at all (reads leave the frames as they are, writes are dropped) and
 *    the engine maps no grants for it: a baseline for measuring the ring.
 *
 * Durability: `flush` calls fdatasync(2) in libuv's thread pool and reports
 * through its callback, so Dom0's vCPU never waits in a long sync call.
 * Discard: Node has no fallocate(PUNCH_HOLE), so a discarded range is
 * overwritten with zeroes (synchronously, in 1 MiB writes): the data is gone,
 * as after a discard that zeroes, but no space is given back to the host.
 */
import fs from 'node:fs';
import type { GuestRange, HostDma } from '../../shared/guest/api.ts';
import { BLKIF_SECTOR_SIZE } from '../../shared/abi/blkif.ts';

export interface BlockStorage {
  /** Size in 512-byte sectors. */
  readonly sectors: number;
  /** True for a device that moves no data (the engine then maps no data grants). */
  readonly isNull: boolean;
  /** Fill `ranges` of Dom0's memory from the disk at byte `position`. Returns bytes read. */
  read(ranges: readonly GuestRange[], position: number): number;
  /** Write `ranges` of Dom0's memory to the disk at byte `position`. Returns bytes written. */
  write(ranges: readonly GuestRange[], position: number): number;
  /** Make every write done so far durable; `done(err)` runs when it is (possibly later, from a host callback). */
  flush(done: (err: Error | null) => void): void;
  /** Discard [sector, sector + n): afterwards the range reads as zeroes. */
  discard(sector: number, n: number): void;
  close(): void;
}

/** Thrown when a device's storage cannot be opened; `message` says why (goes to the `error` node). */
export class StorageError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'StorageError';
  }
}

const ZEROES = new Uint8Array(1 << 20);

export class FileStorage implements BlockStorage {
  readonly isNull = false;
  readonly sectors: number;
  private fd: number;

  constructor(readonly path: string, readonly writable: boolean, private readonly dma: HostDma) {
    try {
      this.fd = fs.openSync(path, writable ? 'r+' : 'r');
    } catch (e) {
      throw new StorageError(`cannot open ${path}: ${(e as NodeJS.ErrnoException).code ?? String(e)}`);
    }
    try {
      const st = fs.fstatSync(this.fd);
      if (!st.isFile() && !st.isBlockDevice()) throw new StorageError(`${path} is not a file`);
      this.sectors = Math.floor(st.size / BLKIF_SECTOR_SIZE);
    } catch (e) {
      fs.closeSync(this.fd);
      throw e instanceof StorageError ? e : new StorageError(`cannot stat ${path}: ${String(e)}`);
    }
  }

  read(ranges: readonly GuestRange[], position: number): number { return this.dma.preadv(this.fd, ranges, position); }
  write(ranges: readonly GuestRange[], position: number): number { return this.dma.pwritev(this.fd, ranges, position); }

  flush(done: (err: Error | null) => void): void {
    fs.fdatasync(this.fd, (err) => done(err));
  }

  discard(sector: number, n: number): void {
    let pos = sector * BLKIF_SECTOR_SIZE;
    let left = n * BLKIF_SECTOR_SIZE;
    while (left > 0) {
      const len = Math.min(left, ZEROES.length);
      fs.writeSync(this.fd, ZEROES, 0, len, pos);
      pos += len;
      left -= len;
    }
  }

  close(): void {
    if (this.fd < 0) return;
    fs.closeSync(this.fd);
    this.fd = -1;
  }
}

export class NullStorage implements BlockStorage {
  readonly isNull = true;
  readonly sectors: number;
  constructor(bytes: number) { this.sectors = Math.floor(bytes / BLKIF_SECTOR_SIZE); }
  read(ranges: readonly GuestRange[]): number { let n = 0; for (const r of ranges) n += r.len; return n; }
  write(ranges: readonly GuestRange[]): number { let n = 0; for (const r of ranges) n += r.len; return n; }
  flush(done: (err: Error | null) => void): void { done(null); }
  discard(): void {}
  close(): void {}
}

/** What the backend node says about the storage. */
export interface StorageSpec {
  /** `type`: phy (a file) or null. */
  readonly type: string;
  readonly params: string;
  readonly writable: boolean;
}

export type OpenStorage = (spec: StorageSpec) => BlockStorage;

/** The default opener: `phy` files through `dma`, `null` devices. Throws StorageError. */
export function storageOpener(dma: HostDma): OpenStorage {
  return (spec) => {
    switch (spec.type) {
      case 'phy':
      case 'file':
        return new FileStorage(spec.params, spec.writable, dma);
      case 'null': {
        const bytes = Number(spec.params);
        if (!Number.isSafeInteger(bytes) || bytes < 0) throw new StorageError(`null device size ${JSON.stringify(spec.params)} is not a byte count`);
        return new NullStorage(bytes);
      }
      default:
        throw new StorageError(`unknown vbd type ${JSON.stringify(spec.type)}`);
    }
  };
}
