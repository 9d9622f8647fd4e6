/**
 * Hypervisor state in shared memory: every structure that more than one thread
 * touches, declared once here as regions of one SharedArrayBuffer. Each thread
 * (platform, timer, vCPUs) builds the same typed views over the same buffer;
 * threads never share JS objects.
 *
 * Locks and their order: shared/lock.ts. Which lock guards which field is said
 * beside each declaration.
 */
import { defineLayout, i32, u32, bytes, wordIndex } from '../shared/layout.ts';
import { PAGE_SIZE } from '../shared/types.ts';
import type { HostConfig } from './config.ts';

/** Global words (Int32), at the start of the state buffer. */
export const G = {
  DOMLIST_LOCK: 0,
  HEAP_LOCK: 1,
  /** 2: unused (was sched_lock; the scheduler is lock-free). */
  CONRING_LOCK: 3,
  NR_FRAMES: 4,
  /** Frames in the buddy allocator (heap_lock). */
  FREE_PAGES: 5,
  /** Last auto-allocated domid (domlist_lock). */
  DOMID_ROVER: 6,
  /** Console ring producer, free-running (conring_lock for writers). */
  CONRING_PROD: 7,
  /** Non-zero once the host is halting: every thread winds down. */
  HALT: 8,
  /** Futex word the timer thread sleeps on. */
  TIMER_WAKE: 9,
  NR_PCPUS: 12,
  /** Console ring consumer for `clear` reads (conring_lock). */
  CONRING_CONS: 13,
  /** Frames owned by DOMID_XEN (shared_info pages) (heap_lock). */
  XENHEAP_PAGES: 14,
  /** Bumped on any domain state change that Dom0 may wait for. */
  DOMAIN_EVENT_GEN: 15,
  /** Serial input ring producer / consumer, free-running (platform writes, Dom0 reads). */
  SERIAL_RX_PROD: 16,
  SERIAL_RX_CONS: 17,
  /** Host DMA jobs queued and not yet taken by a runner (hypervisor/vcpu/dma-jobs.ts). */
  DMA_QUEUED: 18,
  /** Host DMA jobs run, and of them run by a vCPU of another domain than the one that queued them (statistics). */
  DMA_RUN: 19,
  DMA_RUN_ELSEWHERE: 20,
  COUNT: 64,
} as const;

/** 64-bit globals (BigInt64), right after the Int32 globals. */
export const G64 = {
  /** process.hrtime.bigint() at boot: system time 0. */
  BOOT_NS: 0,
  COUNT: 8,
} as const;

/** Frame table owner values besides a domid. */
export const OWNER_FREE = -1;
/** Frames owned by the hypervisor itself (DOMID_XEN), e.g. shared_info pages. */
export const OWNER_XEN = 0x7ff2;

/** Page types (the subset of Xen's PGT_* that we track). */
export const PGT_none = 0;
export const PGT_shared_info = 1;
export const PGT_grant_table = 2;

/** P2M entries: mfn in the low 28 bits, p2m type in the top 4; all ones is invalid. */
export const P2M_INVALID = 0xffffffff;
export const P2M_MFN_MASK = 0x0fffffff;
export const P2M_TYPE_SHIFT = 28;
export const p2m_ram_rw = 0;
export const p2m_map_foreign = 1;
export const p2m_grant_map_rw = 2;
export const p2m_grant_map_ro = 3;
export const p2mType = (e: number): number => e >>> P2M_TYPE_SHIFT;

/** Buddy allocator orders: blocks of 2^0 .. 2^MAX_ORDER frames. */
export const MAX_ORDER = 20;

/** Domain table slot states. */
export const DOMSTATE_FREE = 0;
/** Created and alive (running, paused or shut down). */
export const DOMSTATE_ACTIVE = 1;
/** destroydomain started: vCPU threads are being stopped, resources relinquished. */
export const DOMSTATE_DYING = 2;
/** Resources relinquished; frames still referenced by others keep it as a zombie. */
export const DOMSTATE_DEAD = 3;

/** Domain flags. */
export const DOMF_privileged = 1 << 0;
export const DOMF_hvm = 1 << 1;
export const DOMF_xs_domain = 1 << 2;

/**
 * One domain table record (struct domain's shared part). Guarded by its `lock`
 * (lock order level 2) unless said otherwise.
 */
