/**
 * Virtual block devices (vbd): the toolstack's half, as libxl's
 * libxl__device_disk_add / libxl__initiate_device_generic_remove /
 * libxl_device_disk_getinfo do it. The toolstack writes the device's
 * xenstore nodes; Dom0's blkback (dom0/blkback/) watches
 * /local/domain/0/backend/vbd and does the XenbusState handshake with the
 * guest's blkfront.
 *
 * Nodes of device <devid> (the vdev's number, xen-vbd-interface(7)) of guest
 * <D>, backend domain B = 0, all written in one transaction:
 *
 *   /local/domain/B/backend/vbd/<D>/<devid>   [nB, r<D>] (owned by the backend, the guest reads)
 *     frontend = /local/domain/<D>/device/vbd/<devid>, frontend-id = <D>,
 *     params = the target path (null device: its size in bytes),
 *     online = 1, removable = 1 for a CD-ROM else 0, bootable = 1,
 *     state = 1 (Initialising), dev = <vdev>, type = phy | null,
 *     mode = w | r, device-type = disk | cdrom,
 *     direct-io-safe = 1 (only when asked), discard-enable = 1 | 0
 *     (libxl's default: 1 for a writable disk)
 *   /local/domain/<D>/device/vbd/<devid>       [n<D>, rB] (owned by the guest, the backend reads)
 *     backend = the backend path, backend-id = B, state = 1,
 *     virtual-device = <devid>, device-type = disk | cdrom,
 *     trusted = 1 | 0 (libxl 4.17, XSA-403; default 1)
 *   /libxl/<D>/device/vbd/<devid>               [n0] (inherited from /libxl/<D>)
 *     frontend, backend, and a copy of the backend's entries (libxl keeps
 *     one so that it need not trust the backend's nodes)
 *
 * The backing file is checked (and with our `size=` extension, created
 * sparse) before any node is written.
 */
import { open, stat, unlink } from 'node:fs/promises';
import { NO_TX, XenbusError, type TxId, type XenbusClient, type XenbusPerm } from '../../shared/xenbus/client.ts';
import { XenbusState } from '../../shared/xenbus/state.ts';
import type { VbdInfo } from '../xl/types.ts';
import { vdevNumber, type DiskSpec } from './disk.ts';

/** The backend domain of every vbd here (Dom0's blkback). */
export const VBD_BACKEND_DOMID = 0;
/** LIBXL_DESTROY_TIMEOUT: how long removal waits for the backend to close. */
export const LIBXL_DESTROY_TIMEOUT_MS = 10_000;

export type VbdErrorCode = 'EEXIST' | 'ENOENT' | 'EINVAL' | 'EPERM' | 'EIO';

/** A vbd operation refused or failed; `code` is the Xen errno name xl's server reports. */
export class VbdError extends Error {
  constructor(readonly code: VbdErrorCode, message: string) {
    super(message);
    this.name = 'VbdError';
  }
}

export const vbdFrontendPath = (domid: number, devid: number): string => `/local/domain/${domid}/device/vbd/${devid}`;
export const vbdBackendDir = (domid: number, backendDomid = VBD_BACKEND_DOMID): string => `/local/domain/${backendDomid}/backend/vbd/${domid}`;
export const vbdBackendPath = (domid: number, devid: number, backendDomid = VBD_BACKEND_DOMID): string => `${vbdBackendDir(domid, backendDomid)}/${devid}`;
export const vbdLibxlPath = (domid: number, devid: number): string => `/libxl/${domid}/device/vbd/${devid}`;

/** The nodes diskAdd writes for a device: paths, values and permissions. Pure. */
export interface VbdEntries {
  readonly devid: number;
  readonly frontendPath: string;
  readonly backendPath: string;
  readonly libxlPath: string;
  readonly frontend: Readonly<Record<string, string>>;
  readonly backend: Readonly<Record<string, string>>;
  readonly libxl: Readonly<Record<string, string>>;
  /** libxl__device_generic_add's frontend_perms: the guest owns it, the backend reads. */
  readonly frontendPerms: readonly XenbusPerm[];
  /** backend_perms: the backend owns it, the guest reads. */
  readonly backendPerms: readonly XenbusPerm[];
}

