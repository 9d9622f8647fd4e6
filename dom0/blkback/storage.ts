/**
 * What a virtual block device is backed by (the backend node's `type` and
 * `params`):
 *  - `phy`: a host file, opened at probe (read-write, or read-only for mode
 *    r; O_NOATIME where the host allows it: openImage) and closed at
 *    removal. Data moves between the file and granted frames through Dom0's
 *    HostDma (preadv/pwritev straight into the mapped frames, DESIGN.md §5).
 *  - `null`: params is the size in bytes; like Linux's null_blk it touches no
 *    data at all (reads leave the frames as they are, writes are dropped) and
 *    the engine maps no grants for it: a baseline for measuring the ring.
 *
 * Durability: `flush` calls fdatasync(2) in libuv's thread pool and reports
 * through its callback, so Dom0's vCPU never waits in a long sync call;
 * flushes asked while one runs share the next.
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
import { logger } from '../../shared/log.ts';

const log = logger('blkback');

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
  /**
   * Optional: `read` (write false) or `write` queued as a host DMA job
   * (HostDma.submit), run on another thread while Dom0 goes on. Returns false, starting nothing,
   * if it cannot take the I/O now: then call read/write. Otherwise
   * `done(result)` runs once, from a later `reap` or `drain` on Dom0's
   * vCPU: the bytes moved, or a negative errno. Throws as read/write do.
   */
  submit?(ranges: readonly GuestRange[], position: number, write: boolean, done: (result: number) => void): boolean;
  /** Run the callbacks of submitted I/O that has finished (every device's: one DMA engine per Dom0); returns how many ran. */
  reap?(): number;
  /** Wait until every submitted I/O has finished, running its callback. */
  drain?(): void;
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
 * The helper's script. Each line it reads is a list of holes, "<offset>
 * <length>" pairs; it runs fallocate(1) ($1) on the image ($2) for each in
 * turn and answers the exit statuses on one line.
 */
const PUNCH_SCRIPT = 'tool=$1; img=$2; while read -r line; do set -- $line; out=; while [ $# -ge 2 ]; do ' +
  '"$tool" --punch-hole --offset "$1" --length "$2" -- "$img" </dev/null >/dev/null 2>&1; out="$out $?"; shift 2; done; echo $out; done';
/** A hole's status when the helper is gone (it could not be started, it died, or it was ended). */
const PUNCHER_GONE = -1;
/** The most runs of discards sent to the helper in one line (a ring of order 0 holds 32 requests). */
const PUNCH_BATCH = 32;

/**
 * A long-lived shell that runs fallocate(1) for an image, started at the
 * image's first discard and ended when the image is closed. Starting a
 * process blocks the thread that starts it until the child has exec'd: in
 * Dom0's process, which maps the whole of machine memory, ~2 ms with 160 MiB
 * and ~7 ms with 1 GiB each time (measured), and a guest sending discards of
 * scattered ranges would have had Dom0's vCPU spend most of its time
 * starting fallocate(1)s. Through the helper, Dom0 writes one line to a pipe
 * for all the holes waiting and reads one line back (a round trip through a
 * pipe costs Node ~65-90 µs of CPU here: one per hole would still be the
 * larger part of a discard's cost to Dom0); the forks are the small shell's,
 * on another core if there is one. Not restarted once gone: the image's
 * holes are then zeroes.
 */
class HolePuncher {
  private child: ChildProcess | null = null;
  private gone = false;
  private out = '';
  /** The running request's callback and how many holes it asked for (FileStorage sends one at a time). */
  private waiting: ((statuses: number[]) => void) | null = null;
  private asked = 0;
  private sent = 0;

  constructor(private readonly tool: string, private readonly path: string) {}

  /** The helper's pid once started (tests). */
  get pid(): number | undefined { return this.child?.pid; }
  /** Lines sent (tests, statistics). */
  get requests(): number { return this.sent; }

  /** Punch each [pos, pos + len) of `holes` in turn; `done` gets fallocate(1)'s exit statuses (PUNCHER_GONE: not run). */
  punch(holes: ReadonlyArray<readonly [number, number]>, done: (statuses: number[]) => void): void {
    const child = this.child ?? this.start();
    if (child === null) return queueMicrotask(() => done(holes.map(() => PUNCHER_GONE)));
    this.waiting = done;
    this.asked = holes.length;
    this.sent++;
    child.stdin!.write(`${holes.map(([pos, len]) => `${pos} ${len}`).join(' ')}\n`);
  }

