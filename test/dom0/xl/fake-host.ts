/**
 * A test double of the Dom0 side of the control socket: ControlHandlers over
 * an in-memory host (domains, a console ring, a xenstore tree). It exists to
 * test the protocol, the server and the CLI from the other side; it models
 * just enough behaviour (shutdown then on_poweroff=destroy, consoles that end
 * with their domain, watches) for their tests.
 */
import type { DomainConfig } from '../../../dom0/toolstack/xlcfg.ts';
import { vdevNumber, type DiskSpec } from '../../../dom0/toolstack/disk.ts';
import type { ConsoleStream, ControlHandlers, EventStream } from '../../../dom0/xl/handlers.ts';
import { ControlError } from '../../../dom0/xl/protocol.ts';
import type {
  DomainStats, DomainSummary, HostInfo, SchedParams, SchedPoolParams, VcpuInfo, WatchEvent,
  VbdInfo,
} from '../../../dom0/xl/types.ts';

type Mutable<T> = { -readonly [K in keyof T]: T[K] };

export const FAKE_HOST_INFO: HostInfo = {
  host: 'testhost', release: '6.1.0', version: '#1 SMP', machine: 'x86_64',
  nrCpus: 2, maxCpuId: 1, nrNodes: 1, coresPerSocket: 2, threadsPerCore: 1, cpuKhz: 2400000,
  hwCaps: [0, 0, 0, 0, 0, 0, 0, 0], virtCaps: ['pv', 'hvm'],
  totalPages: 65536, freePages: 60000, outstandingPages: 0, sharingFreedPages: 0, sharingUsedFrames: 0, freeCpus: 0,
  pageSize: 4096, xenMajor: 4, xenMinor: 17, xenExtra: '.0-ts', xenCaps: 'xen-3.0-ts hvm-3.0-riscv32', xenScheduler: 'credit',
  virtStart: 0, xenChangeset: 'xents', xenCommandline: 'sched=credit', ccCompiler: 'tsc', ccCompileBy: 'xents',
  ccCompileDomain: 'localdomain', ccCompileDate: '2024-01-01', buildId: '',
};

export interface FakeDomain {
  summary: Mutable<DomainSummary>;
  config: DomainConfig | null;
  sched: SchedParams;
  consoles: Set<ConsoleStream>;
}

export class FakeHost implements ControlHandlers {
  readonly domains = new Map<number, FakeDomain>();
  readonly xenstore = new Map<string, Uint8Array>([['/', new Uint8Array()], ['/local', new Uint8Array()], ['/local/domain', new Uint8Array()]]);
  readonly watches = new Set<{ path: string; token: string; s: EventStream<WatchEvent> }>();
  readonly calls: string[] = [];
  dmesgText = '(XEN) Xen version 4.17.0-ts\n(XEN) 2 pCPUs\n';
  /** Delay before a shut-down domain is destroyed (on_poweroff = destroy). */
  shutdownDelayMs = 30;
  private nextDomid = 1;

  constructor() {
    this.add(0, 'Domain-0', null, 16 * 1024, 1);
  }

  private add(domid: number, name: string, config: DomainConfig | null, memKiB: number, vcpus: number, paused = false): FakeDomain {
    const d: FakeDomain = {
      summary: {
        domid, name, uuid: `00000000-0000-0000-0000-${String(domid).padStart(12, '0')}`, memKiB, maxMemKiB: memKiB,
        outstandingKiB: 0, vcpus, maxVcpus: vcpus, running: domid === 0, blocked: domid !== 0 && !paused, paused,
        shutdown: false, dying: false, shutdownReason: 0, cpuTimeNs: 1_500_000_000 * (domid + 1), startTime: 1_700_000_000,
      },
      config,
      sched: { scheduler: 'credit', weight: 256, cap: 0 },
      consoles: new Set(),
    };
    this.domains.set(domid, d);
    this.xsSet(`/local/domain/${domid}`, new Uint8Array());
    this.xsSet(`/local/domain/${domid}/name`, new TextEncoder().encode(name));
    return d;
  }

  private get(domid: number): FakeDomain {
    const d = this.domains.get(domid);
    if (!d) throw new ControlError('ESRCH', 'no such domain', { domid });
    return d;
  }