export const DOMAIN_REC = defineLayout({ name: 'domain record', header: 'hypervisor/state.ts', size: 128 }, {
  lock: i32(0),
  /** DOMSTATE_* (written under domlist_lock and the domain lock). */
  state: i32(4),
  domid: i32(8),
  flags: i32(12),
  /** controller_pause_count: domctl pause/unpause. */
  pause_count: i32(16),
  /** SHUTDOWN_* once shut down, -1 while running. */
  shutdown_code: i32(20),
  is_shut_down: i32(24),
  /** Frames owned (heap_lock for changes, read freely). */
  tot_pages: i32(28),
  max_pages: i32(32),
  max_vcpus: i32(36),
  /** The domain's shared_info frame (owned by DOMID_XEN, shared with the guest). */
  shared_info_mfn: i32(40),
  /** vCPU threads started and not yet exited (platform writes). */
  threads_live: i32(44),
  ssidref: u32(48),
  /** Bumped each time the slot is reused, so stale references can be detected. */
  generation: i32(52),
  /** createdomain flags (XEN_DOMCTL_CDF_*). */
  cdf: u32(56),
  /** Domain this one is a device model / driver domain for (DOMID_INVALID none). */
  target: i32(60),
  handle: bytes(64, 16),
  max_evtchn_port: u32(80),
  max_grant_frames: i32(84),
  max_maptrack_frames: i32(88),
  /** Frames of others this domain maps (foreign maps): they pin those frames. */
  foreign_maps: i32(92),
  /** Hypervisor frames shared with the domain and owned by it (grant table frames): not in tot_pages. */
  xenheap_pages: i32(96),
  /** Grant table frames set up (grant_table.c nr_grant_frames). */
  nr_grant_frames: i32(100),
  /** Maptrack frames allocated. */
  nr_maptrack_frames: i32(104),
  /** Head of the maptrack free list (handle), -1 when empty. */
  maptrack_head: i32(108),
  /** Grant mappings this domain holds of others' frames. */
  maptrack_in_use: i32(112),
  /** Event channel ports in use (not closed), for -ENOSPC. */
  evtchn_in_use: i32(116),
});

/** vCPU pause/block flags (Xen's _VPF_* plus is_initialised). */
export const VPF_blocked = 1 << 0;
export const VPF_down = 1 << 1;
export const VPF_initialised = 1 << 2;
/** The domain shut down: the vCPU is parked until destroy. */
export const VPF_shutdown = 1 << 3;
/** Destroy requested: the thread must exit. */
export const VPF_killed = 1 << 4;

/** Platform's view of a vCPU thread. */
export const VTHREAD_NONE = 0;
export const VTHREAD_STARTING = 1;
export const VTHREAD_RUNNING = 2;
export const VTHREAD_EXITED = 3;

/** One vCPU record: futex word, flags, runstate, scheduling state. */
export const VCPU_REC = defineLayout({ name: 'vcpu record', header: 'hypervisor/state.ts', size: 64 }, {
  /** Futex word: bumped by every kick; a blocked vCPU sleeps on it. */
  wake: i32(0),
  /** VPF_* (domain lock for changes; atomic ops). */
  pause_flags: i32(4),
  /** RUNSTATE_* of vcpu.h. */
  runstate: i32(8),
  /** pCPU held, or -1. */
  pcpu: i32(12),
  /** Guest-physical address of the kernel image header (setvcpucontext). */
  entry_gpa: u32(16),
  /** Guest-physical address of start_info (first argument). */
  arg0_gpa: u32(20),
  /** Set by the timer thread: give up the pCPU at the next preemption point. */
  preempt: i32(24),
  /** VTHREAD_* (platform). */
  thread: i32(28),
  /** Event pending for this vCPU (set by delivery; cleared when the vCPU looks). */
  pending: i32(32),
  /** SCHEDOP_poll in progress: the vCPU sleeps until one of its ports is pending. */
  polling: i32(36),
  /** VIRQ_TIMER period set (0 none); deadlines are in vcpuTime. */
  timer_armed: i32(40),
});
/** 64-bit per-vCPU times (BigInt64, ns): state_entry_time, time[4], slice start. */
export const VT = {
  STATE_ENTRY: 0, TIME0: 1,
  /** Singleshot timer deadline (system time ns, 0 = none). */
  SINGLESHOT: 6,
  /** Periodic timer period and next deadline (0 = none). */
  PERIOD: 7, PERIODIC_NEXT: 8,
  /** SCHEDOP_poll timeout (0 = none). */
  POLL_DEADLINE: 9,
  COUNT: 10,
} as const;

