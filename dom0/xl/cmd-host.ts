/**
 * xl's host-wide commands (xl_info.c, xl_vcpu.c, xl_sched.c, xentop): info,
 * dmesg, vcpu-list, sched-credit, sched-credit2, top.
 */
import { CliError, type Ctx, type XlCommand } from './cli-context.ts';
import {
  formatInfo, formatSchedCredit2Pool, formatSchedCreditPool, formatSchedHeader, formatSchedRow, formatVcpuList,
} from './format.ts';
import { has, val, type ParsedOpts } from './getopt.ts';
import type { TopSample } from './types.ts';
import { formatTop } from './xentop.ts';

const info: XlCommand = {
  name: 'info',
  summary: 'Get information about Xen host',
  usage: '[-n] [name]',
  optionsHelp: '-n, --numa         List host NUMA topology information',
  specs: [{ short: 'n', long: 'numa' }],
  minArgs: 0,
  async run(ctx, p) {
    const h = await (await ctx.client()).call('info', {});
    ctx.io.out(formatInfo(h, { numa: has(p, 'n'), ...(p.rest[0] !== undefined ? { filter: p.rest[0] } : {}) }));
    return 0;
  },
};

const dmesg: XlCommand = {
  name: 'dmesg',
  summary: 'Read and/or clear dmesg buffer',
  usage: '[-c]',
  optionsHelp: '-c                        Clear dmesg buffer as well as printing it',
  specs: [{ short: 'c', long: 'clear' }],
  minArgs: 0,
  async run(ctx, p) {
    const r = await (await ctx.client()).call('dmesg', { clear: has(p, 'c') });
    ctx.io.out(r.text);
    return 0;
  },
};

const vcpuList: XlCommand = {
  name: 'vcpu-list',
  summary: 'List the VCPUs for all/some domains',
  usage: '[Domain, ...]',
  specs: [],
  minArgs: 0,
  async run(ctx, p) {
    const r = await (await ctx.client()).call('vcpu-list', { domains: [...p.rest] });
    ctx.io.out(formatVcpuList(r.domains, r.nrCpus));
    return 0;
  },
};

function intOpt(p: ParsedOpts, k: string, what: string): number | undefined {
  const v = val(p, k);
  if (v === undefined) return undefined;
  if (!/^\d+$/.test(v)) throw new CliError(`invalid ${what}: ${v}`);
  return Number(v);
}

/** sched-credit / sched-credit2 (xl_sched.c main_sched_credit, main_sched_credit2). */
function schedCommand(sched: 'credit' | 'credit2'): XlCommand {
  const name = sched === 'credit' ? 'sched-credit' : 'sched-credit2';
  const specs = sched === 'credit'
    ? [{ short: 'd', long: 'domain', arg: true }, { short: 'w', long: 'weight', arg: true }, { short: 'c', long: 'cap', arg: true },
      { short: 's', long: 'schedparam' }, { short: 't', long: 'tslice_ms', arg: true }, { short: 'r', long: 'ratelimit_us', arg: true },
      { short: 'm', long: 'migration_delay_us', arg: true }, { short: 'p', long: 'cpupool', arg: true }]
    : [{ short: 'd', long: 'domain', arg: true }, { short: 'w', long: 'weight', arg: true }, { short: 'c', long: 'cap', arg: true },
      { short: 's', long: 'schedparam' }, { short: 'r', long: 'ratelimit_us', arg: true }, { short: 'p', long: 'cpupool', arg: true }];
  return {
    name,
    summary: `Get/set ${sched} scheduler parameters`,
    usage: '[-d <Domain> [-w[=WEIGHT]|-c[=CAP]]] [-s [-r[=RLIMIT]]] [-p CPUPOOL]',
    optionsHelp: [
      '-d DOMAIN, --domain=DOMAIN     Domain to modify',
      '-w WEIGHT, --weight=WEIGHT     Weight (int)',
      '-c CAP, --cap=CAP              Cap (int)',
      '-s         --schedparam        Query / modify scheduler parameters',
      ...(sched === 'credit' ? ['-t TSLICE, --tslice_ms=TSLICE   Set the timeslice, in milliseconds'] : []),
      '-r RLIMIT, --ratelimit_us=RLIMIT Set the scheduling rate limit, in microseconds',
      '-p CPUPOOL, --cpupool=CPUPOOL  Restrict output to CPUPOOL',
    ].join('\n'),
    specs,
    minArgs: 0,
    async run(ctx, p) {
      const dom = val(p, 'd');
      const weight = intOpt(p, 'w', 'weight');
      const cap = intOpt(p, 'c', 'cap');
      const pool = val(p, 'p');
      const setsPool = has(p, 't') || has(p, 'r') || has(p, 'm');
      if ((pool !== undefined || has(p, 's')) && (dom !== undefined || weight !== undefined || cap !== undefined)) {
        throw new CliError('Specifying a cpupool or schedparam is not allowed with domain options.');
      }
      if (dom === undefined && (weight !== undefined || cap !== undefined)) throw new CliError('Must specify a domain.');
      if (!has(p, 's') && setsPool) throw new CliError('Must specify schedparam to set schedule parameter values.');
      if (setsPool) throw new CliError('setting the scheduler\'s global parameters is not supported by this host');
      const c = await ctx.client();
      if (dom !== undefined && (weight !== undefined || cap !== undefined)) {
        await c.call('sched-set', { domain: dom, ...(weight !== undefined ? { weight } : {}), ...(cap !== undefined ? { cap } : {}) });
        return 0;
      }
      const r = await c.call('sched-get', dom !== undefined ? { domain: dom } : {});
      if (pool !== undefined && pool !== r.pool.poolName) throw new CliError(`unknown cpupool '${pool}'`);
      if (r.pool.scheduler !== sched) {
        throw new CliError(`the host runs the ${r.pool.scheduler} scheduler, not ${sched}${r.pool.scheduler === 'credit' || r.pool.scheduler === 'credit2' ? ` (use xl sched-${r.pool.scheduler})` : ''}`);
      }
      const poolLine = sched === 'credit' ? formatSchedCreditPool(r.pool) : formatSchedCredit2Pool(r.pool);
      if (has(p, 's')) { ctx.io.out(poolLine); return 0; }
      let out = dom === undefined ? poolLine : '';
      out += formatSchedHeader();
      for (const d of r.domains) out += formatSchedRow(d.name, d.domid, d.params);
      ctx.io.out(out);
      return 0;
    },
  };
}

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

