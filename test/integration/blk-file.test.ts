/**
 * The block split driver on real threads with a real image file: blkfront in
 * a DomU, blkback in Dom0, the data in a sparse file on the host.
 *  - What one guest run writes, the next run (a new host) reads back, and the
 *    bytes in the image file are the pattern the guest wrote.
 *  - A host killed with SIGKILL right after a flush was acknowledged loses
 *    none of the flushed data (the host runs in a child process: `npm start
 *    -- --configs DIR`, the same entry point users run).
 */
import { spawn } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import type { PvBuildConfig } from '../../dom0/builder.ts';
import { SHUTDOWN_poweroff } from '../../shared/hypercall.ts';
import { patternByte } from '../../domU/guests/blkdemo.ts';
import { REGION } from '../fixtures/guests/blk-durable.ts';
import { runBenchGuests } from '../bench/boot-guest.ts';

const dirs: string[] = [];
afterEach(() => {
  for (const d of dirs.splice(0)) rmSync(d, { recursive: true, force: true });
});
function tempDir(): string {
  const d = mkdtempSync(join(tmpdir(), 'xents-blk-'));
  dirs.push(d);
  return d;
}

/** Boot a host whose Dom0 creates `guests`; its console once it halted (powered off, no thread left). */
async function runHost(guests: readonly PvBuildConfig[]): Promise<string> {
  const run = await runBenchGuests(guests, { memMiB: 64, pcpus: 2 }, { timeoutMs: 30_000 });
  expect(run.reason).toBe(SHUTDOWN_poweroff);
  expect(run.liveThreads).toBe(0);
  return run.log;
}

/** The first byte of the image's [from, from + len) that is not run `run`'s pattern (at pattern offset `patternBase`), or -1. */
function firstMismatch(img: Uint8Array, from: number, len: number, run: number, patternBase = 0): number {
  for (let i = 0; i < len; i++) if (img[from + i] !== patternByte(run, patternBase + i)) return from + i;
  return -1;
}

describe('blkfront and blkback with a real image file', () => {
  it('a second guest run reads back what the first wrote, and the image file holds it', async () => {
    const dir = tempDir();
    const img = join(dir, 'disk.img');
    const guest: PvBuildConfig = {
      name: 'blkdemo', kernel: 'domU/guests/blkdemo.ts', memoryMiB: 8,
      disks: [{ target: img, vdev: 'xvda', format: 'raw', access: 'rw', devtype: 'disk', size: 4 << 20 }],
    };
    const first = await runHost([guest]);
    expect(first).toContain('blkdemo: blank disk (no run record)');
    expect(first).toMatch(/blkdemo: run 1: wrote 1024 KiB .* verified/);
    // Created sparse at the size asked for, and holding run 1's pattern after sector 0.
    expect(statSync(img).size).toBe(4 << 20);
    let bytes = new Uint8Array(readFileSync(img));
    expect(firstMismatch(bytes, 512, 1 << 20, 1)).toBe(-1);

    const second = await runHost([guest]);
    expect(second).toContain("blkdemo: found run 1's record; its pattern is intact");
    expect(second).toMatch(/blkdemo: run 2: wrote 1024 KiB .* verified/);
    bytes = new Uint8Array(readFileSync(img));
    expect(firstMismatch(bytes, 512, 1 << 20, 2)).toBe(-1);
    expect(new DataView(bytes.buffer).getUint32(4, true)).toBe(2);
  }, 90_000);

  it('a host killed with SIGKILL right after a flush is acknowledged keeps every flushed byte', async () => {
    const dir = tempDir();
    const img = join(dir, 'durable.img');
    const cfgDir = join(dir, 'configs');
    const { mkdirSync } = await import('node:fs');
    mkdirSync(cfgDir);
    writeFileSync(join(cfgDir, 'durable.cfg'), [
      'name = "durable"',
      `kernel = "${join(process.cwd(), 'test/fixtures/guests/blk-durable.ts')}"`,
      'memory = 8',
      'extra = "rounds=24"',
      `disk = [ 'format=raw, vdev=xvda, access=rw, size=8M, target=${img}' ]`,
      '',
    ].join('\n'));
    const child = spawn(process.execPath, ['--import', 'tsx', 'hypervisor/main.ts', '--configs', cfgDir, '--mem', '64', '--pcpus', '2'], {
      stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env },
    });
    let out = '';
    let durable = 0;
    const killed = new Promise<number>((resolve, reject) => {
      const timer = setTimeout(() => { child.kill('SIGKILL'); reject(new Error(`no DURABLE 3 within 60 s:\n${out}`)); }, 60_000);
      child.stdout.setEncoding('utf8');
      child.stderr.setEncoding('utf8');
      child.stderr.on('data', (s: string) => { out += s; });
      child.stdout.on('data', (s: string) => {
        out += s;
        for (const m of s.matchAll(/DURABLE (\d+)/g)) durable = Math.max(durable, Number(m[1]));
        // Kill the moment the third flush is acknowledged: no orderly shutdown, no chance to write more.
        if (durable >= 3 && child.exitCode === null && !child.killed) {
          child.kill('SIGKILL');
          clearTimeout(timer);
        }
      });
      child.once('exit', (code, signal) => {
        clearTimeout(timer);
        if (signal === 'SIGKILL') resolve(durable);
        else reject(new Error(`host exited by itself (code ${code}):\n${out}`));
      });
    });
    const acknowledged = await killed;
    expect(acknowledged).toBeGreaterThanOrEqual(3);
    // Every region whose flush was acknowledged holds its round's pattern.
    const bytes = new Uint8Array(readFileSync(img));
    for (let r = 1; r <= acknowledged; r++) {
      const at = (r - 1) * REGION;
      expect(firstMismatch(bytes, at, REGION, r, at), `region ${r}`).toBe(-1);
    }
  }, 90_000);
});
