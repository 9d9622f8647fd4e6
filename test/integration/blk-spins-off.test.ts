/**
 * The spins switched off on both sides (docs/block.md, "On a busy host"):
 * Dom0's `poll_us=0` and the frontend's `KernelLoop.setSpins` 0, 0, on real
 * threads with a real image file. Large READs go out as host DMA jobs, which
 * run at explicit preemption points; with neither side spinning, nobody
 * reaches one, and Dom0's last look before it blocks (blkback's armRing) must
 * run them itself. Before it did, the guest's first large READ waited for
 * ever (regression guard).
 */
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { SHUTDOWN_poweroff } from '../../shared/hypercall.ts';
import { runBenchGuests } from '../bench/boot-guest.ts';

const dirs: string[] = [];
afterEach(() => {
  for (const d of dirs.splice(0)) rmSync(d, { recursive: true, force: true });
});

describe('blkfront and blkback with the spins off on both sides', () => {
  it('1 MiB READs out as host DMA jobs are run and answered: the guest finishes and the host halts', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'xents-spins-'));
    dirs.push(dir);
    const img = join(dir, 'disk.img');
    writeFileSync(img, new Uint8Array(4 << 20).fill(0x5a));
    const cmdline = 'tests=seqread persistent=1 indirect=256 order=0 qd=4 maxpages=1056 zc=1 cb=0 warm=50 run=200 spin=0';
    const run = await runBenchGuests(
      [{ name: 'blk-bench', kernel: 'test/bench/guests/blk-bench.ts', memoryMiB: 16, cmdline, disks: [{ target: img, vdev: 'xvda', format: 'raw', access: 'rw', devtype: 'disk' }] }],
      { memMiB: 128, pcpus: 2 },
      { timeoutMs: 30_000, pollUs: 0 },
    );
    expect(run.reason).toBe(SHUTDOWN_poweroff);
    expect(run.liveThreads).toBe(0);
    expect(run.log).not.toMatch(/FAILED/);
    expect(run.bench).toHaveLength(1);
    const b = run.bench[0] as { t: string; n: number; rsp: number };
    expect(b.t).toBe('seqread');
    expect(b.n).toBeGreaterThan(0);
    // The READs went out as jobs (large ones, ASYNC_DEPTH at a time), so the path under test was taken.
    expect(run.dmaJobs.run).toBeGreaterThan(0);
  });
});
