/**
 * Host DMA jobs: preadv/pwritev between a host fd and machine memory, queued
 * by a domain's HostDma (Dom0's backends) and run by whichever vCPU thread
 * reaches a preemption point first (runtime.ts preemptionPoint), as Xen runs
 * softirq work on whichever CPU gets to it. A vCPU that spins waiting for its
 * I/O (a frontend polling its ring) thus lends its core to the copy instead
 * of burning it, and Dom0 handles the next request meanwhile: two copies run
 * at once on two cores, with no thread woken (on this host a futex wake-up
 * costs the waker ~13 µs and the woken thread a scheduling delay of tens to
 * hundreds of µs; docs/block.md). The owner runs a job itself when no other
 * thread has taken it by the time it needs the answer (`dmaRunOwn`).
 *
 * Jobs live in the hypervisor's shared state (DMA_SLOTS slots, DJ words and
 * DJF Float64s each; state.ts). A slot's life: FREE -> FILLING (the owner
 * reserved it: compare-exchange) -> QUEUED (its fields written; G.DMA_QUEUED
 * counts it) -> RUNNING (a runner took it: compare-exchange, so exactly one
 * does) -> DONE (result written) -> FREE (the owner took the result). Only
 * machine addresses cross: the owner translated and checked the job's guest
 * ranges (host-dma.ts translate) before queuing it, and the pages stay mapped
 * until it takes the result (the backend holds its grant mappings until then).
 * A job is idempotent (the same bytes between the same places), so one whose
 * runner's thread died mid-copy is simply run again by its owner.
 *
 * The copy is charged to the vCPU that runs it, as time in an interrupt is
 * charged to whoever it interrupted.
 */
import { EIO } from '../../shared/errno.ts';
import {
  DJ, DJF, DJS_DONE, DJS_FILLING, DJS_FREE, DJS_QUEUED, DJS_RUNNING, DMA_MAX_EXTENTS, DMA_SLOTS, G, V, VTHREAD_EXITED, type HvState,
} from '../state.ts';
import { IovecPlan, runPlan } from './iovec.ts';

/** The iovec plan a runner rebuilds a job into (one per thread). */
const runPlanOf = new IovecPlan();

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
    jobs[at + DJ.RUNNER] = -1;
    // Publishes the fields above (sequentially consistent): a runner that sees QUEUED sees them.
    Atomics.store(jobs, at + DJ.STATE, DJS_QUEUED);
    Atomics.add(hv.g, G.DMA_QUEUED, 1);
    return i;
  }
  return -1;
}

/**
 * Run job `i`, which this thread (vCPU `slot`, or -1) has just taken
 * (RUNNING): its result written, DONE. `again`: a re-run (not counted twice).
 */
function runJob(hv: HvState, i: number, slot: number, again = false): void {
  if (!again) {
    Atomics.add(hv.g, G.DMA_RUN, 1);
    if (slot >= 0 && slot !== Atomics.load(hv.dmaJob, i * DJ.WORDS + DJ.OWNER)) Atomics.add(hv.g, G.DMA_RUN_ELSEWHERE, 1);
  }
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
  d[f + DJF.RESULT] = result;
  // Publishes the result: the owner that sees DONE reads it.
  Atomics.store(hv.dmaJob, i * DJ.WORDS + DJ.STATE, DJS_DONE);
}

/**
 * Take one queued job (of `owner`'s only, if given) and run it on this
 * thread, as vCPU (slot, vcpu) (-1, -1: not a vCPU). True if one ran.
 */
export function dmaRunQueued(hv: HvState, slot: number, vcpu: number, owner = -1): boolean {
  const jobs = hv.dmaJob;
  for (let i = 0; i < DMA_SLOTS; i++) {
    const at = i * DJ.WORDS;
    if (Atomics.load(jobs, at + DJ.STATE) !== DJS_QUEUED) continue;
    if (owner >= 0 && Atomics.load(jobs, at + DJ.OWNER) !== owner) continue;
    if (Atomics.compareExchange(jobs, at + DJ.STATE, DJS_QUEUED, DJS_RUNNING) !== DJS_QUEUED) continue;
    Atomics.sub(hv.g, G.DMA_QUEUED, 1);
    Atomics.store(jobs, at + DJ.RUNNER, slot < 0 ? -1 : slot * 256 + vcpu);
    runJob(hv, i, slot);
    return true;
  }
  return false;
}

/** Job `i`'s result if it is done (the slot is then free again), else null. */
export function dmaTake(hv: HvState, i: number): number | null {
  const at = i * DJ.WORDS;
  if (Atomics.load(hv.dmaJob, at + DJ.STATE) !== DJS_DONE) return null;
  const result = hv.dmaData[i * DJF.SIZE + DJF.RESULT]!;
  Atomics.store(hv.dmaJob, at + DJ.STATE, DJS_FREE);
  return result;
}

/**
 * The owner needs job `i` finished: if it is still queued, run it here; if
 * the thread running it has exited (terminated mid-copy), run it again here
 * (jobs are idempotent). True if it ran it; false if it is done or another
 * live thread is on it.
 */
export function dmaRunOwn(hv: HvState, i: number, slot: number, vcpu: number): boolean {
  const jobs = hv.dmaJob;
  const at = i * DJ.WORDS;
  const state = Atomics.load(jobs, at + DJ.STATE);
  const me = slot < 0 ? -1 : slot * 256 + vcpu;
  if (state === DJS_QUEUED) {
    if (Atomics.compareExchange(jobs, at + DJ.STATE, DJS_QUEUED, DJS_RUNNING) !== DJS_QUEUED) return false;
    Atomics.sub(hv.g, G.DMA_QUEUED, 1);
    Atomics.store(jobs, at + DJ.RUNNER, me);
    runJob(hv, i, slot);
    return true;
  }
  if (state !== DJS_RUNNING) return false;
  const runner = Atomics.load(jobs, at + DJ.RUNNER);
  if (runner < 0 || runner === me) return false;
  const thread = Atomics.load(hv.vcpu, hv.v(runner >> 8, runner & 0xff, V.thread));
  if (thread !== VTHREAD_EXITED) return false;
  // Only the owner takes a job over this way, so a plain store will do.
  Atomics.store(jobs, at + DJ.RUNNER, me);
  runJob(hv, i, slot, true);
  return true;
}
