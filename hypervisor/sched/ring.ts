/**
 * The scheduler request ring: how every thread tells the scheduler thread
 * (the timer thread, which owns the policy object) that something happened to
 * a vCPU. Many producers (vCPU threads, hypercall handlers, the platform), one
 * consumer (the scheduler thread). A bounded ring in shared memory after
 * Vyukov's MPMC queue: each entry has a sequence word; a producer claims a
 * position by compare-and-swap on TAIL, fills the entry, then publishes it by
 * storing its sequence; the consumer reads entries in position order.
 *
 * Positions and sequences are free-running u32s compared modulo 2^32. An
 * entry's sequence is stored minus the entry's index, so the all-zero buffer
 * is an empty ring (entry i starts at sequence i, Vyukov's initial state).
 *
 * Nothing waits for the consumer's reply: a producer posts and goes on (or
 * waits on its own futex word for what it wants, e.g. a pCPU grant).
 */
import { G, HvState, SCHED_RING_ENTRIES, SQ, SQE } from '../state.ts';

/** Event kinds. Never renumber (tests and traces name them by number). */
export const SCHED_EV_WAKE = 1;
export const SCHED_EV_RELEASE = 2;
export const SCHED_EV_EXIT = 3;
export const SCHED_EV_PARAMS = 4;
export const SCHED_EV_AFFINITY = 5;
export const SCHED_EV_CLAIM = 6;

/** Why a vCPU gave its pCPU back (the high half of a RELEASE's b argument). */
export const RELEASE_PREEMPTED = 0;
export const RELEASE_YIELD = 1;
export const RELEASE_BLOCKED = 2;
export const RELEASE_OFFLINE = 3;

export type SchedEvent =
  /** The vCPU is runnable and holds no pCPU: it wants one. */
  | { readonly kind: typeof SCHED_EV_WAKE; readonly vidx: number; readonly ts: bigint }
  /** The vCPU gave back `pcpu` (preempted, yielding, blocking, or going offline). */
  | { readonly kind: typeof SCHED_EV_RELEASE; readonly vidx: number; readonly pcpu: number; readonly reason: number; readonly ts: bigint }
  /** The vCPU's thread has ended (posted by the platform): forget it, free what it held. */
  | { readonly kind: typeof SCHED_EV_EXIT; readonly vidx: number; readonly generation: number; readonly ts: bigint }
  /** XEN_DOMCTL_SCHEDOP_putinfo stored new parameters for the domain in `slot`. */
  | { readonly kind: typeof SCHED_EV_PARAMS; readonly slot: number; readonly generation: number; readonly ts: bigint }
  /** The vCPU woke and took the idle pCPU `pcpu` the scheduler had left open (the fast path). */
  | { readonly kind: typeof SCHED_EV_CLAIM; readonly vidx: number; readonly pcpu: number; readonly ts: bigint }
  /** XEN_DOMCTL_setvcpuaffinity stored a new affinity for the vCPU. */
  | { readonly kind: typeof SCHED_EV_AFFINITY; readonly vidx: number; readonly generation: number; readonly ts: bigint }
  /** A kind this code does not know (a bug elsewhere): skipped. */
  | { readonly kind: 0; readonly raw: number; readonly ts: bigint };

const MASK = SCHED_RING_ENTRIES - 1;
const ENTRIES_AT = SQ.COUNT;

function entry(i: number): number {
  return ENTRIES_AT + i * SQE.WORDS;
}

/** The whole ring is full: only possible if the scheduler thread has stopped. */
const FULL_BACKOFF_MS = 1;
/** A header word that is always 0: a producer facing a full ring sleeps on it. */
const IDLE_WORD = SQ.COUNT - 1;

/** A lazy post still wakes the consumer once the ring is this full. */
const LAZY_LIMIT = SCHED_RING_ENTRIES / 4;

/**
 * Post one event. An urgent post wakes the scheduler thread (someone waits for
 * its decision); a lazy one (`urgent` false: a record of something already
 * done that nobody waits on) is picked up at its next wake-up, at the latest
 * the next tick, unless the ring is filling up. Returns false only if the ring
 * stayed full for `maxWaitMs` (the scheduler thread is gone: the host is halting).
 */
