/**
 * Run benchmark guests on the real machine (platform, Dom0, vCPU threads) and
 * collect the JSON lines they print as `BENCH {...}` on the console.
 */
import { encodeDom0Cmdline } from '../../dom0/kernel.ts';
import type { PvBuildConfig } from '../../dom0/builder.ts';
import { conringRead } from '../../hypervisor/console.ts';
import { hostConfig, type HostConfig } from '../../hypervisor/config.ts';
import { Platform } from '../../hypervisor/platform/platform.ts';

export async function runBenchGuests(guests: readonly PvBuildConfig[], cfg: Partial<HostConfig> = {}): Promise<Array<Record<string, unknown>>> {
  const platform = new Platform(hostConfig({ memMiB: 128, ...cfg }));
  platform.boot({ kernel: 'dom0/kernel.ts', memMiB: 4, cmdline: encodeDom0Cmdline({ guests, keep: false }) });
  await platform.halted;
  const hv = platform.hv;
  const text = new TextDecoder().decode(conringRead(hv, hv.cfg.conringSize, false, 0, false).data);
  const out: Array<Record<string, unknown>> = [];
  for (const m of text.matchAll(/^\(d\d+\) BENCH (\{.*\})$/gm)) out.push(JSON.parse(m[1]) as Record<string, unknown>);
  return out;
}
