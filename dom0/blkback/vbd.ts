/**
 * One virtual block device's backend: the xenbus side of Linux blkback
 * (xenbus.c: xen_blkbk_probe, backend_changed, frontend_changed,
 * connect_ring, connect, xen_blkif_disconnect, xen_blkbk_remove).
 *
 * Lifecycle, every step serialized on one promise chain:
 *  probe    read the backend node (frontend, frontend-id, params, mode, type,
 *           device-type, discard-enable), open the storage, publish the
 *           features, go InitWait, watch <frontend>/state;
 *  connect  (frontend Initialised/Connected) read multi-queue-num-queues,
 *           ring-page-order, protocol, feature-persistent, and each queue's
 *           ring-ref(s) and event-channel (in queue-<i>/ when there are
 *           several); map each ring's pages at contiguous gfns (one batch a
 *           ring), bind each channel, publish sectors/info/sizes, go Connected;
 *  disconnect  for each queue: stop its engine (in-flight requests answered
 *           ERROR), close its channel, unmap its persistent grants and ring;
 *  remove   (toolstack: online=0 and state Closing; or the node vanished)
 *           serve what is on the ring, disconnect, go Closed, unwatch, close
 *           the storage.
 * This object owns every resource it takes (mappings, gfns, channel, watch,
 * fd) and releases each in disconnect/remove.
 */
import {
  BLKBACK_MAX_INDIRECT_SEGMENTS, BLKIF_RING_ENTRY_SIZE, BLKIF_SECTOR_SIZE, VDISK_CDROM, VDISK_READONLY,
  XEN_IO_PROTO_ABI_X86_64, XENBUS_MAX_RING_GRANT_ORDER,
} from '../../shared/abi/blkif.ts';
import { GNTST_okay } from '../../shared/abi/grant-table.ts';
import type { GuestMemory } from '../../shared/guest/api.ts';
import type { EventChannels } from '../../shared/guest/evtchn.ts';
import type { GrantTable } from '../../shared/guest/gnttab.ts';
import { limitedLog, logger, RateLimiter } from '../../shared/log.ts';
import { BackRing, ringGeometry } from '../../shared/ring/ring.ts';
import { PAGE_SIZE } from '../../shared/types.ts';
import type { WatchHandle, XenbusClient } from '../../shared/xenbus/client.ts';
import { parseXenbusState, XenbusState, type XenbusStateName } from '../../shared/xenbus/state.ts';
import { BlkifEngine, newVbdCounters, type VbdCounters } from './engine.ts';
import type { GfnPool } from './gfn-pool.ts';
import { MAX_PERSISTENT_GRANTS, PersistentGrants } from './persistent.ts';
import { PERSISTENT_GRANT_UNUSED_SECONDS } from './purge.ts';
import { frontendAction } from './states.ts';
import { StorageError, type BlockStorage, type OpenStorage } from './storage.ts';
import type { DiskLimits } from './validate.ts';

const log = logger('blkback');
/** Handshake lines a frontend can trigger (it may reconnect in a loop): rate-limited per device. */
const limiter = new RateLimiter(2, 10);

/** The features a backend offers; each can be switched off for measurement. */
export interface BlkbackFeatures {
  /** feature-persistent (default true). */
  readonly persistent: boolean;
  /** feature-max-indirect-segments (256; 0 = no indirect requests). */
  readonly maxIndirectSegments: number;
  /** max-ring-page-order (4; 0 = single-page rings only, key not written). */
  readonly maxRingPageOrder: number;
  /** Persistent grants kept per connection (Linux's max_persistent_grants, 1056). */
  readonly maxPersistentGrants: number;
  /** Persistent grants unused this long are purged (Linux's persistent_grant_unused_seconds, 60; 0: never). */
  readonly persistentGrantUnusedSeconds: number;
  /**
   * multi-queue-max-queues: rings a frontend may give one device (Linux's
   * xen_blkback.max_queues, default the number of Dom0's vCPUs: 1 here).
   */
  readonly maxQueues: number;
  /**
   * READs become host DMA jobs (BlkifEngine: ASYNC_MIN_SECTORS, ASYNC_DIRECT_DEPTH) on
   * rings Dom0 polls (`addPoller`); ours, `xen_blkback.dma_jobs` (default true).
   */
  readonly dmaJobs: boolean;
}

