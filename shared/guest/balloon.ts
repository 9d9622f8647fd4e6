/**
 * The guest balloon driver, as Linux's xen-balloon: it watches the domain's
 * own `memory/target` (KiB, written by the toolstack: `xl mem-set`) and moves
 * the domain's reservation (tot_pages, XENMEM_current_reservation) toward
 * target / 4 pages:
 *
 *  - to shrink, it takes free gfns from the Xen library's page allocator
 *    (`Xen.allocGfn`, keeping `reservePages` free for the kernel) and gives
 *    their frames back with XENMEM_decrease_reservation; those gfns are
 *    "ballooned out" (holes in the physmap) until it grows again;
 *  - to grow, it repopulates gfns it gave back (XENMEM_populate_physmap, last
 *    out first in) and hands them back to the allocator. It never asks beyond
 *    what it gave back (no memory hotplug), and stops where the hypervisor says
 *    no (max_pages, or the host is out of memory), as Linux does; the next
 *    change of memory/target (or `retry()`) tries again.
 *
 * It writes nothing to XenStore (Linux's driver writes no memory/ node
 * either). It runs in the kernel's event loop: the watch callback starts an
 * update whose XenStore read completes as the kernel dispatches its xenstore
 * events (GuestXenbus.wait or the kernel's own poll loop); the hypercalls
 * themselves are synchronous. A watch callback never throws: a failure is kept
 * in `lastError`.
 *
 *   const balloon = await xs.wait(Balloon.start(xen, xs.client));
 *   ...                          // the kernel's loop runs
 *   balloon.state                // { targetPages, currentPages, balloonedOut, ... }
 */
import type { WatchHandle, XenbusClient } from '../xenbus/client.ts';
import type { Xen } from './xen.ts';

/** memory/target, relative to the domain's home (/local/domain/<domid>). */
export const MEMORY_TARGET_PATH = 'memory/target';
/** Free pages of the initial RAM the driver leaves to the kernel by default. */
export const DEFAULT_RESERVE_PAGES = 8;

export interface BalloonOptions {
  /** Free pages never ballooned out (left for allocGfn). Default DEFAULT_RESERVE_PAGES. */
  readonly reservePages?: number;
  /** The node watched (default memory/target, relative). */
  readonly path?: string;
}

/** What the driver has done and where it stands (for tests and diagnostics). */
export interface BalloonState {
  /** memory/target as last read (KiB); undefined before the first read, or if absent or not a number. */
  readonly targetKiB: number | undefined;
  /** targetKiB / 4, rounded down; undefined as targetKiB. */
  readonly targetPages: number | undefined;
  /** tot_pages now (XENMEM_current_reservation). */
  readonly currentPages: number;
  /** max_pages now (XENMEM_maximum_reservation). */
  readonly maxPages: number;
  /** Pages given back and not repopulated. */
  readonly balloonedOut: number;
  /** The last move stopped short of the target: too few free pages, too few to repopulate, or the hypervisor said no. */
  readonly short: boolean;
  /** Updates done (each a read of memory/target and a move). */
  readonly updates: number;
}

export class Balloon {
  /** gfns ballooned out, in the order given back. */
  private readonly out: number[] = [];
  private targetKiB: number | undefined;
  private short = false;
  private updates = 0;
  private pending = false;
  private busy = false;
  private running: Promise<void> = Promise.resolve();
  private handle: WatchHandle | undefined;
  private readonly reserve: number;
  readonly path: string;
  /** The last failure of an update (a XenStore read); cleared by a successful one. */
  lastError: unknown;

  constructor(readonly xen: Xen, readonly client: XenbusClient, opts: BalloonOptions = {}) {
    this.reserve = Math.max(0, opts.reservePages ?? DEFAULT_RESERVE_PAGES);
    this.path = opts.path ?? MEMORY_TARGET_PATH;
  }

  /** A driver watching memory/target (the watch's first event reads it once). */
  static async start(xen: Xen, client: XenbusClient, opts: BalloonOptions = {}): Promise<Balloon> {
    const b = new Balloon(xen, client, opts);
    await b.watch();
    return b;
  }

  /** Set the watch on memory/target. */
  async watch(): Promise<void> {
    if (this.handle) return;
    this.handle = await this.client.watch(this.path, () => this.kick(), `balloon:${this.path}`);
  }

  /** Remove the watch (pages ballooned out stay out). */
  async stop(): Promise<void> {
    const h = this.handle;
    this.handle = undefined;
    if (h) await h.unwatch();
  }

  /** Read memory/target again and move toward it (what the watch does). */
  kick(): void {
    this.pending = true;
    if (this.busy) return;
    this.busy = true;
    this.running = this.run();
  }

  /** Settles when no update is under way (it needs the kernel's loop to run). */
  idle(): Promise<void> { return this.running; }

  private async run(): Promise<void> {
    try {
      while (this.pending) {
        this.pending = false;
        try {
          const v = await this.client.tryRead(this.path);
          this.targetKiB = v !== undefined && /^\d+$/.test(v.trim()) ? Number(v.trim()) : undefined;
          this.lastError = undefined;
        } catch (e) {
          this.lastError = e;
          continue;
        }
        this.updates++;
        this.balance();
      }
    } finally {
      this.busy = false;
    }
  }

  /** Move the reservation toward the last target read (no XenStore access). */
  balance(): void {
    if (this.targetKiB === undefined) return;
    const target = Math.floor(this.targetKiB / 4);
    const cur = this.xen.currentReservation();
    if (cur < 0) { this.short = true; return; }
    if (target < cur) this.short = this.shrink(cur - target) < cur - target;
    else if (target > cur) this.short = this.grow(target - cur) < target - cur;
    else this.short = false;
  }

  /** Give back up to `n` free pages; returns how many went. */
  private shrink(n: number): number {
    const can = Math.min(n, this.xen.freePageCount - this.reserve);
    if (can <= 0) return 0;
    const gfns: number[] = [];
    for (let i = 0; i < can; i++) gfns.push(this.xen.allocGfn());
    const rc = this.xen.decreaseReservation(gfns);
    const done = rc < 0 ? 0 : Math.min(rc, gfns.length);
    for (let i = 0; i < gfns.length; i++) {
      if (i < done) this.out.push(gfns[i]);
      else this.xen.releaseGfn(gfns[i]);
    }
    return done;
  }

  /** Repopulate up to `n` of the gfns given back; returns how many came back. */
  private grow(n: number): number {
    const can = Math.min(n, this.out.length);
    if (can <= 0) return 0;
    const gfns = this.out.slice(this.out.length - can).reverse();
    const rc = this.xen.populatePhysmap(gfns);
    const done = rc < 0 ? 0 : Math.min(rc, gfns.length);
    for (let i = 0; i < done; i++) {
      this.out.pop();
      this.xen.releaseGfn(gfns[i]);
    }
    return done;
  }

  /** Try the last target again (after the hypervisor said no). */
  retry(): void { this.balance(); }

  get state(): BalloonState {
    return {
      targetKiB: this.targetKiB,
      targetPages: this.targetKiB === undefined ? undefined : Math.floor(this.targetKiB / 4),
      currentPages: this.xen.currentReservation(),
      maxPages: this.xen.maximumReservation(),
      balloonedOut: this.out.length,
      short: this.short,
      updates: this.updates,
    };
  }

  /** The gfns ballooned out (a copy). */
  get balloonedGfns(): number[] { return [...this.out]; }
}
