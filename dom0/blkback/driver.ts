/**
 * The blkback driver: one watch on Dom0's /local/domain/0/backend/vbd; a
 * VbdBackend per <domid>/<devid> node the toolstack creates with online=1,
 * removed when the toolstack sets online=0 and state Closing (5), or when the
 * node vanishes. `close` (Dom0 powering off) removes every device and the
 * watch.
 *
 * Resources: the driver owns the gfn pool (the physmap hole where every grant
 * blkback maps lives) and its watch; each device owns the rest (vbd.ts).
 */
import type { GuestMemory, HostDma } from '../../shared/guest/api.ts';
import type { EventChannels } from '../../shared/guest/evtchn.ts';
import type { GrantTable } from '../../shared/guest/gnttab.ts';
import { logger } from '../../shared/log.ts';
import type { WatchHandle, XenbusClient } from '../../shared/xenbus/client.ts';
import { GfnPool } from './gfn-pool.ts';
import { storageOpener, type OpenStorage } from './storage.ts';
import { DEFAULT_FEATURES, VbdBackend, type BlkbackFeatures } from './vbd.ts';

const log = logger('blkback');

export const VBD_BACKEND_ROOT = '/local/domain/0/backend/vbd';

/**
 * One device's counters, as Linux's
 * /sys/bus/xen-backend/devices/vbd-<domid>-<devid>/statistics/ (oo_req,
 * rd_req, wr_req, f_req, ds_req, rd_sect, wr_sect) that xentop reads; see
 * VbdCounters (engine.ts) for what each counts.
 */
export interface VbdDeviceStats {
  readonly domid: number;
  /** The virtual device number (xen-vbd-interface(7)), the node's name. */
  readonly devid: number;
  readonly ooReq: number;
  readonly rdReq: number;
  readonly wrReq: number;
  readonly fReq: number;
  readonly dsReq: number;
  readonly rdSect: number;
  readonly wrSect: number;
}

export interface BlkbackOptions {
  /** Dom0's xenstore connection. */
  readonly xb: XenbusClient;
  readonly ev: EventChannels;
  /**
   * Dom0's grant table (blkback only maps others' grants), or a function
   * making it, called when the first device appears: a grant table frame is
   * hypervisor memory (xenheap), so a Dom0 without block devices never gets one.
   */
  readonly gt: GrantTable | (() => GrantTable);
  /** Dom0's host DMA (k.host.dma). Not needed when `openStorage` is given. */
  readonly dma?: HostDma;
  /** Queue work for Dom0's loop (fdatasync completions). */
  readonly post: (work: () => void) => void;
  /** Dom0's memory; default ev.xen.k.mem. */
  readonly mem?: GuestMemory;
  /** First gfn of blkback's mapping hole; default just past GrantTable's default map hole (frameGfn + maxFrames + 256). */
  readonly gfnBase?: number;
  /** Size of the hole (default 2048: 1056 persistent grants, rings, per-request mappings). */
  readonly gfnCount?: number;
  /** feature-persistent (default true): false to measure without persistent grants. */
  readonly persistent?: boolean;
  /** Indirect descriptors (default true, 256 segments): false to measure without. */
  readonly indirect?: boolean;
  /** Multi-page rings (default true, max-ring-page-order 4): false for single-page rings only. */
  readonly multiPageRing?: boolean;
  /** Persistent grants kept per device (Linux's max_persistent_grants; default 1056). */
  readonly maxPersistentGrants?: number;
  /**
   * Persistent grants unused this many seconds are unmapped at the next
   * purge (Linux's persistent_grant_unused_seconds; default 60; 0: never).
   */
  readonly persistentGrantUnusedSeconds?: number;
  /**
   * multi-queue-max-queues: rings a frontend may give one device (Linux's
   * xen_blkback.max_queues; default 1, the number of Dom0's vCPUs).
   */
  readonly maxQueues?: number;
  /** READs out as host DMA jobs (BlkbackFeatures.dmaJobs; default true). */
  readonly dmaJobs?: boolean;
  /** Dom0's clock in ms (persistent grants' last use and purge); default performance.now. Tests drive it. */
  readonly now?: () => number;
  /** How storage is opened (tests inject recording storages); default phy files via `dma`, null devices. */
  readonly openStorage?: OpenStorage;
  /** Default VBD_BACKEND_ROOT. */
  readonly root?: string;
  /** Dom0Loop.addPoller: connected rings are also served by the loop's spin, and armed (`arm`) before Dom0 blocks. */
  readonly addPoller?: (port: number, serve: () => number, arm: () => number) => () => void;
}