export function schedPost(hv: HvState, kind: number, a: number, b: number, urgent = true, maxWaitMs = 1000): boolean {
  const r = hv.schedRing;
  let waited = 0;
  for (;;) {
    const pos = Atomics.load(r, SQ.TAIL);
    const i = pos & MASK;
    const e = entry(i);
    const seq = (Atomics.load(r, e + SQE.SEQ) + i) | 0;
    const dif = (seq - pos) | 0;
    if (dif === 0) {
      if (Atomics.compareExchange(r, SQ.TAIL, pos, (pos + 1) | 0) !== pos) continue;
      r[e + SQE.KIND] = kind;
      r[e + SQE.A] = a;
      r[e + SQE.B] = b;
      hv.schedRingTs[i] = hv.now();
      // Publish: the seq-cst store orders the entry's words before it.
      Atomics.store(r, e + SQE.SEQ, (pos + 1 - i) | 0);
      if (urgent || ((pos - Atomics.load(r, SQ.HEAD)) | 0) >= LAZY_LIMIT) wakeConsumer(hv);
      return true;
    }
    if (dif < 0) {
      // Full: the consumer has not freed this entry yet.
      if (waited >= maxWaitMs) return false;
      wakeConsumer(hv);
      Atomics.wait(r, IDLE_WORD, 0, FULL_BACKOFF_MS);
      waited += FULL_BACKOFF_MS;
    }
    // dif > 0: another producer took pos; reload.
  }
}

/**
 * The consumer sleeps on G.TIMER_WAKE (it is the timer thread). Every post
 * bumps it, so a consumer that read the old value before deciding to sleep
 * returns from Atomics.wait at once; the notify (a system call) is made only
 * when the consumer says it is asleep or about to be.
 */
function wakeConsumer(hv: HvState): void {
  Atomics.add(hv.g, G.TIMER_WAKE, 1);
  if (Atomics.load(hv.schedRing, SQ.SLEEPING) !== 0) Atomics.notify(hv.g, G.TIMER_WAKE);
}

/** Consumer only: is an entry ready to be taken? */
export function schedRingReady(hv: HvState): boolean {
  const r = hv.schedRing;
  const pos = r[SQ.HEAD];
  const i = pos & MASK;
  return ((Atomics.load(r, entry(i) + SQE.SEQ) + i - (pos + 1)) | 0) === 0;
}

/** Consumer only: take the next event, or null if none is published yet. */
export function schedTake(hv: HvState): SchedEvent | null {
  const r = hv.schedRing;
  const pos = r[SQ.HEAD];
  const i = pos & MASK;
  const e = entry(i);
  if (((Atomics.load(r, e + SQE.SEQ) + i - (pos + 1)) | 0) !== 0) return null;
  const kind = r[e + SQE.KIND];
  const a = r[e + SQE.A];
  const b = r[e + SQE.B];
  const ts = hv.schedRingTs[i];
  // Free the entry for the producer one lap ahead, then advance.
  Atomics.store(r, e + SQE.SEQ, (pos + SCHED_RING_ENTRIES - i) | 0);
  Atomics.store(r, SQ.HEAD, (pos + 1) | 0);
  switch (kind) {
    case SCHED_EV_WAKE: return { kind, vidx: a, ts };
    case SCHED_EV_RELEASE: return { kind, vidx: a, pcpu: b & 0xffff, reason: b >>> 16, ts };
    case SCHED_EV_EXIT: return { kind, vidx: a, generation: b, ts };
    case SCHED_EV_PARAMS: return { kind, slot: a, generation: b, ts };
    case SCHED_EV_AFFINITY: return { kind, vidx: a, generation: b, ts };
    case SCHED_EV_CLAIM: return { kind, vidx: a, pcpu: b, ts };
    default: return { kind: 0, raw: kind, ts };
  }
}

/** Consumer: say whether it is about to sleep (producers then notify). */
export function schedConsumerSleeping(hv: HvState, asleep: boolean): void {
  Atomics.store(hv.schedRing, SQ.SLEEPING, asleep ? 1 : 0);
}

/** Encode a RELEASE's b argument. */
export function releaseArg(pcpu: number, reason: number): number {
  return ((reason & 0xffff) << 16) | (pcpu & 0xffff);
}
