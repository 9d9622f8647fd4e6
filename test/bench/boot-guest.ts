/**
 * Run benchmark guests on the real machine (platform, Dom0, vCPU threads) and
 * collect the JSON lines they print as `BENCH {...}` on the console.
 */
import { encodeDom0Cmdline, type BlkbackSwitches } from '../../dom0/kernel.ts';
import type { PvBuildConfig } from '../../dom0/builder.ts';
import { ConsoleTap } from '../helpers/console-tap.ts';
import { hostConfig, type HostConfig } from '../../hypervisor/config.ts';
import { Platform } from '../../hypervisor/platform/platform.ts';
import { G } from '../../hypervisor/state.ts';
import { SHUTDOWN_crash } from '../../shared/hypercall.ts';
import { hostStateDump } from '../helpers/state-dump.ts';

export interface GuestRun {
  /** Every `BENCH {...}` line, parsed. */
  readonly bench: Array<Record<string, unknown>>;
  /** The hypervisor console as it stood when the host halted. */
  readonly log: string;
  /** The SHUTDOWN_* reason the host halted with (Dom0's: poweroff when all went well). */
  readonly reason: number;
  /** vCPU threads still alive once it halted (0: none leaked). */
  readonly liveThreads: number;
  /**
   * Host DMA jobs (hypervisor/vcpu/dma-jobs.ts) as the hypervisor counted
   * them when the host halted: `run`, every job run (G.DMA_RUN);
   * `elsewhere`, those run by a vCPU of another domain than the one that
   * queued them (G.DMA_RUN_ELSEWHERE), e.g. blkback's large READs run by the
   * frontend's vCPU.
   */
  readonly dmaJobs: { readonly run: number; readonly elsewhere: number };
}

export interface RunOptions {
  /**
   * Give up once the host has run this long (ms; default: wait for ever):
   * the host is stopped and the promise rejects with the end of the console
   * and a picture of the hypervisor's state (hostStateDump) taken before the
   * stop, so that a hang on a CI machine says where everything was.
   */
  readonly timeoutMs?: number;
  /** Dom0's blkback switches (xen_blkback.* on its command line). */
  readonly blkback?: BlkbackSwitches;
  /** Dom0's `poll_us` (its spin on the rings before it blocks). */
  readonly pollUs?: number;
}

/**
 * Boot a host whose Dom0 builds `guests`, wait until it halts (Dom0 powers off
 * once they have all shut down), and return what they printed. The console
 * ring is read while the host runs so that nothing is lost to wrap-around.
 */
export async function runBenchGuests(guests: readonly PvBuildConfig[], cfg: Partial<HostConfig> = {}, o: RunOptions = {}): Promise<GuestRun> {
  const platform = new Platform(hostConfig({ memMiB: 128, ...cfg }));
  const tap = new ConsoleTap(platform.hv);
  platform.boot({ kernel: 'dom0/kernel.ts', memMiB: 4, cmdline: encodeDom0Cmdline({ guests, keep: false, ...(o.blkback ? { blkback: o.blkback } : {}), ...(o.pollUs !== undefined ? { pollUs: o.pollUs } : {}) }) });
  let timer: NodeJS.Timeout | undefined;
  let reason: number;
  try {
    const timedOut = new Promise<'timeout'>((r) => {
      if (o.timeoutMs !== undefined) timer = setTimeout(() => r('timeout'), o.timeoutMs);
    });
    const end = await Promise.race([platform.halted, timedOut]);
    if (end === 'timeout') {
      const state = hostStateDump(platform.hv);
      platform.halt(SHUTDOWN_crash);
      await platform.halted;
      throw new Error(`the host did not halt within ${o.timeoutMs} ms; console (end):\n${tap.text.slice(-4000)}\nhypervisor state:\n${state}`);
    }
    reason = end;
  } finally {
    clearTimeout(timer);
    tap.stop();
  }
  const log = tap.text;
  const bench: Array<Record<string, unknown>> = [];
  for (const m of log.matchAll(/^\(d\d+\) BENCH (\{.*\})$/gm)) bench.push(JSON.parse(m[1]) as Record<string, unknown>);
  const g = platform.hv.g;
  const dmaJobs = { run: Atomics.load(g, G.DMA_RUN), elsewhere: Atomics.load(g, G.DMA_RUN_ELSEWHERE) };
  return { bench, log, reason, liveThreads: platform.liveThreads, dmaJobs };
}
