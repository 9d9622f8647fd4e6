/**
 * The xenstore command-line tools (tools/xenstore/xenstore_client.c):
 * xenstore-ls, -read, -write, -rm, -list, -exists and -watch, talking to the
 * host's xenstored through the control socket as a privileged (Dom0) client.
 * Options, output and messages are the C tools': output is printed only
 * when every operation succeeded; a failure prints "<tool>: <what>" and
 * exits 1; `-s` (use the socket) is accepted and changes nothing.
 */
import { CliError, type XlCommand } from './cli-context.ts';
import type { ControlClient } from './client.ts';
import { has, val } from './getopt.ts';
import { ControlError } from './protocol.ts';
import { formatLsLine, formatReadLine, sanitiseValue, unsanitiseValue, type LsOptions } from './xsformat.ts';

const STRERROR: Readonly<Record<string, string>> = {
  ENOENT: 'No such file or directory', EACCES: 'Permission denied', EINVAL: 'Invalid argument', EEXIST: 'File exists',
  E2BIG: 'Argument list too long', ENOSPC: 'No space left on device', EDQUOT: 'Disk quota exceeded', EISDIR: 'Is a directory',
  ENOTEMPTY: 'Directory not empty', EAGAIN: 'Resource temporarily unavailable', EPERM: 'Operation not permitted',
  EBUSY: 'Device or resource busy', ENOSYS: 'Function not implemented', ESRCH: 'No such process', ENOMEM: 'Cannot allocate memory',
  EIO: 'Input/output error', EBADF: 'Bad file descriptor',
};

/** strerror() of a failure's code, or the failure's own words. */
function strerror(e: unknown): string {
  if (e instanceof ControlError) return STRERROR[e.code] ?? e.message;
  return e instanceof Error ? e.message : String(e);
}

/** Connection failures are not "couldn't read path": let the dispatcher say what they are. */
function rethrowConnection(e: unknown): void {
  if (e instanceof ControlError && (e.code === 'ENOTCONN' || e.code === 'ECONNRESET' || e.code === 'EPROTO')) throw e;
}

const code = (e: unknown): string | undefined => (e instanceof ControlError ? e.code : undefined);

async function doLs(c: ControlClient, path: string, depth: number, o: LsOptions, out: string[]): Promise<void> {
  let names: string[];
  try {
    names = await c.call('xs-directory', { path });
  } catch (e) {
    rethrowConnection(e);
    // A node that disappears while we walk is skipped silently.
    if (depth > 0 && (code(e) === 'ENOENT' || code(e) === 'EACCES')) return;
    throw new CliError(`xs_directory (${path}): ${strerror(e)}`);
  }
  for (const name of names) {
    const full = `${path}${path.endsWith('/') ? '' : '/'}${name}`;
    let value: Uint8Array | null = null;
    try { value = await c.call('xs-read', { path: full }); } catch (e) { rethrowConnection(e); }
    let perms: string[] | null = null;
    if (o.perms) {
      try { perms = await c.call('xs-get-perms', { path: full }); } catch (e) { rethrowConnection(e); }
    }
    out.push(formatLsLine({ path: full, name, depth, value, perms }, o));
    await doLs(c, full, depth + 1, o, out);
  }
}

const ls: XlCommand = {
  name: 'xenstore-ls',
  summary: 'List a xenstore subtree with values',
  usage: '[-h] [-s] [-f] [-p] [path]',
  specs: [{ short: 's', long: 'socket' }, { short: 'f' }, { short: 'p', long: 'prefix' }],
  minArgs: 0,
  async run(ctx, p) {
    const c = await ctx.client();
    const o: LsOptions = {
      perms: has(p, 'p'), fullPath: has(p, 'f'),
      maxWidth: ctx.io.stdoutIsTTY && ctx.io.columns !== undefined ? ctx.io.columns - 2 : 80,
    };
    const out: string[] = [];
    for (const path of p.rest.length > 0 ? p.rest : ['/']) await doLs(c, path, 0, o, out);
    ctx.io.out(out.join(''));
    return 0;
  },
};

const read: XlCommand = {
  name: 'xenstore-read',
  summary: 'Read xenstore values',
  usage: '[-h] [-p] [-s] [-R] key [...]',
  specs: [{ short: 's', long: 'socket' }, { short: 'p', long: 'prefix' }, { short: 'R', long: 'raw' }],
  minArgs: 1,
  async run(ctx, p) {
    const c = await ctx.client();
    const out: Array<string | Uint8Array> = [];
    for (const path of p.rest) {
      let v: Uint8Array;
      try {
        v = await c.call('xs-read', { path });
      } catch (e) {
        rethrowConnection(e);
        throw new CliError(`couldn't read path ${path}`);
      }
      if (has(p, 'R')) out.push(...(has(p, 'p') ? [`${path}: `] : []), v);
      else out.push(formatReadLine(path, v, has(p, 'p')));
    }
    for (const o of out) ctx.io.out(o);
    return 0;
  },
};

