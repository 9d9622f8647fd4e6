/**
 * Binary buddy allocator over machine frames (Xen: common/page_alloc.c), pure
 * over typed arrays so it runs the same on shared memory (under heap_lock) and
 * in a unit test on plain arrays.
 *
 * A free block of 2^k frames starting at m (m aligned to 2^k) has order[m] = k and
 * sits on list k (doubly linked through next/prev, -1 terminated); every other
 * frame has order = -1.
 */
export const NO_FRAME = -1;

export interface BuddyArrays {
  readonly nrFrames: number;
  readonly maxOrder: number;
  readonly order: Int32Array;
  readonly next: Int32Array;
  readonly prev: Int32Array;
  readonly heads: Int32Array;
}

function listAdd(b: BuddyArrays, m: number, k: number): void {
  const head = b.heads[k];
  b.order[m] = k;
  b.prev[m] = NO_FRAME;
  b.next[m] = head;
  if (head !== NO_FRAME) b.prev[head] = m;
  b.heads[k] = m;
}

function listDel(b: BuddyArrays, m: number, k: number): void {
  const n = b.next[m];
  const p = b.prev[m];
  if (p !== NO_FRAME) b.next[p] = n;
  else b.heads[k] = n;
  if (n !== NO_FRAME) b.prev[n] = p;
  b.order[m] = NO_FRAME;
  b.next[m] = NO_FRAME;
  b.prev[m] = NO_FRAME;
}

/** Put frames [first, first + count) into the allocator as maximal aligned blocks. */
export function buddyInit(b: BuddyArrays, first = 0, count = b.nrFrames - first): void {
  b.heads.fill(NO_FRAME);
  b.order.fill(NO_FRAME);
  b.next.fill(NO_FRAME);
  b.prev.fill(NO_FRAME);
  let m = first;
  const end = first + count;
  while (m < end) {
    let k = 0;
    while (k < b.maxOrder && m % (2 << k) === 0 && m + (2 << k) <= end) k++;
    listAdd(b, m, k);
    m += 1 << k;
  }
}

/** Allocate 2^k contiguous frames; returns the first frame or NO_FRAME. */
export function buddyAlloc(b: BuddyArrays, k: number): number {
  if (!Number.isInteger(k) || k < 0 || k > b.maxOrder) return NO_FRAME;
  let j = k;
  while (j <= b.maxOrder && b.heads[j] === NO_FRAME) j++;
  if (j > b.maxOrder) return NO_FRAME;
  const m = b.heads[j];
  listDel(b, m, j);
  // Split: keep the lower half, free the upper halves.
  while (j > k) {
    j--;
    listAdd(b, m + (1 << j), j);
  }
  return m;
}

/** Return 2^k frames starting at m (m aligned, previously allocated); merges buddies. */
export function buddyFree(b: BuddyArrays, m: number, k: number): void {
  while (k < b.maxOrder) {
    const buddy = m ^ (1 << k);
    if (buddy + (1 << k) > b.nrFrames || b.order[buddy] !== k) break;
    listDel(b, buddy, k);
    m = Math.min(m, buddy);
    k++;
  }
  listAdd(b, m, k);
}

/** Frames on the free lists (walks them: for checks and tests). */
export function buddyFreeCount(b: BuddyArrays): number {
  let total = 0;
  for (let k = 0; k <= b.maxOrder; k++) {
    for (let m = b.heads[k]; m !== NO_FRAME; m = b.next[m]) total += 1 << k;
  }
  return total;
}

/** Per-frame free map from the lists; throws if two free blocks overlap (a broken invariant). */
export function buddyFreeMap(b: BuddyArrays): Uint8Array {
  const free = new Uint8Array(b.nrFrames);
  for (let k = 0; k <= b.maxOrder; k++) {
    for (let m = b.heads[k]; m !== NO_FRAME; m = b.next[m]) {
      if (m % (1 << k) !== 0) throw new Error(`buddy: block ${m} of order ${k} misaligned`);
      for (let i = m; i < m + (1 << k); i++) {
        if (free[i]) throw new Error(`buddy: frame ${i} on two free lists`);
        free[i] = 1;
      }
    }
  }
  return free;
}