/** `params` of a spec: the target path, or a null device's size in bytes. */
export function vbdParams(spec: DiskSpec): string {
  return spec.backendtype === 'null' ? String(spec.size ?? 0) : spec.target;
}

/** The devid of a vdev name or number (libxl__device_disk_dev_number); null if it encodes none. */
export function parseVbdDevid(v: string): number | null {
  return vdevNumber(v);
}

/** What libxl__device_disk_add writes for `spec` on guest `domid` (libxl_disk.c device_disk_add). */
export function vbdEntries(domid: number, spec: DiskSpec): VbdEntries {
  const devid = vdevNumber(spec.vdev);
  if (devid === null) throw new VbdError('EINVAL', `Invalid or unsupported virtual disk identifier ${spec.vdev}`);
  const B = VBD_BACKEND_DOMID;
  const frontendPath = vbdFrontendPath(domid, devid);
  const backendPath = vbdBackendPath(domid, devid, B);
  const cdrom = spec.devtype === 'cdrom';
  const rw = spec.access === 'rw';
  const backend: Record<string, string> = {
    frontend: frontendPath,
    params: vbdParams(spec),
    'frontend-id': String(domid),
    online: '1',
    removable: cdrom ? '1' : '0',
    bootable: '1',
    state: String(XenbusState.Initialising),
    dev: spec.vdev,
    type: spec.backendtype === 'null' ? 'null' : 'phy',
    mode: rw ? 'w' : 'r',
    'device-type': cdrom ? 'cdrom' : 'disk',
  };
  if (spec.directIoSafe) backend['direct-io-safe'] = '1';
  // libxl__device_disk_setdefault: discard_enable defaults to the disk being writable.
  backend['discard-enable'] = (spec.discard ?? rw) ? '1' : '0';
  const frontend: Record<string, string> = {
    backend: backendPath,
    'backend-id': String(B),
    state: String(XenbusState.Initialising),
    'virtual-device': String(devid),
    'device-type': cdrom ? 'cdrom' : 'disk',
    trusted: (spec.trusted ?? true) ? '1' : '0',
  };
  const libxl: Record<string, string> = { ...backend, frontend: frontendPath, backend: backendPath };
  return {
    devid, frontendPath, backendPath, libxlPath: vbdLibxlPath(domid, devid), frontend, backend, libxl,
    frontendPerms: [{ domid, access: 'n' }, { domid: B, access: 'r' }],
    backendPerms: [{ domid: B, access: 'n' }, { domid, access: 'r' }],
  };
}

// ---------------------------------------------------------------- the backing file

/** What the backing check found: a file to use, one to create, or nothing to check. */
export type BackingPlan = { readonly kind: 'none' } | { readonly kind: 'exists' } | { readonly kind: 'create'; readonly path: string; readonly size: number };

const errnoText: Readonly<Record<string, string>> = {
  ENOENT: 'No such file or directory', EACCES: 'Permission denied', ENOTDIR: 'Not a directory', ELOOP: 'Too many levels of symbolic links',
  EEXIST: 'File exists', ENOSPC: 'No space left on device', EISDIR: 'Is a directory', EROFS: 'Read-only file system',
};
const strerror = (e: unknown): string => {
  const code = (e as NodeJS.ErrnoException)?.code;
  return (code !== undefined && errnoText[code]) || (e instanceof Error ? e.message : String(e));
};

/**
 * libxl__device_disk_set_backend's stat of the target, without side effects:
 * a missing target is refused ("Disk vdev=xvda failed to stat: <path>: No
 * such file or directory") unless `size=` asks for it to be created; a
 * target that is not a regular file is refused (blkback serves files).
 */
export async function checkBacking(spec: DiskSpec): Promise<BackingPlan> {
  if (spec.backendtype === 'null' || spec.target === '') return { kind: 'none' };
  try {
    const st = await stat(spec.target);
    if (!st.isFile()) throw new VbdError('EINVAL', `Disk vdev=${spec.vdev}: ${spec.target} is not a regular file (Dom0's blkback serves files)`);
    return { kind: 'exists' };
  } catch (e) {
    if (e instanceof VbdError) throw e;
    if ((e as NodeJS.ErrnoException).code === 'ENOENT' && spec.size !== undefined) return { kind: 'create', path: spec.target, size: spec.size };
    throw new VbdError((e as NodeJS.ErrnoException).code === 'ENOENT' ? 'ENOENT' : 'EIO',
      `Disk vdev=${spec.vdev} failed to stat: ${spec.target}: ${strerror(e)}`);
  }
}

