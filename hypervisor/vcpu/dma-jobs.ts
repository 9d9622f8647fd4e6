/**
 * Host DMA jobs: preadv/pwritev between a host fd and machine memory, queued
 * by a domain's HostDma (Dom0's backends) and run by whichever vCPU thread
 * reaches an explicit preemption point first (runtime.ts), as Xen runs
 * softirq work on whichever CPU gets to it. A vCPU that spins waiting for its
 * I/O (a frontend polling its ring) thus lends its core to the copy instead
 * of burning it, and Dom0 handles the next request meanwhile: two copies run
 * at once on two cores, with no thread woken (on this host a futex wake-up
 * costs the waker ~13 µs and the woken thread a scheduling delay of tens to
 * hundreds of µs; docs/block.md). The owner runs a job itself when no other
 * thread has taken it by the time it needs the answer (`dmaRunOwn`).
 *
 * Jobs live in the hypervisor's shared state (DMA_SLOTS slots, DJ words and
 * DJF Float64s each; state.ts). A slot's life, each step on its state word:
 *   FREE -> FILLING       the owner reserves it (compare-exchange);
 *   FILLING -> QUEUED     its fields written (G.DMA_QUEUED counts it);
 *   QUEUED -> RUNNING|r   a runner r takes it (compare-exchange: one does);
 *   RUNNING|r -> FINISHING|r  the copy is done (compare-exchange);
 *   FINISHING|r -> DONE   the result written;
 *   DONE -> FREE          the owner takes the result.
 * Only machine addresses cross: the owner translated and checked the job's
 * guest ranges (host-dma.ts translate) before queuing it, and the pages stay
 * mapped until it takes the result (the backend holds its grant mappings
 * until then). A job is idempotent (the same bytes between the same places),
 * so one whose runner's thread is gone (terminated mid-copy, its domain
 * destroyed) is taken over by its owner, RUNNING|r -> RUNNING|owner, and run
 * again; should r still finish, its compare-exchange to FINISHING fails and
 * it leaves the slot alone.
 *
 * The copy is charged to the vCPU that runs it, as time in an interrupt is
 * charged to whoever it interrupted. Only the initial domain has a HostDma
 * (host services are Dom0's), so no job outlives its owner but with the host.
 */
import { EIO } from '../../shared/errno.ts';
import {
  D, DJ, DJF, DJS_DONE, DJS_FILLING, DJS_FINISHING, DJS_FREE, DJS_MASK, DJS_QUEUED, DJS_RUNNING, DMA_MAX_EXTENTS, DMA_SLOTS, G, V,
  VTHREAD_EXITED, type HvState,
} from '../state.ts';
import { IovecPlan, runPlan } from './iovec.ts';

/** The iovec plan a runner rebuilds a job into (one per thread). */
const runPlanOf = new IovecPlan();

/** A runner's id in a state word: vCPU (slot, vcpu), or none (-1, a thread that is not a vCPU). */
const runnerId = (slot: number, vcpu: number): number => (slot < 0 ? 0 : slot * 256 + vcpu + 1);
const running = (slot: number, vcpu: number): number => (runnerId(slot, vcpu) << 4) | DJS_RUNNING;

/** Job `i`'s state (DJS_*). */
export function dmaJobState(hv: HvState, i: number): number {
  return Atomics.load(hv.dmaJob, i * DJ.WORDS + DJ.STATE) & DJS_MASK;
}

/** The vCPU running job `i` as [slot, vcpu], or null (not running, or run by a thread that is no vCPU). */
export function dmaJobRunner(hv: HvState, i: number): [number, number] | null {
  const w = Atomics.load(hv.dmaJob, i * DJ.WORDS + DJ.STATE);
  const s = w & DJS_MASK;
  const id = w >>> 4;
  if ((s !== DJS_RUNNING && s !== DJS_FINISHING) || id === 0) return null;
  return [((id - 1) / 256) | 0, (id - 1) & 0xff];
}