/** Word indexes into a domain record (for Atomics). */
export const D = {
  lock: wordIndex(DOMAIN_REC, 'lock'),
  state: wordIndex(DOMAIN_REC, 'state'),
  domid: wordIndex(DOMAIN_REC, 'domid'),
  flags: wordIndex(DOMAIN_REC, 'flags'),
  pause_count: wordIndex(DOMAIN_REC, 'pause_count'),
  shutdown_code: wordIndex(DOMAIN_REC, 'shutdown_code'),
  is_shut_down: wordIndex(DOMAIN_REC, 'is_shut_down'),
  tot_pages: wordIndex(DOMAIN_REC, 'tot_pages'),
  max_pages: wordIndex(DOMAIN_REC, 'max_pages'),
  max_vcpus: wordIndex(DOMAIN_REC, 'max_vcpus'),
  shared_info_mfn: wordIndex(DOMAIN_REC, 'shared_info_mfn'),
  threads_live: wordIndex(DOMAIN_REC, 'threads_live'),
  ssidref: wordIndex(DOMAIN_REC, 'ssidref'),
  generation: wordIndex(DOMAIN_REC, 'generation'),
  cdf: wordIndex(DOMAIN_REC, 'cdf'),
  target: wordIndex(DOMAIN_REC, 'target'),
  max_evtchn_port: wordIndex(DOMAIN_REC, 'max_evtchn_port'),
  max_grant_frames: wordIndex(DOMAIN_REC, 'max_grant_frames'),
  max_maptrack_frames: wordIndex(DOMAIN_REC, 'max_maptrack_frames'),
  foreign_maps: wordIndex(DOMAIN_REC, 'foreign_maps'),
  xenheap_pages: wordIndex(DOMAIN_REC, 'xenheap_pages'),
  nr_grant_frames: wordIndex(DOMAIN_REC, 'nr_grant_frames'),
  nr_maptrack_frames: wordIndex(DOMAIN_REC, 'nr_maptrack_frames'),
  maptrack_head: wordIndex(DOMAIN_REC, 'maptrack_head'),
  maptrack_in_use: wordIndex(DOMAIN_REC, 'maptrack_in_use'),
  evtchn_in_use: wordIndex(DOMAIN_REC, 'evtchn_in_use'),
} as const;
export const D_WORDS = DOMAIN_REC.size >> 2;
export const D_HANDLE_OFFSET = DOMAIN_REC.fields.handle.offset;

/** Word indexes into a vCPU record. */
export const V = {
  wake: wordIndex(VCPU_REC, 'wake'),
  pause_flags: wordIndex(VCPU_REC, 'pause_flags'),
  runstate: wordIndex(VCPU_REC, 'runstate'),
  pcpu: wordIndex(VCPU_REC, 'pcpu'),
  entry_gpa: wordIndex(VCPU_REC, 'entry_gpa'),
  arg0_gpa: wordIndex(VCPU_REC, 'arg0_gpa'),
  preempt: wordIndex(VCPU_REC, 'preempt'),
  thread: wordIndex(VCPU_REC, 'thread'),
  pending: wordIndex(VCPU_REC, 'pending'),
  polling: wordIndex(VCPU_REC, 'polling'),
  timer_armed: wordIndex(VCPU_REC, 'timer_armed'),
} as const;

/** Event channel port record: 4 words per port (Xen's struct evtchn). */
export const EVTCHN_WORDS = 4;
/** Word 0: ECS_* state in bits 0-7, notify vCPU in bits 8-15. */
export const EV_STATE = 0;
/** Word 1: unbound: remote domid allowed to bind; interdomain: remote domid; virq: the VIRQ. */
export const EV_REMOTE_DOM = 1;
/** Word 2: interdomain: remote port. */
export const EV_REMOTE_PORT = 2;
/** Word 3: the remote domain's slot generation when bound (detects a reused slot). */
export const EV_REMOTE_GEN = 3;
/** NR_VIRQS (xen.h). */
export const NR_VIRQS = 24;
/** Grant frames and maptrack frames a domain may have at most (Xen's defaults). */
export const GNT_MAX_FRAMES = 64;
export const MAPTRACK_MAX_FRAMES = 1024;
/** Active-entry frames per grant frame (16-byte active entries, 256 per page). */
export const ACTIVE_PER_GRANT_FRAME = 2;
export const V_WORDS = VCPU_REC.size >> 2;

