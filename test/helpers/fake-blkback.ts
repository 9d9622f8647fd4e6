/**
 * A fake blkback on a TestMachine's Dom0 (the reusable peer for blkfront's
 * tests): it writes the toolstack's and the backend's XenStore keys, follows
 * the frontend's state like Linux blkback (front Initialised -> map the ring,
 * publish the disk, Connected; front Closing -> Closing; front Closed ->
 * unmap everything, Closed), and answers requests from an in-memory disk by
 * mapping the segment grants (GrantTable.map/mapBatch). Every request it
 * takes is recorded, decoded, in `seen`.
 *
 * It misbehaves on request (`misbehave`): hold requests unanswered, answer
 * with an error status, answer with a wrong id or operation, publish an
 * impossible rsp_prod; and it can crash (drop the ring with requests
 * unanswered, go Closed with online still 1), come back (InitWait), or be
 * hot-unplugged (online 0, Closing, then removed).
 *
 * Nothing blocks: its port's handler runs when the test dispatches Dom0's
 * events; XenStore watches run as the test's rounds deliver them.
 */
import {
  BLKBACK_MAX_INDIRECT_SEGMENTS, BLKIF_OP_FLUSH_DISKCACHE, BLKIF_OP_READ,
  BLKIF_OP_WRITE, BLKIF_OP_WRITE_BARRIER, BLKIF_RING_ENTRY_SIZE, BLKIF_RSP_EOPNOTSUPP, BLKIF_RSP_ERROR, BLKIF_RSP_OKAY,
  SEGS_PER_INDIRECT_FRAME, XENBUS_MAX_RING_GRANT_ORDER,
} from '../../shared/abi/blkif.ts';
import { GNTST_okay } from '../../shared/abi/grant-table.ts';
import {
  decodeIndirectSegments, decodeRequest, encodeResponse, type BlkifRequest, type BlkifResponse, type BlkifSegment,
} from '../../shared/blkif/proto.ts';
import type { EventChannels } from '../../shared/guest/evtchn.ts';
import type { GrantTable, Mapping } from '../../shared/guest/gnttab.ts';
import type { KernelApi } from '../../shared/guest/api.ts';
import { BackRing, ringGeometry } from '../../shared/ring/ring.ts';
import type { WatchHandle, XenbusClient } from '../../shared/xenbus/client.ts';
import { parseXenbusState } from '../../shared/xenbus/state.ts';
import { PAGE_SIZE } from '../../shared/types.ts';
import { pagedRingMemory } from '../../domU/blkfront/paged-memory.ts';

export interface FakeBlkbackFeatures {
  readonly flushCache?: boolean;
  readonly barrier?: boolean;
  readonly discard?: boolean;
  readonly persistent?: boolean;
  /** 0: the key is not written (no indirect requests). */
  readonly maxIndirectSegments?: number;
  /** undefined: the key is not written (one-page rings only). */
  readonly maxRingPageOrder?: number;
}

export interface FakeBlkbackOptions {
  readonly api: KernelApi;
  readonly ev: EventChannels;
  readonly gnt: GrantTable;
  readonly xb: XenbusClient;
  readonly frontDomid: number;
  readonly devid: number;
  readonly sectors: number;
  readonly info?: number;
  readonly sectorSize?: number;
  readonly features?: FakeBlkbackFeatures;
}

/** What a test can make the fake do wrong. */
export interface Misbehaviour {
  /** Take requests but answer none until `release()`. */
  hold?: boolean;
  /** Status to answer a request with (undefined: do it, OKAY). */
  status?: (req: BlkifRequest) => number | undefined;
  /** Answer the next request with this id instead of its own. */
  wrongId?: bigint;
  /** Answer the next request with this operation instead of its own. */
  wrongOp?: number;
  /** Replace each answer (after the above) with these responses, none to several (property tests). */
  respond?: (req: BlkifRequest, rsp: BlkifResponse) => BlkifResponse[];
}

export interface SeenRequest {
  readonly req: BlkifRequest;
  /** Segments, for rw and indirect requests (indirect ones read from the indirect pages). */
  readonly segs: readonly BlkifSegment[];
  /** An indirect request's indirect pages as they were, end to end. */
  readonly indirectBytes?: Uint8Array;
}

export const DEFAULT_FEATURES: Required<FakeBlkbackFeatures> = {
  flushCache: true, barrier: true, discard: true, persistent: true,
  maxIndirectSegments: BLKBACK_MAX_INDIRECT_SEGMENTS, maxRingPageOrder: XENBUS_MAX_RING_GRANT_ORDER,
};

