import { describe, expect, it } from 'vitest';
import { Worker } from 'node:worker_threads';
import { lock, lockTry, unlock, withLock, LOCK_FREE } from '../../shared/lock.ts';

const BOOT = new URL('../../hypervisor/platform/boot-worker.mjs', import.meta.url);
const ENTRY = new URL('../fixtures/lock-worker.ts', import.meta.url).href;

describe('Atomics lock', () => {
  it('excludes: two threads incrementing a plain counter under it lose no update', async () => {
    const sab = new SharedArrayBuffer(16);
    const iterations = 100_000;
    const workers = [0, 1].map(() => new Worker(BOOT, { workerData: { entry: ENTRY, sab, iterations } }));
    await Promise.all(workers.map((w) => new Promise((res, rej) => { w.once('message', res); w.once('error', rej); })));
    await Promise.all(workers.map((w) => w.terminate()));
    expect(new Float64Array(sab, 8, 1)[0]).toBe(2 * iterations);
    expect(new Int32Array(sab)[0]).toBe(LOCK_FREE);
  });

  it('try-lock fails while held; withLock releases when the body throws', () => {
    const w = new Int32Array(new SharedArrayBuffer(4));
    lock(w, 0);
    expect(lockTry(w, 0)).toBe(false);
    unlock(w, 0);
    expect(lockTry(w, 0)).toBe(true);
    unlock(w, 0);
    expect(() => withLock(w, 0, () => { throw new Error('body'); })).toThrow('body');
    expect(w[0]).toBe(LOCK_FREE);
  });
});
