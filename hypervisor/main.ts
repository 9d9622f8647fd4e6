/**
 * `npm start`: power on the host, boot Dom0, which creates the guests of the
 * example configurations (domU/configs/*.cfg)
 * and streams their consoles; exit 0 once they have shut down (Dom0 powers the
 * host off), or keep running with --keep.
 *
 *   npm start -- [--mem MiB] [--pcpus N] [--sched credit|credit2|null]
 *                [--dom0-mem MiB] [--keep] [--guest name=kernel.ts[:MiB]]...
 *                [--configs DIR] [--dom0-args STR]
 */
import { parseArgs } from 'node:util';
import { logger } from '../shared/log.ts';
import { SHUTDOWN_poweroff } from '../shared/hypercall.ts';
import { hostConfig, type SchedName } from './config.ts';
import { Platform } from './platform/platform.ts';

/** The example configurations `npm start` creates when no --guest is given. */
export const EXAMPLE_CONFIG_DIR = 'domU/configs';

/**
 * Dom0's kernel command line (parsed by dom0/kernel.ts): which guests to build
 * (an xl.cfg directory, or guest=<spec> entries) and whether to keep running.
 * The hypervisor passes it through as text, as Xen passes dom0's.
 */
function dom0Cmdline(guestSpecs: readonly string[], configDir: string | undefined, keep: boolean, extra: string | undefined): string {
  const specs = guestSpecs.map((g) => `guest=${g}`);
  if (configDir !== undefined) specs.push(`configs=${configDir}`);
  const guests = specs.length > 0 ? specs.join(' ') : `configs=${EXAMPLE_CONFIG_DIR}`;
  return `${guests} keep=${keep ? 1 : 0}${extra ? ` ${extra}` : ''}`;
}

const USAGE = `usage: npm start -- [options]
  --mem MiB          machine memory (default 256)
  --pcpus N          physical CPUs (default: this host's cores)
  --sched NAME       credit (default), credit2 or null
  --dom0-mem MiB     Dom0's memory (default 16)
  --guest SPEC       name=path/to/kernel.ts[:MiB], repeatable (default: the guests of
                     the example configurations, domU/configs/*.cfg)
  --configs DIR      create the guests of every xl.cfg file in DIR instead of the examples
  --dom0-args STR    more of Dom0's command line, e.g. blkback's switches:
                     "xen_blkback.feature_persistent=0 xen_blkback.max_ring_page_order=0"
  --keep             keep the host running after the guests shut down (Ctrl-C stops it);
                     typed input goes to the serial console (CONSOLEIO_read, VIRQ_CONSOLE)
  --help             this text`;

/** A positive integer option, or a clear error naming the option. */
function intOption(name: string, v: string | undefined): number | undefined {
  if (v === undefined) return undefined;
  const n = Number(v);
  if (!Number.isInteger(n) || n <= 0) throw new Error(`--${name} ${v}: expected a positive integer`);
  return n;
}

async function main(): Promise<number> {
  const { values } = parseArgs({
    options: {
      mem: { type: 'string' }, pcpus: { type: 'string' }, sched: { type: 'string' },
      'dom0-mem': { type: 'string' }, keep: { type: 'boolean', default: false },
      guest: { type: 'string', multiple: true }, configs: { type: 'string' }, 'dom0-args': { type: 'string' }, help: { type: 'boolean', default: false },
    },
  });
  if (values.help) {
    console.log(USAGE);
    return 0;
  }
  const memMiB = intOption('mem', values.mem);
  const pcpus = intOption('pcpus', values.pcpus);
  const dom0Mem = intOption('dom0-mem', values['dom0-mem']) ?? 16;
  const cfg = hostConfig({
    ...(memMiB ? { memMiB } : {}),
    ...(pcpus ? { pcpus } : {}),
    ...(values.sched ? { sched: values.sched as SchedName } : {}),
  });
  const platform = new Platform(cfg);
  const stop = (): void => { void platform.stop().then(() => process.exit(130)); };
  process.once('SIGINT', stop);
  process.once('SIGTERM', stop);
  platform.boot({ kernel: 'dom0/kernel.ts', memMiB: dom0Mem, cmdline: dom0Cmdline(values.guest ?? [], values.configs, values.keep ?? false, values['dom0-args']) });
  if (values.keep && process.stdin.isTTY) {
    // The host's serial line: keystrokes reach Dom0 through CONSOLEIO_read.
    process.stdin.on('data', (b: Buffer) => { platform.serialInput(new Uint8Array(b)); });
  }
  const reason = await platform.halted;
  logger('platform').info({ reason }, 'host halted');
  return reason === SHUTDOWN_poweroff ? 0 : 1;
}

main().then((code) => process.exit(code), (e: unknown) => {
  logger('platform').fatal({ err: e instanceof Error ? e.message : String(e) }, 'host failed');
  process.exit(1);
});