export class FakeBlkback {
  readonly frontPath: string;
  readonly backPath: string;
  readonly disk: Uint8Array;
  readonly seen: SeenRequest[] = [];
  /** Flushes and barriers answered OKAY (the "durable" points). */
  flushes = 0;
  misbehave: Misbehaviour = {};
  private held: BlkifRequest[] = [];
  private ring: BackRing | undefined;
  private ringMaps: Mapping[] = [];
  private port = 0;
  private persistent = false;
  private readonly persistentMaps = new Map<number, Mapping>();
  private watch: WatchHandle | undefined;
  private readonly features: Required<FakeBlkbackFeatures>;
  /** Most grants it had mapped at once (ring excluded). */
  maxMapped = 0;
  /** Front states seen, in order. */
  readonly frontStates: string[] = [];
  private busy: Promise<void> = Promise.resolve();

  constructor(private readonly o: FakeBlkbackOptions) {
    this.frontPath = `/local/domain/${o.frontDomid}/device/vbd/${o.devid}`;
    this.backPath = `/local/domain/0/backend/vbd/${o.frontDomid}/${o.devid}`;
    this.disk = new Uint8Array(o.sectors * 512);
    this.features = { ...DEFAULT_FEATURES, ...o.features };
  }

  get connected(): boolean { return this.ring !== undefined; }
  get heldCount(): number { return this.held.length; }
  get mappedPersistent(): number { return this.persistentMaps.size; }

  /** The toolstack's keys (front and back, with libxl's permissions), the backend's features, then InitWait. */
  async create(): Promise<void> {
    const { xb, frontDomid: d } = this.o;
    await xb.write(this.frontPath, '');
    await xb.setPerms(this.frontPath, [{ domid: d, access: 'n' }, { domid: 0, access: 'r' }]);
    await xb.write(`${this.frontPath}/backend`, this.backPath);
    await xb.write(`${this.frontPath}/backend-id`, '0');
    await xb.write(`${this.frontPath}/state`, '1');
    await xb.write(this.backPath, '');
    await xb.setPerms(this.backPath, [{ domid: 0, access: 'n' }, { domid: d, access: 'r' }]);
    await xb.write(`${this.backPath}/frontend`, this.frontPath);
    await xb.write(`${this.backPath}/frontend-id`, String(d));
    await xb.write(`${this.backPath}/online`, '1');
    await xb.write(`${this.backPath}/state`, '1');
    await this.publishFeatures();
    this.watch = await xb.watch(`${this.frontPath}/state`, () => { this.busy = this.busy.then(() => this.onFront()).catch(() => undefined); });
  }

  private async publishFeatures(): Promise<void> {
    const f = this.features;
    const w = (k: string, v: string): Promise<void> => this.o.xb.write(`${this.backPath}/${k}`, v);
    await w('feature-flush-cache', f.flushCache ? '1' : '0');
    await w('feature-barrier', f.barrier ? '1' : '0');
    await w('feature-discard', f.discard ? '1' : '0');
    if (f.discard) {
      await w('discard-granularity', '512');
      await w('discard-alignment', '0');
      await w('discard-secure', '0');
    }
    await w('feature-persistent', f.persistent ? '1' : '0');
    if (f.maxIndirectSegments > 0) await w('feature-max-indirect-segments', String(f.maxIndirectSegments));
    if (f.maxRingPageOrder !== undefined) await w('max-ring-page-order', String(f.maxRingPageOrder));
    await this.setState(2);
  }

  setState(n: number): Promise<void> {
    return this.o.xb.write(`${this.backPath}/state`, String(n));
  }

  async backState(): Promise<string | undefined> {
    return this.o.xb.tryRead(`${this.backPath}/state`);
  }

  private async onFront(): Promise<void> {
    const v = await this.o.xb.tryRead(`${this.frontPath}/state`);
    if (v === undefined) return;
    const s = parseXenbusState(v);
    this.frontStates.push(s);
    const back = parseXenbusState((await this.backState()) ?? '');
    if (s === 'Initialised' && back === 'InitWait') await this.connect();
    else if (s === 'Initialising' && back === 'Closed' && !this.down) await this.publishFeatures(); // prepare for reconnect
    else if (s === 'Closing' && (back === 'Connected' || back === 'InitWait')) await this.setState(5);
    else if (s === 'Closed' && (back === 'Closing' || back === 'Connected')) {
      this.disconnect();
      await this.setState(6);
    }
  }

