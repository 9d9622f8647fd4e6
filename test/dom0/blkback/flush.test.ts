/**
 * FileStorage.flush on a real file: flushes asked while an fdatasync runs
 * share the next one, which starts after they were asked; at most one
 * fdatasync per image in the host's thread pool; after close, an error.
 */
import { describe, expect, it } from 'vitest';
import { FileStorage, StorageError } from '../../../dom0/blkback/storage.ts';
import { TestMachine } from '../../helpers/machine.ts';
import { tempDisk } from '../../helpers/temp-disk.ts';

describe('FileStorage.flush', () => {
  const m = new TestMachine();

  it('flushes asked while an fdatasync runs share the next one, and none is answered by a sync that began before it was asked', async () => {
    const s = new FileStorage(tempDisk(1 << 20), true, m.dma);
    const answered: string[] = [];
    const ask = (name: string) => new Promise<Error | null>((res) => s.flush((err) => { answered.push(`${name}@${s.flushStats.syncs}`); res(err); }));
    const a = ask('a'); // starts sync 1
    const rest = ['b', 'c', 'd'].map(ask); // asked while sync 1 runs: they wait for sync 2
    expect(s.flushStats.syncs).toBe(1);
    expect(await Promise.all([a, ...rest])).toEqual([null, null, null, null]);
    // a answered when sync 1 returned (before sync 2 began); b, c, d by sync 2.
    expect(answered).toEqual(['a@1', 'b@2', 'c@2', 'd@2']);
    // A ringful at once: the first alone, the other 31 together.
    expect(await Promise.all(Array.from({ length: 32 }, (_, i) => ask(`r${i}`)))).toEqual(Array(32).fill(null));
    expect(s.flushStats.syncs).toBe(4);
    s.close();
  });

  it('a flush asked after the image is closed gets an error; one waiting when it closes too', async () => {
    const s = new FileStorage(tempDisk(1 << 20), true, m.dma);
    const running = new Promise<Error | null>((res) => s.flush(res));
    const waiting = new Promise<Error | null>((res) => s.flush(res));
    s.close();
    await running; // (its fdatasync was already under way: done, or EBADF)
    expect(await waiting).toBeInstanceOf(StorageError);
    expect(await new Promise<Error | null>((res) => s.flush(res))).toBeInstanceOf(StorageError);
    expect(s.flushStats.syncs).toBe(1);
  });
});
