/**
 * The toolstack as Dom0 runs it: the domains it manages (those on its
 * command line and those `xl create` made), their lifecycle actions, and the
 * ControlHandlers behind `xl` (dom0/xl/handlers.ts) over XenCtrl, xenstored's
 * in-process privileged connection and xenconsoled.
 *
 * Lifecycle (libxl's domain death handling, as xl's `on_*` keys): when
 * VIRQ_DOM_EXC says a managed domain has shut down, its reason picks the
 * action: poweroff -> on_poweroff (default destroy), reboot -> on_reboot
 * (default restart), crash -> on_crash (default destroy), watchdog ->
 * on_watchdog, soft_reset -> on_soft_reset. `destroy` (and
 * coredump-destroy) destroys it; `restart` (rename-restart,
 * coredump-restart, soft-reset) destroys it and creates it again from the
 * same configuration; `preserve` leaves it as it is (shut down, still
 * listed, until `xl destroy`). A suspended domain is left alone.
 *
 * `xl shutdown` / `xl reboot` write control/shutdown ("poweroff" /
 * "reboot"), as libxl does for a PV guest. A guest that has not shut down
 * `shutdownTimeoutMs` after that (default 30 s; Dom0's `shutdown_timeout=`
 * in seconds) is destroyed: a guest that ignores the request does not
 * outlive it, and `xl shutdown -w` always returns.
 *
 * Everything here runs in Dom0's kernel loop, holding its pCPU: the handlers
 * through postedHandlers(), the rest from the loop itself.
 */
import { ControlError } from '../xl/protocol.ts';
import type { ConsoleStream, ControlHandlers, EventStream } from '../xl/handlers.ts';
import {
  hostUname, summaryFromDomainInfo, type DomainStats, type DomainSummary, type HostInfo, type SchedParams,
  type SchedPoolParams, type VbdInfo, type VbdStats, type VcpuInfo, type WatchEvent,
} from '../xl/types.ts';
import type { VbdDeviceStats } from '../blkback/driver.ts';
import type { PvBuildConfig } from '../builder.ts';
import type { DomainInfo, XenCtrl } from '../libxc.ts';
import type { Xenconsoled } from '../xenconsoled/daemon.ts';
import { shutdownReasonName } from '../names.ts';
import { XenbusError, type XenbusClient } from '../../shared/xenbus/client.ts';
import {
  SHUTDOWN_crash, SHUTDOWN_poweroff, SHUTDOWN_reboot, SHUTDOWN_soft_reset, SHUTDOWN_watchdog,
  XEN_SCHEDULER_ARINC653, XEN_SCHEDULER_CREDIT, XEN_SCHEDULER_CREDIT2, XEN_SCHEDULER_NULL, XEN_SCHEDULER_RTDS,
} from '../../shared/hypercall.ts';
import { XEN_SYSCTL_PHYSCAP_gnttab_v1, XEN_SYSCTL_PHYSCAP_pv } from '../../shared/abi/sysctl.ts';
import { createPvGuest, destroyPvGuest, domainPath } from './domain.ts';
import { toPvBuildConfig, type DomainConfig, type ShutdownAction } from './xlcfg.ts';
import { vdevNumber, type DiskSpec } from './disk.ts';
import { diskAdd, diskList, diskRemove, LIBXL_DESTROY_TIMEOUT_MS, VbdError } from './vbd.ts';

/** How long a guest has to act on control/shutdown before it is destroyed (Dom0's `shutdown_timeout=`, seconds). */
export const DEFAULT_SHUTDOWN_TIMEOUT_MS = 30_000;

/** The actions of a config (Xen's defaults for a domain built without one). */
export interface LifecycleActions {
  readonly onPoweroff: ShutdownAction;
  readonly onReboot: ShutdownAction;
  readonly onCrash: ShutdownAction;
  readonly onWatchdog: ShutdownAction;
  readonly onSoftReset: ShutdownAction;
}

export const DEFAULT_ACTIONS: LifecycleActions = {
  onPoweroff: 'destroy', onReboot: 'restart', onCrash: 'destroy', onWatchdog: 'destroy', onSoftReset: 'soft-reset',
};