/**
 * The scheduler's shared region (hypervisor/sched/). All zero is its initial
 * state, so a fresh buffer needs no set-up.
 *  - the request ring: vCPU threads and hypercall handlers post scheduling
 *    events (wake, release, exit, parameter and affinity changes) into it,
 *    many producers; the scheduler thread (the timer thread) drains it, one
 *    consumer. Header words SQ, then SCHED_RING_ENTRIES entries of SQE words,
 *    each with a timestamp in schedRingTs;
 *  - per vCPU (SV): the pCPU grant the scheduler thread publishes and the
 *    affinity masks set by XEN_DOMCTL_setvcpuaffinity;
 *  - per domain slot (SD): the credit parameters set by XEN_DOMCTL_scheduler_op.
 * hypervisor/sched/ring.ts and params.ts are the only code that touches it.
 */
export const SCHED_RING_ENTRIES = 4096;
/**
 * Ring header words: free-running u32 producer and consumer positions;
 * consumer asleep flag; published by the scheduler thread: how many vCPUs wait
 * for a pCPU, and its idle rule (SCHED_IDLE_*).
 */
export const SQ = {
  TAIL: 0, HEAD: 1, SLEEPING: 2, WAITING: 3, IDLE_RULE: 4,
  /** Counters the scheduler thread publishes (SchedCoreStats, for benchmarks and `xl debug-keys r`-like dumps). */
  STAT_EVENTS: 5, STAT_SCHEDULES: 6, STAT_GRANTS: 7, STAT_CLAIMS: 8, STAT_RELABELS: 9, STAT_PREEMPTS: 10, STAT_OVERRUNS: 11,
  COUNT: 16,
} as const;
/** An idle pCPU runs any vCPU allowed on it that wakes (credit, credit2), or only the one assigned to it (null). */
export const SCHED_IDLE_ANY = 0;
export const SCHED_IDLE_ASSIGNED = 1;
/** Words per ring entry: sequence (stored minus the entry's index, so 0 is initial), kind, two arguments. */
export const SQE = { SEQ: 0, KIND: 1, A: 2, B: 3, WORDS: 4 } as const;
/** cpumask words per vCPU mask: 256 pCPUs (HostConfig.pcpus' limit). */
export const SCHED_CPUMASK_WORDS = 8;
/**
 * pcpuOwner[p] values besides a vCPU index (slot * maxVcpus + vcpu) holding it:
 * idle and only the scheduler thread hands it out; idle and open to any vCPU
 * allowed on it that wakes (claimed by compare-and-swap); idle and open to one
 * vCPU only (PCPU_OPEN_FOR(vidx)).
 */
export const PCPU_CLOSED = -1;
export const PCPU_OPEN_ANY = -2;
export const PCPU_OPEN_FOR = (vidx: number): number => -3 - vidx;
/** Per-vCPU scheduler words. GRANT: pCPU + 1 granted by the scheduler, 0 none. AFF_GEN: domain generation the masks belong to (0 none). */
export const SV = { GRANT: 0, AFF_GEN: 1, AFF_HARD: 2, AFF_SOFT: 2 + SCHED_CPUMASK_WORDS, WORDS: 2 + 2 * SCHED_CPUMASK_WORDS } as const;
/** Per-domain-slot scheduler parameters. GEN: domain generation they belong to (0 none: defaults). */
export const SD = { GEN: 0, WEIGHT: 1, CAP: 2, WORDS: 4 } as const;

/** Byte offsets of every region inside the state buffer, derived from the config. */
export interface StateRegions {
  readonly globals: number;
  readonly globals64: number;
  readonly ftOwner: number;
  readonly ftCount: number;
  readonly ftType: number;
  readonly ftGfn: number;
  readonly ftOrder: number;
  readonly ftNext: number;
  readonly ftPrev: number;
  readonly buddyHeads: number;
  readonly domains: number;
  readonly domidMap: number;
  readonly p2m: number;
  readonly vcpus: number;
  readonly vcpuTimes: number;
  readonly pcpuOwner: number;
  readonly conring: number;
  readonly serialRx: number;
  readonly evtchn: number;
  readonly virqPorts: number;
  readonly grantFrames: number;
  readonly activeFrames: number;
  readonly maptrackFrames: number;
  readonly schedRing: number;
  readonly schedRingTs: number;
  readonly schedVcpu: number;
  readonly schedDom: number;
  readonly dmaJobs: number;
  readonly dmaData: number;
  readonly total: number;
}