const top: XlCommand = {
  name: 'top',
  summary: 'Monitor a host and the domains in real time',
  usage: '[options]',
  optionsHelp: [
    '-d, --delay=SECONDS  seconds between updates (default 3)',
    '-n, --networks       output vif network data',
    '-x, --vbds           output vbd block device data',
    '-r, --repeat-header  repeat table header before each domain',
    '-v, --vcpus          output vcpu data',
    '-b, --batch          output in batch mode, no user input accepted',
    '-i, --iterations     number of iterations before exiting',
    '-f, --full-name      output the full domain name (not truncated)',
  ].join('\n'),
  specs: [
    { short: 'd', long: 'delay', arg: true }, { short: 'n', long: 'networks' }, { short: 'x', long: 'vbds' },
    { short: 'r', long: 'repeat-header' }, { short: 'v', long: 'vcpus' }, { short: 'b', long: 'batch' },
    { short: 'i', long: 'iterations', arg: true }, { short: 'f', long: 'full-name' },
  ],
  minArgs: 0,
  run: runTop,
};

async function runTop(ctx: Ctx, p: ParsedOpts): Promise<number> {
  const delayS = val(p, 'd') !== undefined ? Number(val(p, 'd')) : 3;
  if (!(delayS > 0)) throw new CliError(`invalid delay: ${val(p, 'd')}`);
  const iterations = intOpt(p, 'i', 'number of iterations') ?? 0;
  const batch = has(p, 'b');
  const live = !batch && ctx.io.stdoutIsTTY;
  const opts = {
    batch, vcpus: has(p, 'v'), networks: has(p, 'n'), vbds: has(p, 'x'), repeatHeader: has(p, 'r'), fullName: has(p, 'f'),
  };
  const c = await ctx.client();
  let quit = false;
  let wake: () => void = () => {};
  const stop = (): void => { quit = true; wake(); };
  void ctx.io.interrupted.then(stop);
  const stdin = ctx.io.stdin;
  const keys = (b: Buffer): void => { if (b.some((k) => k === 0x71 || k === 0x51 || k === 0x1b || k === 0x03)) stop(); };
  const interactive = live && stdin.isTTY === true && typeof stdin.setRawMode === 'function';
  if (interactive) { stdin.setRawMode(true); stdin.on('data', keys); stdin.resume(); }
  try {
    let prev: TopSample | null = null;
    for (let n = 1; !quit; n++) {
      const cur = await c.call('top', { vcpus: opts.vcpus });
      const frame = formatTop(cur, prev, opts, ctx.io.now());
      ctx.io.out(live ? `\x1b[H\x1b[2J${frame}` : frame);
      prev = cur;
      if (iterations > 0 && n >= iterations) break;
      await Promise.race([sleep(delayS * 1000), new Promise<void>((r) => { wake = r; })]);
    }
  } finally {
    if (interactive) { stdin.off('data', keys); stdin.setRawMode(false); stdin.pause(); }
  }
  return 0;
}

export const HOST_COMMANDS: readonly XlCommand[] = [info, dmesg, vcpuList, schedCommand('credit'), schedCommand('credit2'), top];