/** The action for a shutdown reason; undefined: leave the domain alone (suspend). */
export function actionFor(a: LifecycleActions, reason: number): ShutdownAction | undefined {
  switch (reason) {
    case SHUTDOWN_poweroff: return a.onPoweroff;
    case SHUTDOWN_reboot: return a.onReboot;
    case SHUTDOWN_crash: return a.onCrash;
    case SHUTDOWN_watchdog: return a.onWatchdog;
    case SHUTDOWN_soft_reset: return a.onSoftReset;
    default: return undefined;
  }
}

/** What an action comes to here. */
export function actionKind(a: ShutdownAction): 'destroy' | 'restart' | 'preserve' {
  switch (a) {
    case 'destroy': case 'coredump-destroy': return 'destroy';
    case 'preserve': return 'preserve';
    default: return 'restart';
  }
}

const SCHEDULER_NAMES: Readonly<Record<number, string>> = {
  [XEN_SCHEDULER_CREDIT]: 'credit', [XEN_SCHEDULER_CREDIT2]: 'credit2', [XEN_SCHEDULER_NULL]: 'null',
  [XEN_SCHEDULER_RTDS]: 'rtds', [XEN_SCHEDULER_ARINC653]: 'arinc653',
};

interface Managed {
  readonly domid: number;
  name: string;
  /** What it was built from (disks follow block-attach/detach). */
  build: PvBuildConfig;
  /** The xl config it was created from; null for the command line's guests. */
  config: DomainConfig | null;
  readonly actions: LifecycleActions;
  readonly startTime: number;
  /** Its shutdown has been acted on (or is being). */
  handled: boolean;
  /** Being destroyed. */
  destroying: boolean;
  /** When control/shutdown was written (Date.now()), if it was. */
  askedAt?: number;
}

export interface Dom0ToolstackOptions {
  readonly ctrl: XenCtrl;
  /** Dom0's privileged xenstore connection (in-process). */
  readonly xb: XenbusClient;
  readonly consoled: Xenconsoled;
  /** Give the pCPU away for `ms` (host.sleep): between destroydomain retries. */
  readonly sleep: (ms: number) => Promise<void>;
  /** Dom0's messages (to the hypervisor console). */
  readonly say: (line: string) => void;
  /** Domain names, shared with the kernel's console prefixes. */
  readonly names: Map<number, string>;
  readonly shutdownTimeoutMs?: number;
  /** How long `xl block-detach` waits for the backend to close (LIBXL_DESTROY_TIMEOUT, 10 s). */
  readonly vbdRemoveTimeoutMs?: number;
  readonly now?: () => number;
  /**
   * The block backend's per-device counters (BlkbackDriver.stats, Linux
   * blkback's sysfs statistics/) for `xl top`; without it, no VBD counters.
   */
  readonly vbdStats?: () => readonly VbdDeviceStats[];
}

/** A spec's device number (xen-vbd-interface(7)), -1 if it has none. */
const vdevOf = (d: DiskSpec): number => vdevNumber(d.vdev) ?? -1;

const errText = (e: unknown): string => (e instanceof Error ? e.message : String(e));

/** A xenstore failure as the ControlError xl prints. */
function xsError(e: unknown, path: string): unknown {
  if (e instanceof XenbusError && e.errno !== 'unknown') return new ControlError(e.errno, `${path}: ${e.errno}`);
  return e;
}

/** A vbd failure as the ControlError xl prints (VbdError carries its errno name). */
function vbdError(e: unknown, domid: number): unknown {
  if (e instanceof VbdError) return new ControlError(e.code, e.message, { domid });
  if (e instanceof XenbusError && e.errno !== 'unknown') return new ControlError(e.errno, e.message, { domid });
  return e;
}

export class Dom0Toolstack implements ControlHandlers {
  private readonly managed = new Map<number, Managed>();
  private readonly bootTime = Date.now() / 1000;
  readonly shutdownTimeoutMs: number;
  private readonly now: () => number;

  constructor(private readonly o: Dom0ToolstackOptions) {
    this.shutdownTimeoutMs = o.shutdownTimeoutMs ?? DEFAULT_SHUTDOWN_TIMEOUT_MS;
    this.now = o.now ?? Date.now;
  }

  private creating = 0;

  /** Domains the toolstack manages now, and those being created (the host stays up while there are any). */
  get size(): number { return this.managed.size + this.creating; }

  /** Is `domid` ours? */
  has(domid: number): boolean { return this.managed.has(domid); }

