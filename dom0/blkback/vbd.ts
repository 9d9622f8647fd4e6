/**
 * One virtual block device's backend: the xenbus side of Linux blkback
 * (xenbus.c: xen_blkbk_probe, backend_changed, frontend_changed,
 * connect_ring, connect, xen_blkif_disconnect, xen_blkbk_remove).
 *
 * Lifecycle, every step serialized on one promise chain:
 *  probe    read the backend node (frontend, frontend-id, params, mode, type,
 *           device-type, discard-enable), open the storage, publish the
 *           features, go InitWait, watch <frontend>/state;
 *  connect  (frontend Initialised/Connected) read ring-ref(s), event-channel,
 *           protocol, feature-persistent; map the ring pages at contiguous
 *           gfns (one batch), bind the channel, publish sectors/info/sizes,
 *           go Connected;
 *  disconnect  stop the engine (in-flight requests answered ERROR), close
 *           the channel, unmap persistent grants and the ring;
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
}

export const DEFAULT_FEATURES: BlkbackFeatures = {
  persistent: true, maxIndirectSegments: BLKBACK_MAX_INDIRECT_SEGMENTS, maxRingPageOrder: XENBUS_MAX_RING_GRANT_ORDER, maxPersistentGrants: MAX_PERSISTENT_GRANTS,
  persistentGrantUnusedSeconds: PERSISTENT_GRANT_UNUSED_SECONDS,
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
   * becomes the port's handler; returns the remover. Without it the port's
   * handler is a plain kick.
   */
  readonly addPoller?: (port: number, serve: () => number) => () => void;
  /** Dom0's clock in ms for the engines (persistent grants' purge); default performance.now. */
  readonly now?: () => number;
}

/** A connected ring and what it holds. */
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
  private conn: Connection | undefined;
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
  get connected(): boolean { return this.conn !== undefined; }
  get isRemoved(): boolean { return this.removed; }
  /** The engine of the current connection (tests and benchmarks read its stats). */
  get engine(): BlkifEngine | undefined { return this.conn?.engine; }
  /** Flushes and barriers waiting for the host (fdatasync). */
  get pendingHostIo(): number { return this.conn?.engine.pending ?? 0; }
  get persistentGrants(): number { return this.conn?.persistent?.size ?? 0; }
  /** Does the current connection keep a persistent grant of `gref` (tests: what a purge removed)? */
  hasPersistentGrant(gref: number): boolean { return this.conn?.persistent?.has(gref) ?? false; }

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

  /** connect_ring + connect: map, bind, publish, Connected. Throws FatalError having undone nothing (the caller disconnects). */
  private async connectRing(): Promise<void> {
    const { gt, pool, ev, mem, features } = this.c;
    const orderStr = await this.readFront('ring-page-order');
    let refs: number[];
    let order = 0;
    if (orderStr === undefined) {
      const r = await this.readFront('ring-ref');
      if (r === undefined) throw new FatalError(EINVAL, `reading ${this.frontend}/ring-ref`);
      refs = [Number(r)];
    } else {
      order = Number(orderStr);
      if (!Number.isInteger(order) || order < 0 || order > features.maxRingPageOrder) {
        throw new FatalError(EINVAL, `${this.frontend}/request ${orderStr} ring page order exceed max:${features.maxRingPageOrder}`);
      }
      refs = [];
      for (let i = 0; i < 1 << order; i++) {
        const r = await this.readFront(`ring-ref${i}`);
        if (r === undefined) throw new FatalError(EINVAL, `reading ${this.frontend}/ring-ref${i}`);
        refs.push(Number(r));
      }
    }
    if (refs.some((r) => !Number.isInteger(r) || r < 0 || r > 0xffffffff)) throw new FatalError(EINVAL, 'bad ring-ref');
    const evStr = await this.readFront('event-channel');
    const evtchn = Number(evStr);
    if (evStr === undefined || !Number.isInteger(evtchn) || evtchn <= 0) throw new FatalError(EINVAL, `reading ${this.frontend}/event-channel`);
    const protocol = await this.readFront('protocol');
    if (protocol !== undefined && protocol !== XEN_IO_PROTO_ABI_X86_64) throw new FatalError(ENOSYS, `unknown fe protocol ${protocol}`);
    const persistent = features.persistent && (await this.readFront('feature-persistent')) === '1';

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
    const pg = persistent ? new PersistentGrants(features.maxPersistentGrants, features.persistentGrantUnusedSeconds) : null;
    const engine = new BlkifEngine({
      ring, mem, gt, pool: this.c.pool, storage: this.storage!, limits: this.limits!, frontendId: this.frontendId,
      persistent: pg, notify: () => ev.send(port), post: this.c.post, dev: this.dev, counters: this.counters,
      ...(this.c.now ? { now: this.c.now } : {}),
    });
    let unpoll = (): void => {};
    if (this.c.addPoller) unpoll = this.c.addPoller(port, () => engine.poll());
    else ev.on(port, () => engine.kick());
    this.conn = { engine, port, ringGfn, ringPages: n, ringHandles, persistent: pg, unpoll };
    const xb = this.c.xb;
    const info = (this.limits!.readonly ? VDISK_READONLY : 0) | (this.cdrom ? VDISK_CDROM : 0);
    await xb.write(this.key('sectors'), String(this.storage!.sectors));
    await xb.write(this.key('info'), String(info));
    await xb.write(this.key('sector-size'), String(BLKIF_SECTOR_SIZE));
    await xb.write(this.key('physical-sector-size'), String(BLKIF_SECTOR_SIZE));
    await this.setState('Connected');
    limitedLog(limiter, log, 'info', this.dev, { dev: this.dev, ringPages: n, persistent, protocol: protocol ?? 'default' }, 'connected');
    engine.kick();
  }

  /**
   * xen_blkif_disconnect: answer in-flight requests (ERROR), close the
   * channel, unmap persistent grants and the ring. Idempotent.
   */
  disconnect(): void {
    const conn = this.conn;
    if (!conn) return;
    this.conn = undefined;
    const { gt, pool, ev } = this.c;
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

  /**
   * Removal (xen_blkbk_remove): serve the requests already on the ring, then
   * disconnect (in-flight ones answered ERROR), go Closed if our node is
   * still there, stop watching, close the storage.
   */
  remove(): Promise<void> {
    return this.enqueue(async () => {
      if (this.removed) return;
      this.removed = true;
      this.conn?.engine.drain();
      this.disconnect();
      if ((await this.c.xb.tryRead(this.key('state'))) !== undefined) await this.setState('Closed').catch(() => undefined);
      await this.watch?.unwatch().catch(() => undefined);
      this.watch = undefined;
      this.storage?.close();
      this.storage = undefined;
    });
  }
}
