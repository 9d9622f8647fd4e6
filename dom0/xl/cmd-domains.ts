/**
 * xl's domain commands (xl_vmcontrol.c, xl_info.c, xl_mem.c, xl_misc.c):
 * create, list, destroy, shutdown, reboot, pause, unpause, rename, mem-set,
 * mem-max, uptime, domid, domname. Names, options, messages and output as xl's.
 */
import { readFileSync } from 'node:fs';
import { resolve } from 'node:path';
import { ConfigPathError, resolveConfigPaths } from '../toolstack/load.ts';
import { parseXlCfg, printXlCfg } from '../toolstack/xlcfg.ts';
import { CliError, parseMemSizeKb, type Ctx, type XlCommand } from './cli-context.ts';
import { attachConsole } from './cmd-console.ts';
import type { ControlClient } from './client.ts';
import { formatList, formatListLong, formatUptime, localHms } from './format.ts';
import { has } from './getopt.ts';
import type { DomainSummary } from './types.ts';

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

const create: XlCommand = {
  name: 'create',
  summary: 'Create a domain from config file <filename>',
  usage: '<ConfigFile> [options] [vars]',
  optionsHelp: [
    '-h                      Print this help.',
    '-p                      Leave the domain paused after it is created.',
    '-c                      Connect to the console after the domain is created.',
    '-n, --dryrun            Dry run - prints the resulting configuration',
    '                         instead of creating the domain.',
    '-q, --quiet             Quiet.',
    'vars                    KEY=VALUE settings applied after the file.',
  ].join('\n'),
  specs: [{ short: 'p' }, { short: 'c' }, { short: 'n', long: 'dryrun' }, { short: 'q', long: 'quiet' }],
  minArgs: 1,
  async run(ctx, p) {
    const [file, ...extra] = p.rest;
    let text: string;
    try {
      text = readFileSync(resolve(ctx.io.cwd, file), 'utf8');
    } catch (e) {
      throw new CliError(`Failed to read config file: ${file}: ${(e as NodeJS.ErrnoException).code === 'ENOENT' ? 'No such file or directory' : (e as Error).message}`);
    }
    if (!has(p, 'q')) ctx.io.err(`Parsing config from ${file}\n`);
    let cfg;
    try {
      cfg = resolveConfigPaths(parseXlCfg(text, { file, extra }), ctx.io.cwd, file);
    } catch (e) {
      if (e instanceof ConfigPathError) throw new CliError(e.message);
      throw e;
    }
    if (has(p, 'n')) {
      ctx.io.out(printXlCfg(cfg));
      return 0;
    }
    const c = await ctx.client();
    // With -c, as xl: the console is attached before the domain is unpaused.
    const r = await c.call('create', { config: cfg, paused: has(p, 'p') || has(p, 'c') });
    if (has(p, 'c')) {
      const domain = String(r.domid);
      return attachConsole(ctx, domain, has(p, 'p') ? undefined : async () => { await c.call('unpause', { domain }); });
    }
    return 0;
  },
};

const list: XlCommand = {
  name: 'list',
  summary: 'List information about all/some domains',
  usage: '[options] [Domain]',
  optionsHelp: [
    '-l, --long              Output all VM details',
    '-v, --verbose           Prints out UUIDs and security context',
    '-Z, --context           Prints out security context',
  ].join('\n'),
  specs: [{ short: 'l', long: 'long' }, { short: 'v', long: 'verbose' }, { short: 'Z', long: 'context' }],
  minArgs: 0,
  async run(ctx, p) {
    if (p.rest.length > 1) throw new CliError('list takes at most one domain', 2);
    const c = await ctx.client();
    const domain = p.rest[0];
    if (has(p, 'l')) {
      const r = await c.call('list-long', domain !== undefined ? { domain } : {});
      ctx.io.out(formatListLong(r.entries, r.nrCpus));
    } else {
      const doms = await c.call('list', domain !== undefined ? { domain } : {});
      ctx.io.out(formatList(doms, { verbose: has(p, 'v'), context: has(p, 'Z') }));
    }
    return 0;
  },
};

const destroy: XlCommand = {
  name: 'destroy',
  summary: 'Terminate a domain immediately',
  usage: '[options] <Domain>',
  optionsHelp: '-f                      Permit destroying domain 0.',
  specs: [{ short: 'f' }],
  minArgs: 1,
  async run(ctx, p) {
    const domain = p.rest[0];
    if (/^0+$/.test(domain) && !has(p, 'f')) {
      throw new CliError('Not destroying domain 0; use -f to force.\nThis can only be done when using a disaggregated hardware domain and toolstack.');
    }
    await (await ctx.client()).call('destroy', { domain });
    return 0;
  },
};

/** wait_for_domain_deaths: until each is gone or shut down. */
async function waitForDomains(ctx: Ctx, c: ControlClient, domids: readonly number[]): Promise<void> {
  ctx.io.err(`Waiting for ${domids.length} domains\n`);
  const left = new Set(domids);
  let stop = false;
  void ctx.io.interrupted.then(() => { stop = true; });
  while (left.size > 0 && !stop) {
    const doms = await c.call('list', {});
    for (const id of [...left]) {
      const d = doms.find((x) => x.domid === id);
      if (!d) {
        ctx.io.err(`Domain ${id} has been destroyed\n`);
        left.delete(id);
      } else if (d.shutdown) {
        ctx.io.err(`Domain ${id} has been shut down, reason code ${d.shutdownReason}\n`);
        left.delete(id);
      }
    }
    if (left.size > 0) await sleep(100);
  }
}