  private remove(domid: number): void {
    const d = this.domains.get(domid);
    if (!d) return;
    this.domains.delete(domid);
    for (const k of [...this.xenstore.keys()]) if (k === `/local/domain/${domid}` || k.startsWith(`/local/domain/${domid}/`)) this.xsDelete(k);
    // A console session ends with its domain.
    for (const c of d.consoles) (c as unknown as { end?: () => void }).end?.();
  }

  list(): DomainSummary[] {
    this.calls.push('list');
    return [...this.domains.values()].sort((a, b) => a.summary.domid - b.summary.domid).map((d) => ({ ...d.summary }));
  }
  domainConfig(domid: number): DomainConfig | null { return this.get(domid).config; }
  info(): HostInfo { return FAKE_HOST_INFO; }
  create(config: DomainConfig, opts: { paused: boolean }): number {
    this.calls.push(`create ${config.name}${opts.paused ? ' paused' : ''}`);
    if (config.name === 'fail-build') throw new Error('cannot build: out of memory');
    const domid = this.nextDomid++;
    this.add(domid, config.name, config, config.memory * 1024, config.vcpus, opts.paused).summary.maxMemKiB = config.maxmem * 1024;
    return domid;
  }
  destroy(domid: number): void { this.calls.push(`destroy ${domid}`); this.get(domid); this.remove(domid); }
  shutdown(domid: number): void {
    this.calls.push(`shutdown ${domid}`);
    const d = this.get(domid);
    setTimeout(() => {
      d.summary.shutdown = true;
      d.summary.running = d.summary.blocked = false;
      setTimeout(() => this.remove(domid), this.shutdownDelayMs);
    }, this.shutdownDelayMs);
  }
  reboot(domid: number): void { this.calls.push(`reboot ${domid}`); this.get(domid); }
  pause(domid: number): void { this.calls.push(`pause ${domid}`); const d = this.get(domid); d.summary.paused = true; d.summary.blocked = false; }
  unpause(domid: number): void { this.calls.push(`unpause ${domid}`); const d = this.get(domid); d.summary.paused = false; d.summary.blocked = true; }
  dmesg(clear: boolean): string { const t = this.dmesgText; if (clear) this.dmesgText = ''; return t; }
  vcpuList(domid: number): VcpuInfo[] {
    const d = this.get(domid);
    return Array.from({ length: d.summary.maxVcpus }, (_, i) => ({
      vcpuid: i, cpu: i % 2, online: true, running: d.summary.running, blocked: d.summary.blocked,
      cpuTimeNs: 1_000_000_000, hard: [0, 1], soft: [0, 1],
    }));
  }
  memSet(domid: number, kib: number): void { this.calls.push(`mem-set ${domid} ${kib}`); const d = this.get(domid); if (kib > d.summary.maxMemKiB) throw new ControlError('EINVAL', `memory ${kib} KiB is above the domain's maximum of ${d.summary.maxMemKiB} KiB`); d.summary.memKiB = kib; }
  memMax(domid: number, kib: number): void { this.calls.push(`mem-max ${domid} ${kib}`); this.get(domid).summary.maxMemKiB = kib; }
  rename(domid: number, name: string): void { this.calls.push(`rename ${domid} ${name}`); this.get(domid).summary.name = name; }
  schedGet(domid: number): SchedParams { return { ...this.get(domid).sched }; }
  schedSet(domid: number, p: { weight?: number; cap?: number }): void {
    const d = this.get(domid);
    d.sched = { ...d.sched, ...(p.weight !== undefined ? { weight: p.weight } : {}), ...(p.cap !== undefined ? { cap: p.cap } : {}) };
  }
  schedPool(): SchedPoolParams { return { scheduler: 'credit', poolName: 'Pool-0', tsliceMs: 30, ratelimitUs: 1000, migrationDelayUs: 0 }; }
  stats(): DomainStats[] {
    return [...this.domains.keys()].map((domid) => ({
      domid, nets: domid === 0 ? [] : [{ devid: 0, txBytes: 4096, txPackets: 4, txErrs: 0, txDrop: 0, rxBytes: 8192, rxPackets: 8, rxErrs: 0, rxDrop: 0 }],
      vbds: [],
    }));
  }

  // ------------------------------------------------------------ vbds

  /** Attached block devices per domain: devid -> spec. */
  readonly vbds = new Map<number, Map<number, DiskSpec>>();