export const DEFAULT_FEATURES: BlkbackFeatures = {
  persistent: true, maxIndirectSegments: BLKBACK_MAX_INDIRECT_SEGMENTS, maxRingPageOrder: XENBUS_MAX_RING_GRANT_ORDER, maxPersistentGrants: MAX_PERSISTENT_GRANTS,
  persistentGrantUnusedSeconds: PERSISTENT_GRANT_UNUSED_SECONDS, maxQueues: 1, dmaJobs: true,
};

export interface VbdContext {
  readonly xb: XenbusClient;
  readonly ev: EventChannels;
  readonly gt: GrantTable;
  readonly mem: GuestMemory;
  readonly pool: GfnPool;
  readonly post: (work: () => void) => void;
  readonly openStorage: OpenStorage;
  readonly features: BlkbackFeatures;
  /**
   * Serve a connected ring by polling too (Dom0Loop.addPoller): `serve`
   * becomes the port's handler and leaves req_event alone, so the loop must
   * call `arm` before Dom0 blocks (BlkifEngine.armRing); returns the
   * remover. Without it the port's handler is a plain kick.
   */
  readonly addPoller?: (port: number, serve: () => number, arm: () => number) => () => void;
  /** Dom0's clock in ms for the engines (persistent grants' purge); default performance.now. */
  readonly now?: () => number;
}

/** A connected ring (one queue of the device) and what it holds. */
interface Connection {
  readonly engine: BlkifEngine;
  readonly port: number;
  readonly ringGfn: number;
  readonly ringPages: number;
  readonly ringHandles: readonly number[];
  readonly persistent: PersistentGrants | null;
  /** Removes the ring from Dom0's spin. */
  readonly unpoll: () => void;
}

/** Failure of a handshake step, reported as xenbus_dev_fatal does. */
class FatalError extends Error {
  constructor(readonly errno: number, message: string) { super(message); }
}

const EINVAL = 22;
const ENOSYS = 38;
const ENOENT = 2;
const ENOMEM = 12;

export class VbdBackend {
  /** Our XenbusState (what our `state` node says). */
  state: XenbusStateName = 'Initialising';
  frontend = '';
  frontendId = -1;
  private storage: BlockStorage | undefined;
  private limits: DiskLimits | undefined;
  private cdrom = false;
  /** The connected rings, queue 0 first; empty when not connected. */
  private conns: Connection[] = [];
  private watch: WatchHandle | undefined;
  private chain: Promise<void> = Promise.resolve();
  private removed = false;
  /**
   * xentop's counters (Linux's statistics/ in sysfs): the device's for its
   * whole life, every connection counting into them; never reset.
   */
  readonly counters: VbdCounters = newVbdCounters();

  constructor(private readonly c: VbdContext, readonly path: string, readonly domid: number, readonly devid: number) {}

  get dev(): string { return `${this.domid}/${this.devid}`; }
  get connected(): boolean { return this.conns.length > 0; }
  get isRemoved(): boolean { return this.removed; }
  /** Rings of the current connection (multi-queue-num-queues; 0 when not connected). */
  get queues(): number { return this.conns.length; }
  /** The engine of the current connection's first queue (tests and benchmarks read its stats). */
  get engine(): BlkifEngine | undefined { return this.conns[0]?.engine; }
  /** Flushes and barriers waiting for the host (fdatasync), all queues. */
  get pendingHostIo(): number { return this.conns.reduce((n, c) => n + c.engine.pending, 0); }
  get persistentGrants(): number { return this.conns.reduce((n, c) => n + (c.persistent?.size ?? 0), 0); }
  /** Does a queue of the current connection keep a persistent grant of `gref` (tests: what a purge removed)? */
  hasPersistentGrant(gref: number): boolean { return this.conns.some((c) => c.persistent?.has(gref) ?? false); }

  /** Run `step` after every earlier one; errors are logged, never thrown to the caller. */
  enqueue(step: () => Promise<void> | void): Promise<void> {
    this.chain = this.chain.then(step).catch((e: unknown) => { log.error({ dev: this.dev, err: String(e) }, 'blkback step failed'); });
    return this.chain;
  }

  /** Resolves when every step queued so far has run. */
  settled(): Promise<void> { return this.chain; }

  private key(k: string): string { return `${this.path}/${k}`; }

