/**
 * The scheduler request ring (hypervisor/sched/ring.ts): many producers, one
 * consumer, in shared memory; an all-zero buffer is an empty ring.
 */
import { Worker } from 'node:worker_threads';
import { describe, expect, it } from 'vitest';
import { hostConfig } from '../../../hypervisor/config.ts';
import {
  RELEASE_BLOCKED, SCHED_EV_CLAIM, SCHED_EV_EXIT, SCHED_EV_RELEASE, SCHED_EV_WAKE, releaseArg, schedPost, schedRingReady, schedTake,
} from '../../../hypervisor/sched/ring.ts';
import { G, HvState, SCHED_RING_ENTRIES, SQ } from '../../../hypervisor/state.ts';

const BOOT = new URL('../../../hypervisor/platform/boot-worker.mjs', import.meta.url);
const ENTRY = new URL('../../fixtures/sched-ring-worker.ts', import.meta.url).href;

function fresh(): HvState {
  const cfg = hostConfig({ memMiB: 4, pcpus: 2, maxDomains: 4, p2mEntries: 256, conringSize: 1024 });
  return new HvState(cfg, HvState.allocate(cfg));
}

describe('scheduler request ring', () => {
  it('delivers events in order with their arguments and timestamps, lap after lap', () => {
    const hv = fresh();
    expect(schedTake(hv)).toBeNull();
    let n = 0;
    for (let lap = 0; lap < 3; lap++) {
      for (let i = 0; i < SCHED_RING_ENTRIES; i++) expect(schedPost(hv, SCHED_EV_WAKE, n + i, 0)).toBe(true);
      for (let i = 0; i < SCHED_RING_ENTRIES; i++) {
        const ev = schedTake(hv);
        expect(ev).toMatchObject({ kind: SCHED_EV_WAKE, vidx: n + i });
        expect(typeof ev!.ts).toBe('bigint');
      }
      expect(schedTake(hv)).toBeNull();
      n += SCHED_RING_ENTRIES;
    }
    schedPost(hv, SCHED_EV_RELEASE, 7, releaseArg(3, RELEASE_BLOCKED));
    schedPost(hv, SCHED_EV_CLAIM, 9, 1);
    expect(schedTake(hv)).toMatchObject({ kind: SCHED_EV_RELEASE, vidx: 7, pcpu: 3, reason: RELEASE_BLOCKED });
    expect(schedTake(hv)).toMatchObject({ kind: SCHED_EV_CLAIM, vidx: 9, pcpu: 1 });
  });

  it('a full ring refuses after the wait bound instead of overwriting', () => {
    const hv = fresh();
    for (let i = 0; i < SCHED_RING_ENTRIES; i++) schedPost(hv, SCHED_EV_WAKE, i, 0);
    expect(schedPost(hv, SCHED_EV_WAKE, -1, 0, true, 2)).toBe(false);
    expect(schedTake(hv)).toMatchObject({ vidx: 0 });
    expect(schedPost(hv, SCHED_EV_WAKE, -1, 0)).toBe(true);
  });

  it('positions wrap modulo 2^32', () => {
    const hv = fresh();
    // Start both positions just below the wrap, as if 2^32 - 3 events had passed
    // (each entry's stored sequence is relative to its index, so entries stay valid).
    const start = -3;
    for (let i = 0; i < SCHED_RING_ENTRIES; i++) {
      const pos = start + ((i - (start & (SCHED_RING_ENTRIES - 1)) + SCHED_RING_ENTRIES) % SCHED_RING_ENTRIES);
      hv.schedRing[SQ.COUNT + i * 4] = (pos - i) | 0;
    }
    hv.schedRing[SQ.TAIL] = start;
    hv.schedRing[SQ.HEAD] = start;
    for (let i = 0; i < 10; i++) schedPost(hv, SCHED_EV_WAKE, i, 0);
    for (let i = 0; i < 10; i++) expect(schedTake(hv)).toMatchObject({ vidx: i });
    expect(hv.schedRing[SQ.HEAD]).toBe(7);
  });

  it('lazy posts do not wake a sleeping consumer; urgent ones do', () => {
    const hv = fresh();
    Atomics.store(hv.schedRing, SQ.SLEEPING, 1);
    const w0 = Atomics.load(hv.g, G.TIMER_WAKE);
    schedPost(hv, SCHED_EV_CLAIM, 1, 0, false);
    expect(Atomics.load(hv.g, G.TIMER_WAKE)).toBe(w0);
    expect(schedRingReady(hv)).toBe(true);
    schedPost(hv, SCHED_EV_WAKE, 1, 0);
    expect(Atomics.load(hv.g, G.TIMER_WAKE)).toBe(w0 + 1);
  });

  it('three producer threads and one consumer: nothing lost, each producer\'s events in order', async () => {
    const hv = fresh();
    const count = 20_000;
    const workers = [1, 2, 3].map((id) => new Worker(BOOT, { workerData: { entry: ENTRY, cfg: hv.cfg, buffers: hv.buffers, id, count } }));
    const done = workers.map((w) => new Promise<number>((res, rej) => { w.once('message', res); w.once('error', rej); }));
    const next = new Map<number, number>([[1, 0], [2, 0], [3, 0]]);
    let got = 0;
    const deadline = Date.now() + 30_000;
    while (got < 3 * count && Date.now() < deadline) {
      const ev = schedTake(hv);
      if (!ev) continue;
      if (ev.kind !== SCHED_EV_EXIT) throw new Error(`unexpected event ${ev.kind}`);
      if (ev.generation !== next.get(ev.vidx)) throw new Error(`producer ${ev.vidx}: got ${ev.generation}, expected ${next.get(ev.vidx)}`);
      got++;
      next.set(ev.vidx, ev.generation + 1);
    }
    expect(await Promise.all(done)).toEqual([0, 0, 0]);
    await Promise.all(workers.map((w) => w.terminate()));
    expect(got).toBe(3 * count);
    expect([...next.values()]).toEqual([count, count, count]);
  });
});
