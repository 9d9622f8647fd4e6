/**
 * The choice of persistent grants to purge (Linux blkback's
 * purge_persistent_gnt, drivers/block/xen-blkback/blkback.c), as a pure
 * function: which grefs to unmap, given each kept grant's last use and
 * whether a request is using it, the set's size and bound, whether a mapping
 * has had to stay non-persistent for want of room (Linux's
 * vbd.overflow_max_grants), the time, and the unused-grant timeout.
 * PersistentGrants.purge applies it; the engine calls that at most every
 * LRU_INTERVAL_MS, after a batch of requests (Linux: xen_blkif_schedule, the
 * ring's kthread, after do_block_io_op once ring->next_lru has passed).
 *
 * The rule (Linux's current one, with one addition the caller asked for):
 *  - below the bound, or at it without overflow: remove only grants unused
 *    for at least `unusedSeconds` (Linux's persistent_grant_unused_seconds,
 *    pgrant_timeout; 0: never time out) and not in use (Linux skips `active`
 *    grants, persistent_gnt_timeout);
 *  - otherwise aim for num_clean = floor(max / 100) * LRU_PERCENT_CLEAN +
 *    (count - max), at most count; give up (remove nothing, keep the overflow
 *    flag) if more than that many are in use (older Linux's check; current
 *    Linux cannot be there, its purge running only between requests, nor can
 *    we, our I/O being synchronous); first remove every timed-out grant not in
 *    use, then, if fewer than num_clean went, other grants not in use, least
 *    recently used first (Linux takes them in rb-tree order, that is by gref),
 *    until num_clean have gone;
 *  - overflow is cleared whenever something was removed (Linux:
 *    `if (total) ... overflow_max_grants = 0`).
 * Note that under 100 grants num_clean is count - max: a bound below 100 with
 * a full set only loses grants to the timeout (Linux's arithmetic, kept).
 */

/** Linux's LRU_INTERVAL: a ring purges at most this often (ms). */
export const LRU_INTERVAL_MS = 100;
/** Linux's LRU_PERCENT_CLEAN: a full set with overflow loses this percentage of the bound per purge. */
export const LRU_PERCENT_CLEAN = 5;
/** Linux's persistent_grant_unused_seconds default (pgrant_timeout). */
export const PERSISTENT_GRANT_UNUSED_SECONDS = 60;

/** One persistent grant as the purge sees it. */
export interface PurgeCandidate {
  readonly gref: number;
  /** When its last use ended (ms, the engine's clock); for one never used since mapped, when it was mapped. */
  readonly lastUsed: number;
  /** In use by a request being handled (Linux's persistent_gnt->active). */
  readonly active: boolean;
}

export interface PurgeParams {
  /** The bound (Linux's max_persistent_grants). */
  readonly max: number;
  /** A mapping could not become persistent since the last purge because the set was full (vbd.overflow_max_grants). */
  readonly overflow: boolean;
  /** Now (ms, the same clock as lastUsed). */
  readonly now: number;
  /** persistent_grant_unused_seconds: grants unused this long go (0: never). */
  readonly unusedSeconds: number;
}

export interface PurgeChoice {
  /** The grefs to unmap, timed-out ones first. */
  readonly remove: number[];
  /** Clear the overflow flag (something was removed). */
  readonly clearOverflow: boolean;
}

/** How many grants a purge aims to remove regardless of the timeout (Linux's num_clean): 0 unless over the bound, or at it with overflow. */
export function purgeTarget(count: number, max: number, overflow: boolean): number {
  if (count < max || (count === max && !overflow)) return 0;
  return Math.min(count, Math.floor(max / 100) * LRU_PERCENT_CLEAN + (count - max));
}

/** persistent_gnt_timeout: unused for at least `unusedSeconds` (never when 0). */
export function timedOut(lastUsed: number, now: number, unusedSeconds: number): boolean {
  return unusedSeconds > 0 && now - lastUsed >= unusedSeconds * 1000;
}

/** purge_persistent_gnt's choice (see the top of this file). `entries` holds every grant kept, each gref once. */
export function choosePurge(entries: readonly PurgeCandidate[], p: PurgeParams): PurgeChoice {
  const count = entries.length;
  const numClean = purgeTarget(count, p.max, p.overflow);
  let idle = 0;
  for (const e of entries) if (!e.active) idle++;
  if (numClean > idle) return { remove: [], clearOverflow: false };
  const remove: number[] = [];
  const rest: PurgeCandidate[] = [];
  for (const e of entries) {
    if (e.active) continue;
    if (timedOut(e.lastUsed, p.now, p.unusedSeconds)) remove.push(e.gref);
    else if (numClean > 0) rest.push(e);
  }
  if (remove.length < numClean) {
    // Array.prototype.sort is stable: equal times keep the set's order (oldest mapping first).
    rest.sort((a, b) => a.lastUsed - b.lastUsed);
    for (let i = 0; i < rest.length && remove.length < numClean; i++) remove.push(rest[i]!.gref);
  }
  return { remove, clearOverflow: remove.length > 0 };
}
