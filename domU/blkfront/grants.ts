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
 *
 * Zero-copy I/O (BlkBuffer, buffer.ts) grants the caller's own pages instead
 * of pool pages, as Linux blkfront grants a bio's pages: the same two modes,
 * but nothing is copied and no pool page is used. Persistent: a buffer page
 * is granted read-write the first time a request uses it and keeps that grant
 * (shared by every request on the page) until the connection ends
 * (`revokeAll`) or the buffer is freed (`freeBufferPages`). Not persistent:
 * each use is a grant of its own (read-only for a write, writable for a read;
 * two requests on one page hold two grants), ended when the request is done.
 * A buffer page's grant that cannot end is counted in `leaked` like a pool
 * page's; the buffer keeps its page (the next use grants it afresh), but a
 * freed buffer's page goes back to the kernel only once every grant of it
 * has ended (retried at `revokeAll`, `releaseAll` and each freeBufferPages).
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
  /** The caller's buffer page this grant is of (zero-copy I/O); undefined for a pool page. */
  readonly of?: BufferPage;
}

/** One page of a caller's BlkBuffer (buffer.ts), as the grant code sees it. */
export interface BufferPage {
  readonly gfn: number;
  readonly gpa: number;
  /** Its persistent grant on the current connection, once a request has used it. */
  persistent: GrantedPage | undefined;
  /** Grants of it that could not end (the backend still maps them). */
  stuck: number;
  /** The buffer was freed: the page goes back to the kernel once `stuck` is 0. */
  freed: boolean;
}

export interface GrantStats {
  /** Grants made (gnttab_grant_foreign_access). */
  granted: number;
  /** Grants ended (gnttab_end_foreign_access succeeded). */
  ended: number;
  /**
   * Grants that could not end (still mapped by the backend): their pages are
   * leaked. (A freed buffer's persistent grants, which the backend keeps
   * mapped until it disconnects, are not counted: they end when it unmaps.)
   */
  leaked: number;
}

export class DataPages {
  private readonly free: GrantedPage[] = [];
  private readonly leakedPages: GrantedPage[] = [];
  /** Buffer pages with a persistent grant on the current connection. */
  private readonly persistentBufferPages = new Set<BufferPage>();
  /** Grants of buffer pages that could not end, retried now and then. */
  private leakedBufferGrants: GrantedPage[] = [];
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
  /** Persistent grants of buffer pages alive (persistent mode). */
  get bufferGrants(): number { return this.persistentBufferPages.size; }

  /** Can `n` pages be taken now? */
  available(n: number): boolean {
    return this.free.length + (this.budget - this.allocated) >= n;
  }

  /**
   * A page granted to the backend: writable unless `readonly` (persistent
   * pages are always writable: the backend maps them read-write once for
   * all uses, as Linux blkback does). Undefined when the budget is spent.
   * Throws the grant table's error (GrantTableFullError) when no grant
   * reference is left, the page kept in the pool.
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
      try {
        p.ref = this.gnttab.grantAccess(this.backend, p.gfn, p.readonly);
      } catch (e) {
        // No grant reference (our table is full): the page stays in the pool, ungranted.
        this.free.push(p);
        throw e;
      }
      this.stats.granted++;
    }
    return p;
  }

  /**
   * A grant of the caller's buffer page `bp` for one request (zero-copy):
   * persistent, its one read-write grant, made now if the page has none on
   * this connection; else a grant of its own for this request (read-only if
   * `readonly`), ended by give().
   */
  grantBufferPage(bp: BufferPage, readonly: boolean): GrantedPage {
    if (this.persistent) {
      let g = bp.persistent;
      if (g === undefined) {
        g = { gfn: bp.gfn, gpa: bp.gpa, ref: this.gnttab.grantAccess(this.backend, bp.gfn, false), readonly: false, of: bp };
        bp.persistent = g;
        this.persistentBufferPages.add(bp);
        this.stats.granted++;
      }
      return g;
    }
    const ref = this.gnttab.grantAccess(this.backend, bp.gfn, readonly);
    this.stats.granted++;
    return { gfn: bp.gfn, gpa: bp.gpa, ref, readonly, of: bp };
  }

