/**
 * blkback's host DMA jobs on real threads (dom0/blkback/engine.ts,
 * hypervisor/vcpu/dma-jobs.ts): a guest reads an 8 MiB image file in 1 MiB
 * requests, 4 in flight (blkfront makes them INDIRECT READs of 256 sectors,
 * ASYNC_MIN_SECTORS), and checks every byte.
 *  - By default blkback hands large READs out as jobs: the data is exact and
 *    the hypervisor counted jobs run. Which vCPU ran them (the guest's while it
 *    spins, or Dom0's) is timing: reported, not asserted.
 *  - With `xen_blkback.dma_jobs=0` the same data comes back and no job runs.
 */
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import type { PvBuildConfig } from '../../dom0/builder.ts';
import type { BlkbackSwitches } from '../../dom0/kernel.ts';
import { SHUTDOWN_poweroff } from '../../shared/hypercall.ts';
import { fillPattern } from '../fixtures/guests/blk-bigread.ts';
import { runBenchGuests, type GuestRun } from '../bench/boot-guest.ts';

const IMAGE_BYTES = 8 << 20;

const dirs: string[] = [];
afterEach(() => {
  for (const d of dirs.splice(0)) rmSync(d, { recursive: true, force: true });
});

/** A fresh 8 MiB image file holding the fixture's pattern. */
function patternImage(): string {
  const dir = mkdtempSync(join(tmpdir(), 'xents-dma-'));
  dirs.push(dir);
  const img = join(dir, 'big.img');
  const bytes = new Uint8Array(IMAGE_BYTES);
  fillPattern(bytes, 0);
  writeFileSync(img, bytes);
  return img;
}

/** Boot a host (2 pCPUs) with the blk-bigread guest on `img`; the run once it halted, checked to have gone well. */
async function bigRead(img: string, blkback?: BlkbackSwitches): Promise<GuestRun> {
  const guest: PvBuildConfig = {
    name: 'bigread', kernel: 'test/fixtures/guests/blk-bigread.ts', memoryMiB: 8, cmdline: 'depth=4',
    disks: [{ target: img, vdev: 'xvda', format: 'raw', access: 'ro', devtype: 'disk' }],
  };
  const run = await runBenchGuests([guest], { memMiB: 64, pcpus: 2 }, { timeoutMs: 30_000, ...(blkback ? { blkback } : {}) });
  const lines = run.log.split('\n').filter((l) => l.includes('blk-bigread:'));
  expect(run.log, lines.join('\n') || run.log.slice(-4000)).toMatch(/blk-bigread: read 8 MiB in 1 MiB requests: verified/);
  // blkfront made INDIRECT requests (what blkback may hand out as jobs).
  const indirect = Number(/blk-bigread: .* (\d+) indirect/.exec(run.log)?.[1] ?? 0);
  expect(indirect, lines.join('\n')).toBeGreaterThan(0);
  expect(run.reason).toBe(SHUTDOWN_poweroff);
  expect(run.liveThreads).toBe(0);
  return run;
}

describe('blkback host DMA jobs with a real image file', () => {
  it('large READs run as host DMA jobs, and the guest reads back exactly the image', async () => {
    const run = await bigRead(patternImage());
    const { run: jobs, elsewhere } = run.dmaJobs;
    console.log(`host DMA jobs: ${jobs} run, ${elsewhere} of them by a vCPU of another domain than Dom0`);
    expect(jobs).toBeGreaterThan(0);
    expect(elsewhere).toBeGreaterThanOrEqual(0);
    expect(elsewhere).toBeLessThanOrEqual(jobs);
  }, 60_000);

  it('xen_blkback.dma_jobs=0: the same data, and no job runs', async () => {
    const run = await bigRead(patternImage(), { dmaJobs: false });
    expect(run.dmaJobs).toEqual({ run: 0, elsewhere: 0 });
  }, 60_000);
});