const align = (n: number, a: number): number => Math.ceil(n / a) * a;

export function stateRegions(cfg: HostConfig): StateRegions {
  const nrFrames = nrFramesOf(cfg);
  let at = 0;
  const take = (bytes: number, alignTo = 8): number => {
    at = align(at, alignTo);
    const start = at;
    at += bytes;
    return start;
  };
  const globals = take(G.COUNT * 4);
  const globals64 = take(G64.COUNT * 8);
  const ftOwner = take(nrFrames * 4);
  const ftCount = take(nrFrames * 4);
  const ftType = take(nrFrames * 4);
  const ftGfn = take(nrFrames * 4);
  const ftOrder = take(nrFrames * 4);
  const ftNext = take(nrFrames * 4);
  const ftPrev = take(nrFrames * 4);
  const buddyHeads = take((MAX_ORDER + 1) * 4);
  const domains = take(cfg.maxDomains * DOMAIN_REC.size);
  const domidMap = take(0x7ff0 * 2);
  const p2m = take(cfg.maxDomains * cfg.p2mEntries * 4);
  const vcpus = take(cfg.maxDomains * cfg.maxVcpus * VCPU_REC.size);
  const vcpuTimes = take(cfg.maxDomains * cfg.maxVcpus * VT.COUNT * 8);
  const pcpuOwner = take(cfg.pcpus * 4);
  const conring = take(cfg.conringSize);
  const serialRx = take(SERIAL_RX_SIZE);
  const evtchn = take(cfg.maxDomains * EVTCHN_2L_PORTS * EVTCHN_WORDS * 4);
  const virqPorts = take(cfg.maxDomains * cfg.maxVcpus * NR_VIRQS * 4);
  const grantFrames = take(cfg.maxDomains * GNT_MAX_FRAMES * 4);
  const activeFrames = take(cfg.maxDomains * GNT_MAX_FRAMES * ACTIVE_PER_GRANT_FRAME * 4);
  const maptrackFrames = take(cfg.maxDomains * MAPTRACK_MAX_FRAMES * 4);
  const schedRing = take((SQ.COUNT + SCHED_RING_ENTRIES * SQE.WORDS) * 4);
  const schedRingTs = take(SCHED_RING_ENTRIES * 8);
  const schedVcpu = take(cfg.maxDomains * cfg.maxVcpus * SV.WORDS * 4);
  const schedDom = take(cfg.maxDomains * SD.WORDS * 4);
  const dmaJobs = take(DMA_SLOTS * DJ.WORDS * 4);
  const dmaData = take(DMA_SLOTS * DJF.SIZE * 8);
  return { globals, globals64, ftOwner, ftCount, ftType, ftGfn, ftOrder, ftNext, ftPrev, buddyHeads,
    domains, domidMap, p2m, vcpus, vcpuTimes, pcpuOwner, conring, serialRx, evtchn, virqPorts, grantFrames,
    activeFrames, maptrackFrames, schedRing, schedRingTs, schedVcpu, schedDom, dmaJobs, dmaData, total: align(at, 8) };
}

/** Ports of the 2-level event channel ABI. */
export const EVTCHN_2L_PORTS = 4096;

/** Host DMA job slots (hypervisor/vcpu/dma-jobs.ts), and the most iovecs one job holds. */
export const DMA_SLOTS = 8;
export const DMA_MAX_EXTENTS = 512;
/**
 * A DMA job's Int32 words (dmaJob): its state word (a DJS_* state in bits
 * 0-3, and while RUNNING or FINISHING the runner in the bits above: vCPU
 * (slot * 256 + vcpu) + 1, or 0 for a thread that is not a vCPU; one word,
 * so that taking a job and naming its runner are one compare-exchange), the
 * domain slot that queued it, and the runner's domain generation when it
 * took the job (D.generation: a slot reused by another domain since means
 * the runner is gone).
 */