  private start(): ChildProcess | null {
    if (this.gone) return null;
    const child = spawn('/bin/sh', ['-c', PUNCH_SCRIPT, 'xents-punch', this.tool, this.path], { stdio: ['pipe', 'pipe', 'ignore'] });
    this.child = child;
    child.stdin!.on('error', () => { /* EPIPE once it died: its exit answers the request */ });
    child.stdout!.setEncoding('latin1');
    child.stdout!.on('data', (chunk: string) => {
      this.out += chunk;
      for (let nl = this.out.indexOf('\n'); nl >= 0; nl = this.out.indexOf('\n')) {
        const words = this.out.slice(0, nl).trim().split(/ +/);
        this.out = this.out.slice(nl + 1);
        this.answer(words.map((w) => (/^\d+$/.test(w) ? Number(w) : PUNCHER_GONE)));
      }
    });
    const died = (err?: Error): void => {
      // Once per image (never restarted), so not rate-limited.
      if (!this.gone) log.warn({ path: this.path, err: err ? String(err) : undefined }, 'fallocate helper gone: discards write zeroes from now on');
      this.gone = true;
      this.child = null;
      this.answer([]);
    };
    child.on('error', died);
    child.on('close', () => died());
    return child;
  }

  /** Answer the running request (holes not answered for: PUNCHER_GONE). */
  private answer(statuses: number[]): void {
    const w = this.waiting;
    if (w === null) return;
    this.waiting = null;
    while (statuses.length < this.asked) statuses.push(PUNCHER_GONE);
    w(statuses.slice(0, this.asked));
  }

  /** End the helper now: a fallocate(1) it runs finishes, no other starts; the request is answered PUNCHER_GONE for what was not run. */
  close(): void {
    this.gone = true;
    this.child?.kill('SIGKILL');
  }
}

/** A discard waiting for its turn (FileStorage runs them one at a time). */
interface PendingDiscard { readonly pos: number; readonly len: number; readonly done: (err: Error | null) => void }

