/**
 * The block benchmark's page-cache residency guard (test/bench/page-cache.ts)
 * on a real file in the host's page cache: fincore's count, an eviction
 * (dd iflag=nocache: posix_fadvise DONTNEED on a clean file) seen and
 * repaired, and a resident file left alone.
 */
import { spawnSync } from 'node:child_process';
import { closeSync, fdatasyncSync, mkdtempSync, openSync, readFileSync, rmSync, writeSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { ensureResident, missingBytes, residency, residentBytes } from '../bench/page-cache.ts';

const SIZE = 4 << 20;
let dir = '';
let file = '';

/** Write SIZE bytes (1 MiB writes), make them durable (clean pages can be dropped), read them once. */
function makeFile(): void {
  const fd = openSync(file, 'w');
  const buf = new Uint8Array(1 << 20).fill(0x5a);
  for (let off = 0; off < SIZE; off += buf.length) writeSync(fd, buf, 0, buf.length, off);
  fdatasyncSync(fd);
  closeSync(fd);
  readFileSync(file);
}

/** Drop the file's cached pages (coreutils dd: posix_fadvise POSIX_FADV_DONTNEED). */
function dropCache(): void {
  const r = spawnSync('dd', [`if=${file}`, 'iflag=nocache', 'count=0', 'status=none']);
  expect(r.status).toBe(0);
}

beforeEach(() => {
  dir = mkdtempSync(join(tmpdir(), 'xents-pc-'));
  file = join(dir, 'img');
  makeFile();
});
afterEach(() => rmSync(dir, { recursive: true, force: true }));

describe('page-cache residency guard', () => {
  it('counts a freshly read file as wholly resident, and leaves it alone', () => {
    expect(residentBytes(file)).toBe(SIZE);
    const before = { ...residency };
    ensureResident(file, 1 << 20);
    expect(residency.refills).toBe(before.refills);
    expect(residency.checks).toBe(before.checks + 1);
    expect(residency.checked).toBe(true);
  });

  it('sees pages the host dropped, and reads them back in', () => {
    dropCache();
    const missing = missingBytes(file);
    expect(missing).toBeGreaterThan(0);
    const before = { ...residency };
    ensureResident(file, 1 << 20);
    expect(residency.refills).toBe(before.refills + 1);
    expect(residency.refilledBytes - before.refilledBytes).toBeGreaterThan(0);
    expect(residentBytes(file)).toBe(SIZE);
    expect(missingBytes(file)).toBe(0);
  });

  it('knows nothing of a file fincore cannot read (null, nothing done)', () => {
    expect(residentBytes(join(dir, 'absent'))).toBeNull();
  });
});
