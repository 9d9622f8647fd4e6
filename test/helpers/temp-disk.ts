/** A disk image file in a fresh temp directory, removed when the current test finishes. */
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { onTestFinished } from 'vitest';

/** Create `bytes` of image (zeroes, or what `fill` writes) and return its path. Call inside a test. */
export function tempDisk(bytes: number, fill?: (b: Uint8Array) => void): string {
  const d = mkdtempSync(join(tmpdir(), 'xents-disk-'));
  onTestFinished(() => rmSync(d, { recursive: true, force: true }));
  const p = join(d, 'disk.img');
  const b = new Uint8Array(bytes);
  fill?.(b);
  writeFileSync(p, b);
  return p;
}