  /** Map the ring, bind the port, publish the disk, Connected. */
  private async connect(): Promise<void> {
    const { xb, gnt, ev, frontDomid: d } = this.o;
    const r = (k: string): Promise<string | undefined> => xb.tryRead(`${this.frontPath}/${k}`);
    const orderS = await r('ring-page-order');
    const order = orderS === undefined ? 0 : Number(orderS);
    const refs: number[] = [];
    if (orderS === undefined) refs.push(Number(await r('ring-ref')));
    else for (let i = 0; i < 1 << order; i++) refs.push(Number(await r(`ring-ref${i}`)));
    const evtchn = Number(await r('event-channel'));
    this.persistent = this.features.persistent && (await r('feature-persistent')) === '1';
    this.protocol = (await r('protocol')) ?? '';
    this.ringMaps = gnt.mapBatch(refs.map((ref) => ({ domid: d, ref })));
    if (this.ringMaps.some((m) => m.status !== GNTST_okay)) throw new Error(`fake blkback: ring map failed ${this.ringMaps.map((m) => m.status)}`);
    const mem = pagedRingMemory(this.o.api.mem, this.ringMaps.map((m) => m.gpa));
    this.ring = new BackRing(mem, ringGeometry(0, PAGE_SIZE << order, BLKIF_RING_ENTRY_SIZE));
    this.ringOrder = order;
    this.port = ev.bindInterdomain(d, evtchn);
    ev.on(this.port, () => this.process());
    const w = (k: string, v: string): Promise<void> => xb.write(`${this.backPath}/${k}`, v);
    await w('sectors', String(this.o.sectors));
    await w('info', String(this.o.info ?? 0));
    await w('sector-size', String(this.o.sectorSize ?? 512));
    await w('physical-sector-size', String(this.o.sectorSize ?? 512));
    await this.setState(4);
  }

  protocol = '';
  /** Crashed and not restarted: a frontend's Initialising gets no InitWait. */
  private down = false;
  ringOrder = 0;

  /** Unmap everything and close the port (requests held are dropped, unanswered). */
  disconnect(): void {
    if (!this.ring) return;
    this.ring = undefined;
    this.held = [];
    this.o.gnt.unmapBatch(this.ringMaps);
    this.ringMaps = [];
    this.o.gnt.unmapBatch([...this.persistentMaps.values()]);
    this.persistentMaps.clear();
    this.o.ev.close(this.port);
    this.port = 0;
  }

  /** The backend dies: ring dropped with what it holds unanswered, Closed (online stays 1). */
  async crash(): Promise<void> {
    this.down = true;
    this.disconnect();
    await this.setState(6);
  }

  /**
   * Linux blkback's way back: the ring dropped with requests unanswered,
   * Closed (online 1), and InitWait again once the frontend goes Initialising.
   */
  async bounce(): Promise<void> {
    this.disconnect();
    await this.setState(6);
  }

  /** The backend comes back: its features again, InitWait. */
  async restart(): Promise<void> {
    this.down = false;
    await this.publishFeatures();
  }

  /** Hot-unplug as libxl starts it: online 0, Closing. */
  async unplug(): Promise<void> {
    await this.o.xb.write(`${this.backPath}/online`, '0');
    await this.setState(5);
  }

  /** libxl giving up on the backend: everything unmapped and the backend directory removed. */
  async remove(): Promise<void> {
    this.disconnect();
    await this.o.xb.rm(this.backPath);
  }

  async dispose(): Promise<void> {
    await this.watch?.unwatch().catch(() => undefined);
  }

  /** Publish an impossible response producer (more responses than requests). */
  corruptRspProd(): void {
    const ring = this.ring!;
    ring.rspProdPvt = (ring.rspProdPvt + ring.size + 5) >>> 0;
    ring.pushResponses();
    this.o.ev.send(this.port);
  }

  /** Take every request on the ring; answer each unless holding. */
  process(): void {
    const ring = this.ring;
    if (!ring) return;
    for (;;) {
      const n = ring.finalCheckForRequests();
      if (n <= 0) break;
      for (let i = 0; i < n; i++) {
        const req = decodeRequest(ring.takeRequest());
        const indirectBytes = req.kind === 'indirect' ? this.indirectPages(req) : undefined;
        this.seen.push({ req, segs: indirectBytes && req.kind === 'indirect' ? decodeIndirectSegments(indirectBytes, req.nrSegments) : this.segmentsOf(req), ...(indirectBytes ? { indirectBytes } : {}) });
        if (this.misbehave.hold) this.held.push(req);
        else this.answer(req);
      }
    }
    this.push();
  }

  /** Answer `n` held requests (all by default), oldest first. */
  release(n = this.held.length): void {
    for (const req of this.held.splice(0, n)) this.answer(req);
    this.push();
  }

  private push(): void {
    const ring = this.ring;
    if (ring && ring.pushResponsesAndCheckNotify()) this.o.ev.send(this.port);
  }

  private segmentsOf(req: BlkifRequest): BlkifSegment[] {
    if (req.kind === 'rw') return [...req.segs];
    if (req.kind !== 'indirect') return [];
    return decodeIndirectSegments(this.indirectPages(req), req.nrSegments);
  }