/**
 * Queue `plan` (checked machine ranges) for preadv (`write` false) or
 * pwritev at `position` of `fd`, owned by domain `owner`: the job's slot, or
 * -1 if none is free or the plan has more than DMA_MAX_EXTENTS iovecs.
 */
export function dmaQueue(hv: HvState, owner: number, fd: number, plan: IovecPlan, position: number, write: boolean): number {
  if (plan.count > DMA_MAX_EXTENTS) return -1;
  const jobs = hv.dmaJob;
  for (let i = 0; i < DMA_SLOTS; i++) {
    const at = i * DJ.WORDS;
    if (Atomics.load(jobs, at + DJ.STATE) !== DJS_FREE) continue;
    if (Atomics.compareExchange(jobs, at + DJ.STATE, DJS_FREE, DJS_FILLING) !== DJS_FREE) continue;
    const d = hv.dmaData;
    const f = i * DJF.SIZE;
    d[f + DJF.FD] = fd;
    d[f + DJF.POSITION] = position;
    d[f + DJF.WRITE] = write ? 1 : 0;
    d[f + DJF.COUNT] = plan.count;
    d[f + DJF.RESULT] = 0;
    for (let k = 0, e = f + DJF.EXTENTS; k < plan.count; k++, e += 2) {
      d[e] = plan.ma[k]!;
      d[e + 1] = plan.len[k]!;
    }
    jobs[at + DJ.OWNER] = owner;
    // Publishes the fields above (sequentially consistent): a runner that sees QUEUED sees them.
    Atomics.store(jobs, at + DJ.STATE, DJS_QUEUED);
    Atomics.add(hv.g, G.DMA_QUEUED, 1);
    return i;
  }
  return -1;
}

/**
 * Take queued job `i` as vCPU (slot, vcpu) ((-1, -1): a thread that is no
 * vCPU): QUEUED -> RUNNING with this runner, in one compare-exchange. True
 * if this thread now owns the copy; it must then `dmaRunTaken` it. Counted
 * here (G.DMA_RUN, and G.DMA_RUN_ELSEWHERE if the runner is a vCPU of
 * another domain than the owner); a take-over and re-run is not counted again.
 */
export function dmaTake(hv: HvState, i: number, slot: number, vcpu: number): boolean {
  const jobs = hv.dmaJob;
  const at = i * DJ.WORDS;
  if (Atomics.compareExchange(jobs, at + DJ.STATE, DJS_QUEUED, running(slot, vcpu)) !== DJS_QUEUED) return false;
  Atomics.sub(hv.g, G.DMA_QUEUED, 1);
  jobs[at + DJ.RUNNER_GEN] = slot < 0 ? 0 : Atomics.load(hv.dom, hv.d(slot, D.generation));
  Atomics.add(hv.g, G.DMA_RUN, 1);
  if (slot >= 0 && slot !== Atomics.load(jobs, at + DJ.OWNER)) Atomics.add(hv.g, G.DMA_RUN_ELSEWHERE, 1);
  return true;
}

/**
 * Run job `i`, which this thread (vCPU (slot, vcpu)) holds RUNNING: the copy,
 * then, if the job is still this thread's (not taken over meanwhile), its
 * result, DONE.
 */
export function dmaRunTaken(hv: HvState, i: number, slot: number, vcpu: number): void {
  const jobs = hv.dmaJob;
  const at = i * DJ.WORDS;
  const d = hv.dmaData;
  const f = i * DJF.SIZE;
  const plan = runPlanOf;
  plan.reset();
  const count = d[f + DJF.COUNT]!;
  for (let k = 0, e = f + DJF.EXTENTS; k < count; k++, e += 2) plan.push(d[e]!, d[e + 1]!);
  let result: number;
  try {
    result = runPlan(hv.mem8, plan, d[f + DJF.FD]!, d[f + DJF.POSITION]!, d[f + DJF.WRITE] === 1);
  } catch (e) {
    const errno = (e as NodeJS.ErrnoException).errno;
    result = typeof errno === 'number' && errno < 0 ? errno : -EIO;
  }
  const mine = running(slot, vcpu);
  const finishing = (mine & ~DJS_MASK) | DJS_FINISHING;
  // Taken over while this copy ran (its owner thought this thread gone): leave the slot alone.
  if (Atomics.compareExchange(jobs, at + DJ.STATE, mine, finishing) !== mine) return;
  d[f + DJF.RESULT] = result;
  // Publishes the result: the owner that sees DONE reads it.
  Atomics.store(jobs, at + DJ.STATE, DJS_DONE);
}

