/**
 * Run benchmark guests on the real machine (platform, Dom0, vCPU threads) and
 * collect the JSON lines they print as `BENCH {...}` on the console.
 */
import { encodeDom0Cmdline } from '../../dom0/kernel.ts';
import type { PvBuildConfig } from '../../dom0/builder.ts';
import { ConsoleTap } from '../helpers/console-tap.ts';
import { hostConfig, type HostConfig } from '../../hypervisor/config.ts';
import { Platform } from '../../hypervisor/platform/platform.ts';

export interface GuestRun {
  /** Every `BENCH {...}` line, parsed. */
  readonly bench: Array<Record<string, unknown>>;
  /** The hypervisor console as it stood when the host halted. */
  readonly log: string;
}

/**
 * Boot a host whose Dom0 builds `guests`, wait until it halts (Dom0 powers off
 * once they have all shut down), and return what they printed. The console
 * ring is read while the host runs so that nothing is lost to wrap-around.
 */
export async function runBenchGuests(guests: readonly PvBuildConfig[], cfg: Partial<HostConfig> = {}): Promise<GuestRun> {
  const platform = new Platform(hostConfig({ memMiB: 128, ...cfg }));
  const tap = new ConsoleTap(platform.hv);
  platform.boot({ kernel: 'dom0/kernel.ts', memMiB: 4, cmdline: encodeDom0Cmdline({ guests, keep: false }) });
  try {
    await platform.halted;
  } finally {
    tap.stop();
  }
  const log = tap.text;
  const bench: Array<Record<string, unknown>> = [];
  for (const m of log.matchAll(/^\(d\d+\) BENCH (\{.*\})$/gm)) bench.push(JSON.parse(m[1]) as Record<string, unknown>);
  return { bench, log };
}