export class BlkbackDriver {
  readonly features: BlkbackFeatures;
  private gtMade: GrantTable | undefined;
  private poolMade: GfnPool | undefined;
  private readonly devices = new Map<string, VbdBackend>();
  private watch: WatchHandle | undefined;
  private chain: Promise<void> = Promise.resolve();
  private readonly root: string;
  private closed = false;

  private constructor(private readonly o: BlkbackOptions) {
    this.root = o.root ?? VBD_BACKEND_ROOT;
    this.features = {
      persistent: o.persistent ?? DEFAULT_FEATURES.persistent,
      maxIndirectSegments: o.indirect === false ? 0 : DEFAULT_FEATURES.maxIndirectSegments,
      maxRingPageOrder: o.multiPageRing === false ? 0 : DEFAULT_FEATURES.maxRingPageOrder,
      maxPersistentGrants: o.maxPersistentGrants ?? DEFAULT_FEATURES.maxPersistentGrants,
      persistentGrantUnusedSeconds: o.persistentGrantUnusedSeconds ?? DEFAULT_FEATURES.persistentGrantUnusedSeconds,
      maxQueues: o.maxQueues !== undefined && Number.isInteger(o.maxQueues) && o.maxQueues >= 1 ? o.maxQueues : DEFAULT_FEATURES.maxQueues,
      dmaJobs: o.dmaJobs ?? DEFAULT_FEATURES.dmaJobs,
    };
  }

  /** Dom0's grant table, made on first use. */
  private get gt(): GrantTable {
    this.gtMade ??= typeof this.o.gt === 'function' ? this.o.gt() : this.o.gt;
    return this.gtMade;
  }

  /** The physmap hole of every mapping blkback makes (made on first use). */
  get pool(): GfnPool {
    this.poolMade ??= new GfnPool(this.o.gfnBase ?? this.gt.frameGfn + this.gt.maxFrames + 256, this.o.gfnCount ?? 2048);
    return this.poolMade;
  }

  /** Start watching for devices (the watch's first event scans what exists already). */
  static async start(o: BlkbackOptions): Promise<BlkbackDriver> {
    const d = new BlkbackDriver(o);
    d.watch = await o.xb.watch(d.root, (path) => d.changed(path));
    return d;
  }

  /** The device <domid>/<devid>, if served. */
  device(domid: number, devid: number): VbdBackend | undefined { return this.devices.get(`${domid}/${devid}`); }
  get deviceCount(): number { return this.devices.size; }

  /**
   * The counters of every device alive now (probed, not yet removed: Linux's
   * sysfs node lives from probe to xen_blkbk_remove), by domid then devid. A
   * device counts from its probe, across reconnections, until removed.
   */
  stats(): VbdDeviceStats[] {
    const out: VbdDeviceStats[] = [];
    for (const d of this.devices.values()) {
      if (d.isRemoved) continue;
      const k = d.counters;
      out.push({
        domid: d.domid, devid: d.devid,
        ooReq: k.ooReq, rdReq: k.rdReq, wrReq: k.wrReq, fReq: k.fReq, dsReq: k.dsReq, rdSect: k.rdSect, wrSect: k.wrSect,
      });
    }
    return out.sort((a, b) => a.domid - b.domid || a.devid - b.devid);
  }

