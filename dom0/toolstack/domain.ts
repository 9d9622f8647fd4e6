/**
 * Creating and destroying PV guests as libxl does: build the domain
 * (builder.ts), write its XenStore entries with libxl's names, permissions
 * and values, introduce it to xenstored, and on destroy remove those entries
 * and destroy the domain.
 *
 * XenStore entries of a new guest (libxl__domain_make, libxl__build_post,
 * libxl__device_console_add). Permissions as libxl: "ro" = [n0, r<domid>]
 * (Dom0 owns it, the guest may read), "rw" = [n<domid>] (the guest owns it;
 * Dom0 keeps full access as the privileged domain):
 *
 *   /local/domain/<id>                 ro   the guest's home
 *     vm = /vm/<uuid>, name, domid
 *     cpu/<n>/availability = online, memory/{static-max,target,videoram} (KiB)
 *     device/, control/                ro
 *     control/platform-feature-multiprocessor-suspend = 1
 *     control/platform-feature-xs_reset_watches = 1
 *     control/{shutdown,feature-poweroff,feature-reboot,feature-suspend,sysrq},
 *     device/suspend/event-channel, data, drivers, feature, attr, error   rw
 *     store/{port,ring-ref}            the xenstore channel and ring gfn
 *     console/                         ro (console 0's frontend; libxl keeps it read-only)
 *       backend, limit = 1048576, type = xenconsoled, output = pty, tty = "",
 *       port, ring-ref                 the console channel and ring gfn
 *       backend-id = 0                 [n<id>, r0]
 *   /local/domain/0/backend/console/<id>/0   [n0, r<id>]
 *     frontend, frontend-id, online = 1, state = 1, protocol = vt100
 *   /vm/<uuid>                         ro: uuid, name, image/{ostype,kernel,cmdline}, start_time
 *   /libxl/<id>                        [n0]: type = pv, device/
 *   the config's disks                 vbd.ts (diskAdd), after INTRODUCE, before the caller unpauses
 *
 * ring-ref values are gfns: our guests are auto-translated (as libxl writes
 * dom->xenstore_pfn / console_pfn for translated guests).
 */
import { randomUUID } from 'node:crypto';
import { unlink } from 'node:fs/promises';
import { NO_TX, XenbusError, type TxId, type XenbusClient, type XenbusPerm } from '../../shared/xenbus/client.ts';
import { XenbusState } from '../../shared/xenbus/state.ts';
import { buildPv, type PvBuildConfig, type PvBuildState } from '../builder.ts';
import type { XenCtrl } from '../libxc.ts';
import { checkBacking, diskAdd, diskRemoveAll } from './vbd.ts';

/** LIBXL_XENCONSOLE_LIMIT and LIBXL_XENCONSOLE_PROTOCOL. */
export const XENCONSOLE_LIMIT = 1048576;
export const XENCONSOLE_PROTOCOL = 'vt100';

/** The toolstack's domain (LIBXL_TOOLSTACK_DOMID), also the xenstore and console back end. */
const TOOLSTACK_DOMID = 0;

export interface PvGuest extends PvBuildState {
  readonly name: string;
  readonly uuid: string;
  /** /local/domain/<domid> */
  readonly domPath: string;
  /** /vm/<uuid> */
  readonly vmPath: string;
}

/** A toolstack operation failed (name in use, ...). */
export class ToolstackError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'ToolstackError';
  }
}

const roPerm = (domid: number): XenbusPerm[] => [{ domid: TOOLSTACK_DOMID, access: 'n' }, { domid, access: 'r' }];
const rwPerm = (domid: number): XenbusPerm[] => [{ domid, access: 'n' }];
const noPerm: XenbusPerm[] = [{ domid: TOOLSTACK_DOMID, access: 'n' }];

export const domainPath = (domid: number): string => `/local/domain/${domid}`;
export const consoleBackendPath = (domid: number): string => `${domainPath(TOOLSTACK_DOMID)}/backend/console/${domid}/0`;
export const libxlPath = (domid: number): string => `/libxl/${domid}`;

