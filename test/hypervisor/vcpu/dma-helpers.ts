/**
 * What the host DMA tests (host-dma.test.ts, dma-jobs.test.ts) share: temp
 * files with an fd the test reads through, a position-dependent byte pattern,
 * and Dom0 pages laid out for a transfer.
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, afterEach, beforeAll, vi } from 'vitest';
import { PAGE_SIZE } from '../../../shared/types.ts';
import type { Dom } from '../gnttab/helpers.ts';

/**
 * Register a temp directory (named after `prefix`) for this test file, and
 * restore spies after each test; returns `tempFile(data, keep)`: a file
 * holding `data`, opened read-write, its fd closed after the test unless
 * `keep` is false (the test closes it).
 */
export function useTempFiles(prefix: string): (data?: Uint8Array, keep?: boolean) => { fd: number; file: string } {
  let dir = '';
  let n = 0;
  const openFds: number[] = [];
  beforeAll(() => { dir = fs.mkdtempSync(path.join(os.tmpdir(), prefix)); });
  afterAll(() => { fs.rmSync(dir, { recursive: true, force: true }); });
  afterEach(() => {
    vi.restoreAllMocks();
    while (openFds.length) fs.closeSync(openFds.pop()!);
  });
  return (data = new Uint8Array(0), keep = true) => {
    const file = path.join(dir, `f${n++}`);
    fs.writeFileSync(file, data);
    const fd = fs.openSync(file, 'r+');
    if (keep) openFds.push(fd);
    return { fd, file };
  };
}

/** `n` bytes of a position-dependent pattern (byte i is a hash of `seed + i`), so misplaced bytes show. */
export function pattern(n: number, seed = 0): Uint8Array {
  const b = new Uint8Array(n);
  for (let i = 0; i < n; i++) b[i] = (Math.imul(seed + i, 2654435761) >>> 24) ^ ((seed + i) & 0xff);
  return b;
}

export const gpa = (gfn: number, off = 0): number => gfn * PAGE_SIZE + off;

/** `n` consecutive free gfns of Dom0's RAM (machine-contiguous in the TestMachine), filled with `fill`. */
export function dom0Pages(d: Dom, n: number, fill = 0xee): number {
  const gs = Array.from({ length: n }, () => d.v.xen.allocGfn()).sort((a, b) => a - b);
  for (let i = 1; i < n; i++) if (gs[i] !== gs[0]! + i) throw new Error('Dom0 free gfns are not consecutive');
  for (let i = 1; i < n; i++) if (d.mfn(gs[i]!) !== d.mfn(gs[0]!) + i) throw new Error('Dom0 pages are not machine-contiguous');
  d.v.api.mem.fill(gpa(gs[0]!), n * PAGE_SIZE, fill);
  return gs[0]!;
}