  /**
   * Build a guest (createPvGuest) and, unless `paused`, unpause it; manage
   * it from now on with `config`'s actions (Xen's defaults without one).
   */
  async createGuest(build: PvBuildConfig, config: DomainConfig | null, paused: boolean): Promise<number> {
    const { ctrl, xb } = this.o;
    this.creating++;
    let g;
    try {
      g = await createPvGuest(ctrl, xb, build);
    } finally {
      this.creating--;
    }
    const m: Managed = {
      domid: g.domid, name: build.name, build: { ...build, uuid: g.uuid }, config, actions: config ?? DEFAULT_ACTIONS,
      startTime: Date.now() / 1000, handled: false, destroying: false,
    };
    this.managed.set(g.domid, m);
    this.o.names.set(g.domid, build.name);
    try {
      if (config?.cpuWeight !== undefined || config?.cap !== undefined) {
        const id = ctrl.schedId();
        const cur = ctrl.schedGetParams(g.domid, id);
        ctrl.schedSetParams(g.domid, id, { weight: config.cpuWeight ?? cur.weight, cap: config.cap ?? cur.cap });
      }
      // Serve its console before it runs (xenconsoled scans on @introduceDomain).
      await this.o.consoled.scan?.();
      if (!paused) ctrl.unpauseDomain(g.domid);
    } catch (e) {
      await this.destroyManaged(m).catch(() => undefined);
      throw e;
    }
    this.o.say(`created ${build.name} as domain ${g.domid} (${build.memoryMiB} MiB, kernel ${build.kernel})`);
    return g.domid;
  }

  private async destroyManaged(m: Managed): Promise<void> {
    m.destroying = true;
    try {
      await destroyPvGuest(this.o.ctrl, this.o.xb, m.domid, () => this.o.sleep(1));
    } finally {
      this.managed.delete(m.domid);
    }
  }

  /**
   * VIRQ_DOM_EXC: act on the managed domains that have shut down (`infos`:
   * the current domain list). Returns true if it destroyed any (they are
   * dying now: look again).
   */
  async domainExceptions(infos: readonly DomainInfo[]): Promise<boolean> {
    let again = false;
    const byId = new Map(infos.map((d) => [d.domid, d]));
    for (const m of [...this.managed.values()]) {
      const d = byId.get(m.domid);
      if (!d) { this.managed.delete(m.domid); continue; }
      if (!d.shutdown || d.dying || m.handled || m.destroying) continue;
      const action = actionFor(m.actions, d.shutdownReason);
      if (action === undefined) continue;
      m.handled = true;
      const kind = actionKind(action);
      const what = kind === 'destroy' ? 'destroying' : kind === 'restart' ? 'restarting' : 'preserving';
      this.o.say(`domain ${m.domid} (${m.name}) has shut down, reason ${shutdownReasonName(d.shutdownReason)}; ${what}`);
      if (kind === 'preserve') continue;
      try {
        await this.destroyManaged(m);
      } catch (e) {
        this.o.say(`cannot destroy domain ${m.domid}: ${errText(e)}`);
      }
      again = true;
      if (kind === 'restart') {
        try {
          await this.createGuest({ ...m.build, name: m.name }, m.config, false);
        } catch (e) {
          this.o.say(`cannot restart ${m.name}: ${errText(e)}`);
        }
      }
    }
    return again;
  }

  /** Destroy guests that were asked to shut down and have not within the timeout. Returns true if any. */
  async checkShutdownTimeouts(): Promise<boolean> {
    const now = this.now();
    let any = false;
    for (const m of [...this.managed.values()]) {
      if (m.askedAt === undefined || m.handled || m.destroying || now - m.askedAt < this.shutdownTimeoutMs) continue;
      const d = this.o.ctrl.domainInfo(m.domid);
      if (d?.shutdown) continue; // domainExceptions acts on it
      m.handled = true;
      this.o.say(`domain ${m.domid} (${m.name}) did not shut down within ${this.shutdownTimeoutMs / 1000} s; destroying`);
      try {
        await this.destroyManaged(m);
      } catch (e) {
        this.o.say(`cannot destroy domain ${m.domid}: ${errText(e)}`);
      }
      any = true;
    }
    return any;
  }

  /** A shutdown was asked of some guest and is still pending (the loop should keep checking). */
  get shutdownsPending(): boolean {
    for (const m of this.managed.values()) if (m.askedAt !== undefined && !m.handled) return true;
    return false;
  }