/** The writes of one transaction, with libxl's helpers' meanings. */
class XsTx {
  constructor(private readonly xb: XenbusClient, private readonly t: TxId) {}
  /** libxl__xs_mknod: an empty node with these permissions. */
  async mknod(path: string, perms: readonly XenbusPerm[]): Promise<void> {
    await this.xb.write(path, '', this.t);
    await this.xb.setPerms(path, perms, this.t);
  }
  /** xs_write. */
  write(path: string, value: string): Promise<void> { return this.xb.write(path, value, this.t); }
  /** libxl__xs_writev under `base` (perms inherited). */
  async writev(base: string, ents: Readonly<Record<string, string>>): Promise<void> {
    for (const [k, v] of Object.entries(ents)) await this.write(`${base}/${k}`, v);
  }
  /** libxl__xs_writev_perms. */
  async writevPerms(base: string, ents: Readonly<Record<string, string>>, perms: readonly XenbusPerm[]): Promise<void> {
    for (const [k, v] of Object.entries(ents)) {
      await this.write(`${base}/${k}`, v);
      await this.xb.setPerms(`${base}/${k}`, perms, this.t);
    }
  }
  async rm(path: string): Promise<void> { await rmQuiet(this.xb, path, this.t); }
}

/** xs_rm, where a missing node (or parent) is not an error. */
async function rmQuiet(xb: XenbusClient, path: string, tx: TxId = NO_TX): Promise<void> {
  try {
    await xb.rm(path, tx);
  } catch (e) {
    if (!(e instanceof XenbusError) || e.errno !== 'ENOENT') throw e;
  }
}

/** libxl__domain_rename's check: no other domain may have this name. */
async function checkNameFree(xb: XenbusClient, name: string): Promise<void> {
  const ids = await xb.directory('/local/domain').catch(() => [] as string[]);
  for (const id of ids) {
    if ((await xb.tryRead(`/local/domain/${id}/name`)) === name) throw new ToolstackError(`domain with name "${name}" already exists`);
  }
}

/** Xen's own entries for Dom0 (xen-init-dom0): name and domid. */
export async function writeDom0Entries(xb: XenbusClient): Promise<void> {
  await xb.write(`${domainPath(0)}/name`, 'Domain-0');
  await xb.write(`${domainPath(0)}/domid`, '0');
}

/**
 * Create a PV guest: build it (paused), write its XenStore entries, and
 * INTRODUCE it to xenstored (which maps its ring and fires @introduceDomain).
 * The caller unpauses it. On failure nothing is left behind.
 */
export async function createPvGuest(ctrl: XenCtrl, xb: XenbusClient, c: PvBuildConfig): Promise<PvGuest> {
  await checkNameFree(xb, c.name);
  // Every disk's backing file, before anything is built (VbdError names the first missing one).
  for (const d of c.disks ?? []) await checkBacking(d);
  const uuid = c.uuid ?? randomUUID();
  const st = await buildPv(ctrl, { ...c, uuid });
  const g: PvGuest = { ...st, name: c.name, uuid, domPath: domainPath(st.domid), vmPath: `/vm/${uuid}` };
  const createdFiles: string[] = [];
  try {
    await xb.transaction(async (t) => {
      const tx = new XsTx(xb, t);
      await domainMake(tx, g);
      await buildPost(tx, g, c);
      await consoleAdd(tx, g);
    });
    await xb.introduce(g.domid, g.storeGfn, g.storePort);
    // libxl's domcreate attaches the disks once the domain exists, before it runs.
    for (const d of c.disks ?? []) {
      const dev = await diskAdd(xb, g.domid, d);
      if (dev.createdFile !== undefined) createdFiles.push(dev.createdFile);
    }
  } catch (e) {
    await destroyPvGuest(ctrl, xb, g.domid).catch(() => undefined);
    for (const f of createdFiles) await unlink(f).catch(() => undefined);
    throw e;
  }
  return g;
}