  /** A private copy of an indirect request's indirect pages, end to end. */
  private indirectPages(req: Extract<BlkifRequest, { kind: 'indirect' }>): Uint8Array {
    const pages = Math.ceil(req.nrSegments / SEGS_PER_INDIRECT_FRAME);
    const bytes = new Uint8Array(pages * PAGE_SIZE);
    for (let i = 0; i < pages; i++) bytes.set(this.withGrant(req.indirectGrefs[i]!, true, (gpa) => this.o.api.mem.read(gpa, PAGE_SIZE)), i * PAGE_SIZE);
    return bytes;
  }

  /** Run `fn` on the page of grant `ref` mapped (persistently if negotiated; else mapped and unmapped around it). */
  private withGrant<T>(ref: number, readonly: boolean, fn: (gpa: number) => T): T {
    const d = this.o.frontDomid;
    if (this.persistent) {
      let m = this.persistentMaps.get(ref);
      if (!m) {
        m = this.o.gnt.map(d, ref);
        if (m.status !== GNTST_okay) throw new Error(`fake blkback: persistent map of gref ${ref} failed: ${m.status}`);
        this.persistentMaps.set(ref, m);
        this.maxMapped = Math.max(this.maxMapped, this.persistentMaps.size);
      }
      return fn(m.gpa);
    }
    const m = this.o.gnt.map(d, ref, { readonly });
    if (m.status !== GNTST_okay) throw new Error(`fake blkback: map of gref ${ref} failed: ${m.status}`);
    try {
      return fn(m.gpa);
    } finally {
      this.o.gnt.unmap(m);
    }
  }

  private answer(req: BlkifRequest): void {
    const ring = this.ring;
    if (!ring) return;
    let status = this.misbehave.status?.(req) ?? BLKIF_RSP_OKAY;
    let operation = req.kind === 'indirect' ? req.indirectOp : req.operation;
    if (status === BLKIF_RSP_OKAY) status = this.perform(req);
    let id = req.id;
    if (this.misbehave.wrongId !== undefined) {
      id = this.misbehave.wrongId;
      this.misbehave.wrongId = undefined;
    }
    if (this.misbehave.wrongOp !== undefined) {
      operation = this.misbehave.wrongOp;
      this.misbehave.wrongOp = undefined;
    }
    const rsp: BlkifResponse = { id, operation, status };
    for (const r of this.misbehave.respond?.(req, rsp) ?? [rsp]) ring.putResponse(encodeResponse(r));
  }

  private perform(req: BlkifRequest): number {
    const f = this.features;
    switch (req.kind) {
      case 'unknown': return BLKIF_RSP_EOPNOTSUPP;
      case 'discard':
        if (!f.discard) return BLKIF_RSP_EOPNOTSUPP;
        if (req.sector + req.nrSectors > this.o.sectors) return BLKIF_RSP_ERROR;
        this.disk.fill(0, req.sector * 512, (req.sector + req.nrSectors) * 512);
        return BLKIF_RSP_OKAY;
      case 'rw':
        if (req.operation === BLKIF_OP_FLUSH_DISKCACHE || req.operation === BLKIF_OP_WRITE_BARRIER) {
          if (req.operation === BLKIF_OP_FLUSH_DISKCACHE ? !f.flushCache : !f.barrier) return BLKIF_RSP_EOPNOTSUPP;
          this.flushes++;
          if (req.nrSegments === 0) return BLKIF_RSP_OKAY;
        }
        return this.rw(req.operation === BLKIF_OP_READ, req.sector, req.segs);
      case 'indirect':
        if (req.indirectOp !== BLKIF_OP_READ && req.indirectOp !== BLKIF_OP_WRITE) return BLKIF_RSP_ERROR;
        return this.rw(req.indirectOp === BLKIF_OP_READ, req.sector, this.segmentsOf(req));
    }
  }

  private rw(read: boolean, sector: number, segs: readonly BlkifSegment[]): number {
    let at = sector * 512;
    for (const s of segs) {
      if (s.lastSect < s.firstSect || s.lastSect > 7) return BLKIF_RSP_ERROR;
      const len = (s.lastSect - s.firstSect + 1) * 512;
      if (at + len > this.disk.length) return BLKIF_RSP_ERROR;
      const pos = at;
      this.withGrant(s.gref, !read, (gpa) => {
        const a = gpa + s.firstSect * 512;
        if (read) this.o.api.mem.write(a, this.disk.subarray(pos, pos + len));
        else this.disk.set(this.o.api.mem.read(a, len), pos);
      });
      at += len;
    }
    return BLKIF_RSP_OKAY;
  }
}
