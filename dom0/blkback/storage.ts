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
 * Discard punches a hole (fallocate(FALLOC_FL_PUNCH_HOLE | KEEP_SIZE), what
 * Linux's loop device does for a file; Node has no fallocate, so through
 * util-linux's fallocate(1), run by a helper shell per image: HolePuncher):
 * the range reads as zeroes and its space goes back to the host. Where that
 * fails (no fallocate(1), a filesystem without holes) the range is
 * overwritten with zeroes in 1 MiB writes in the host's thread pool. Either
 * way Dom0's vCPU does not wait: `discard` reports through its callback. A
 * file's discards run one at a time, in the order asked (waiting ones whose
 * ranges overlap or touch are merged into one), each through its own fd (the
 * device's may be closed meanwhile).
 */
import { spawn, type ChildProcess } from 'node:child_process';
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
  /**
   * Discard [sector, sector + n): afterwards the range reads as zeroes.
   * `done(err)` runs when it has (possibly later, from a host callback).
   */
  discard(sector: number, n: number, done: (err: Error | null) => void): void;
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

/**
 * Overwrite [pos, pos + len) of the file at `path` with zeroes, 1 MiB per
 * write, in the host's thread pool, through an fd of its own; then `done`.
 */
function writeZeroes(path: string, pos: number, len: number, done: (err: Error | null) => void): void {
  fs.open(path, 'r+', (err, fd) => {
    if (err) return done(err);
    const step = (at: number, left: number): void => {
      if (left === 0) return fs.close(fd, (e) => done(e));
      const n = Math.min(left, ZEROES.length);
      fs.write(fd, ZEROES, 0, n, at, (e, wrote) => {
        if (e || wrote === 0) return fs.close(fd, () => done(e ?? new Error(`discard: no progress writing zeroes at ${at}`)));
        step(at + wrote, left - wrote);
      });
    };
    step(pos, len);
  });
}

/**
 * Open an image for a vbd. With O_NOATIME where the host allows it (the
 * caller owns the file or has CAP_FOWNER; otherwise EPERM, and it is opened
 * without): a guest's reads then leave the image's access time alone, and
 * the host's read path skips the atime check, ~7% of a cache-hot 4 KiB
 * pread here (docs/block.md, "Requests").
 */
function openImage(path: string, writable: boolean): number {
  const mode = writable ? fs.constants.O_RDWR : fs.constants.O_RDONLY;
  try {
    return fs.openSync(path, mode | fs.constants.O_NOATIME);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code !== 'EPERM') throw e;
    return fs.openSync(path, mode);
  }
}

/**
 * The helper's script: for each line "<offset> <length>" read, run fallocate(1)
 * ($1) on the image ($2) and answer its exit status on a line.
 */
const PUNCH_SCRIPT = 'while read -r off len; do "$1" --punch-hole --offset "$off" --length "$len" -- "$2" </dev/null >/dev/null 2>&1; echo $?; done';
/** A punch's answer when the helper is gone (it could not be started, or it died). */
const PUNCHER_GONE = -1;

/**
 * A long-lived shell that runs fallocate(1) for an image, one hole at a time,
 * started at the image's first discard and ended when it is closed. Starting
 * a process blocks the thread that starts it until the child has exec'd: in
 * Dom0's process, which maps the whole of machine memory, ~2 ms with 160 MiB
 * and ~7 ms with 1 GiB each time (measured), and a guest sending discards of
 * scattered ranges would have had Dom0's vCPU spend most of its time
 * starting fallocate(1)s. Through the helper, Dom0 writes a line to a pipe and
 * reads one back; the forks are the small shell's, on another core if there
 * is one. Not restarted once gone: the image's holes are then zeroes.
 */
class HolePuncher {
  private child: ChildProcess | null = null;
  private gone = false;
  private out = '';
  /** The running punch's callback (FileStorage runs one at a time). */
  private waiting: ((status: number) => void) | null = null;

  constructor(private readonly tool: string, private readonly path: string) {}

  /** The helper's pid once started (tests). */
  get pid(): number | undefined { return this.child?.pid; }

  /** Punch [pos, pos + len); `done` gets fallocate(1)'s exit status, or PUNCHER_GONE. */
  punch(pos: number, len: number, done: (status: number) => void): void {
    const child = this.child ?? this.start();
    if (child === null) return queueMicrotask(() => done(PUNCHER_GONE));
    this.waiting = done;
    child.stdin!.write(`${pos} ${len}\n`);
  }