/**
 * Take one queued job (of `owner`'s only, if given) and run it on this
 * thread, as vCPU (slot, vcpu). True if one ran.
 */
export function dmaRunQueued(hv: HvState, slot: number, vcpu: number, owner = -1): boolean {
  const jobs = hv.dmaJob;
  for (let i = 0; i < DMA_SLOTS; i++) {
    const at = i * DJ.WORDS;
    if (Atomics.load(jobs, at + DJ.STATE) !== DJS_QUEUED) continue;
    if (owner >= 0 && Atomics.load(jobs, at + DJ.OWNER) !== owner) continue;
    if (!dmaTake(hv, i, slot, vcpu)) continue;
    dmaRunTaken(hv, i, slot, vcpu);
    return true;
  }
  return false;
}

/** Job `i`'s result if it is done (the slot is then free again), else null. */
export function dmaResult(hv: HvState, i: number): number | null {
  const at = i * DJ.WORDS;
  if (Atomics.load(hv.dmaJob, at + DJ.STATE) !== DJS_DONE) return null;
  const result = hv.dmaData[i * DJF.SIZE + DJF.RESULT]!;
  Atomics.store(hv.dmaJob, at + DJ.STATE, DJS_FREE);
  return result;
}

/** Is the vCPU (slot, vcpu) that took a job in domain generation `gen` gone (its thread exited, or its slot reused)? */
function runnerGone(hv: HvState, slot: number, vcpu: number, gen: number): boolean {
  if (Atomics.load(hv.dom, hv.d(slot, D.generation)) !== gen) return true;
  return Atomics.load(hv.vcpu, hv.v(slot, vcpu, V.thread)) === VTHREAD_EXITED;
}

/**
 * The owner needs job `i` finished: if it is still queued, run it here; if
 * the vCPU running it is gone, take it over (`dmaTakeOver`). True if it ran
 * it; false if it is done, or a live vCPU is on it (or finishing it).
 */
export function dmaRunOwn(hv: HvState, i: number, slot: number, vcpu: number): boolean {
  if (dmaTake(hv, i, slot, vcpu)) {
    dmaRunTaken(hv, i, slot, vcpu);
    return true;
  }
  return dmaTakeOver(hv, i, slot, vcpu);
}

/**
 * If the vCPU running job `i` is gone (its thread exited mid-copy, or its
 * domain slot was reused since), take the job over as (slot, vcpu) and run it
 * again here (jobs are idempotent). True if it did; a few atomic loads when
 * the runner is alive or the job is not running.
 */
export function dmaTakeOver(hv: HvState, i: number, slot: number, vcpu: number): boolean {
  const jobs = hv.dmaJob;
  const at = i * DJ.WORDS;
  const w = Atomics.load(jobs, at + DJ.STATE);
  // (Called from the owner's spin while the job is out: no allocation.)
  const id = w >>> 4;
  if ((w & DJS_MASK) !== DJS_RUNNING || id === 0) return false;
  if (!runnerGone(hv, ((id - 1) / 256) | 0, (id - 1) & 0xff, Atomics.load(jobs, at + DJ.RUNNER_GEN))) return false;
  if (Atomics.compareExchange(jobs, at + DJ.STATE, w, running(slot, vcpu)) !== w) return false;
  dmaRunTaken(hv, i, slot, vcpu);
  return true;
}
