/**
 * Wake-up latency on real threads (test/fixtures/guests/sched-latency.ts: a
 * two-vCPU guest whose vCPU 0 wakes its blocked vCPU 1 with an event-channel
 * IPI and times how long until vCPU 1 runs again). Bounds are loose (real
 * threads on a shared machine); the point is the paths work: on an idle pCPU
 * the woken vCPU takes it itself (claims, not grants), and next to a CPU-bound
 * vCPU the scheduler thread preempts that one (it calls KernelApi.preempt()).
 */
import { describe, expect, it } from 'vitest';
import { runSchedHost } from '../bench/sched-host.ts';
import type { SchedGuestSpec } from '../fixtures/dom0/sched-dom0.ts';

const ROUNDS = 150;
/** Wake-ups 1 to 2 ms apart: past credit's 1 ms rate limit, so a waker preempts at once. */
const PERIOD_US = 2000;

async function latency(hog: boolean) {
  const guests: SchedGuestSpec[] = [{
    name: 'lat', kernel: 'test/fixtures/guests/sched-latency.ts', memoryMiB: 1, vcpus: 2, cpus: [0], moreCpus: [[1]],
    cmdline: `rounds=${ROUNDS} periodUs=${PERIOD_US}`,
  }];
  if (hog) guests.push({ name: 'hog', kernel: 'test/fixtures/guests/cpu-hog.ts', memoryMiB: 1, cpus: [1] });
  // The CPU-bound guest runs for the whole window: make it last well past the latency rounds, even on a loaded machine.
  const run = await runSchedHost({ dom0Cpus: [0], leadMs: 200, windowMs: 3000, guests }, { pcpus: 2, sched: 'credit' });
  const l = run.lines.find((x) => x.name === 'SCHEDLAT');
  expect(l, run.log).toBeDefined();
  expect(run.log).not.toMatch(/crashed/);
  return { median: Number(l!.data.medianUs), rounds: Number(l!.data.rounds), stats: run.stats, hog: run.lines.find((x) => x.name === 'SCHEDHOG') };
}

describe('wake-up latency on real threads', () => {
  it('a vCPU woken on an idle pCPU takes it itself, without the scheduler thread', async () => {
    const r = await latency(false);
    expect(r.rounds).toBeGreaterThan(ROUNDS / 2);
    expect(r.median).toBeLessThan(2000);
    expect(r.stats.claims).toBeGreaterThan(ROUNDS);
    expect(r.stats.grants).toBeLessThan(r.stats.claims / 4);
  }, 30_000);

  it('a vCPU woken next to a CPU-bound one preempts it at its next preemption point', async () => {
    const r = await latency(true);
    expect(r.hog).toBeDefined();
    expect(r.median).toBeLessThan(5000); // far below the 30 ms slice the CPU-bound vCPU would otherwise keep
    expect(r.stats.preempts).toBeGreaterThan(ROUNDS / 2);
  }, 30_000);
});
