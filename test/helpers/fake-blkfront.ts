/**
 * A fake blkfront for testing blkback from the other side (STYLE.md rule 14):
 * a DomU on the in-thread TestMachine that grants pages, builds a blkif ring
 * with shared/ring, publishes the frontend keys, and writes raw request bytes
 * (so a test can send anything a hostile frontend could). Plus `BlkTestbed`:
 * Dom0 with the real xenstored service in-process (socketPath null) and the
 * real blkback driver, driven in rounds as test/dom0/wiring.test.ts does.
 *
 * XenStore writes of the frontend are made through Dom0's privileged
 * connection (the DomU has no xenstore ring here); the toolstack's nodes are
 * written by `addVbd` the way dom0/toolstack/vbd.ts lays them out.
 */
import { BLKIF_RING_ENTRY_SIZE, XEN_IO_PROTO_ABI_X86_64 } from '../../shared/abi/blkif.ts';
import { decodeResponse, encodeIndirectSegments, encodeRequest, type BlkifRequest, type BlkifResponse, type BlkifSegment, type BlkifUnknownRequest } from '../../shared/blkif/proto.ts';
import { EventChannels } from '../../shared/guest/evtchn.ts';
import { GrantTable } from '../../shared/guest/gnttab.ts';
import { FrontRing, ringGeometry, sharedRingInit } from '../../shared/ring/ring.ts';
import { PAGE_SIZE } from '../../shared/types.ts';
import type { XenbusClient } from '../../shared/xenbus/client.ts';
import { XenstoredService } from '../../dom0/xenstored/service.ts';
import { BlkbackDriver, type BlkbackOptions } from '../../dom0/blkback/driver.ts';
import { storageOpener, type BlockStorage, type StorageSpec } from '../../dom0/blkback/storage.ts';
import { ECS_FREE, ECS_RESERVED, portState } from '../../hypervisor/evtchn/evtchn.ts';
import { D, EVTCHN_2L_PORTS } from '../../hypervisor/state.ts';
import { TestMachine, type TestVcpu } from './machine.ts';

export interface VbdSpec {
  readonly params: string;
  readonly mode?: 'w' | 'r';
  readonly type?: 'phy' | 'null';
  readonly deviceType?: 'disk' | 'cdrom';
  readonly discardEnable?: boolean;
}

export const backendPath = (domid: number, devid: number): string => `/local/domain/0/backend/vbd/${domid}/${devid}`;
export const frontendPath = (domid: number, devid: number): string => `/local/domain/${domid}/device/vbd/${devid}`;

/** Dom0 with xenstored and blkback on the test's thread. */
export class BlkTestbed {
  readonly posted: Array<() => void> = [];
  private constructor(readonly m: TestMachine, readonly ev: EventChannels, readonly xsd: XenstoredService, readonly gt: GrantTable, readonly driver: BlkbackDriver) {}

  /** `wrapStorage` lets a test interpose on the real storage (record calls, hold a flush, act mid-request). */
  static async start(o: Partial<BlkbackOptions> & { wrapStorage?: (s: BlockStorage) => BlockStorage } = {}): Promise<BlkTestbed> {
    const m = new TestMachine({ p2mEntries: 8192 }, 2);
    const ev = new EventChannels(m.dom0.xen);
    const posted: Array<() => void> = [];
    const xsd = await XenstoredService.start({ ctrl: m.ctrl, ev, post: (w) => posted.push(w), socketPath: null });
    const gt = new GrantTable(m.dom0.xen);
    const { wrapStorage, ...rest } = o;
    const open = storageOpener(m.dma);
    const openStorage = wrapStorage ? (spec: StorageSpec) => wrapStorage(open(spec)) : undefined;
    const driver = await BlkbackDriver.start({ xb: xsd.xb, ev, gt, dma: m.dma, post: (w) => posted.push(w), ...(openStorage ? { openStorage } : {}), ...rest });
    const t = new BlkTestbed(m, ev, xsd, gt, driver);
    (t as { posted: Array<() => void> }).posted = posted;
    return t;
  }

  get xb(): XenbusClient { return this.xsd.xb; }

  /** One round of Dom0's loop: events, posted work, the driver's xenstore steps. */
  async round(): Promise<void> {
    this.ev.dispatch();
    for (const w of this.posted.splice(0)) w();
    await this.driver.settled();
  }

  /** Rounds (with real macrotask hops, for host callbacks such as fdatasync) until `cond` or a bound. */
  async until(cond: () => boolean, what = 'condition', rounds = 1000): Promise<void> {
    for (let i = 0; i < rounds; i++) {
      await this.round();
      if (cond()) return;
      await new Promise((r) => setTimeout(r, 2));
    }
    throw new Error(`timed out waiting for ${what}`);
  }