  private async setState(s: XenbusStateName): Promise<void> {
    if (s === this.state) return;
    await this.c.xb.write(this.key('state'), String(XenbusState[s]));
    this.state = s;
  }

  /** xenbus_dev_fatal: the error in <backend>/error, then Closing. */
  private async fatal(errno: number, msg: string): Promise<void> {
    limitedLog(limiter, log, 'warn', this.dev, { dev: this.dev }, msg);
    await this.c.xb.write(this.key('error'), `${errno} ${msg}`).catch(() => undefined);
    await this.setState('Closing').catch(() => undefined);
  }

  probe(): Promise<void> {
    return this.enqueue(async () => {
      const xb = this.c.xb;
      this.frontend = (await xb.tryRead(this.key('frontend'))) ?? '';
      this.frontendId = Number((await xb.tryRead(this.key('frontend-id'))) ?? NaN);
      const params = (await xb.tryRead(this.key('params'))) ?? '';
      const mode = (await xb.tryRead(this.key('mode'))) ?? 'r';
      const type = (await xb.tryRead(this.key('type'))) ?? 'phy';
      const deviceType = (await xb.tryRead(this.key('device-type'))) ?? 'disk';
      const discardEnable = (await xb.tryRead(this.key('discard-enable'))) ?? '1';
      if (this.frontend === '' || !Number.isInteger(this.frontendId) || this.frontendId < 0) {
        return this.fatal(ENOENT, 'reading frontend/frontend-id');
      }
      const writable = mode.includes('w');
      try {
        this.storage = this.c.openStorage({ type, params, writable });
      } catch (e) {
        return this.fatal(ENOENT, e instanceof StorageError ? e.message : String(e));
      }
      this.cdrom = deviceType === 'cdrom';
      const discard = writable && discardEnable !== '0';
      const f = this.c.features;
      this.limits = { sectors: this.storage.sectors, readonly: !writable, discard, discardSecure: false, maxIndirectSegments: f.maxIndirectSegments };
      await xb.write(this.key('feature-flush-cache'), '1');
      await xb.write(this.key('feature-barrier'), '1');
      if (discard) {
        await xb.write(this.key('discard-granularity'), String(BLKIF_SECTOR_SIZE));
        await xb.write(this.key('discard-alignment'), '0');
        await xb.write(this.key('discard-secure'), '0');
        await xb.write(this.key('feature-discard'), '1');
      }
      await xb.write(this.key('feature-persistent'), f.persistent ? '1' : '0');
      if (f.maxIndirectSegments > 0) await xb.write(this.key('feature-max-indirect-segments'), String(f.maxIndirectSegments));
      if (f.maxRingPageOrder > 0) await xb.write(this.key('max-ring-page-order'), String(f.maxRingPageOrder));
      await xb.write(this.key('multi-queue-max-queues'), String(f.maxQueues));
      await this.setState('InitWait');
      this.watch = await xb.watch(`${this.frontend}/state`, () => { void this.enqueue(() => this.frontendChanged()); });
    });
  }

  /** frontend_changed: act on the frontend's state as the table says. */
  private async frontendChanged(): Promise<void> {
    if (this.removed || !this.storage) return;
    const v = await this.c.xb.tryRead(`${this.frontend}/state`);
    const front = v === undefined ? 'Unknown' : parseXenbusState(v);
    switch (frontendAction(front, this.state)) {
      case 'ignore': return;
      case 'reinit': return this.setState('InitWait');
      case 'closing': return this.setState('Closing');
      case 'fatal': return this.fatal(EINVAL, `saw state ${v ?? ''} at frontend`);
      case 'close':
        this.disconnect();
        await this.setState('Closed');
        // Not online any more (the toolstack is removing it): remove, after this step.
        if ((await this.c.xb.tryRead(this.key('online'))) === '0') void this.remove();
        return;
      case 'connect':
        this.disconnect();
        try {
          await this.connectRing();
        } catch (e) {
          this.disconnect();
          if (e instanceof FatalError) return this.fatal(e.errno, e.message);
          throw e;
        }
        return;
    }
  }

  private async readFront(k: string): Promise<string | undefined> {
    return this.c.xb.tryRead(`${this.frontend}/${k}`);
  }

