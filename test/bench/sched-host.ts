/**
 * Boot a real host (platform, timer/scheduler thread, one thread per vCPU)
 * whose Dom0 is test/fixtures/dom0/sched-dom0.ts, wait for it to power off,
 * and return the console and every `<TAG> {...}` JSON line the guests printed.
 * Shared by the scheduler's real-thread test and its benchmarks.
 */
import { ConsoleTap } from '../helpers/console-tap.ts';
import { hostConfig, type HostConfig } from '../../hypervisor/config.ts';
import { Platform } from '../../hypervisor/platform/platform.ts';
import { SQ } from '../../hypervisor/state.ts';
import { encodeSchedDom0Cmdline, type SchedDom0Spec } from '../fixtures/dom0/sched-dom0.ts';

export interface SchedHostRun {
  readonly log: string;
  /** Parsed `NAME {...}` lines, by NAME (e.g. SCHEDHOG, SCHEDLAT). */
  readonly lines: ReadonlyArray<{ readonly name: string; readonly data: Record<string, unknown> }>;
  /** The scheduler core's counters at the end. */
  readonly stats: { events: number; schedules: number; grants: number; claims: number; relabels: number; preempts: number; overruns: number };
}

export async function runSchedHost(spec: SchedDom0Spec, cfg: Partial<HostConfig> = {}, timeoutMs = 60_000): Promise<SchedHostRun> {
  const platform = new Platform(hostConfig({ memMiB: 64, maxDomains: 16, p2mEntries: 8192, ...cfg }));
  const hv = platform.hv;
  const tap = new ConsoleTap(hv);
  platform.boot({ kernel: 'test/fixtures/dom0/sched-dom0.ts', memMiB: 4, cmdline: encodeSchedDom0Cmdline(spec) });
  let timeout: NodeJS.Timeout | undefined;
  try {
    await Promise.race([
      platform.halted,
      new Promise((_, rej) => { timeout = setTimeout(() => rej(new Error(`host did not halt within ${timeoutMs} ms`)), timeoutMs); }),
    ]);
  } catch (e) {
    await platform.stop();
    throw new Error(`${e instanceof Error ? e.message : String(e)}\n${tap.text}`);
  } finally {
    tap.stop();
    clearTimeout(timeout);
  }
  const log = tap.text;
  const lines: Array<{ name: string; data: Record<string, unknown> }> = [];
  for (const m of log.matchAll(/^\(d\d+\) ([A-Z]+) (\{.*\})$/gm)) lines.push({ name: m[1], data: JSON.parse(m[2]) as Record<string, unknown> });
  const r = hv.schedRing;
  const stats = {
    events: r[SQ.STAT_EVENTS], schedules: r[SQ.STAT_SCHEDULES], grants: r[SQ.STAT_GRANTS], claims: r[SQ.STAT_CLAIMS],
    relabels: r[SQ.STAT_RELABELS], preempts: r[SQ.STAT_PREEMPTS], overruns: r[SQ.STAT_OVERRUNS],
  };
  return { log, lines, stats };
}