/** Waiting discards made one hole [start, end): their ranges overlap or touch (empty ones ride along). */
interface DiscardRun { start: number; end: number; readonly members: PendingDiscard[] }

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
  /** Flushes waiting for the next fdatasync, and whether one runs (see `flush`). */
  private flushWaiting: Array<(err: Error | null) => void> = [];
  private syncing = false;
  /** I/O submitted as host DMA jobs whose callbacks have not run. */
  private submitted = 0;
  /** fdatasync(2) calls made (tests, statistics). */
  readonly flushStats = { syncs: 0 };
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
  submit(ranges: readonly GuestRange[], position: number, write: boolean, done: (result: number) => void): boolean {
    if (this.fd < 0) return false;
    const queued = this.dma.submit(this.fd, ranges, position, write, (result) => {
      this.submitted--;
      done(result);
    });
    if (queued) this.submitted++;
    return queued;
  }
  reap(): number { return this.dma.reap(); }
  drain(): void { this.dma.drain(); }

  /**
   * Flushes asked while an fdatasync runs share the next one (started when it
   * returns, so after they were asked: it covers the writes before each of
   * them, which were done synchronously before they were asked). An image has
   * at most one fdatasync in the host's thread pool, and a guest sending
   * flushes by the ringful costs two, not one each, as Linux's block layer
   * merges the flushes queued behind a running one (blk-flush).
   */
  flush(done: (err: Error | null) => void): void {
    this.flushWaiting.push(done);
    if (!this.syncing) this.sync();
  }

  private sync(): void {
    const waiting = this.flushWaiting;
    this.flushWaiting = [];
    if (this.fd < 0) {
      const err = new StorageError(`${this.path} closed before the flush`);
      for (const d of waiting) d(err);
      return;
    }
    this.syncing = true;
    this.flushStats.syncs++;
    fs.fdatasync(this.fd, (err) => {
      this.syncing = false;
      for (const d of waiting) d(err);
      if (this.flushWaiting.length > 0) this.sync();
    });
  }

  discard(sector: number, n: number, done: (err: Error | null) => void): void {
    this.discards.push({ pos: sector * BLKIF_SECTOR_SIZE, len: n * BLKIF_SECTOR_SIZE, done });
    this.nextDiscard();
  }

  /**
   * The oldest waiting discard, with the waiting ones right behind it whose
   * ranges overlap or touch what is gathered so far (one hole for all; empty
   * ones ride along), taken off the queue; empty discards at its head are
   * answered at once. Null if none is waiting.
   */
  private takeRun(): DiscardRun | null {
    let first = this.discards.shift();
    while (first && first.len === 0) {
      first.done(null);
      first = this.discards.shift();
    }
    if (!first) return null;
    const run: DiscardRun = { start: first.pos, end: first.pos + first.len, members: [first] };
    for (let next = this.discards[0]; next && (next.len === 0 || (next.pos <= run.end && next.pos + next.len >= run.start)); next = this.discards[0]) {
      this.discards.shift();
      run.members.push(next);
      if (next.len === 0) continue;
      run.start = Math.min(run.start, next.pos);
      run.end = Math.max(run.end, next.pos + next.len);
    }
    return run;
  }

  /**
   * Unless some run, start the discards waiting: up to PUNCH_BATCH runs
   * (takeRun) sent to the helper at once, which punches their holes one after
   * another; or, without fallocate(1), one run, zeroed.
   */
  private nextDiscard(): void {
    if (this.discarding) return;
    const runs: DiscardRun[] = [];
    const most = this.fallocate === null ? 1 : PUNCH_BATCH;
    while (runs.length < most) {
      const r = this.takeRun();
      if (r === null) break;
      runs.push(r);
    }
    if (runs.length === 0) return;
    this.discarding = true;
    if (this.fallocate === null) return this.settle(runs, [], 0);
    this.puncher ??= new HolePuncher(this.fallocate, this.path);
    this.puncher.punch(runs.map((r) => [r.start, r.end - r.start] as const), (statuses) => {
      // 126/127: the shell could not run it; gone: no helper. Neither is looked for again.
      if (statuses.some((st) => st === 126 || st === 127 || st === PUNCHER_GONE)) this.fallocate = null;
      this.settle(runs, statuses, 0);
    });
  }

  /**
   * Answer runs[i..] in order: one whose hole was punched (status 0) at once,
   * another once its range is zeroed, unless the image has been closed
   * meanwhile (then it is answered with an error, the image left alone). Then
   * start what waits.
   */
  private settle(runs: readonly DiscardRun[], statuses: readonly number[], i: number): void {
    for (; i < runs.length; i++) {
      const run = runs[i]!;
      if (statuses[i] === 0) {
        this.discardStats.punched++;
        for (const d of run.members) d.done(null);
        continue;
      }
      if (this.fd < 0) {
        const err = new StorageError(`${this.path} closed before the discard was done`);
        for (const d of run.members) d.done(err);
        continue;
      }
      const next = i + 1;
      return writeZeroes(this.path, run.start, run.end - run.start, (err) => {
        if (!err) this.discardStats.zeroed++;
        for (const d of run.members) d.done(err);
        this.settle(runs, statuses, next);
      });
    }
    this.discarding = false;
    this.nextDiscard();
  }

  /** The pid of the helper running fallocate(1) for this image, once started (tests). */
  get puncherPid(): number | undefined { return this.puncher?.pid; }
  /** Requests sent to that helper (each for every run of discards then waiting, up to PUNCH_BATCH; tests). */
  get puncherRequests(): number { return this.puncher?.requests ?? 0; }

  /**
   * Close the file. Discards still waiting their turn are dropped (their
   * callbacks get an error), the helper is ended, and discards it had not
   * done get an error too: nothing touches the image once its device is gone
   * but a fallocate(1) or a run of zeroes already under way, which finishes on
   * its own. Submitted I/O is waited for (drain) before the fd is closed.
   */
  close(): void {
    for (const d of this.discards.splice(0)) d.done(new StorageError(`${this.path} closed before the discard ran`));
    this.puncher?.close();
    if (this.fd < 0) return;
    // No DMA job may outlive its fd (the number could be reused by then).
    if (this.submitted > 0) this.dma.drain();
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