/** libxl__domain_make: the home, /vm and /libxl skeletons. */
async function domainMake(tx: XsTx, g: PvGuest): Promise<void> {
  const { domid, domPath: dom, vmPath: vm } = g;
  await tx.rm(dom);
  await tx.mknod(dom, roPerm(domid));
  await tx.rm(vm);
  await tx.mknod(vm, roPerm(domid));
  await tx.rm(libxlPath(domid));
  await tx.mknod(libxlPath(domid), noPerm);
  await tx.mknod(`${libxlPath(domid)}/device`, noPerm);
  await tx.write(`${dom}/vm`, vm);
  // libxl__domain_rename
  await tx.write(`${dom}/name`, g.name);
  await tx.write(`${vm}/name`, g.name);
  for (const d of ['cpu', 'memory', 'device', 'control']) await tx.mknod(`${dom}/${d}`, roPerm(domid));
  for (const d of [
    'control/shutdown', 'control/feature-poweroff', 'control/feature-reboot', 'control/feature-suspend', 'control/sysrq',
    'device/suspend/event-channel', 'data', 'drivers', 'feature', 'attr', 'error',
  ]) await tx.mknod(`${dom}/${d}`, rwPerm(domid));
  await tx.write(`${vm}/uuid`, g.uuid);
  await tx.write(`${dom}/control/platform-feature-multiprocessor-suspend`, '1');
  await tx.write(`${dom}/control/platform-feature-xs_reset_watches`, '1');
  await tx.write(`${libxlPath(domid)}/type`, 'pv');
}

/** libxl__build_post's entries (the domain's) and libxl__build_pv's /vm entries. */
async function buildPost(tx: XsTx, g: PvGuest, c: PvBuildConfig): Promise<void> {
  const ents: Record<string, string> = {
    'memory/static-max': String(g.maxMemKiB),
    'memory/target': String(g.nrPages * 4),
    'memory/videoram': '0',
    domid: String(g.domid),
    'store/port': String(g.storePort),
    'store/ring-ref': String(g.storeGfn),
  };
  for (let i = 0; i < (c.vcpus ?? 1); i++) ents[`cpu/${i}/availability`] = 'online';
  await tx.writev(g.domPath, ents);
  const vments: Record<string, string> = {
    'image/ostype': 'linux',
    'image/kernel': c.kernel,
    start_time: (Date.now() / 1000).toFixed(2),
  };
  if (c.cmdline) vments['image/cmdline'] = c.cmdline;
  await tx.writev(g.vmPath, vments);
}

/** libxl__device_console_add for console 0 (frontend /local/domain/<id>/console, backend in Dom0). */
async function consoleAdd(tx: XsTx, g: PvGuest): Promise<void> {
  const { domid } = g;
  const front = `${g.domPath}/console`;
  const back = consoleBackendPath(domid);
  const frontPerms: XenbusPerm[] = [{ domid, access: 'n' }, { domid: TOOLSTACK_DOMID, access: 'r' }];
  const roFrontPerms: XenbusPerm[] = [{ domid: TOOLSTACK_DOMID, access: 'n' }, { domid, access: 'r' }];
  await tx.rm(front);
  await tx.mknod(front, roFrontPerms);
  await tx.write(`${front}/backend`, back);
  await tx.writevPerms(front, { 'backend-id': String(TOOLSTACK_DOMID) }, frontPerms);
  await tx.writevPerms(front, {
    limit: String(XENCONSOLE_LIMIT), type: 'xenconsoled', output: 'pty', tty: '',
    port: String(g.consolePort), 'ring-ref': String(g.consoleGfn),
  }, roFrontPerms);
  await tx.rm(back);
  await tx.mknod(back, roPerm(domid));
  await tx.writev(back, {
    frontend: front, 'frontend-id': String(domid), online: '1', state: String(XenbusState.Initialising),
    protocol: XENCONSOLE_PROTOCOL,
  });
}

/**
 * Destroy a guest as libxl__destroy_domid: remove its devices' back ends
 * (console, /local/domain/0/backend/vbd/<domid>: blkback sees them vanish) and
 * its XenStore entries (/vm, home, /libxl), then destroydomain, retried while
 * its threads stop (`wait` between tries). xenstored and xenconsoled let go
 * of its rings when they see it dying (VIRQ_DOM_EXC).
 */
export async function destroyPvGuest(ctrl: XenCtrl, xb: XenbusClient, domid: number, wait?: () => Promise<void> | void): Promise<void> {
  const dom = domainPath(domid);
  const vm = await xb.tryRead(`${dom}/vm`).catch(() => undefined);
  await rmQuiet(xb, `${domainPath(TOOLSTACK_DOMID)}/backend/console/${domid}`);
  await diskRemoveAll(xb, domid);
  if (vm !== undefined && /^\/vm\/[0-9a-fA-F-]+$/.test(vm)) await rmQuiet(xb, vm);
  await rmQuiet(xb, dom);
  await rmQuiet(xb, libxlPath(domid));
  await ctrl.destroyDomain(domid, wait);
}
