/**
 * The hole of Dom0's physmap where blkback maps its frontends' grants: ring
 * pages (a contiguous run per ring), persistent grants, and the per-request
 * mappings of data segments and indirect pages. The gfns are never populated
 * with RAM; a gfn is taken before a map_grant_ref names it and given back
 * after the unmap succeeded. One pool per driver: every mapping blkback makes
 * is in it, so a test can tell a leak by `inUse`.
 */
export class GfnPool {
  private readonly free: number[] = [];
  private readonly taken = new Set<number>();

  /** gfns [base, base + count). */
  constructor(readonly base: number, readonly count: number) {
    if (!Number.isSafeInteger(base) || !Number.isSafeInteger(count) || base < 0 || count < 0) throw new RangeError(`bad gfn hole ${base}+${count}`);
    for (let g = base + count - 1; g >= base; g--) this.free.push(g);
  }

  get available(): number { return this.free.length; }
  get inUse(): number { return this.taken.size; }

  /** One free gfn, or -1 if none is left. */
  take(): number {
    const g = this.free.pop();
    if (g === undefined) return -1;
    this.taken.add(g);
    return g;
  }

  /** `n` contiguous free gfns (the first is returned), or -1. */
  takeRun(n: number): number {
    const sorted = [...this.free].sort((a, b) => a - b);
    for (let i = 0; i + n <= sorted.length; i++) {
      if (sorted[i + n - 1]! - sorted[i]! === n - 1) {
        const first = sorted[i]!;
        const run = new Set<number>();
        for (let k = 0; k < n; k++) { run.add(first + k); this.taken.add(first + k); }
        const keep = this.free.filter((g) => !run.has(g));
        this.free.length = 0;
        this.free.push(...keep);
        return first;
      }
    }
    return -1;
  }

  release(g: number): void {
    if (!this.taken.delete(g)) throw new Error(`gfn ${g} released but not taken`);
    this.free.push(g);
  }
}