export const DJ = { STATE: 0, OWNER: 1, RUNNER_GEN: 2, WORDS: 4 } as const;
/**
 * A DMA job's Float64s (dmaData): the host fd, the file position, 1 for
 * pwritev (0: preadv), the iovec count, the result (bytes moved, or a
 * negative errno), then the iovecs as (machine address, length) pairs.
 */
export const DJF = { FD: 0, POSITION: 1, WRITE: 2, COUNT: 3, RESULT: 4, EXTENTS: 8, SIZE: 8 + 2 * DMA_MAX_EXTENTS } as const;
/**
 * DMA job states: free; being filled by its owner; queued; running (the
 * copy under way); finishing (the copy done, its runner writing the
 * result); done (result not yet taken).
 */
export const DJS_FREE = 0;
export const DJS_FILLING = 1;
export const DJS_QUEUED = 2;
export const DJS_RUNNING = 3;
export const DJS_FINISHING = 4;
export const DJS_DONE = 5;
/** The state bits of a DMA job's state word. */
export const DJS_MASK = 0xf;

/** Serial input ring size (Xen's SERIAL_RXBUFSZ... console.c serial_rx_ring: 128). */
export const SERIAL_RX_SIZE = 128;

export const nrFramesOf = (cfg: HostConfig): number => (cfg.memMiB * 1024 * 1024) / PAGE_SIZE;

/**
 * Where machine frame 0 starts in the machine-memory buffer: 64 bytes past a
 * host page boundary (the buffer starts at one: machineMemory). Dom0's
 * backends move file data straight into and out of frames, and the host
 * kernel's copy between a page-cache page and user memory (`rep movsb`) runs
 * at a third of its speed or less on the 2-core AMD EPYC host when the
 * destination lies 1-31 bytes past the source modulo 4096 (measured, 1 MiB
 * readSync into a page-aligned shared buffer at offsets 8, 16, 24: 2.7-6.6
 * GB/s; at 0, 32, 64, 128, 2048, 4032: 14-18 GB/s; docs/benchmarks.md,
 * "Machine memory placement"). Page-cache pages are page-aligned, so a read
 * into a frame is slow if the frame starts 1-31 bytes past a page boundary,
 * and a write from it if it starts 1-31 bytes before one; at 64 neither is
 * (and frames stay cache-line aligned). Every view of machine memory goes
 * through mem8/mem32 or machineView() / machineBytes(), which add it.
 */
export const MEM_SKEW = 64;

/** WebAssembly's page size, and the most pages a shared 32-bit memory can have (4 GiB). */
const WASM_PAGE = 65536;
const WASM_MAX_PAGES = 65536;
/** The WebAssembly.Memory constructor (a global of Node's the project's type libraries do not declare). */
const WasmMemory = (globalThis as unknown as {
  readonly WebAssembly: { readonly Memory: new (d: { initial: number; maximum: number; shared: true }) => { readonly buffer: SharedArrayBuffer } };
}).WebAssembly.Memory;

/**
 * A zeroed shared buffer of at least `bytes` that starts at a host page
 * boundary: a shared WebAssembly.Memory's, which V8 maps with its page
 * allocator (a `new SharedArrayBuffer` is malloc's, and glibc puts a large
 * one 16 bytes past a page boundary: every frame would have been 16 bytes
 * further on than MEM_SKEW says). Past 4 GiB, where a WebAssembly memory
 * cannot go, a plain SharedArrayBuffer, whose placement is malloc's.
 */
export function machineMemory(bytes: number): SharedArrayBuffer {
  const pages = Math.ceil(bytes / WASM_PAGE);
  if (pages > WASM_MAX_PAGES) return new SharedArrayBuffer(bytes);
  return new WasmMemory({ initial: pages, maximum: pages, shared: true }).buffer;
}

/** The two buffers that make the machine: passed to every thread at start. */
export interface MachineBuffers {
  readonly mem: SharedArrayBuffer;
  readonly state: SharedArrayBuffer;
}

/**
 * Typed views over the machine. Built identically in every thread; trusted code
 * only (guest code never sees an instance of this class).
 */