function shutdownOrReboot(which: 'shutdown' | 'reboot'): XlCommand {
  const verb = which === 'shutdown' ? 'Shutting down' : 'Rebooting';
  return {
    name: which,
    summary: which === 'shutdown' ? 'Issue a shutdown signal to a domain' : 'Issue a reboot signal to a domain',
    usage: '[options] <-a|Domain>',
    optionsHelp: [
      `-a, --all               ${which === 'shutdown' ? 'Shutdown' : 'Reboot'} all guest domains.`,
      '-h                      Print this help.',
      `-F                      Fallback to ACPI ${which === 'shutdown' ? 'power' : 'reset'} event for HVM guests with`,
      '                        no PV drivers.',
      '-w, --wait              Wait for guest(s) to shutdown.',
    ].join('\n'),
    specs: [{ short: 'a', long: 'all' }, { short: 'w', long: 'wait' }, { short: 'F' }],
    minArgs: 0,
    async run(ctx, p) {
      if (p.rest.length === 0 && !has(p, 'a')) throw new CliError('You must specify -a or a domain id.');
      const c = await ctx.client();
      const targets: string[] = has(p, 'a')
        ? (await c.call('list', {})).filter((d) => d.domid !== 0).map((d) => String(d.domid))
        : [p.rest[0]];
      const done: number[] = [];
      for (const domain of targets) {
        const r = await c.call(which, { domain });
        ctx.io.err(`${verb} domain ${r.domid}\n`);
        done.push(r.domid);
      }
      if (has(p, 'w') && done.length > 0) await waitForDomains(ctx, c, done);
      return 0;
    },
  };
}

const simpleDomainCommand = (name: 'pause' | 'unpause', summary: string): XlCommand => ({
  name, summary, usage: '<Domain>', specs: [], minArgs: 1,
  async run(ctx, p) {
    await (await ctx.client()).call(name, { domain: p.rest[0] });
    return 0;
  },
});

const rename: XlCommand = {
  name: 'rename',
  summary: 'Rename a domain',
  usage: '<Domain> <NewDomainName>',
  specs: [],
  minArgs: 2,
  async run(ctx, p) {
    await (await ctx.client()).call('rename', { domain: p.rest[0], name: p.rest[1] });
    return 0;
  },
};

function memCommand(name: 'mem-set' | 'mem-max', summary: string): XlCommand {
  return {
    name, summary, usage: '<Domain> <MemMB[bBkKmMgG]>', specs: [], minArgs: 2,
    async run(ctx, p) {
      const kib = parseMemSizeKb(p.rest[1]);
      if (kib === null || kib === 0) throw new CliError(`invalid memory size: ${p.rest[1]}`);
      await (await ctx.client()).call(name, { domain: p.rest[0], memKiB: kib });
      return 0;
    },
  };
}

const uptime: XlCommand = {
  name: 'uptime',
  summary: 'Print uptime for all/some domains',
  usage: '[-s] [Domain]',
  optionsHelp: '-s                      Uptime in short format',
  specs: [{ short: 's' }],
  minArgs: 0,
  async run(ctx, p) {
    const c = await ctx.client();
    let doms: DomainSummary[];
    if (p.rest.length === 0) {
      doms = await c.call('list', {});
    } else {
      doms = [];
      for (const domain of p.rest) doms.push(...(await c.call('list', { domain })));
    }
    const now = ctx.io.now();
    ctx.io.out(formatUptime(doms, Math.floor(now.getTime() / 1000), has(p, 's'), localHms(now)));
    return 0;
  },
};

const domid: XlCommand = {
  name: 'domid',
  summary: 'Convert a domain name to domain id',
  usage: '<DomainName>',
  specs: [],
  minArgs: 1,
  async run(ctx, p) {
    const name = p.rest[0];
    const d = (await (await ctx.client()).call('list', {})).find((x) => x.name === name);
    if (!d) throw new CliError(`Can't get domid of domain name '${name}', maybe this domain does not exist.`);
    ctx.io.out(`${d.domid}\n`);
    return 0;
  },
};

const domname: XlCommand = {
  name: 'domname',
  summary: 'Convert a domain id to domain name',
  usage: '<DomainId>',
  specs: [],
  minArgs: 1,
  async run(ctx, p) {
    const id = p.rest[0];
    if (!/^\d+$/.test(id)) throw new CliError('Invalid domain id.');
    const d = (await (await ctx.client()).call('list', {})).find((x) => x.domid === Number(id));
    if (!d) throw new CliError(`Can't get domain name of domain id '${Number(id)}', maybe this domain does not exist.`);
    ctx.io.out(`${d.name}\n`);
    return 0;
  },
};

export const DOMAIN_COMMANDS: readonly XlCommand[] = [
  create, list, destroy, shutdownOrReboot('shutdown'), shutdownOrReboot('reboot'),
  simpleDomainCommand('pause', 'Pause execution of a domain'),
  simpleDomainCommand('unpause', 'Unpause a paused domain'),
  rename, memCommand('mem-set', 'Set the current memory usage for a domain'),
  memCommand('mem-max', 'Set the maximum amount reservation for a domain'), uptime, domid, domname,
];