/**
 * Create the target sparse at `size` bytes: open with 'wx' (never over an
 * existing file), then ftruncate. Returns false if the file appeared in the
 * meantime (it is then used as it is).
 */
export async function createBacking(vdev: string, path: string, size: number): Promise<boolean> {
  let fh;
  try {
    fh = await open(path, 'wx', 0o600);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'EEXIST') return false;
    throw new VbdError('EIO', `Disk vdev=${vdev} failed to create ${path}: ${strerror(e)}`);
  }
  try {
    await fh.truncate(size);
  } catch (e) {
    await fh.close().catch(() => undefined);
    await unlink(path).catch(() => undefined);
    throw new VbdError('EIO', `Disk vdev=${vdev} failed to size ${path} to ${size} bytes: ${strerror(e)}`);
  }
  await fh.close();
  return true;
}

// ---------------------------------------------------------------- add

/** A device diskAdd created. */
export interface VbdDevice {
  readonly devid: number;
  readonly vdev: string;
  readonly frontendPath: string;
  readonly backendPath: string;
  /** The backing file diskAdd created (size=), for the caller to remove if it undoes the device. */
  readonly createdFile?: string;
}

async function exists(xb: XenbusClient, path: string, t: TxId): Promise<boolean> {
  return (await xb.tryRead(path, t)) !== undefined;
}

/**
 * libxl__device_disk_add: check the backing file (create it if `size=` asks),
 * then write the device's frontend, backend and libxl nodes in one
 * transaction. Throws VbdError: EEXIST "device already exists in xenstore"
 * if the devid is in use, ENOENT for a missing target or guest, EINVAL for a
 * vdev without a number. Nothing is written, and a file it created is
 * removed, when it fails.
 */
export async function diskAdd(xb: XenbusClient, domid: number, spec: DiskSpec): Promise<VbdDevice> {
  const ents = vbdEntries(domid, spec);
  const plan = await checkBacking(spec);
  const home = `/local/domain/${domid}`;
  const taken = async (t: TxId): Promise<void> => {
    if (!(await exists(xb, home, t))) throw new VbdError('ENOENT', `domain ${domid} has no xenstore home (${home})`);
    for (const p of [ents.libxlPath, ents.frontendPath, ents.backendPath]) {
      if (await exists(xb, p, t)) throw new VbdError('EEXIST', `device already exists in xenstore (vdev ${spec.vdev}, devid ${ents.devid}: ${p})`);
    }
  };
  // Refuse a devid in use before creating any file.
  await taken(NO_TX);
  const created = plan.kind === 'create' && (await createBacking(spec.vdev, plan.path, plan.size)) ? plan.path : undefined;
  try {
    await xb.transaction(async (t) => {
      await taken(t);
      await writeDevice(xb, t, ents);
    });
  } catch (e) {
    if (created !== undefined) await unlink(created).catch(() => undefined);
    throw e;
  }
  return {
    devid: ents.devid, vdev: spec.vdev, frontendPath: ents.frontendPath, backendPath: ents.backendPath,
    ...(created !== undefined ? { createdFile: created } : {}),
  };
}

/** libxl__device_generic_add's writes, in its order. */
async function writeDevice(xb: XenbusClient, t: TxId, e: VbdEntries): Promise<void> {
  await xb.write(`${e.libxlPath}/frontend`, e.frontendPath, t);
  await xb.write(`${e.libxlPath}/backend`, e.backendPath, t);
  await xb.mkdir(e.frontendPath, t);
  await xb.setPerms(e.frontendPath, e.frontendPerms, t);
  for (const [k, v] of Object.entries(e.frontend)) {
    await xb.write(`${e.frontendPath}/${k}`, v, t);
    await xb.setPerms(`${e.frontendPath}/${k}`, e.frontendPerms, t);
  }
  await xb.mkdir(e.backendPath, t);
  await xb.setPerms(e.backendPath, e.backendPerms, t);
  // The backend's entries inherit its permissions.
  for (const [k, v] of Object.entries(e.backend)) await xb.write(`${e.backendPath}/${k}`, v, t);
  for (const [k, v] of Object.entries(e.libxl)) await xb.write(`${e.libxlPath}/${k}`, v, t);
}