  /**
   * connect_ring + connect: read the keys of every queue, then map and bind
   * each ring, publish, Connected. Throws FatalError; a queue that fails
   * undoes its own part, the queues connected before it stay in `conns` for
   * the caller's disconnect.
   */
  private async connectRing(): Promise<void> {
    const { features } = this.c;
    // Linux: xenbus_read_unsigned(otherend, "multi-queue-num-queues", 1), a
    // %u scan (a value that does not scan is the default).
    const nqStr = await this.readFront('multi-queue-num-queues');
    const nqScan = nqStr === undefined ? NaN : parseInt(nqStr, 10);
    const nq = Number.isNaN(nqScan) ? 1 : nqScan >>> 0;
    if (nq === 0 || nq > features.maxQueues) {
      throw new FatalError(ENOSYS, `guest requested ${nq} queues, exceeding the maximum of ${features.maxQueues}.`);
    }
    const orderStr = await this.readFront('ring-page-order');
    let order = -1; // no ring-page-order: a single ring-ref
    if (orderStr !== undefined) {
      order = Number(orderStr);
      if (!Number.isInteger(order) || order < 0 || order > features.maxRingPageOrder) {
        throw new FatalError(EINVAL, `${this.frontend}/request ${orderStr} ring page order exceed max:${features.maxRingPageOrder}`);
      }
    }
    // One queue: its keys are the frontend's own; several: queue-<i>/ each.
    const rings: Array<{ refs: number[]; evtchn: number }> = [];
    for (let q = 0; q < nq; q++) rings.push(await this.readQueueKeys(nq === 1 ? this.frontend : `${this.frontend}/queue-${q}`, order));
    const protocol = await this.readFront('protocol');
    if (protocol !== undefined && protocol !== XEN_IO_PROTO_ABI_X86_64) throw new FatalError(ENOSYS, `unknown fe protocol ${protocol}`);
    const persistent = features.persistent && (await this.readFront('feature-persistent')) === '1';
    // The device's persistent grants are shared out among its queues (their
    // mappings all come from blkback's one gfn hole).
    const perQueue = Math.floor(features.maxPersistentGrants / nq);
    for (const r of rings) this.conns.push(this.connectQueue(r.refs, r.evtchn, persistent ? perQueue : -1));

    const xb = this.c.xb;
    const info = (this.limits!.readonly ? VDISK_READONLY : 0) | (this.cdrom ? VDISK_CDROM : 0);
    await xb.write(this.key('sectors'), String(this.storage!.sectors));
    await xb.write(this.key('info'), String(info));
    await xb.write(this.key('sector-size'), String(BLKIF_SECTOR_SIZE));
    await xb.write(this.key('physical-sector-size'), String(BLKIF_SECTOR_SIZE));
    await this.setState('Connected');
    const ringPages = rings[0]!.refs.length;
    limitedLog(limiter, log, 'info', this.dev, { dev: this.dev, queues: nq, ringPages, persistent, protocol: protocol ?? 'default' }, 'connected');
    for (const c of this.conns) c.engine.kick();
  }

  /** read_per_ring_refs: one queue's ring-ref(s) and event-channel under `dir` (`order` -1: a single ring-ref). */
  private async readQueueKeys(dir: string, order: number): Promise<{ refs: number[]; evtchn: number }> {
    const xb = this.c.xb;
    const refs: number[] = [];
    if (order < 0) {
      const r = await xb.tryRead(`${dir}/ring-ref`);
      if (r === undefined) throw new FatalError(EINVAL, `reading ${dir}/ring-ref`);
      refs.push(Number(r));
    } else {
      for (let i = 0; i < 1 << order; i++) {
        const r = await xb.tryRead(`${dir}/ring-ref${i}`);
        if (r === undefined) throw new FatalError(EINVAL, `reading ${dir}/ring-ref${i}`);
        refs.push(Number(r));
      }
    }
    if (refs.some((r) => !Number.isInteger(r) || r < 0 || r > 0xffffffff)) throw new FatalError(EINVAL, 'bad ring-ref');
    const evStr = await xb.tryRead(`${dir}/event-channel`);
    const evtchn = Number(evStr);
    if (evStr === undefined || !Number.isInteger(evtchn) || evtchn <= 0) throw new FatalError(EINVAL, `reading ${dir}/event-channel`);
    return { refs, evtchn };
  }

