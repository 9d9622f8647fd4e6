/**
 * ControlHandlers: what Dom0 implements for `xl` to work on the running host.
 *
 * The control server (server.ts) owns the socket, the protocol, argument
 * checking and the resolution of domain names and ids; it calls these
 * methods with checked arguments and numeric domids of domains that existed
 * a moment ago. A method reports failure by throwing: a ControlError (code,
 * message, domid), a XenError from libxc (its errno becomes the code), or any
 * Error (code EFAIL). Messages should say what failed; the server adds which
 * domain.
 */
import type { DiskSpec } from '../toolstack/disk.ts';
import type { DomainConfig } from '../toolstack/xlcfg.ts';
import type {
  DomainStats, DomainSummary, HostInfo, SchedParams, SchedPoolParams, VbdInfo, VcpuInfo, WatchEvent,
} from './types.ts';

export type Awaitable<T> = T | Promise<T>;

/** The server's side of a streaming command. */
export interface EventStream<E> {
  /** Send one event to the client. Dropped once the stream has ended. */
  emit(event: E): void;
  /** Aborted when the client cancels, disconnects or stops reading. */
  readonly signal: AbortSignal;
}

/** A console session: output with emit(), the user's keystrokes through onInput. */
export interface ConsoleStream extends EventStream<Uint8Array> {
  onInput(listener: (data: Uint8Array) => void): void;
}

export interface ControlHandlers {
  /** Every domain, Dom0 included, ascending domid (xl list, uptime, top). */
  list(): Awaitable<readonly DomainSummary[]>;
  /** The configuration `domid` was created with; null for Dom0 or one built otherwise (xl list -l). */
  domainConfig(domid: number): Awaitable<DomainConfig | null>;
  /** The host (xl info); also gives nr_cpus to vcpu-list and top. */
  info(): Awaitable<HostInfo>;
  /**
   * Build the domain and (unless `paused`) unpause it; return its domid.
   * The config is validated and its name is unique when this is called.
   * Honour its on_poweroff / on_reboot / on_crash actions from then on.
   */
  create(config: DomainConfig, opts: { readonly paused: boolean }): Awaitable<number>;
  /** XEN_DOMCTL_destroydomain (retried on -EAGAIN). Never called for Dom0. */
  destroy(domid: number): Awaitable<void>;
  /** Ask the guest to power off (control/shutdown = "poweroff", or SCHEDOP_remote_shutdown). Returns once asked. */
  shutdown(domid: number): Awaitable<void>;
  /** Ask the guest to reboot (control/shutdown = "reboot"); on_reboot decides what follows. */
  reboot(domid: number): Awaitable<void>;
  pause(domid: number): Awaitable<void>;
  unpause(domid: number): Awaitable<void>;
  /** The hypervisor console ring (XEN_SYSCTL_readconsole from index 0); `clear` empties it after. */
  dmesg(clear: boolean): Awaitable<string>;
  /** Every vCPU of `domid`, online or not. */
  vcpuList(domid: number): Awaitable<readonly VcpuInfo[]>;
  /** Set the balloon target (memory/target in xenstore), KiB. */
  memSet(domid: number, kib: number): Awaitable<void>;
  /** XEN_DOMCTL_max_mem, KiB. */
  memMax(domid: number, kib: number): Awaitable<void>;
  /** Rename; the new name is valid and unused when this is called. */
  rename(domid: number, name: string): Awaitable<void>;
  /** XEN_DOMCTL_scheduler_op getinfo, with the host scheduler's name. */
  schedGet(domid: number): Awaitable<SchedParams>;
  /** XEN_DOMCTL_scheduler_op putinfo; a field left out is left as it is. */
  schedSet(domid: number, p: { readonly weight?: number; readonly cap?: number }): Awaitable<void>;
  /** The scheduler's global parameters. */
  schedPool(): Awaitable<SchedPoolParams>;
  /** Ring traffic per domain (backends' counters), for xl top. */
  stats(): Awaitable<readonly DomainStats[]>;
  /**
   * Add a virtual block device (libxl_device_disk_add); returns its devid.
   * `spec` is validated; `domid` is a guest, never Dom0. Fails with EEXIST
   * when the vdev is in use, ENOENT when the backing file is missing.
   */
  blockAttach(domid: number, spec: DiskSpec): Awaitable<number>;
  /**
   * Remove device `devid`: ask the backend to close and wait for it
   * (libxl_device_disk_remove), or with `force` remove it at once
   * (libxl_device_disk_destroy). ENOENT when there is no such device.
   */
  blockDetach(domid: number, devid: number, force: boolean): Awaitable<void>;
  /** The guest's virtual block devices, ascending devid (xl block-list). */
  blockList(domid: number): Awaitable<readonly VbdInfo[]>;
  /** xenstore, as a privileged (Dom0) connection. */
  xsDirectory(path: string): Awaitable<readonly string[]>;
  xsRead(path: string): Awaitable<Uint8Array>;
  xsWrite(path: string, value: Uint8Array): Awaitable<void>;
  xsRm(path: string): Awaitable<void>;
  /** Permissions as Xen prints them: n0, r1, w2, b3 (owner first). */
  xsGetPerms(path: string): Awaitable<readonly string[]>;
  /**
   * Watch `path` with `token`: emit an event for every firing (the first one
   * right away, as xenstored does) until `stream.signal` aborts, then remove
   * the watch and resolve.
   */
  xsWatch(path: string, token: string, stream: EventStream<WatchEvent>): Awaitable<void>;
  /**
   * Attach to `domid`'s console: emit what the guest writes, deliver input
   * to it, resolve when the domain is gone or `stream.signal` aborts.
   */
  console(domid: number, stream: ConsoleStream): Awaitable<void>;
}

