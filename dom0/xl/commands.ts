/**
 * The control server's command table: for each command, check the request's
 * arguments (copy, then validate, then act), resolve domain names and ids,
 * call the Dom0 handlers, and shape the reply. No sockets here: server.ts
 * moves frames; this module turns one request into one result or one
 * ControlError.
 */
import { errnoName } from '../../shared/errno.ts';
import { checkDomainName, validateDomainConfig, XlCfgError, type DomainConfig } from '../toolstack/xlcfg.ts';
import { validateDiskSpec, vdevNumber } from '../toolstack/disk.ts';
import type { ControlHandlers, ConsoleStream, EventStream } from './handlers.ts';
import { ControlError, PROTOCOL_VERSION } from './protocol.ts';
import type { DomainSummary, WatchEvent } from './types.ts';

type Args = Readonly<Record<string, unknown>>;
type Who = { domid?: number; domain?: string };

/** XENSTORE_ABS_PATH_MAX (3072) plus room for a relative prefix. */
const MAX_XS_PATH = 4096;

// ---------------------------------------------------------------- argument checks

const bad = (msg: string): never => { throw new ControlError('EINVAL', msg); };

function str(a: Args, k: string, max = 1024): string {
  const v = a[k];
  if (typeof v !== 'string') return bad(`argument ${k} must be a string`);
  if (v.length > max) return bad(`argument ${k} is longer than ${max} characters`);
  return v;
}
function optStr(a: Args, k: string): string | undefined {
  return a[k] === undefined ? undefined : str(a, k);
}
function bool(a: Args, k: string): boolean {
  const v = a[k];
  if (v === undefined) return false;
  if (typeof v !== 'boolean') return bad(`argument ${k} must be true or false`);
  return v;
}
function int(a: Args, k: string, min: number, max: number): number {
  const v = a[k];
  if (!Number.isSafeInteger(v) || (v as number) < min || (v as number) > max) return bad(`argument ${k} must be an integer from ${min} to ${max}`);
  return v as number;
}
function optInt(a: Args, k: string, min: number, max: number): number | undefined {
  return a[k] === undefined ? undefined : int(a, k, min, max);
}
function bytes(a: Args, k: string): Uint8Array {
  const v = a[k];
  if (!(v instanceof Uint8Array)) return bad(`argument ${k} must be bytes`);
  return new Uint8Array(v);
}
function strList(a: Args, k: string): string[] {
  const v = a[k];
  if (v === undefined) return [];
  if (!Array.isArray(v) || v.length > 1024 || !v.every((x) => typeof x === 'string' && x.length <= 1024)) return bad(`argument ${k} must be a list of strings`);
  return [...v] as string[];
}
function xsPath(a: Args, k = 'path'): string {
  const p = str(a, k, MAX_XS_PATH);
  if (p === '') return bad('the xenstore path is empty');
  return p;
}

// ---------------------------------------------------------------- errors

/** Any failure as a ControlError, naming the domain it concerns when known. */
export function toControlError(e: unknown, who: Who = {}): ControlError {
  let ce: ControlError;
  if (e instanceof ControlError) ce = e;
  else if (e instanceof XlCfgError) ce = new ControlError('EINVAL', e.message);
  else if (e instanceof Error && e.name === 'XenError' && typeof (e as { rc?: unknown }).rc === 'number') ce = new ControlError(errnoName((e as unknown as { rc: number }).rc), e.message);
  else ce = new ControlError('EFAIL', e instanceof Error ? e.message : String(e));
  if ((ce.domid === undefined && who.domid !== undefined) || (ce.domain === undefined && who.domain !== undefined)) {
    ce = new ControlError(ce.code, ce.message, { domid: ce.domid ?? who.domid, domain: ce.domain ?? who.domain });
  }
  return ce;
}

/** Run `fn` for a domain; failures carry the domain. */
async function onDomain<T>(d: { domid?: number; ref?: string }, fn: () => T | Promise<T>): Promise<T> {
  try {
    return await fn();
  } catch (e) {
    throw toControlError(e, { ...(d.domid !== undefined ? { domid: d.domid } : {}), ...(d.ref !== undefined ? { domain: d.ref } : {}) });
  }
}

// ---------------------------------------------------------------- domains

/**
 * A domain qualifier as libxl_domain_qualifier_to_domid reads it: all digits
 * is a domid, anything else a name. Throws ESRCH if there is no such domain.
 */
export async function resolveDomain(h: ControlHandlers, ref: string): Promise<DomainSummary> {
  const doms = await h.list();
  if (/^\d+$/.test(ref)) {
    const id = Number(ref);
    const d = doms.find((x) => x.domid === id);
    if (!d) throw new ControlError('ESRCH', 'no such domain', { domain: ref });
    return d;
  }
  const d = doms.find((x) => x.name === ref);
  if (!d) throw new ControlError('ESRCH', 'no such domain', { domain: ref });
  return d;
}