  /**
   * Map one queue's ring (one batch, contiguous gfns), bind its channel and
   * start its engine (`maxPersistent` -1: no persistent grants). Throws
   * FatalError having released what it took.
   */
  private connectQueue(refs: readonly number[], evtchn: number, maxPersistent: number): Connection {
    const { gt, pool, ev, mem, features } = this.c;
    const n = refs.length;
    const ringGfn = pool.takeRun(n);
    if (ringGfn < 0) throw new FatalError(ENOMEM, 'no gfns left to map the ring');
    const res = gt.mapBatch(refs.map((ref, i) => ({ domid: this.frontendId, ref, gfn: ringGfn + i })));
    if (res.some((r) => r.status !== GNTST_okay)) {
      const good = res.map((r, i) => ({ r, gfn: ringGfn + i })).filter(({ r }) => r.status === GNTST_okay);
      if (good.length > 0) gt.unmapBatch(good.map(({ r, gfn }) => ({ handle: r.handle, gfn })));
      for (let i = 0; i < n; i++) pool.release(ringGfn + i);
      throw new FatalError(EINVAL, `mapping ring-ref ${refs.join(',')}: status ${res.map((r) => r.status).join(',')}`);
    }
    const ringHandles = res.map((r) => r.handle);
    let port: number;
    try {
      port = ev.bindInterdomain(this.frontendId, evtchn);
    } catch (e) {
      gt.unmapBatch(ringHandles.map((handle, i) => ({ handle, gfn: ringGfn + i })));
      for (let i = 0; i < n; i++) pool.release(ringGfn + i);
      throw new FatalError(EINVAL, `binding event-channel ${evtchn}: ${String(e)}`);
    }
    const ring = new BackRing(mem, ringGeometry(ringGfn * PAGE_SIZE, n * PAGE_SIZE, BLKIF_RING_ENTRY_SIZE));
    const pg = maxPersistent >= 0 ? new PersistentGrants(maxPersistent, features.persistentGrantUnusedSeconds) : null;
    const engine = new BlkifEngine({
      ring, mem, gt, pool, storage: this.storage!, limits: this.limits!, frontendId: this.frontendId,
      persistent: pg, notify: () => ev.send(port), post: this.c.post, dev: this.dev, counters: this.counters,
      ...(this.c.now ? { now: this.c.now } : {}),
      // A READ out as a job is answered when reaped, which the loop's polling does.
      dmaJobs: this.c.features.dmaJobs && this.c.addPoller !== undefined,
    });
    let unpoll = (): void => {};
    if (this.c.addPoller) unpoll = this.c.addPoller(port, () => engine.poll(), () => engine.armRing());
    else ev.on(port, () => engine.kick());
    return { engine, port, ringGfn, ringPages: n, ringHandles, persistent: pg, unpoll };
  }

  /**
   * xen_blkif_disconnect: for each queue, answer in-flight requests (ERROR),
   * close the channel, unmap persistent grants and the ring. Idempotent.
   */
  disconnect(): void {
    const conns = this.conns;
    if (conns.length === 0) return;
    this.conns = [];
    const { gt, pool, ev } = this.c;
    for (const conn of conns) {
      conn.unpoll();
      conn.engine.stop();
      try {
        ev.close(conn.port);
      } catch {
        // The frontend's domain died and its end is gone: ours was closed with it.
      }
      conn.persistent?.drain(gt, pool);
      const st = gt.unmapBatch(conn.ringHandles.map((handle, i) => ({ handle, gfn: conn.ringGfn + i })));
      st.forEach((s, i) => { if (s === GNTST_okay) pool.release(conn.ringGfn + i); });
    }
  }

  /**
   * Removal (xen_blkbk_remove): serve the requests already on the ring, then
   * disconnect (in-flight ones answered ERROR), go Closed if our node is
   * still there, stop watching, close the storage.
   */
  remove(): Promise<void> {
    return this.enqueue(async () => {
      if (this.removed) return;
      this.removed = true;
      for (const c of this.conns) c.engine.drain();
      this.disconnect();
      if ((await this.c.xb.tryRead(this.key('state'))) !== undefined) await this.setState('Closed').catch(() => undefined);
      await this.watch?.unwatch().catch(() => undefined);
      this.watch = undefined;
      this.storage?.close();
      this.storage = undefined;
    });
  }
}