  /**
   * Requests waiting for a host callback (fdatasync). Dom0's loop counts them
   * like connected host tools: while any is pending it sleeps only
   * IDLE_MS_HOST_TOOLS, since a host callback cannot run while Dom0 is blocked.
   */
  get pendingHostIo(): number {
    let n = 0;
    for (const d of this.devices.values()) n += d.pendingHostIo;
    return n;
  }

  private enqueue(step: () => Promise<void>): Promise<void> {
    this.chain = this.chain.then(step).catch((e: unknown) => { log.error({ err: String(e) }, 'blkback driver step failed'); });
    return this.chain;
  }

  /** A watch event under the root: rescan the device it names (or all, for the root itself). */
  private changed(path: string): void {
    if (this.closed) return;
    const rest = path === this.root ? [] : path.slice(this.root.length + 1).split('/');
    if (rest.length >= 2) {
      const [d, v, key] = rest;
      // Our own writes of feature keys and the like need no rescan.
      if (key !== undefined && key !== 'online' && key !== 'state' && this.devices.has(`${d}/${v}`)) return;
      void this.enqueue(() => this.scanDevice(Number(d), Number(v)));
    } else {
      void this.enqueue(() => this.scanAll());
    }
  }

  private async scanAll(): Promise<void> {
    const xb = this.o.xb;
    const doms = await xb.directory(this.root).catch(() => [] as string[]);
    const seen = new Set<string>();
    for (const d of doms) {
      for (const v of await xb.directory(`${this.root}/${d}`).catch(() => [] as string[])) {
        seen.add(`${d}/${v}`);
        await this.scanDevice(Number(d), Number(v));
      }
    }
    for (const [k, dev] of this.devices) if (!seen.has(k)) await this.scanDevice(dev.domid, dev.devid);
  }

  /** Create, remove or forget the device <domid>/<devid> as its node says. */
  private async scanDevice(domid: number, devid: number): Promise<void> {
    if (!Number.isInteger(domid) || !Number.isInteger(devid) || this.closed) return;
    const key = `${domid}/${devid}`;
    const path = `${this.root}/${key}`;
    const xb = this.o.xb;
    const online = await xb.tryRead(`${path}/online`);
    const state = await xb.tryRead(`${path}/state`);
    const dev = this.devices.get(key);
    if (online === undefined && state === undefined) {
      // The node is gone: remove (if not done yet) and forget.
      if (dev) {
        this.devices.delete(key);
        await dev.remove();
      }
      return;
    }
    if (!dev) {
      if (online !== '1' || state !== '1') return; // not (or no longer) for us to probe
      const nd = new VbdBackend({
        xb, ev: this.o.ev, gt: this.gt, mem: this.o.mem ?? this.o.ev.xen.k.mem, pool: this.pool, post: this.o.post,
        openStorage: this.o.openStorage ?? storageOpener(this.dmaOrThrow()), features: this.features,
        ...(this.o.addPoller ? { addPoller: this.o.addPoller } : {}),
        ...(this.o.now ? { now: this.o.now } : {}),
      }, path, domid, devid);
      this.devices.set(key, nd);
      await nd.probe();
      return;
    }
    if (online === '0' && state === '5' && !dev.isRemoved) await dev.remove();
  }

  private dmaOrThrow(): HostDma {
    if (!this.o.dma) throw new Error('blkback: no host DMA for file storage');
    return this.o.dma;
  }

  /** Resolves when every event seen so far has been acted on (devices' steps included). */
  async settled(): Promise<void> {
    for (let i = 0; i < 16; i++) {
      const c = this.chain;
      await c;
      await Promise.all([...this.devices.values()].map((d) => d.settled()));
      if (c === this.chain) return;
    }
  }

  /** Remove every device and stop watching (Dom0 powering off). */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    await this.chain;
    await this.watch?.unwatch().catch(() => undefined);
    this.watch = undefined;
    for (const [k, dev] of this.devices) {
      this.devices.delete(k);
      await dev.remove();
    }
  }
}