// ---------------------------------------------------------------- remove

export interface DiskRemoveOptions {
  /** libxl_device_disk_destroy: remove the nodes at once, without asking the backend to close. */
  readonly force?: boolean;
  /** How long to wait for the backend to reach Closed (default LIBXL_DESTROY_TIMEOUT_MS). */
  readonly timeoutMs?: number;
  /** Resolves after `ms` (Dom0: gives the pCPU away); default setTimeout. */
  readonly sleep?: (ms: number) => Promise<void>;
  /** Where the timeout is reported. */
  readonly log?: (line: string) => void;
}

export interface DiskRemoveResult {
  readonly devid: number;
  /** The backend did not reach Closed in time; the nodes were removed anyway. */
  readonly timedOut: boolean;
}

/** xs_rm, where a missing node is not an error. */
async function rmQuiet(xb: XenbusClient, path: string, t: TxId = NO_TX): Promise<void> {
  try {
    await xb.rm(path, t);
  } catch (e) {
    if (!(e instanceof XenbusError) || e.errno !== 'ENOENT') throw e;
  }
}

/** libxl__xs_path_cleanup: remove `path`, then its parents left empty, stopping above `stop`. */
async function pathCleanup(xb: XenbusClient, t: TxId, path: string, stop: string): Promise<void> {
  await rmQuiet(xb, path, t);
  for (let p = path.slice(0, path.lastIndexOf('/')); p.length > stop.length && p.startsWith(`${stop}/`); p = p.slice(0, p.lastIndexOf('/'))) {
    const kids = await xb.directory(p, t).catch(() => undefined);
    if (kids === undefined || kids.length > 0) break;
    await rmQuiet(xb, p, t);
  }
}

/** Where a device's nodes are: from libxl's record, else the frontend's, else the defaults. */
async function locate(xb: XenbusClient, domid: number, devid: number): Promise<{ fe: string; be: string } | undefined> {
  const lx = vbdLibxlPath(domid, devid);
  const fe = (await xb.tryRead(`${lx}/frontend`)) ?? vbdFrontendPath(domid, devid);
  const be = (await xb.tryRead(`${lx}/backend`)) ?? (await xb.tryRead(`${fe}/backend`));
  const known = (await xb.tryRead(lx)) !== undefined || (await xb.tryRead(fe)) !== undefined;
  if (!known) return undefined;
  // A path read from the guest's own frontend must be this device's backend, nothing else.
  const ok = be !== undefined && be === vbdBackendPath(domid, devid);
  return { fe: vbdFrontendPath(domid, devid), be: ok ? be : vbdBackendPath(domid, devid) };
}

/**
 * libxl__initiate_device_generic_remove: set the backend's online = 0 and
 * state = 5 (Closing) unless it is Closed already, wait (a watch on its
 * state, LIBXL_DESTROY_TIMEOUT) for it to reach 6 (Closed) or vanish, then
 * remove the frontend, backend and libxl nodes (libxl__device_destroy). With
 * `force`, or on timeout (logged), the nodes are removed anyway. Throws
 * VbdError ENOENT if the device does not exist.
 */
export async function diskRemove(xb: XenbusClient, domid: number, devid: number, o: DiskRemoveOptions = {}): Promise<DiskRemoveResult> {
  const where = await locate(xb, domid, devid);
  if (!where) throw new VbdError('ENOENT', `Device ${devid} not connected`);
  let timedOut = false;
  if (!o.force) {
    const statePath = `${where.be}/state`;
    const present = await xb.transaction(async (t) => {
      const state = await xb.tryRead(statePath, t);
      if (state === undefined) return false;
      await xb.write(`${where.be}/online`, '0', t);
      if (state !== String(XenbusState.Closed)) await xb.write(statePath, String(XenbusState.Closing), t);
      return true;
    });
    if (present) {
      const timeoutMs = o.timeoutMs ?? LIBXL_DESTROY_TIMEOUT_MS;
      timedOut = !(await waitBackendClosed(xb, statePath, timeoutMs, o.sleep));
      if (timedOut) o.log?.(`vbd ${devid} of domain ${domid}: backend ${where.be} did not close within ${timeoutMs} ms; removing it anyway`);
    }
  }
  await xb.transaction(async (t) => {
    await pathCleanup(xb, t, where.fe, `/local/domain/${domid}/device`);
    await pathCleanup(xb, t, where.be, `/local/domain/${VBD_BACKEND_DOMID}/backend`);
    await pathCleanup(xb, t, vbdLibxlPath(domid, devid), `/libxl/${domid}/device`);
  });
  return { devid, timedOut };
}