/** Every method of ControlHandlers, for wrappers. */
export const CONTROL_HANDLER_METHODS = [
  'list', 'domainConfig', 'info', 'create', 'destroy', 'shutdown', 'reboot', 'pause', 'unpause', 'dmesg', 'vcpuList',
  'memSet', 'memMax', 'rename', 'schedGet', 'schedSet', 'schedPool', 'stats', 'blockAttach', 'blockDetach', 'blockList', 'xsDirectory', 'xsRead', 'xsWrite', 'xsRm',
  'xsGetPerms', 'xsWatch', 'console',
] as const satisfies readonly (keyof ControlHandlers)[];

/**
 * Handlers whose every call, console keystroke and stream abort runs as work
 * posted to `post` rather than in the socket's I/O callback: for Dom0, whose
 * host I/O callbacks must not make hypercalls themselves but queue the work
 * for its kernel loop (dom0/loop.ts, Dom0Loop.post). Results and failures come
 * back as the returned promises; emit() may be called from anywhere.
 */
export function postedHandlers(h: ControlHandlers, post: (work: () => void) => void): ControlHandlers {
  const run = <T>(fn: () => T | Promise<T>): Promise<T> => new Promise<T>((resolve, reject) => {
    post(() => {
      try {
        Promise.resolve(fn()).then(resolve, reject);
      } catch (e) {
        reject(e);
      }
    });
  });
  const relay = <S extends EventStream<unknown>>(s: S): S => {
    const ac = new AbortController();
    if (s.signal.aborted) ac.abort();
    else s.signal.addEventListener('abort', () => post(() => ac.abort()), { once: true });
    const out = { emit: (e: unknown) => s.emit(e), signal: ac.signal } as unknown as S;
    const cs = s as unknown as Partial<ConsoleStream>;
    if (typeof cs.onInput === 'function') {
      (out as unknown as ConsoleStream).onInput = (listener) => cs.onInput!((data) => post(() => listener(data)));
    }
    return out;
  };
  const wrapped = {} as Record<string, unknown>;
  for (const m of CONTROL_HANDLER_METHODS) {
    wrapped[m] = (...args: unknown[]) => {
      const a = m === 'xsWatch' ? [args[0], args[1], relay(args[2] as EventStream<unknown>)]
        : m === 'console' ? [args[0], relay(args[1] as ConsoleStream)] : args;
      return run(() => (h[m] as (...x: unknown[]) => unknown)(...a));
    };
  }
  return wrapped as unknown as ControlHandlers;
}