  private nameOf(domid: number): string {
    return this.managed.get(domid)?.name ?? this.o.names.get(domid) ?? (domid === 0 ? 'Domain-0' : '(null)');
  }

  // ------------------------------------------------------------ ControlHandlers

  list(): DomainSummary[] {
    return this.o.ctrl.listDomains(0, 1024).map((d) => summaryFromDomainInfo(
      d, this.nameOf(d.domid), this.managed.get(d.domid)?.startTime ?? this.bootTime,
    ));
  }

  domainConfig(domid: number): DomainConfig | null {
    const m = this.managed.get(domid);
    if (!m?.config) return null;
    return m.name === m.config.name ? m.config : { ...m.config, name: m.name };
  }

  info(): HostInfo {
    const { ctrl } = this.o;
    const xen = ctrl.xen;
    const p = ctrl.physinfo();
    const v = xen.version();
    const virtCaps = ['pv'];
    if (p.capabilities & XEN_SYSCTL_PHYSCAP_gnttab_v1) virtCaps.push('gnttab-v1');
    if (!(p.capabilities & XEN_SYSCTL_PHYSCAP_pv)) virtCaps.shift();
    let extra = '';
    try { extra = xen.extraversion(); } catch { /* none */ }
    return {
      ...hostUname(),
      nrCpus: p.nrCpus, maxCpuId: p.nrCpus - 1, nrNodes: 1, coresPerSocket: p.nrCpus, threadsPerCore: 1, cpuKhz: p.cpuKhz,
      hwCaps: [0, 0, 0, 0, 0, 0, 0, 0], virtCaps,
      totalPages: p.totalPages, freePages: p.freePages, outstandingPages: 0, sharingFreedPages: 0, sharingUsedFrames: 0,
      freeCpus: 0, pageSize: 4096,
      xenMajor: v.major, xenMinor: v.minor, xenExtra: extra, xenCaps: 'xen-3.0-ts hvm-3.0-riscv32',
      xenScheduler: this.schedulerName(), virtStart: 0, xenChangeset: 'xents', xenCommandline: '',
      ccCompiler: `node ${process.version}`, ccCompileBy: 'xents', ccCompileDomain: 'localdomain', ccCompileDate: '', buildId: '',
    };
  }

  private schedulerName(): string {
    const id = this.o.ctrl.schedId();
    return SCHEDULER_NAMES[id] ?? `sched-${id}`;
  }

  async create(config: DomainConfig, opts: { readonly paused: boolean }): Promise<number> {
    if (config.type !== 'pv') throw new ControlError('ENOSYS', `type "${config.type}" guests cannot be created here yet (only pv)`);
    return this.createGuest({ ...toPvBuildConfig(config), ...(config.uuid ? { uuid: config.uuid } : {}) }, config, opts.paused);
  }

  async destroy(domid: number): Promise<void> {
    const m = this.managed.get(domid);
    if (m) {
      if (m.destroying) return;
      m.handled = true;
      await this.destroyManaged(m);
    } else {
      await destroyPvGuest(this.o.ctrl, this.o.xb, domid, () => this.o.sleep(1));
    }
    this.o.say(`domain ${domid} (${this.nameOf(domid)}) destroyed by xl`);
  }

  private async askShutdown(domid: number, what: 'poweroff' | 'reboot'): Promise<void> {
    if (domid === 0) throw new ControlError('EPERM', `Domain-0 cannot be asked to ${what} (stop the host instead)`, { domid });
    const path = `${domainPath(domid)}/control/shutdown`;
    try {
      await this.o.xb.write(path, what);
    } catch (e) {
      throw xsError(e, path);
    }
    const m = this.managed.get(domid);
    if (m && m.askedAt === undefined) m.askedAt = this.now();
  }

  shutdown(domid: number): Promise<void> { return this.askShutdown(domid, 'poweroff'); }
  reboot(domid: number): Promise<void> { return this.askShutdown(domid, 'reboot'); }
  pause(domid: number): void { this.o.ctrl.pauseDomain(domid); }
  unpause(domid: number): void { this.o.ctrl.unpauseDomain(domid); }