export class HvState {
  readonly nrFrames: number;
  readonly regions: StateRegions;
  readonly g: Int32Array;
  readonly g64: BigInt64Array;
  /** G64.BOOT_NS once it has been set (see now()). */
  private bootNs = 0n;
  readonly ftOwner: Int32Array;
  readonly ftCount: Int32Array;
  readonly ftType: Int32Array;
  readonly ftGfn: Int32Array;
  readonly ftOrder: Int32Array;
  readonly ftNext: Int32Array;
  readonly ftPrev: Int32Array;
  readonly buddyHeads: Int32Array;
  /** All domain records, D_WORDS words each. */
  readonly dom: Int32Array;
  readonly domBytes: Uint8Array;
  /** domid -> slot, -1 when unused. */
  readonly domidMap: Int16Array;
  readonly p2m: Uint32Array;
  /** All vCPU records, V_WORDS words each, index slot * maxVcpus + vcpu. */
  readonly vcpu: Int32Array;
  readonly vcpuTime: BigInt64Array;
  readonly pcpuOwner: Int32Array;
  readonly conring: Uint8Array;
  readonly serialRx: Uint8Array;
  /** Event channel port records, EVTCHN_WORDS per port, EVTCHN_2L_PORTS per domain slot. */
  readonly evtchn: Int32Array;
  /** (slot, vcpu, virq) -> bound port or 0. */
  readonly virqPorts: Int32Array;
  /** (slot, i) -> mfn of grant table frame i, -1 none. */
  readonly grantFrames: Int32Array;
  /** (slot, i) -> mfn of active-entry frame i, -1 none. */
  readonly activeFrames: Int32Array;
  /** (slot, i) -> mfn of maptrack frame i, -1 none. */
  readonly maptrackFrames: Int32Array;
  /** Scheduler request ring: SQ header, then entries of SQE words. */
  readonly schedRing: Int32Array;
  /** Timestamp (system time ns) of each ring entry. */
  readonly schedRingTs: BigInt64Array;
  /** Per-vCPU scheduler words, SV.WORDS each, index slot * maxVcpus + vcpu. */
  readonly schedVcpu: Int32Array;
  /** Per-domain-slot scheduler parameters, SD.WORDS each. */
  readonly schedDom: Int32Array;
  /** Host DMA jobs: DJ words per slot (dma-jobs.ts). */
  readonly dmaJob: Int32Array;
  /** Host DMA jobs: DJF Float64s per slot. */
  readonly dmaData: Float64Array;
  /** Machine memory as 32-bit words (atomic bit operations on guest-visible pages). */
  readonly mem32: Int32Array;
  /** Machine memory, all frames. */
  readonly mem8: Uint8Array;

  constructor(readonly cfg: HostConfig, readonly buffers: MachineBuffers) {
    this.nrFrames = nrFramesOf(cfg);
    const r = (this.regions = stateRegions(cfg));
    const s = buffers.state;
    if (s.byteLength < r.total) throw new Error(`state buffer too small: ${s.byteLength} < ${r.total}`);
    if (buffers.mem.byteLength < MEM_SKEW + this.nrFrames * PAGE_SIZE) throw new Error('machine memory is smaller than the config needs');
    const n = this.nrFrames;
    this.g = new Int32Array(s, r.globals, G.COUNT);
    this.g64 = new BigInt64Array(s, r.globals64, G64.COUNT);
    this.ftOwner = new Int32Array(s, r.ftOwner, n);
    this.ftCount = new Int32Array(s, r.ftCount, n);
    this.ftType = new Int32Array(s, r.ftType, n);
    this.ftGfn = new Int32Array(s, r.ftGfn, n);
    this.ftOrder = new Int32Array(s, r.ftOrder, n);
    this.ftNext = new Int32Array(s, r.ftNext, n);
    this.ftPrev = new Int32Array(s, r.ftPrev, n);
    this.buddyHeads = new Int32Array(s, r.buddyHeads, MAX_ORDER + 1);
    this.dom = new Int32Array(s, r.domains, cfg.maxDomains * D_WORDS);
    this.domBytes = new Uint8Array(s, r.domains, cfg.maxDomains * DOMAIN_REC.size);
    this.domidMap = new Int16Array(s, r.domidMap, 0x7ff0);
    this.p2m = new Uint32Array(s, r.p2m, cfg.maxDomains * cfg.p2mEntries);
    this.vcpu = new Int32Array(s, r.vcpus, cfg.maxDomains * cfg.maxVcpus * V_WORDS);
    this.vcpuTime = new BigInt64Array(s, r.vcpuTimes, cfg.maxDomains * cfg.maxVcpus * VT.COUNT);
    this.pcpuOwner = new Int32Array(s, r.pcpuOwner, cfg.pcpus);
    this.conring = new Uint8Array(s, r.conring, cfg.conringSize);
    this.serialRx = new Uint8Array(s, r.serialRx, SERIAL_RX_SIZE);
    this.evtchn = new Int32Array(s, r.evtchn, cfg.maxDomains * EVTCHN_2L_PORTS * EVTCHN_WORDS);
    this.virqPorts = new Int32Array(s, r.virqPorts, cfg.maxDomains * cfg.maxVcpus * NR_VIRQS);
    this.grantFrames = new Int32Array(s, r.grantFrames, cfg.maxDomains * GNT_MAX_FRAMES);
    this.activeFrames = new Int32Array(s, r.activeFrames, cfg.maxDomains * GNT_MAX_FRAMES * ACTIVE_PER_GRANT_FRAME);
    this.maptrackFrames = new Int32Array(s, r.maptrackFrames, cfg.maxDomains * MAPTRACK_MAX_FRAMES);
    this.schedRing = new Int32Array(s, r.schedRing, SQ.COUNT + SCHED_RING_ENTRIES * SQE.WORDS);
    this.schedRingTs = new BigInt64Array(s, r.schedRingTs, SCHED_RING_ENTRIES);
    this.schedVcpu = new Int32Array(s, r.schedVcpu, cfg.maxDomains * cfg.maxVcpus * SV.WORDS);
    this.schedDom = new Int32Array(s, r.schedDom, cfg.maxDomains * SD.WORDS);
    this.dmaJob = new Int32Array(s, r.dmaJobs, DMA_SLOTS * DJ.WORDS);
    this.dmaData = new Float64Array(s, r.dmaData, DMA_SLOTS * DJF.SIZE);
    this.mem32 = new Int32Array(buffers.mem, MEM_SKEW, (n * PAGE_SIZE) / 4);
    this.mem8 = new Uint8Array(buffers.mem, MEM_SKEW, n * PAGE_SIZE);
  }

