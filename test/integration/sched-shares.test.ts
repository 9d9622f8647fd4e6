/**
 * The scheduler on real threads: two CPU-bound PV guests (test/fixtures/
 * guests/cpu-hog.ts: they compute and call KernelApi.preempt() every few µs)
 * share pCPU 1, with weights 256 and 512, while Dom0 is pinned to pCPU 0. Each
 * measures its own CPU time (VCPUOP_get_runstate_info) over the same window
 * of system time. The policy objects decide on the timer thread; the shares
 * must come out about 1:2 (loose bounds: real threads on a shared machine).
 */
import { describe, expect, it } from 'vitest';
import type { SchedName } from '../../hypervisor/config.ts';
import { runSchedHost } from '../bench/sched-host.ts';

const WINDOW_MS = 2500;

async function shares(sched: SchedName): Promise<{ light: number; heavy: number; log: string }> {
  const hog = 'test/fixtures/guests/cpu-hog.ts';
  const run = await runSchedHost({
    dom0Cpus: [0],
    leadMs: 600,
    windowMs: WINDOW_MS,
    guests: [
      { name: 'w256', kernel: hog, memoryMiB: 1, weight: 256, cpus: [1] },
      { name: 'w512', kernel: hog, memoryMiB: 1, weight: 512, cpus: [1] },
    ],
  }, { pcpus: 2, sched });
  const byTag = new Map(run.lines.filter((l) => l.name === 'SCHEDHOG').map((l) => [l.data.tag, Number(l.data.cpuNs)]));
  return { light: byTag.get('w256') ?? NaN, heavy: byTag.get('w512') ?? NaN, log: run.log };
}

describe('scheduling real vCPU threads', () => {
  for (const sched of ['credit', 'credit2'] as const) {
    it(`${sched}: weights 256 and 512 on one pCPU get CPU time about 1:2`, async () => {
      const { light, heavy, log } = await shares(sched);
      expect(log).not.toMatch(/crashed/);
      const ratio = heavy / light;
      expect(ratio, `w512 ${heavy / 1e6} ms, w256 ${light / 1e6} ms`).toBeGreaterThan(1.5);
      expect(ratio).toBeLessThan(2.7);
      // They shared one pCPU: together about the whole window, never more.
      expect((heavy + light) / (WINDOW_MS * 1e6)).toBeGreaterThan(0.8);
      expect((heavy + light) / (WINDOW_MS * 1e6)).toBeLessThan(1.02);
    }, 30_000);
  }
});