async function domainArg(h: ControlHandlers, a: Args): Promise<{ domid: number; ref: string; summary: DomainSummary }> {
  const ref = str(a, 'domain');
  const summary = await resolveDomain(h, ref);
  return { domid: summary.domid, ref, summary };
}

async function nameInUse(h: ControlHandlers, name: string, except?: number): Promise<DomainSummary | undefined> {
  return (await h.list()).find((d) => d.name === name && d.domid !== except);
}

// ---------------------------------------------------------------- the table

type Command = (h: ControlHandlers, a: Args) => Promise<unknown>;

/** A plain per-domain action returning { domid }. */
const simple = (act: (h: ControlHandlers, domid: number) => unknown): Command => async (h, a) => {
  const d = await domainArg(h, a);
  await onDomain(d, () => act(h, d.domid));
  return { domid: d.domid };
};

const COMMANDS: Readonly<Record<string, Command>> = {
  hello: async () => ({ protocol: PROTOCOL_VERSION }),

  list: async (h, a) => {
    const ref = optStr(a, 'domain');
    return ref === undefined ? [...(await h.list())] : [await resolveDomain(h, ref)];
  },

  'list-long': async (h, a) => {
    const ref = optStr(a, 'domain');
    const doms = ref === undefined ? [...(await h.list())] : [await resolveDomain(h, ref)];
    const nrCpus = (await h.info()).nrCpus;
    const entries = [];
    for (const summary of doms) {
      let config: DomainConfig | null = null;
      try { config = await h.domainConfig(summary.domid); } catch { config = null; }
      entries.push({ summary, config });
    }
    return { nrCpus, entries };
  },

  info: async (h) => h.info(),

  create: async (h, a) => {
    const config = validateDomainConfig(a.config, 'create request');
    const paused = bool(a, 'paused');
    const clash = await nameInUse(h, config.name);
    if (clash) throw new ControlError('EEXIST', `a domain named "${config.name}" already exists`, { domid: clash.domid, domain: config.name });
    const domid = await onDomain({ ref: config.name }, () => h.create(config, { paused }));
    if (!Number.isSafeInteger(domid) || domid < 0) throw new ControlError('EFAIL', `create returned no domid`, { domain: config.name });
    return { domid, name: config.name };
  },

  destroy: async (h, a) => {
    const d = await domainArg(h, a);
    if (d.domid === 0) throw new ControlError('EPERM', 'Domain-0 cannot be destroyed (stop the host instead)', { domid: 0, domain: d.ref });
    await onDomain(d, () => h.destroy(d.domid));
    return { domid: d.domid };
  },
  shutdown: simple((h, id) => h.shutdown(id)),
  reboot: simple((h, id) => h.reboot(id)),
  pause: simple((h, id) => h.pause(id)),
  unpause: simple((h, id) => h.unpause(id)),

  dmesg: async (h, a) => ({ text: await h.dmesg(bool(a, 'clear')) }),

  'vcpu-list': async (h, a) => {
    const refs = strList(a, 'domains');
    const nrCpus = (await h.info()).nrCpus;
    const domains = [];
    if (refs.length === 0) {
      for (const d of await h.list()) {
        try {
          domains.push({ domid: d.domid, name: d.name, vcpus: [...(await h.vcpuList(d.domid))] });
        } catch (e) {
          if (toControlError(e).code !== 'ESRCH') throw toControlError(e, { domid: d.domid, domain: d.name });
        }
      }
    } else {
      for (const ref of refs) {
        const d = await resolveDomain(h, ref);
        domains.push({ domid: d.domid, name: d.name, vcpus: [...(await onDomain({ domid: d.domid, ref }, () => h.vcpuList(d.domid)))] });
      }
    }
    return { nrCpus, domains };
  },

  'mem-set': async (h, a) => {
    const d = await domainArg(h, a);
    const kib = int(a, 'memKiB', 1, 2 ** 40);
    await onDomain(d, () => h.memSet(d.domid, kib));
    return { domid: d.domid };
  },
  'mem-max': async (h, a) => {
    const d = await domainArg(h, a);
    const kib = int(a, 'memKiB', 1, 2 ** 40);
    await onDomain(d, () => h.memMax(d.domid, kib));
    return { domid: d.domid };
  },

  rename: async (h, a) => {
    const d = await domainArg(h, a);
    const name = str(a, 'name');
    const why = checkDomainName(name);
    if (why) throw new ControlError('EINVAL', why, { domid: d.domid, domain: d.ref });
    const clash = await nameInUse(h, name, d.domid);
    if (clash) throw new ControlError('EEXIST', `the name "${name}" is already taken by domain ${clash.domid}`, { domid: d.domid, domain: d.ref });
    if (name !== d.summary.name) await onDomain(d, () => h.rename(d.domid, name));
    return { domid: d.domid };
  },

  'sched-get': async (h, a) => {
    const ref = optStr(a, 'domain');
    const pool = await h.schedPool();
    const doms = ref === undefined ? [...(await h.list())] : [await resolveDomain(h, ref)];
    const domains = [];
    for (const d of doms) {
      try {
        domains.push({ domid: d.domid, name: d.name, params: await h.schedGet(d.domid) });
      } catch (e) {
        const ce = toControlError(e, { domid: d.domid, domain: ref ?? d.name });
        if (ref !== undefined || ce.code !== 'ESRCH') throw ce;
      }
    }
    return { pool, domains };
  },
  'sched-set': async (h, a) => {
    const d = await domainArg(h, a);
    const weight = optInt(a, 'weight', 1, 65535);
    const cap = optInt(a, 'cap', 0, 65535);
    if (weight === undefined && cap === undefined) bad('sched-set needs a weight or a cap');
    await onDomain(d, () => h.schedSet(d.domid, { ...(weight !== undefined ? { weight } : {}), ...(cap !== undefined ? { cap } : {}) }));
    return { domid: d.domid };
  },

  top: async (h, a) => {
    const withVcpus = bool(a, 'vcpus');
    const timeNs = Number(process.hrtime.bigint());
    const [host, domains, stats] = [await h.info(), [...(await h.list())], [...(await h.stats())]];
    const vcpus: Record<number, unknown[]> = {};
    if (withVcpus) {
      for (const d of domains) {
        try { vcpus[d.domid] = [...(await h.vcpuList(d.domid))]; } catch { vcpus[d.domid] = []; }
      }
    }
    return { timeNs, host, domains, stats, ...(withVcpus ? { vcpus } : {}) };
  },
  stats: async (h) => [...(await h.stats())],

  'block-attach': async (h, a) => {
    const d = await domainArg(h, a);
    const spec = validateDiskSpec(a.spec);
    if (typeof spec === 'string') throw new ControlError('EINVAL', spec, { domid: d.domid, domain: d.ref });
    if (d.domid === 0) throw new ControlError('EPERM', 'Domain-0 has no block frontend here: attach disks to guests', { domid: 0, domain: d.ref });
    const devid = await onDomain(d, () => h.blockAttach(d.domid, spec));
    return { domid: d.domid, devid };
  },
  'block-detach': async (h, a) => {
    const d = await domainArg(h, a);
    const ref = str(a, 'devid', 64);
    const force = bool(a, 'force');
    // libxl_devid_to_device_disk: a vdev name or number; one that encodes none is not connected.
    const devid = vdevNumber(ref);
    if (devid === null) throw new ControlError('ENOENT', `Device ${ref} not connected`, { domid: d.domid, domain: d.ref });
    if (d.domid === 0) throw new ControlError('EPERM', 'Domain-0 has no block devices here', { domid: 0, domain: d.ref });
    await onDomain(d, () => h.blockDetach(d.domid, devid, force));
    return { domid: d.domid, devid };
  },
  'block-list': async (h, a) => {
    const d = await domainArg(h, a);
    return { domid: d.domid, devices: [...(await onDomain(d, () => h.blockList(d.domid)))] };
  },

  'xs-directory': async (h, a) => [...(await h.xsDirectory(xsPath(a)))],
  'xs-read': async (h, a) => h.xsRead(xsPath(a)),
  'xs-write': async (h, a) => { await h.xsWrite(xsPath(a), bytes(a, 'value')); return null; },
  'xs-rm': async (h, a) => { await h.xsRm(xsPath(a)); return null; },
  'xs-get-perms': async (h, a) => [...(await h.xsGetPerms(xsPath(a)))],
};

