/**
 * Data and indirect pages granted to the backend (Linux blkfront's grant
 * lists), with or without persistent grants.
 *
 * Persistent (feature-persistent on both ends): a page is granted once, the
 * first time it is used, and goes back to a pool after each request with its
 * grant intact; the backend keeps it mapped. Data is copied in for writes and
 * out for reads. Grants end only when the connection does (`revokeAll`).
 *
 * Not persistent: each request grants its pages (data pages read-only for a
 * write, writable for a read; indirect pages read-only) and ends the grants on
 * completion. A grant the backend still has mapped cannot end: its page is
 * never reused (Linux leaks it with a warning) and is counted in `leaked`.
 *
 * Pages come from the kernel's allocator (Xen.allocGfn) up to a budget and go
 * back to it on `releaseAll`.
 */
import type { GrantTable } from '../../shared/guest/gnttab.ts';
import type { Xen } from '../../shared/guest/xen.ts';
import { PAGE_SIZE, type GrantRef } from '../../shared/types.ts';

export interface GrantedPage {
  readonly gfn: number;
  readonly gpa: number;
  /** The grant of this page to the backend, while it has one. */
  ref: GrantRef | undefined;
  readonly: boolean;
}

export interface GrantStats {
  /** Grants made (gnttab_grant_foreign_access). */
  granted: number;
  /** Grants ended (gnttab_end_foreign_access succeeded). */
  ended: number;
  /** Grants that could not end (still mapped by the backend): their pages are leaked. */
  leaked: number;
}

export class DataPages {
  private readonly free: GrantedPage[] = [];
  private readonly leakedPages: GrantedPage[] = [];
  private allocated = 0;
  readonly stats: GrantStats = { granted: 0, ended: 0, leaked: 0 };
  private warnedLeak = false;

  constructor(
    private readonly xen: Xen,
    private readonly gnttab: GrantTable,
    private backend: number,
    private persistent: boolean,
    readonly budget: number,
    private readonly warn: (msg: string, data?: Record<string, unknown>) => void,
  ) {}

  /** A new connection: its backend domain and whether grants persist (after revokeAll). */
  reset(backend: number, persistent: boolean): void {
    this.backend = backend;
    this.persistent = persistent;
  }

  get isPersistent(): boolean { return this.persistent; }
  /** Pages handed out by take() or waiting in the pool, leaked excluded. */
  get pagesInUse(): number { return this.allocated - this.leakedPages.length - this.free.length; }
  /** Grants alive in the pool (persistent mode). */
  get pooledGrants(): number { return this.free.filter((p) => p.ref !== undefined).length; }

  /** Can `n` pages be taken now? */
  available(n: number): boolean {
    return this.free.length + (this.budget - this.allocated) >= n;
  }

  /**
   * A page granted to the backend: writable unless `readonly` (persistent
   * pages are always writable: the backend maps them read-write once for
   * all uses, as Linux blkback does). Undefined when the budget is spent.
   */
  take(readonly: boolean): GrantedPage | undefined {
    let p = this.free.pop();
    if (!p) {
      if (this.allocated >= this.budget) return undefined;
      const gfn = this.xen.allocGfn();
      this.allocated++;
      p = { gfn, gpa: gfn * PAGE_SIZE, ref: undefined, readonly: false };
    }
    if (p.ref === undefined) {
      p.readonly = this.persistent ? false : readonly;
      p.ref = this.gnttab.grantAccess(this.backend, p.gfn, p.readonly);
      this.stats.granted++;
    }
    return p;
  }

  /** A request is done with `p`: back to the pool, its grant ended unless persistent. */
  give(p: GrantedPage): void {
    if (!this.persistent && !this.end(p)) return;
    this.free.push(p);
  }

  /** End every pooled grant (the connection is over). Pages whose grant cannot end are leaked. */
  revokeAll(): void {
    for (let i = this.free.length - 1; i >= 0; i--) {
      const p = this.free[i]!;
      if (!this.end(p)) this.free.splice(i, 1);
    }
  }

  /**
   * Give every page back to the kernel (after revokeAll, nothing handed out),
   * leaked ones too if the backend has unmapped them since (Linux's deferred
   * end of foreign access).
   */
  releaseAll(): void {
    for (let i = this.leakedPages.length - 1; i >= 0; i--) {
      const p = this.leakedPages[i]!;
      if (p.ref !== undefined && this.gnttab.endAccess(p.ref)) {
        p.ref = undefined;
        this.stats.ended++;
        this.leakedPages.splice(i, 1);
        this.free.push(p);
      }
    }
    for (const p of this.free.splice(0)) {
      if (p.ref !== undefined && !this.end(p)) continue;
      this.xen.releaseGfn(p.gfn);
      this.allocated--;
    }
  }

  /** End p's grant; false (and the page leaked) if the backend still maps it. */
  private end(p: GrantedPage): boolean {
    if (p.ref === undefined) return true;
    if (this.gnttab.endAccess(p.ref)) {
      p.ref = undefined;
      this.stats.ended++;
      return true;
    }
    this.stats.leaked++;
    this.leakedPages.push(p);
    if (!this.warnedLeak) {
      this.warnedLeak = true;
      this.warn('backend has not unmapped a grant: leaking its page', { ref: p.ref, gfn: p.gfn });
    }
    return false;
  }
}
