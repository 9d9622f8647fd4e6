/**
 * Atomics-based locks over a word of shared memory (an Int32Array index).
 *
 * A three-state mutex (0 free, 1 held, 2 held with possible waiters): take it by
 * compare-and-swap, spin a bounded number of times (a hypervisor critical section
 * is a few hundred nanoseconds, a cross-thread wake-up ~25 µs), then sleep in
 * Atomics.wait. Release wakes one waiter only when someone may be waiting.
 *
 * LOCK ORDER (take in this order, release in reverse; never take an earlier one
 * while holding a later one):
 *   1. domlist_lock       domain table: create/destroy, domid allocation
 *   2. domain locks       per-domain state (tot_pages, P2M, vCPU state, event
 *                         channels, grant table); two domains: lower table
 *                         slot first
 *   3. heap_lock          buddy allocator and frame ownership
 *   4. conring_lock       hypervisor console ring
 * The scheduler takes no lock: vCPU threads post requests to a lock-free ring
 * and claim pCPUs by compare-and-swap (hypervisor/sched/core.ts).
 * A lock is never held across guest code or a blocking wait.
 */

export const LOCK_FREE = 0;
export const LOCK_HELD = 1;
export const LOCK_CONTENDED = 2;

/** Spins before sleeping; bounded so a preempted holder costs at most a wake-up. */
export const LOCK_SPINS = 200;

export function lockTry(words: Int32Array, idx: number): boolean {
  return Atomics.compareExchange(words, idx, LOCK_FREE, LOCK_HELD) === LOCK_FREE;
}

export function lock(words: Int32Array, idx: number): void {
  // Uncontended fast path: acquire ordering comes from the seq-cst CAS.
  if (Atomics.compareExchange(words, idx, LOCK_FREE, LOCK_HELD) === LOCK_FREE) return;
  for (let i = 0; i < LOCK_SPINS; i++) {
    if (Atomics.load(words, idx) === LOCK_FREE &&
        Atomics.compareExchange(words, idx, LOCK_FREE, LOCK_HELD) === LOCK_FREE) return;
  }
  // Slow path: mark contended, sleep until the holder releases.
  while (Atomics.exchange(words, idx, LOCK_CONTENDED) !== LOCK_FREE) {
    Atomics.wait(words, idx, LOCK_CONTENDED);
  }
}

export function unlock(words: Int32Array, idx: number): void {
  // Release ordering: the seq-cst RMW publishes every write made under the lock.
  if (Atomics.exchange(words, idx, LOCK_FREE) === LOCK_CONTENDED) {
    Atomics.notify(words, idx, 1);
  }
}

/** Run `fn` with the lock held; the lock is released however `fn` exits. */
export function withLock<T>(words: Int32Array, idx: number, fn: () => T): T {
  lock(words, idx);
  try {
    return fn();
  } finally {
    unlock(words, idx);
  }
}
