/**
 * Page-cache residency of the block benchmark's image files.
 *
 * The file targets are "page-cache hot": every read the guest and the fs
 * baseline make must be a copy out of the host's page cache. A host may drop
 * cached pages on its own: the machine these figures come from runs DAMON
 * proactive reclaim (a `pageout` scheme on physical memory: memory idle for
 * ~30 s is reclaimed, clean page-cache pages simply dropped), and a 64 MiB
 * image left alone for a few minutes was found ~45% evicted (a 4 KiB
 * random-read run over it then went to the disk: ~40 k/s against ~450 k/s
 * hot). So before every run on an image, guest or fs loop, its
 * residency is checked (util-linux `fincore`) and a partly evicted image is
 * read back in; after every guest run it is checked again, and a run that
 * lost pages meanwhile is reported (and repeated by the caller).
 */
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';

/** What the checks found over the benchmark (for its report). */
export interface ResidencyStats {
  /** Checks made, and whether `fincore` could make them (false: none were). */
  checks: number;
  checked: boolean;
  /** Times an image was found partly evicted before a run and read back in, and the bytes missing. */
  refills: number;
  refilledBytes: number;
  /** Guest runs after which their image had lost pages (repeated). */
  lostInRun: number;
}

export const residency: ResidencyStats = { checks: 0, checked: true, refills: 0, refilledBytes: 0, lostInRun: 0 };

/**
 * Bytes of `file` in the page cache (`fincore --bytes`), or null where
 * fincore is missing or fails (then nothing is known, and nothing is done).
 */
export function residentBytes(file: string): number | null {
  const r = spawnSync('fincore', ['--bytes', '--noheadings', '--output', 'RES', file], { encoding: 'utf8' });
  if (r.status !== 0 || typeof r.stdout !== 'string') return null;
  const n = Number(r.stdout.trim());
  return Number.isFinite(n) && n >= 0 ? n : null;
}

/** The bytes of `file` not in the page cache (0 if it is all there or nothing is known). */
export function missingBytes(file: string): number {
  const res = residentBytes(file);
  residency.checks++;
  if (res === null) {
    residency.checked = false;
    return 0;
  }
  return Math.max(0, fs.statSync(file).size - res);
}

/**
 * Make `file` wholly resident before a run: if pages are missing, read it
 * through in `chunk`-byte reads (the size it was written in, so that the
 * cache holds it in folios of the same kind) and count the refill.
 */
export function ensureResident(file: string, chunk: number): void {
  const missing = missingBytes(file);
  if (missing === 0) return;
  residency.refills++;
  residency.refilledBytes += missing;
  const fd = fs.openSync(file, 'r');
  try {
    const buf = new Uint8Array(chunk);
    const size = fs.fstatSync(fd).size;
    for (let off = 0; off < size; off += chunk) fs.readSync(fd, buf, 0, Math.min(chunk, size - off), off);
  } finally {
    fs.closeSync(fd);
  }
}

/**
 * A line on the host's proactive reclaim, from /sys/kernel/mm/damon (the
 * sysfs admin interface): which kdamonds are on and their schemes' actions;
 * null if the host has none running.
 */
export function damonLine(): string | null {
  const root = '/sys/kernel/mm/damon/admin/kdamonds';
  const read = (p: string): string | null => {
    try {
      return fs.readFileSync(p, 'utf8').trim();
    } catch {
      return null;
    }
  };
  const on: string[] = [];
  const n = Number(read(`${root}/nr_kdamonds`) ?? 0);
  for (let k = 0; k < n; k++) {
    if (read(`${root}/${k}/state`) !== 'on') continue;
    const ctx = `${root}/${k}/contexts/0`;
    const schemes = Number(read(`${ctx}/schemes/nr_schemes`) ?? 0);
    const actions: string[] = [];
    for (let s = 0; s < schemes; s++) {
      const action = read(`${ctx}/schemes/${s}/action`);
      const minAge = Number(read(`${ctx}/schemes/${s}/access_pattern/age/min`) ?? NaN);
      const aggrUs = Number(read(`${ctx}/monitoring_attrs/intervals/aggr_us`) ?? NaN);
      const idle = Number.isFinite(minAge * aggrUs) ? `, memory idle ${(minAge * aggrUs / 1e6).toFixed(0)} s or more` : '';
      if (action !== null) actions.push(`${action}${idle}`);
    }
    on.push(`kdamond ${k} (${read(`${ctx}/operations`) ?? '?'}: ${actions.join('; ') || 'no scheme'})`);
  }
  return on.length > 0 ? `DAMON on: ${on.join(', ')}` : null;
}