  /** A DataView of machine memory [ma, ma + len) (len default: to the end). */
  machineView(ma = 0, len = this.mem8.byteLength - ma): DataView {
    return new DataView(this.mem8.buffer, MEM_SKEW + ma, len);
  }

  /** A Uint8Array of machine memory [ma, ma + len). */
  machineBytes(ma: number, len: number): Uint8Array {
    return new Uint8Array(this.mem8.buffer, MEM_SKEW + ma, len);
  }

  /** Allocate fresh, zeroed machine buffers for a config. */
  static allocate(cfg: HostConfig): MachineBuffers {
    return {
      mem: machineMemory(MEM_SKEW + nrFramesOf(cfg) * PAGE_SIZE),
      state: new SharedArrayBuffer(stateRegions(cfg).total),
    };
  }

  /** Word index of field `w` of domain slot `slot`. */
  d(slot: number, w: number): number {
    return slot * D_WORDS + w;
  }

  /** Word index of field `w` of vCPU `v` of domain slot `slot`. */
  v(slot: number, vcpu: number, w: number): number {
    return (slot * this.cfg.maxVcpus + vcpu) * V_WORDS + w;
  }

  /** Index into vcpuTime for vCPU (slot, vcpu), entry `k` (VT.*). */
  vt(slot: number, vcpu: number, k: number): number {
    return (slot * this.cfg.maxVcpus + vcpu) * VT.COUNT + k;
  }

  /** Index of word `w` of port `port` of domain slot `slot` in `evtchn`. */
  ev(slot: number, port: number, w: number): number {
    return (slot * EVTCHN_2L_PORTS + port) * EVTCHN_WORDS + w;
  }

  /** Index into virqPorts. */
  virq(slot: number, vcpu: number, virq: number): number {
    return (slot * this.cfg.maxVcpus + vcpu) * NR_VIRQS + virq;
  }

  /** Index into p2m for (slot, gfn). */
  p2mIndex(slot: number, gfn: number): number {
    return slot * this.cfg.p2mEntries + gfn;
  }

  /** System time: ns since boot (Xen's NOW()). */
  now(): bigint {
    // BOOT_NS is written once, at boot (hypervisor/boot.ts): cached once seen
    // (reading a BigInt64Array element allocates a BigInt).
    const boot = this.bootNs || (this.bootNs = this.g64[G64.BOOT_NS]!);
    return process.hrtime.bigint() - boot;
  }
}