const write: XlCommand = {
  name: 'xenstore-write',
  summary: 'Write xenstore values',
  usage: '[-h] [-s] key value [...]',
  specs: [{ short: 's', long: 'socket' }],
  minArgs: 2,
  async run(ctx, p) {
    if (p.rest.length % 2 === 1) throw new CliError(`Usage: ${ctx.progname} [-h] [-s] key value [...]`);
    const c = await ctx.client();
    for (let i = 0; i < p.rest.length; i += 2) {
      try {
        await c.call('xs-write', { path: p.rest[i], value: unsanitiseValue(p.rest[i + 1]) });
      } catch (e) {
        rethrowConnection(e);
        throw new CliError(`could not write path ${p.rest[i]}`);
      }
    }
    return 0;
  },
};

async function rmOne(c: ControlClient, path: string): Promise<void> {
  try {
    await c.call('xs-rm', { path });
  } catch (e) {
    rethrowConnection(e);
    throw new CliError(`could not remove path ${path}`);
  }
}

const rm: XlCommand = {
  name: 'xenstore-rm',
  summary: 'Remove xenstore nodes',
  usage: '[-h] [-s] [-t] key [...]',
  specs: [{ short: 's', long: 'socket' }, { short: 't', long: 'tidy' }],
  minArgs: 1,
  async run(ctx, p) {
    const c = await ctx.client();
    for (const path of p.rest) {
      await rmOne(c, path);
      if (!has(p, 't')) continue;
      // -t: remove parents that are left empty, without a value, up to the root.
      let parent = path.slice(0, Math.max(0, path.lastIndexOf('/')));
      while (parent !== '') {
        const value = await c.call('xs-read', { path: parent }).catch(() => null);
        const kids = await c.call('xs-directory', { path: parent }).catch(() => null);
        if (value === null || value.length !== 0 || kids === null || kids.length !== 0) break;
        await rmOne(c, parent);
        parent = parent.slice(0, Math.max(0, parent.lastIndexOf('/')));
      }
    }
    return 0;
  },
};

const list: XlCommand = {
  name: 'xenstore-list',
  summary: 'List xenstore directories',
  usage: '[-h] [-s] [-p] key [...]',
  specs: [{ short: 's', long: 'socket' }, { short: 'p', long: 'prefix' }],
  minArgs: 1,
  async run(ctx, p) {
    const c = await ctx.client();
    let out = '';
    for (const path of p.rest) {
      let names: string[];
      try {
        names = await c.call('xs-directory', { path });
      } catch (e) {
        rethrowConnection(e);
        throw new CliError(`could not list path ${path}`);
      }
      for (const n of names) out += `${has(p, 'p') ? `${path}/` : ''}${n}\n`;
    }
    ctx.io.out(out);
    return 0;
  },
};

const exists: XlCommand = {
  name: 'xenstore-exists',
  summary: 'Test whether xenstore nodes exist',
  usage: '[-h] [-s] key [...]',
  specs: [{ short: 's', long: 'socket' }],
  minArgs: 1,
  async run(ctx, p) {
    const c = await ctx.client();
    for (const path of p.rest) {
      try {
        await c.call('xs-read', { path });
      } catch (e) {
        rethrowConnection(e);
        return 1;
      }
    }
    return 0;
  },
};

const watch: XlCommand = {
  name: 'xenstore-watch',
  summary: 'Watch a xenstore path, printing each path that fires',
  usage: '[-h] [-n NR] [-s] key',
  specs: [{ short: 's', long: 'socket' }, { short: 'n', arg: true }],
  minArgs: 1,
  async run(ctx, p) {
    const nr = val(p, 'n');
    if (nr !== undefined && !/^\d+$/.test(nr)) throw new CliError(`invalid number of events: ${nr}`);
    const max = nr !== undefined ? Number(nr) : -1;
    if (max === 0) return 0;
    const c = await ctx.client();
    let seen = 0;
    const s = c.stream('xs-watch', { path: p.rest[0], token: 'xenstore-watch' }, (ev) => {
      if (max >= 0 && seen >= max) return;
      ctx.io.out(`${sanitiseValue(new TextEncoder().encode(ev.path))}\n`);
      seen++;
      if (max >= 0 && seen >= max) s.cancel();
    });
    void ctx.io.interrupted.then(() => s.cancel());
    try {
      await s.done;
    } catch (e) {
      rethrowConnection(e);
      throw new CliError(`could not watch path ${p.rest[0]}: ${strerror(e)}`);
    }
    return 0;
  },
};

export const XENSTORE_COMMANDS: readonly XlCommand[] = [ls, read, write, rm, list, exists, watch];