type StreamCommand = (h: ControlHandlers, a: Args, s: ConsoleStream) => Promise<void>;

const STREAMS: Readonly<Record<string, StreamCommand>> = {
  'xs-watch': async (h, a, s) => {
    const path = xsPath(a);
    const token = str(a, 'token', 256);
    await h.xsWatch(path, token, s as unknown as EventStream<WatchEvent>);
  },
  console: async (h, a, s) => {
    const d = await domainArg(h, a);
    await onDomain(d, () => h.console(d.domid, s));
  },
};

export function isCommand(cmd: string): boolean {
  return Object.hasOwn(COMMANDS, cmd);
}

export function isStreamCommand(cmd: string): boolean {
  return Object.hasOwn(STREAMS, cmd);
}

/** Run one request; throws ControlError (ENOSYS for an unknown command). */
export async function runCommand(h: ControlHandlers, cmd: string, args: Args): Promise<unknown> {
  if (!isCommand(cmd)) throw new ControlError('ENOSYS', `unknown command "${cmd}"`);
  try {
    return await COMMANDS[cmd](h, args);
  } catch (e) {
    throw toControlError(e);
  }
}

/** Run one streaming request until it ends; throws ControlError. */
export async function runStream(h: ControlHandlers, cmd: string, args: Args, s: ConsoleStream): Promise<void> {
  if (!isStreamCommand(cmd)) throw new ControlError('ENOSYS', `unknown command "${cmd}"`);
  try {
    await STREAMS[cmd](h, args, s);
  } catch (e) {
    throw toControlError(e);
  }
}