  blockAttach(domid: number, spec: DiskSpec): number {
    this.get(domid);
    const devid = vdevNumber(spec.vdev)!;
    const ds = this.vbds.get(domid) ?? new Map<number, DiskSpec>();
    if (ds.has(devid)) throw new ControlError('EEXIST', `device already exists in xenstore (vdev ${spec.vdev}, devid ${devid})`);
    if (spec.target.startsWith('/missing')) throw new ControlError('ENOENT', `Disk vdev=${spec.vdev} failed to stat: ${spec.target}: No such file or directory`);
    ds.set(devid, spec);
    this.vbds.set(domid, ds);
    this.calls.push(`block-attach ${domid} ${devid} ${spec.target}`);
    return devid;
  }
  blockDetach(domid: number, devid: number, force: boolean): void {
    this.get(domid);
    if (!this.vbds.get(domid)?.delete(devid)) throw new ControlError('ENOENT', `Device ${devid} not connected`);
    this.calls.push(`block-detach ${domid} ${devid}${force ? ' force' : ''}`);
  }
  blockList(domid: number): VbdInfo[] {
    this.get(domid);
    return [...(this.vbds.get(domid) ?? new Map<number, DiskSpec>()).entries()].sort(([a], [b]) => a - b).map(([devid, s], i) => ({
      devid, vdev: s.vdev, backendId: 0, frontendId: domid, state: i === 0 ? 4 : 1, evtchn: i === 0 ? 3 : -1, ringRef: i === 0 ? 8 : -1,
      backendPath: `/local/domain/0/backend/vbd/${domid}/${devid}`,
    }));
  }

  // ------------------------------------------------------------ xenstore

  private xsSet(path: string, v: Uint8Array): void {
    const parts = path.split('/').filter(Boolean);
    for (let i = 1; i < parts.length; i++) {
      const p = '/' + parts.slice(0, i).join('/');
      if (!this.xenstore.has(p)) this.xenstore.set(p, new Uint8Array());
    }
    this.xenstore.set(path, v);
    this.fire(path);
  }
  private xsDelete(path: string): void {
    for (const k of [...this.xenstore.keys()]) if (k === path || k.startsWith(path + '/')) this.xenstore.delete(k);
    this.fire(path);
  }
  private fire(path: string): void {
    for (const w of this.watches) if (path === w.path || path.startsWith(w.path + '/')) w.s.emit({ path, token: w.token });
  }

  xsDirectory(path: string): string[] {
    if (!this.xenstore.has(path)) throw new ControlError('ENOENT', `${path}: no such node`);
    const prefix = path === '/' ? '/' : path + '/';
    return [...this.xenstore.keys()].filter((k) => k !== '/' && k.startsWith(prefix) && !k.slice(prefix.length).includes('/')).map((k) => k.slice(prefix.length)).sort();
  }
  xsRead(path: string): Uint8Array {
    const v = this.xenstore.get(path);
    if (v === undefined) throw new ControlError('ENOENT', `${path}: no such node`);
    return v;
  }
  xsWrite(path: string, value: Uint8Array): void {
    if (!path.startsWith('/')) throw new ControlError('EINVAL', 'relative path');
    this.xsSet(path, value);
  }
  xsRm(path: string): void {
    if (!this.xenstore.has(path)) throw new ControlError('ENOENT', `${path}: no such node`);
    this.xsDelete(path);
  }
  xsGetPerms(path: string): string[] {
    this.xsRead(path);
    const m = /^\/local\/domain\/(\d+)/.exec(path);
    return m ? [`n${m[1]}`, 'r0'] : ['n0'];
  }
  xsWatch(path: string, token: string, s: EventStream<WatchEvent>): Promise<void> {
    const w = { path, token, s };
    this.watches.add(w);
    s.emit({ path, token });
    return new Promise((resolve) => {
      s.signal.addEventListener('abort', () => { this.watches.delete(w); resolve(); }, { once: true });
    });
  }

  // ------------------------------------------------------------ console

  console(domid: number, s: ConsoleStream): Promise<void> {
    const d = this.get(domid);
    return new Promise((resolve) => {
      const session = Object.assign(s, { end: () => { d.consoles.delete(session); resolve(); } });
      d.consoles.add(session);
      s.emit(new TextEncoder().encode(`${d.summary.name} console\n`));
      // Echo what the user types, upper-cased, as a guest's shell might.
      s.onInput((data) => {
        const text = new TextDecoder().decode(data);
        s.emit(new TextEncoder().encode(text.toUpperCase()));
        if (text.includes('poweroff')) this.shutdown(domid);
      });
      s.signal.addEventListener('abort', () => session.end(), { once: true });
    });
  }
}
