/**
 * The capabilities a PV guest kernel receives (its "hardware" interface). A
 * kernel is a module whose default export is a `KernelEntry`. It gets:
 *  - `hypercall`: trap into the hypervisor on this vCPU (numbers from
 *    shared/hypercall.ts; pointer arguments are guest-physical addresses);
 *  - `mem`: its own guest-physical memory through accessors (never a
 *    SharedArrayBuffer or a typed array over machine memory);
 *  - `startInfo`: the guest-physical address of its start_info page;
 *  - `host`: only for the initial domain (Dom0), ways to wait for host I/O
 *    that give the pCPU away meanwhile, and `host.dma` to move bytes between
 *    a host file and its guest-physical memory.
 */

/** A hypercall register value. */
export type Reg = number | bigint;

export type HypercallFn = (op: number, a1?: Reg, a2?: Reg, a3?: Reg, a4?: Reg, a5?: Reg) => number;

/** Thrown by guest-memory accessors for an unmapped guest-physical address (a page fault). */
export class GuestFault extends Error {
  constructor(readonly gpa: number, readonly write: boolean) {
    super(`guest ${write ? 'write' : 'read'} fault at gpa 0x${gpa.toString(16)}`);
    this.name = 'GuestFault';
  }
}

export interface GuestMemory {
  /** A private copy of [gpa, gpa + len). */
  read(gpa: number, len: number): Uint8Array;
  /**
   * Copy [gpa, gpa + dst.length) into the caller's buffer, allocating nothing.
   * Throws GuestFault (at the first unmapped address) before copying anything.
   */
  readInto(gpa: number, dst: Uint8Array): void;
  /** Copy `data` to [gpa, gpa + data.length). All or nothing. */
  write(gpa: number, data: Uint8Array): void;
  readU8(gpa: number): number;
  readU16(gpa: number): number;
  readU32(gpa: number): number;
  readU64(gpa: number): bigint;
  writeU8(gpa: number, v: number): void;
  writeU16(gpa: number, v: number): void;
  writeU32(gpa: number, v: number): void;
  writeU64(gpa: number, v: bigint | number): void;
  /** Fill [gpa, gpa + len) with a byte value. */
  fill(gpa: number, len: number, value: number): void;
  /**
   * Atomic read-modify-write on naturally aligned words (the guest's lock-prefixed
   * instructions, for memory the hypervisor or another domain updates too: event
   * channel bitmaps, grant entry flags, ring indexes). Each returns the old value.
   */
  atomicOr32(gpa: number, v: number): number;
  atomicAnd32(gpa: number, v: number): number;
  atomicXchg32(gpa: number, v: number): number;
  atomicXchg8(gpa: number, v: number): number;
  atomicCmpxchg16(gpa: number, expected: number, v: number): number;
  atomicCmpxchg32(gpa: number, expected: number, v: number): number;
  atomicLoad32(gpa: number): number;
  atomicStore32(gpa: number, v: number): void;
}

/** A guest-physical byte range of this domain's memory. */
export interface GuestRange { readonly gpa: number; readonly len: number }

/**
 * Host I/O straight between a host file descriptor and this domain's
 * guest-physical memory (Dom0 only): the DMA engine of Dom0's backends, so
 * that data moves between a file and a (granted) guest frame without a copy
 * and without a view of machine memory. Synchronous, on this vCPU's thread.
 * Every range is checked before any I/O: a range that is not safe integers
 * (gpa >= 0, len >= 0) or touches a page this domain has not mapped (for
 * preadv: mapped writable; a read-only grant mapping is refused) throws
 * GuestFault for the first bad address, and nothing is read or written.
 * A bad fd or position (not a safe integer >= 0) throws RangeError, also
 * before any I/O, and `ranges` that is not an array of objects throws
 * TypeError. Host errors (EBADF, EIO, ...) are thrown as Node's errors.
 */
export interface HostDma {
  /** preadv(2): fill `ranges` (in order) from `fd` starting at file offset `position`. Returns bytes read (< total only at end of file). */
  preadv(fd: number, ranges: readonly GuestRange[], position: number): number;
  /** pwritev(2): write `ranges` (in order) to `fd` at `position`. Returns bytes written (always the total, or it throws). */
  pwritev(fd: number, ranges: readonly GuestRange[], position: number): number;
  /**
   * The same I/O (preadv, or pwritev if `write`) queued as a host DMA job,
   * which the first vCPU of the host to reach an explicit preemption point
   * (KernelApi.preempt: a kernel spinning on a ring) runs while this vCPU
   * goes on. The arguments are checked first, exactly as preadv/pwritev
   * check them (and throw the same errors, nothing queued; a `done` that is
   * not a function: TypeError). Returns false, queuing nothing, when no job
   * can be queued now (every job slot is taken, or the ranges make more than
   * the most iovecs a job holds): do it synchronously instead. Otherwise
   * `done` runs once, on this thread, from a later `reap` or `drain`, with
   * the bytes moved (as preadv/pwritev return them) or a negative errno. The
   * ranges must stay mapped, and the fd open, until then.
   */
  submit(fd: number, ranges: readonly GuestRange[], position: number, write: boolean, done: (result: number) => void): boolean;
  /**
   * Run the callbacks of the submitted I/Os that are done (in slot order, not
   * submission order; one whose runner's thread is gone is run here first);
   * returns how many ran.
   */
  reap(): number;
  /**
   * Wait (spinning, holding the vCPU) until every submitted I/O is done,
   * running their callbacks; an I/O no other vCPU has taken is run here.
   */
  drain(): void;
  /** Submitted I/Os whose callbacks have not run. */
  readonly pending: number;
}

/** Host services for the initial domain: each gives the pCPU away while it waits (dma excepted: it is synchronous). */
export interface HostServices {
  sleep(ms: number): Promise<void>;
  wait<T>(p: Promise<T>): Promise<T>;
  readonly dma: HostDma;
}

export interface KernelApi {
  readonly hypercall: HypercallFn;
  /**
   * The time-stamp counter: nanoseconds since the host booted, as a 1 GHz TSC.
   * With vcpu_time_info (tsc_to_system_mul 0x80000000, tsc_shift 1) it gives
   * Xen system time, which timers and SCHEDOP_poll deadlines use.
   */
  readonly rdtsc: () => bigint;
  readonly mem: GuestMemory;
  readonly startInfo: number;
  readonly vcpuId: number;
  readonly host?: HostServices;
  /**
   * The explicit preemption point: give the pCPU back here if the scheduler
   * wants it (the slice is over, or a vCPU that woke should run first), and
   * carry on when it is given back. Costs a few atomic loads when there is
   * nothing to do. A CPU-bound kernel calls it often (every 1 ms of work at
   * most): until it does, or makes a hypercall, it keeps the pCPU and is
   * charged for the overrun, and vCPUs waiting for that pCPU wait.
   * (Optional only so that test doubles of this interface need not provide it;
   * the hypervisor always does.)
   */
  readonly preempt?: () => void;
}

export type KernelEntry = (k: KernelApi) => void | Promise<void>;