  dmesg(clear: boolean): string {
    const { ctrl } = this.o;
    let r = ctrl.readConsole(0, false);
    let text = r.text;
    for (;;) {
      const n = ctrl.readConsole(r.index, true);
      if (n.text.length === 0) break;
      text += n.text;
      r = n;
    }
    if (clear) ctrl.readConsole(r.index, true, 0, true);
    return text;
  }

  vcpuList(domid: number): VcpuInfo[] {
    const { ctrl } = this.o;
    const d = ctrl.domainInfo(domid);
    if (!d) throw new ControlError('ESRCH', 'no such domain', { domid });
    const all = Array.from({ length: ctrl.physinfo().nrCpus }, (_, i) => i);
    const out: VcpuInfo[] = [];
    for (let v = 0; v <= d.maxVcpuId; v++) {
      const i = ctrl.getVcpuInfo(domid, v);
      out.push({ vcpuid: v, cpu: i.cpu, online: i.online, running: i.running, blocked: i.blocked, cpuTimeNs: Number(i.cpuTimeNs), hard: all, soft: all });
    }
    return out;
  }

  async memSet(domid: number, kib: number): Promise<void> {
    const d = this.o.ctrl.domainInfo(domid);
    if (!d) throw new ControlError('ESRCH', 'no such domain', { domid });
    const max = d.maxPages * 4;
    if (kib > max) throw new ControlError('EINVAL', `memory ${kib} KiB is above the domain's maximum of ${max} KiB (xl mem-max first)`);
    const path = `${domainPath(domid)}/memory/target`;
    try {
      await this.o.xb.write(path, String(kib));
    } catch (e) {
      throw xsError(e, path);
    }
  }

  memMax(domid: number, kib: number): void { this.o.ctrl.maxMem(domid, kib); }

  async rename(domid: number, name: string): Promise<void> {
    const { xb } = this.o;
    const dom = domainPath(domid);
    try {
      await xb.write(`${dom}/name`, name);
      const vm = await xb.tryRead(`${dom}/vm`);
      if (vm !== undefined && /^\/vm\/[0-9a-fA-F-]+$/.test(vm)) await xb.write(`${vm}/name`, name);
    } catch (e) {
      throw xsError(e, `${dom}/name`);
    }
    const m = this.managed.get(domid);
    if (m) m.name = name;
    this.o.names.set(domid, name);
  }

  schedGet(domid: number): SchedParams {
    const { ctrl } = this.o;
    const id = ctrl.schedId();
    const p = ctrl.schedGetParams(domid, id);
    return { scheduler: SCHEDULER_NAMES[id] ?? `sched-${id}`, weight: p.weight, cap: p.cap };
  }

  schedSet(domid: number, p: { readonly weight?: number; readonly cap?: number }): void {
    const { ctrl } = this.o;
    const id = ctrl.schedId();
    const cur = ctrl.schedGetParams(domid, id);
    ctrl.schedSetParams(domid, id, { weight: p.weight ?? cur.weight, cap: p.cap ?? cur.cap });
  }

  schedPool(): SchedPoolParams {
    // Xen's defaults (sched_credit_tslice_ms, sched_ratelimit_us): there is no sysctl for them here yet.
    return { scheduler: this.schedulerName(), poolName: 'Pool-0', tsliceMs: 30, ratelimitUs: 1000, migrationDelayUs: 0 };
  }

  /**
   * `xl top`'s counters (libxenstat's xenstat_collect_vbds): for each domain
   * with backend devices, one VbdStats per device from blkback's counters.
   * No network backend here: `nets` is empty.
   */
  stats(): DomainStats[] {
    const devs = this.o.vbdStats?.() ?? [];
    const byDom = new Map<number, VbdStats[]>();
    for (const v of devs) {
      let l = byDom.get(v.domid);
      if (!l) byDom.set(v.domid, (l = []));
      l.push({ dev: v.devid, error: false, ooReqs: v.ooReq, rdReqs: v.rdReq, wrReqs: v.wrReq, rdSects: v.rdSect, wrSects: v.wrSect });
    }
    return [...byDom].sort(([a], [b]) => a - b).map(([domid, vbds]) => ({ domid, nets: [], vbds }));
  }