  /** The toolstack's part (libxl / dom0/toolstack/vbd.ts): backend and frontend nodes. */
  async addVbd(domid: number, devid: number, s: VbdSpec): Promise<void> {
    const be = backendPath(domid, devid);
    const fe = frontendPath(domid, devid);
    const xb = this.xb;
    await xb.write(`${fe}/backend`, be);
    await xb.write(`${fe}/backend-id`, '0');
    await xb.write(`${fe}/state`, '1');
    await xb.write(`${be}/frontend`, fe);
    await xb.write(`${be}/frontend-id`, String(domid));
    await xb.write(`${be}/params`, s.params);
    await xb.write(`${be}/mode`, s.mode ?? 'w');
    await xb.write(`${be}/type`, s.type ?? 'phy');
    await xb.write(`${be}/device-type`, s.deviceType ?? 'disk');
    await xb.write(`${be}/dev`, 'xvda');
    await xb.write(`${be}/removable`, '0');
    await xb.write(`${be}/bootable`, '1');
    if (s.discardEnable !== undefined) await xb.write(`${be}/discard-enable`, s.discardEnable ? '1' : '0');
    await xb.write(`${be}/online`, '1');
    await xb.write(`${be}/state`, '1');
    await this.round();
  }

  /** Toolstack hot-unplug: online=0, state Closing; then (after blkback closed) the nodes go. */
  async unplug(domid: number, devid: number, rmNodes = true): Promise<void> {
    const be = backendPath(domid, devid);
    await this.xb.write(`${be}/online`, '0');
    await this.xb.write(`${be}/state`, '5');
    await this.round();
    if (rmNodes) {
      await this.xb.rm(be);
      await this.xb.rm(frontendPath(domid, devid));
      await this.round();
    }
  }

  /** Dom0's interdomain/unbound ports in use, and its grant mappings (maptrack in use). */
  dom0Resources(): { ports: number; maptrack: number } {
    const hv = this.m.hv;
    const slot = this.m.dom0.ctx.slot;
    let ports = 0;
    for (let p = 1; p < EVTCHN_2L_PORTS; p++) {
      const st = portState(hv, slot, p);
      if (st !== ECS_FREE && st !== ECS_RESERVED) ports++;
    }
    return { ports, maptrack: Atomics.load(hv.dom, hv.d(slot, D.maptrack_in_use)) };
  }
}

export interface FrontOptions {
  readonly devid?: number;
  readonly ringOrder?: number;
  readonly persistent?: boolean;
  /** The protocol key; undefined: not written. */
  readonly protocol?: string;
  /**
   * Rings to give the device (multi-queue-num-queues; each queue's keys in
   * queue-<i>/). Undefined: one ring, its keys in the frontend's directory
   * and no multi-queue-num-queues key (as Linux's blkfront with one queue).
   */
  readonly queues?: number;
}

/** One granted page of the frontend. */
export interface FrontPage {
  readonly gfn: number;
  readonly gref: number;
  readonly gpa: number;
}

export class FakeBlkfront {
  readonly ev: EventChannels;
  readonly gt: GrantTable;
  /** Each queue's ring, its port and its ring-refs (one of each without multi-queue). */
  readonly rings: FrontRing[] = [];
  readonly ports: number[] = [];
  readonly queueRingRefs: number[][] = [];
  /** The queue `put`, `push` and `responses` work on (see `use`). */
  private q = 0;
  readonly devid: number;
  private readonly pages: FrontPage[] = [];

  private constructor(readonly tb: BlkTestbed, readonly domid: number, readonly v: TestVcpu, readonly o: FrontOptions, shared?: FakeBlkfront) {
    this.ev = shared?.ev ?? new EventChannels(v.xen);
    this.gt = shared?.gt ?? new GrantTable(v.xen, { frames: 4 });
    this.devid = o.devid ?? 51712;
  }

  /** A new DomU with a fake frontend (the vbd nodes are added separately). */
  static async create(tb: BlkTestbed, o: FrontOptions = {}): Promise<FakeBlkfront> {
    const d = await tb.m.domU({ memoryMiB: 2 });
    return new FakeBlkfront(tb, d.domid, d.v, o);
  }

  /** Another frontend in the same DomU (another devid). */
  sibling(o: FrontOptions): FakeBlkfront {
    return new FakeBlkfront(this.tb, this.domid, this.v, o, this);
  }

  get mem() { return this.v.api.mem; }
  get ring(): FrontRing { return this.rings[this.q]!; }
  get port(): number { return this.ports[this.q] ?? 0; }
  get ringRefs(): number[] { return this.queueRingRefs[this.q] ?? []; }
  /** Work on queue `q` from now on (put, push, responses, submit). */
  use(q: number): this {
    if (!this.rings[q]) throw new Error(`no queue ${q}`);
    this.q = q;
    return this;
  }
  get fe(): string { return frontendPath(this.domid, this.devid); }
  get be(): string { return backendPath(this.domid, this.devid); }

  /** A page of ours granted to Dom0 (writable unless `readonly`). */
  page(readonly = false): FrontPage {
    const gfn = this.v.xen.allocGfn();
    const gref = this.gt.grantAccess(0, gfn, readonly);
    const p = { gfn, gref, gpa: gfn * PAGE_SIZE };
    this.pages.push(p);
    return p;
  }

