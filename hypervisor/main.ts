/**
 * `npm start`: power on the host, boot Dom0, which creates the guests of the
 * example configurations (domU/configs/*.cfg)
 * and streams their consoles; exit 0 once they have shut down (Dom0 powers the
 * host off), or keep running with --keep.
 *
 *   npm start -- [--mem MiB] [--pcpus N] [--sched credit|credit2|null]
 *                [--dom0-mem MiB] [--keep] [--guest name=kernel.ts[:MiB]]...
 */
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { readXlCfgDir } from '../dom0/toolstack/load.ts';
import { toPvBuildConfig } from '../dom0/toolstack/xlcfg.ts';
import { logger } from '../shared/log.ts';
import { SHUTDOWN_poweroff } from '../shared/hypercall.ts';
import { encodeDom0Cmdline } from '../dom0/kernel.ts';
import type { PvBuildConfig } from '../dom0/builder.ts';
import { hostConfig, type SchedName } from './config.ts';
import { Platform } from './platform/platform.ts';

/** The example configurations `npm start` creates when no --guest is given. */
export const EXAMPLE_CONFIG_DIR = 'domU/configs';

/**
 * The guests of the example configurations (xl.cfg files). A file that does not
 * parse stops the start with its file and line: nothing is created.
 */
function exampleGuests(root: string): PvBuildConfig[] {
  const loaded = readXlCfgDir(path.join(root, EXAMPLE_CONFIG_DIR), root);
  const bad = loaded.filter((l) => l.error);
  if (bad.length > 0) throw new Error(bad.map((b) => b.error!.message).join('\n'));
  return loaded.map((l) => toPvBuildConfig(l.config!));
}

function parseGuest(spec: string): PvBuildConfig {
  const m = /^([A-Za-z0-9_.-]+)=([^:]+)(?::(\d+))?$/.exec(spec);
  if (!m) throw new Error(`--guest ${spec}: expected name=path/to/kernel.ts[:MiB]`);
  const mib = m[3] ? Number(m[3]) : 4;
  return { name: m[1], kernel: m[2], memoryMiB: mib, maxmemMiB: mib * 2 };
}

const USAGE = `usage: npm start -- [options]
  --mem MiB          machine memory (default 256)
  --pcpus N          physical CPUs (default: this host's cores)
  --sched NAME       credit (default), credit2 or null
  --dom0-mem MiB     Dom0's memory (default 16)
  --guest SPEC       name=path/to/kernel.ts[:MiB], repeatable (default: the guests of
                     the example configurations, domU/configs/*.cfg)
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

const PROJECT_ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');

async function main(): Promise<number> {
  const { values } = parseArgs({
    options: {
      mem: { type: 'string' }, pcpus: { type: 'string' }, sched: { type: 'string' },
      'dom0-mem': { type: 'string' }, keep: { type: 'boolean', default: false },
      guest: { type: 'string', multiple: true }, help: { type: 'boolean', default: false },
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
  const guests = values.guest?.length ? values.guest.map(parseGuest) : exampleGuests(PROJECT_ROOT);
  const platform = new Platform(cfg);
  const stop = (): void => { void platform.stop().then(() => process.exit(130)); };
  process.once('SIGINT', stop);
  process.once('SIGTERM', stop);
  platform.boot({ kernel: 'dom0/kernel.ts', memMiB: dom0Mem, cmdline: encodeDom0Cmdline({ guests, keep: values.keep ?? false }) });
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
