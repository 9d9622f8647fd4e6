/**
 * iovec plans over machine memory and the host I/O that runs one (preadv /
 * pwritev between a host fd and machine memory): what HostDma (host-dma.ts)
 * does on the calling vCPU's thread and a host DMA job (dma-jobs.ts) on
 * whichever thread runs it. Trusted code: the machine addresses are checked
 * before a plan is made.
 */
import fs from 'node:fs';

// A module-local copy of the import (see host-dma.ts on imported bindings).
const nodeFs = fs;

/** A run of machine memory, [ma, ma + len): one iovec. */
export interface Extent { readonly ma: number; readonly len: number }

/**
 * The longest single iovec: well under Node's per-buffer limit (2^31 - 1) and
 * Linux's per-call MAX_RW_COUNT, so no extent is ever refused for its size.
 */
export const MAX_EXTENT = 1 << 30;

/** Plans kept larger than this many extents are trimmed after use. */
const KEEP_EXTENTS = 1024;

/**
 * An iovec plan under construction: machine pieces pushed in file order, each
 * merged into the previous extent when it starts where that one ends. Two
 * parallel number arrays, reused from call to call (no object per piece).
 */
export class IovecPlan {
  readonly ma: number[] = [];
  readonly len: number[] = [];
  count = 0;
  total = 0;

  reset(): void {
    if (this.ma.length > KEEP_EXTENTS) {
      this.ma.length = 0;
      this.len.length = 0;
    }
    this.count = 0;
    this.total = 0;
  }

  /** Append [ma, ma + len) (len >= 0; empty pieces vanish). */
  push(ma: number, len: number): void {
    if (len === 0) return;
    const n = this.count;
    this.total += len;
    if (n > 0) {
      const last = this.len[n - 1];
      if (this.ma[n - 1] + last === ma && last + len <= MAX_EXTENT) {
        this.len[n - 1] = last + len;
        return;
      }
    }
    this.ma[n] = ma;
    this.len[n] = len;
    this.count = n + 1;
  }

  extents(): Extent[] {
    const out: Extent[] = [];
    for (let i = 0; i < this.count; i++) out.push({ ma: this.ma[i], len: this.len[i] });
    return out;
  }
}

/**
 * The iovecs for translated pieces in file order (pure: what preadv/pwritev
 * do with the pieces of a request): empty pieces dropped, machine-adjacent
 * neighbours merged (up to MAX_EXTENT each). Total length and byte order are
 * those of the pieces.
 */
export function planIovecs(pieces: readonly Extent[]): Extent[] {
  const plan = new IovecPlan();
  for (const p of pieces) plan.push(p.ma, p.len);
  return plan.extents();
}

/** Views over machine memory for extents [first..] of the plan, the first one starting `skip` bytes in. */
function views(mem8: Uint8Array, plan: IovecPlan, first: number, skip: number): Uint8Array[] {
  const out: Uint8Array[] = [];
  const buf = mem8.buffer;
  const base = mem8.byteOffset;
  for (let i = first; i < plan.count; i++) {
    const s = i === first ? skip : 0;
    out.push(new Uint8Array(buf, base + plan.ma[i] + s, plan.len[i] - s));
  }
  return out;
}

/**
 * Do the planned I/O at file offset `position`, looping over short transfers.
 * Reads stop at end of file (a read of 0) and return the count; a write of 0
 * bytes (no progress) throws. Node's errors propagate.
 */
export function runPlan(mem8: Uint8Array, plan: IovecPlan, fd: number, position: number, write: boolean): number {
  const total = plan.total;
  let done = 0;
  if (plan.count === 1) {
    const ma = plan.ma[0];
    while (done < total) {
      const n = write
        ? nodeFs.writeSync(fd, mem8, ma + done, total - done, position + done)
        : nodeFs.readSync(fd, mem8, ma + done, total - done, position + done);
      if (n === 0) break;
      done += n;
    }
  } else if (plan.count > 1) {
    let iov = views(mem8, plan, 0, 0);
    let first = 0;
    let skip = 0;
    while (done < total) {
      const n = write ? nodeFs.writevSync(fd, iov, position + done) : nodeFs.readvSync(fd, iov, position + done);
      if (n === 0) break;
      done += n;
      if (done === total) break;
      // A short transfer: carry on from where it stopped.
      let left = n;
      while (left > 0 && left >= plan.len[first] - skip) {
        left -= plan.len[first] - skip;
        first++;
        skip = 0;
      }
      skip += left;
      iov = views(mem8, plan, first, skip);
    }
  }
  if (write && done < total) throw new Error(`host DMA: pwritev made no progress at ${done} of ${total} bytes`);
  return done;
}