  /**
   * A request is done with `p`: a pool page goes back to the pool, its grant
   * ended unless persistent; a buffer page's grant is ended unless it is the
   * page's persistent one (the page stays the caller's either way).
   */
  give(p: GrantedPage): void {
    if (p.of !== undefined) {
      if (p !== p.of.persistent) this.end(p);
      return;
    }
    if (!this.persistent && !this.end(p)) return;
    this.free.push(p);
  }

  /**
   * give() every page a request held: the first `npages` of `pages` and the
   * first `nind` of `indirectPages` (a shadow's reused lists, ring.ts).
   */
  giveRequestPages(r: { readonly pages: readonly GrantedPage[]; readonly npages: number; readonly indirectPages: readonly GrantedPage[]; readonly nind: number }): void {
    // Indexed loops: a for-of here ran V8's array iterator builtin per request (profiled).
    const pages = r.pages;
    for (let i = 0; i < r.npages; i++) this.give(pages[i]!);
    const ind = r.indirectPages;
    for (let i = 0; i < r.nind; i++) this.give(ind[i]!);
  }

  /**
   * End every pooled grant and every buffer page's persistent grant (the
   * connection is over; nothing is in flight). Pages whose grant cannot end
   * are leaked; buffer grants leaked earlier are tried again.
   */
  revokeAll(): void {
    for (let i = this.free.length - 1; i >= 0; i--) {
      const p = this.free[i]!;
      if (!this.end(p)) this.free.splice(i, 1);
    }
    for (const bp of this.persistentBufferPages) {
      const g = bp.persistent!;
      bp.persistent = undefined;
      this.end(g);
    }
    this.persistentBufferPages.clear();
    this.retryBufferGrants();
  }

  /**
   * A buffer is freed (no request uses it): end its pages' persistent grants
   * and give every page whose grants have all ended back to the kernel. A
   * page the backend still maps (a persistent grant it keeps until
   * disconnect, or a leaked one) goes back once it unmaps (retried at
   * revokeAll, releaseAll and the next freeBufferPages).
   */
  freeBufferPages(pages: readonly BufferPage[]): void {
    for (const bp of pages) {
      bp.freed = true;
      const g = bp.persistent;
      if (g !== undefined) {
        bp.persistent = undefined;
        this.persistentBufferPages.delete(bp);
        // Expected while connected with persistent grants: the backend keeps them mapped until it disconnects.
        this.end(g, true);
      }
      if (bp.stuck === 0) this.xen.releaseGfn(bp.gfn);
    }
    this.retryBufferGrants();
  }

  /** Buffer grants that could not end: end those the backend has unmapped since; free pages of freed buffers go back. */
  private retryBufferGrants(): void {
    if (this.leakedBufferGrants.length === 0) return;
    this.leakedBufferGrants = this.leakedBufferGrants.filter((g) => {
      if (!this.gnttab.endAccess(g.ref!)) return true;
      g.ref = undefined;
      this.stats.ended++;
      const bp = g.of!;
      if (--bp.stuck === 0 && bp.freed) this.xen.releaseGfn(bp.gfn);
      return false;
    });
  }

  /**
   * Give every page back to the kernel (after revokeAll, nothing handed out),
   * leaked ones too if the backend has unmapped them since (Linux's deferred
   * end of foreign access).
   */
  releaseAll(): void {
    this.retryBufferGrants();
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

  /**
   * End p's grant; false (and the page leaked) if the backend still maps it.
   * A buffer page's grant that cannot end is kept for retrying (the page
   * stays the caller's). `deferred`: the backend is entitled to keep it
   * mapped (a persistent grant of a buffer freed while connected): it is
   * retried the same way but neither counted as leaked nor logged.
   */
  private end(p: GrantedPage, deferred = false): boolean {
    if (p.ref === undefined) return true;
    if (this.gnttab.endAccess(p.ref)) {
      p.ref = undefined;
      this.stats.ended++;
      return true;
    }
    if (p.of !== undefined) {
      p.of.stuck++;
      this.leakedBufferGrants.push(p);
    } else {
      this.leakedPages.push(p);
    }
    if (deferred) return false;
    this.stats.leaked++;
    if (!this.warnedLeak) {
      this.warnedLeak = true;
      this.warn('backend has not unmapped a grant: leaking its page', { ref: p.ref, gfn: p.gfn });
    }
    return false;
  }
}