  /**
   * xl block-attach: libxl_device_disk_add on a running guest. The device is
   * added to the config the guest is managed with, so a restart keeps it.
   */
  async blockAttach(domid: number, spec: DiskSpec): Promise<number> {
    if (domid === 0) throw new ControlError('EPERM', 'Domain-0 has no block frontend here: attach disks to guests', { domid });
    let devid: number;
    try {
      devid = (await diskAdd(this.o.xb, domid, spec)).devid;
    } catch (e) {
      throw vbdError(e, domid);
    }
    this.editDisks(domid, (ds) => [...ds.filter((d) => d.vdev !== spec.vdev), spec]);
    this.o.say(`domain ${domid} (${this.nameOf(domid)}): vbd ${spec.vdev} (${devid}) attached`);
    return devid;
  }

  /**
   * xl block-detach: libxl_device_disk_remove (backend asked to close,
   * waited for up to vbdRemoveTimeoutMs) or, with `force`,
   * libxl_device_disk_destroy (removed at once).
   */
  async blockDetach(domid: number, devid: number, force: boolean): Promise<void> {
    if (domid === 0) throw new ControlError('EPERM', 'Domain-0 has no block devices here', { domid });
    try {
      await diskRemove(this.o.xb, domid, devid, {
        // A cancellable timer rather than o.sleep: a backend that closes at once leaves no 10 s timer behind.
        force, timeoutMs: this.o.vbdRemoveTimeoutMs ?? LIBXL_DESTROY_TIMEOUT_MS, log: this.o.say,
      });
    } catch (e) {
      throw vbdError(e, domid);
    }
    this.editDisks(domid, (ds) => ds.filter((d) => vdevOf(d) !== devid));
  }

  /** xl block-list: the guest's vbds. */
  async blockList(domid: number): Promise<VbdInfo[]> {
    try {
      return await diskList(this.o.xb, domid);
    } catch (e) {
      throw vbdError(e, domid);
    }
  }

  /** Keep a managed guest's config (and build) in step with attach/detach, as libxl updates the domain's stored config. */
  private editDisks(domid: number, f: (ds: readonly DiskSpec[]) => DiskSpec[]): void {
    const m = this.managed.get(domid);
    if (!m) return;
    m.build = { ...m.build, disks: f(m.build.disks ?? []) };
    if (m.config) m.config = { ...m.config, disks: f(m.config.disks) };
  }

  async xsDirectory(path: string): Promise<string[]> {
    try { return await this.o.xb.directory(path); } catch (e) { throw xsError(e, path); }
  }

  async xsRead(path: string): Promise<Uint8Array> {
    try { return await this.o.xb.readBytes(path); } catch (e) { throw xsError(e, path); }
  }

  async xsWrite(path: string, value: Uint8Array): Promise<void> {
    try { await this.o.xb.write(path, value); } catch (e) { throw xsError(e, path); }
  }

  async xsRm(path: string): Promise<void> {
    try { await this.o.xb.rm(path); } catch (e) { throw xsError(e, path); }
  }

  async xsGetPerms(path: string): Promise<string[]> {
    try {
      return (await this.o.xb.getPerms(path)).map((p) => `${p.access}${p.domid}`);
    } catch (e) {
      throw xsError(e, path);
    }
  }

  private nextWatch = 1;

  async xsWatch(path: string, token: string, stream: EventStream<WatchEvent>): Promise<void> {
    if (stream.signal.aborted) return;
    let h;
    try {
      h = await this.o.xb.watch(path, (p) => stream.emit({ path: p, token }), `xl-watch-${this.nextWatch++}`);
    } catch (e) {
      throw xsError(e, path);
    }
    await new Promise<void>((resolve) => {
      if (stream.signal.aborted) resolve();
      else stream.signal.addEventListener('abort', () => resolve(), { once: true });
    });
    await h.unwatch().catch(() => undefined);
  }

  async console(domid: number, stream: ConsoleStream): Promise<void> {
    const { consoled } = this.o;
    // A domain just created is connected by xenconsoled's next scan.
    for (let i = 0; !consoled.domains.includes(domid); i++) {
      if (i >= 100 || stream.signal.aborted) throw new ControlError('ENOENT', 'the domain has no console served by xenconsoled', { domid });
      await new Promise((r) => setTimeout(r, 20));
    }
    await new Promise<void>((resolve) => {
      const att = consoled.attach(domid, (bytes) => stream.emit(bytes.slice()), () => resolve());
      if (!att) { resolve(); return; }
      stream.onInput((data) => { consoled.input(domid, data); });
      stream.signal.addEventListener('abort', () => { att.detach(); resolve(); }, { once: true });
    });
  }
}
