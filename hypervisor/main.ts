/**
 * `npm start`: power on the host, boot Dom0, which creates the example guests
 * and streams their consoles; exit 0 once they have shut down (Dom0 powers the
 * host off), or keep running with --keep.
 *
 *   npm start -- [--mem MiB] [--pcpus N] [--sched credit|credit2|null]
 *                [--dom0-mem MiB] [--keep] [--guest name=kernel.ts[:MiB]]...
 */
import { parseArgs } from 'node:util';
import { logger } from '../shared/log.ts';
import { SHUTDOWN_poweroff } from '../shared/hypercall.ts';
import { encodeDom0Cmdline } from '../dom0/kernel.ts';
import type { PvBuildConfig } from '../dom0/builder.ts';
import { hostConfig, type SchedName } from './config.ts';
import { Platform } from './platform/platform.ts';

export const DEFAULT_GUESTS: readonly PvBuildConfig[] = [
  { name: 'hello', kernel: 'domU/guests/hello.ts', memoryMiB: 4, maxmemMiB: 8, cmdline: 'console=hvc0' },
];

function parseGuest(spec: string): PvBuildConfig {
  const m = /^([A-Za-z0-9_.-]+)=([^:]+)(?::(\d+))?$/.exec(spec);
  if (!m) throw new Error(`--guest ${spec}: expected name=path/to/kernel.ts[:MiB]`);
  const mib = m[3] ? Number(m[3]) : 4;
  return { name: m[1], kernel: m[2], memoryMiB: mib, maxmemMiB: mib * 2 };
}

async function main(): Promise<number> {
  const { values } = parseArgs({
    options: {
      mem: { type: 'string' }, pcpus: { type: 'string' }, sched: { type: 'string' },
      'dom0-mem': { type: 'string' }, keep: { type: 'boolean', default: false },
      guest: { type: 'string', multiple: true },
    },
  });
  const cfg = hostConfig({
    ...(values.mem ? { memMiB: Number(values.mem) } : {}),
    ...(values.pcpus ? { pcpus: Number(values.pcpus) } : {}),
    ...(values.sched ? { sched: values.sched as SchedName } : {}),
  });
  const guests = values.guest?.length ? values.guest.map(parseGuest) : DEFAULT_GUESTS;
  const platform = new Platform(cfg);
  const stop = (): void => { void platform.stop().then(() => process.exit(130)); };
  process.once('SIGINT', stop);
  process.once('SIGTERM', stop);
  platform.boot({ kernel: 'dom0/kernel.ts', memMiB: Number(values['dom0-mem'] ?? 16), cmdline: encodeDom0Cmdline({ guests, keep: values.keep ?? false }) });
  const reason = await platform.halted;
  logger('platform').info({ reason }, 'host halted');
  return reason === SHUTDOWN_poweroff ? 0 : 1;
}

main().then((code) => process.exit(code), (e: unknown) => {
  logger('platform').fatal({ err: e instanceof Error ? e.message : String(e) }, 'host failed');
  process.exit(1);
});