  private start(): ChildProcess | null {
    if (this.gone) return null;
    const child = spawn('/bin/sh', ['-c', PUNCH_SCRIPT, 'xents-punch', this.tool, this.path], { stdio: ['pipe', 'pipe', 'ignore'] });
    this.child = child;
    child.stdin!.on('error', () => { /* EPIPE once it died: its exit answers the punch */ });
    child.stdout!.setEncoding('latin1');
    child.stdout!.on('data', (chunk: string) => {
      this.out += chunk;
      for (let nl = this.out.indexOf('\n'); nl >= 0; nl = this.out.indexOf('\n')) {
        const line = this.out.slice(0, nl);
        this.out = this.out.slice(nl + 1);
        this.answer(/^\d+$/.test(line) ? Number(line) : PUNCHER_GONE);
      }
    });
    const died = (): void => {
      this.gone = true;
      this.child = null;
      this.answer(PUNCHER_GONE);
    };
    child.on('error', died);
    child.on('close', died);
    return child;
  }

  private answer(status: number): void {
    const w = this.waiting;
    this.waiting = null;
    w?.(status);
  }

  /** End the helper: it finishes the punch it runs (answered as usual), then exits. */
  close(): void {
    this.gone = true;
    this.child?.stdin!.end();
  }
}

/** A discard waiting for its turn (FileStorage runs them one at a time). */
interface PendingDiscard { readonly pos: number; readonly len: number; readonly done: (err: Error | null) => void }

export interface FileStorageOptions {
  /** The fallocate(1) to punch holes with (default `fallocate`, from PATH); null: never, zeroes are written instead. */
  readonly fallocate?: string | null;
}

export class FileStorage implements BlockStorage {
  readonly isNull = false;
  readonly sectors: number;
  private fd: number;
  private readonly discards: PendingDiscard[] = [];
  private discarding = false;
  /** fallocate(1), until it turns out not to exist (null: write zeroes). */
  private fallocate: string | null;
  /** The helper running fallocate(1), once a discard has asked for a hole. */
  private puncher: HolePuncher | null = null;
  /** Holes punched / ranges zeroed instead (one per run of merged discards; tests, statistics). */
  readonly discardStats = { punched: 0, zeroed: 0 };

  constructor(readonly path: string, readonly writable: boolean, private readonly dma: HostDma, o: FileStorageOptions = {}) {
    this.fallocate = o.fallocate === undefined ? 'fallocate' : o.fallocate;
    try {
      this.fd = openImage(path, writable);
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

  discard(sector: number, n: number, done: (err: Error | null) => void): void {
    this.discards.push({ pos: sector * BLKIF_SECTOR_SIZE, len: n * BLKIF_SECTOR_SIZE, done });
    this.nextDiscard();
  }

  /**
   * Unless one runs, start the oldest waiting discard, together with the
   * waiting ones right behind it whose ranges overlap or touch what is
   * gathered so far (one hole for all; each is answered when it is made):
   * a hole, or zeroes where no hole can be made. Empty discards are answered
   * at once.
   */
  private nextDiscard(): void {
    if (this.discarding) return;
    let first = this.discards.shift();
    while (first && first.len === 0) {
      first.done(null);
      first = this.discards.shift();
    }
    if (!first) return;
    const batch = [first];
    let start = first.pos;
    let end = first.pos + first.len;
    for (let next = this.discards[0]; next && (next.len === 0 || (next.pos <= end && next.pos + next.len >= start)); next = this.discards[0]) {
      this.discards.shift();
      batch.push(next);
      if (next.len === 0) continue;
      start = Math.min(start, next.pos);
      end = Math.max(end, next.pos + next.len);
    }
    this.discarding = true;
    const finish = (err: Error | null): void => {
      this.discarding = false;
      for (const d of batch) d.done(err);
      this.nextDiscard();
    };
    const zero = (): void => writeZeroes(this.path, start, end - start, (err) => {
      if (!err) this.discardStats.zeroed++;
      finish(err);
    });
    if (this.fallocate === null) return zero();
    this.puncher ??= new HolePuncher(this.fallocate, this.path);
    this.puncher.punch(start, end - start, (status) => {
      if (status === 0) {
        this.discardStats.punched++;
        return finish(null);
      }
      // 126/127: the shell could not run it; gone: no helper. Neither is looked for again.
      if (status === 126 || status === 127 || status === PUNCHER_GONE) this.fallocate = null;
      zero();
    });
  }

  /** The pid of the helper running fallocate(1) for this image, once started (tests). */
  get puncherPid(): number | undefined { return this.puncher?.pid; }

  /**
   * Close the file. Discards still waiting their turn are dropped (their
   * callbacks get an error): nothing touches the image once its device is
   * gone but the one already running, which finishes on its own fd.
   */
  close(): void {
    for (const d of this.discards.splice(0)) d.done(new StorageError(`${this.path} closed before the discard ran`));
    this.puncher?.close();
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
  discard(_sector: number, _n: number, done: (err: Error | null) => void): void { done(null); }
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