let nextToken = 1;

/**
 * libxl__ev_devstate_wait: resolve true once `statePath` reads 6 (Closed) or
 * is gone, false after `timeoutMs`. A watch, not a poll: xenstored fires it
 * once when set and on every change.
 */
async function waitBackendClosed(xb: XenbusClient, statePath: string, timeoutMs: number, sleep?: (ms: number) => Promise<void>): Promise<boolean> {
  let done!: (closed: boolean) => void;
  const result = new Promise<boolean>((r) => { done = r; });
  const check = (): void => {
    xb.tryRead(statePath).then((v) => { if (v === undefined || v.trim() === String(XenbusState.Closed)) done(true); }, () => done(true));
  };
  const h = await xb.watch(statePath, check, `vbd-remove-${nextToken++}`);
  let timer: ReturnType<typeof setTimeout> | undefined;
  if (sleep) void sleep(timeoutMs).then(() => done(false));
  else timer = setTimeout(() => done(false), timeoutMs);
  try {
    return await result;
  } finally {
    if (timer !== undefined) clearTimeout(timer);
    await h.unwatch().catch(() => undefined);
  }
}

/**
 * libxl__devices_destroy's part for vbds, on domain destroy: remove every
 * backend node of the guest (/local/domain/0/backend/vbd/<domid>); blkback
 * sees them vanish. The frontends go with the guest's home, libxl's records
 * with /libxl/<domid>.
 */
export async function diskRemoveAll(xb: XenbusClient, domid: number): Promise<void> {
  await rmQuiet(xb, vbdBackendDir(domid));
}

// ---------------------------------------------------------------- list

/** A decimal a peer wrote (the guest writes the frontend): its value, or -1 as libxl reports a missing one. */
function peerNumber(v: string | undefined): number {
  if (v === undefined || !/^\d{1,10}$/.test(v.trim())) return -1;
  const n = Number(v.trim());
  return n <= 0x7fffffff ? n : -1;
}

/**
 * The devids of `domid`'s vbds, ascending: libxl's records
 * (libxl_device_disk_list), not the frontends, which the guest owns and
 * could fill with anything.
 */
async function devids(xb: XenbusClient, domid: number): Promise<number[]> {
  const kids = await xb.directory(`/libxl/${domid}/device/vbd`).catch(() => [] as string[]);
  return kids.filter((k) => /^\d{1,10}$/.test(k)).map(Number).sort((a, b) => a - b);
}

/**
 * libxl_device_disk_list + libxl_device_disk_getinfo: each vbd of `domid`
 * with what `xl block-list` prints, the frontend's values as the guest
 * wrote them (-1 where absent or not a number).
 */
export async function diskList(xb: XenbusClient, domid: number): Promise<VbdInfo[]> {
  const out: VbdInfo[] = [];
  for (const devid of await devids(xb, domid)) {
    const fe = vbdFrontendPath(domid, devid);
    const r = (k: string): Promise<string | undefined> => xb.tryRead(`${fe}/${k}`).catch(() => undefined);
    const be = (await xb.tryRead(`${vbdLibxlPath(domid, devid)}/backend`).catch(() => undefined)) ?? (await r('backend')) ?? '';
    const vdev = (await xb.tryRead(`${vbdLibxlPath(domid, devid)}/dev`).catch(() => undefined)) ?? '';
    out.push({
      devid, vdev, backendId: peerNumber(await r('backend-id')), frontendId: domid, state: peerNumber(await r('state')),
      evtchn: peerNumber(await r('event-channel')), ringRef: peerNumber(await r('ring-ref')), backendPath: be,
    });
  }
  return out;
}