  /** Set up the ring and publish it (blkfront's talk_to_blkback), then state Initialised. */
  async connect(): Promise<void> {
    const order = this.o.ringOrder ?? 0;
    const n = 1 << order;
    const nq = this.o.queues ?? 1;
    const xb = this.tb.xb;
    if (this.o.queues !== undefined) await xb.write(`${this.fe}/multi-queue-num-queues`, String(nq));
    if (this.o.ringOrder !== undefined) await xb.write(`${this.fe}/ring-page-order`, String(order));
    for (let q = 0; q < nq; q++) {
      const gfns = Array.from({ length: n }, () => this.v.xen.allocGfn());
      for (let i = 1; i < n; i++) if (gfns[i] !== gfns[0]! + i) throw new Error('ring pages not contiguous');
      const base = gfns[0]! * PAGE_SIZE;
      sharedRingInit(this.mem, base);
      this.rings[q] = new FrontRing(this.mem, ringGeometry(base, n * PAGE_SIZE, BLKIF_RING_ENTRY_SIZE));
      const refs = gfns.map((g) => this.gt.grantAccess(0, g));
      this.queueRingRefs[q] = refs;
      this.ports[q] = this.ev.allocUnbound(0);
      const dir = this.o.queues !== undefined ? `${this.fe}/queue-${q}` : this.fe;
      if (this.o.ringOrder === undefined) {
        await xb.write(`${dir}/ring-ref`, String(refs[0]));
      } else {
        for (let i = 0; i < n; i++) await xb.write(`${dir}/ring-ref${i}`, String(refs[i]));
      }
      await xb.write(`${dir}/event-channel`, String(this.ports[q]));
    }
    if (this.o.protocol !== undefined) await xb.write(`${this.fe}/protocol`, this.o.protocol);
    await xb.write(`${this.fe}/feature-persistent`, this.o.persistent === false ? '0' : '1');
    await this.setState(3);
  }

  /** A ring page (initialised, granted to Dom0) and an unbound port for it, published nowhere. */
  spareRing(): { ref: number; port: number } {
    const gfn = this.v.xen.allocGfn();
    sharedRingInit(this.mem, gfn * PAGE_SIZE);
    return { ref: this.gt.grantAccess(0, gfn), port: this.ev.allocUnbound(0) };
  }

  /**
   * Write `keys` (relative to the frontend's directory), go Initialised, and
   * run Dom0 until the backend gives up (Closing, 5; the test fails if it
   * does not): what its `error` node says.
   */
  async publishExpectingFatal(keys: Record<string, string>): Promise<string | undefined> {
    for (const [k, v] of Object.entries(keys)) await this.tb.xb.write(`${this.fe}/${k}`, v);
    await this.setState(3);
    for (let i = 0; i < 50 && (await this.backendState()) !== '5'; i++) await this.tb.round();
    if ((await this.backendState()) !== '5') throw new Error(`backend did not go Closing: state ${String(await this.backendState())}`);
    return this.tb.xb.tryRead(`${this.be}/error`);
  }

  async setState(s: number): Promise<void> {
    await this.tb.xb.write(`${this.fe}/state`, String(s));
    await this.tb.round();
  }

  backendState(): Promise<string | undefined> { return this.tb.xb.tryRead(`${this.be}/state`); }

  /** Put a request (encoded, or raw bytes) in the next slot; returns the slot's index. */
  put(req: Exclude<BlkifRequest, BlkifUnknownRequest> | Uint8Array): number {
    const bytes = req instanceof Uint8Array ? req : encodeRequest(req);
    return this.ring.putRequest(bytes);
  }

  /** Publish and notify if asked. */
  push(): void {
    if (this.ring.pushRequestsAndCheckNotify()) this.ev.send(this.port);
  }

  /** All responses available now. */
  responses(): BlkifResponse[] {
    const out: BlkifResponse[] = [];
    this.ev.dispatch();
    for (;;) {
      const n = this.ring.unconsumedResponses();
      if (n <= 0) break;
      for (let i = 0; i < n; i++) out.push(decodeResponse(this.ring.takeResponse(16)));
    }
    return out;
  }

  /** Push, run Dom0 rounds, return the responses (waiting for at least `want`). */
  async submit(want = 1): Promise<BlkifResponse[]> {
    this.push();
    const got: BlkifResponse[] = [];
    await this.tb.until(() => { got.push(...this.responses()); return got.length >= want; }, `${want} responses`);
    return got;
  }

  /** An indirect page holding `segs` (granted read-only, as blkfront does). */
  indirectPage(segs: readonly BlkifSegment[]): FrontPage {
    const p = this.page(true);
    this.mem.write(p.gpa, encodeIndirectSegments(segs, new Uint8Array(PAGE_SIZE)));
    return p;
  }
}

export { XEN_IO_PROTO_ABI_X86_64 };
