/**
 * The guest kernel's event loop (shared/guest/kloop.ts) driving blkfront:
 * on one thread nothing blocks (the test's scheduler hooks return at once),
 * so the Dom0 side (xenstored, the fake backend) runs from a poller, as
 * another CPU would.
 */
import { describe, expect, it } from 'vitest';
import { bench, DEVID, pattern, sameBytes } from './setup.ts';
import { BUSY_SPIN_NS, KernelLoop } from '../../../shared/guest/kloop.ts';
import { BlockFront } from '../../../domU/blkfront/blkfront.ts';

describe('KernelLoop', () => {
  it('runs continuations, pollers and event dispatch until the promise settles; GuestXenbus.wait is the same loop', async () => {
    const t = await bench();
    const loop = KernelLoop.of(t.gev);
    expect(KernelLoop.of(t.gev)).toBe(loop);
    // "Another CPU": Dom0's events and xenstored's posted work, one round per poll.
    let dom0Turns = 0;
    const remove = loop.addPoller(() => {
      dom0Turns++;
      return t.ev.dispatch() > 0;
    });
    try {
      const name = await t.gxs.wait(t.gxs.client.read('name'));
      expect(name).toBe('blk');
      const dev = await loop.run(BlockFront.connect({ ev: t.gev, gnttab: t.ggnt, xs: t.gxs.client, devid: DEVID }));
      const data = pattern(0, 64);
      await loop.run(dev.write(0, data));
      expect(sameBytes(await loop.run(dev.read(0, 64)), data)).toBe(true);
      expect(dom0Turns).toBeGreaterThan(0);
      await loop.run(dev.close());
      expect(t.ggnt.freeRefCount).toBe(t.refsBefore);
    } finally {
      remove();
    }
  });

  it('handledPorts/isMasked: what the loop sleeps on; a masked pending port does not keep it awake', async () => {
    const t = await bench();
    const loop = new KernelLoop(t.gev, { spins: 0 });
    const port = t.gev.allocUnbound(0);
    t.gev.on(port, () => undefined);
    t.gev.mask(port);
    expect(t.gev.handledPorts()).toContain(port);
    expect(t.gev.isMasked(port)).toBe(true);
    loop.sleep();
    expect(loop.sleeps).toBe(1);
    const seen: number[] = [];
    t.gev.on(port, (p) => seen.push(p));
    t.gev.unmask(port);
    expect(t.gev.isMasked(port)).toBe(false);
    expect(await loop.run(Promise.resolve(7))).toBe(7);
    t.gev.close(port);
  });

  it('accounts its idle time: a fruitless spin lasts at least its bound, then the loop sleeps; a spin that finds work adds nothing', async () => {
    const t = await bench();
    const spinNs = 200_000;
    const loop = new KernelLoop(t.gev, { spinNs });
    let settle: (v: number) => void = () => undefined;
    const p = new Promise<number>((r) => { settle = r; });
    let calls = 0;
    // Nothing to find until the loop has slept once; then "work" settles the promise.
    const remove = loop.addPoller(() => {
      calls++;
      if (loop.sleeps === 0) return false;
      settle(calls);
      return true;
    });
    try {
      expect(await loop.run(p)).toBeGreaterThan(4);
      expect(loop.sleeps).toBe(1);
      expect(loop.fruitlessSpinNs).toBeGreaterThanOrEqual(spinNs);
      expect(loop.sleptNs).toBeGreaterThan(0); // the sleep was timed (it returns at once here, but not in no time)
      const before = loop.fruitlessSpinNs;
      // A spin that finds work at its first round (the poller settles the next promise): nothing added.
      const p2 = new Promise<number>((r) => { settle = r; });
      const callsBefore = calls;
      expect(await loop.run(p2)).toBe(callsBefore + 1);
      expect(loop.fruitlessSpinNs).toBe(before);
      expect(loop.sleeps).toBe(1);
    } finally {
      remove();
    }
  });
  it('setSpins: a bound set to 0 means no spin under it (no poller is asked; the loop sleeps, its armers looking last); bad bounds are refused and change nothing', async () => {
    const t = await bench();
    const loop = new KernelLoop(t.gev, { spinNs: 200_000, busySpinNs: 2_000_000 });
    expect([loop.spinNs, loop.busySpinNs]).toEqual([200_000, 2_000_000]);
    for (const bad of [-1, Number.NaN, Number.POSITIVE_INFINITY, '5' as unknown as number]) {
      expect(() => loop.setSpins({ spinNs: 0, busySpinNs: bad })).toThrow(RangeError);
    }
    expect([loop.spinNs, loop.busySpinNs]).toEqual([200_000, 2_000_000]);
    // The constructor's bounds by the same rule.
    expect(() => new KernelLoop(t.gev, { busySpinNs: -1 })).toThrow(RangeError);
    expect(() => new KernelLoop(t.gev, { spinNs: Number.NaN })).toThrow(RangeError);
    expect([new KernelLoop(t.gev).spinNs, new KernelLoop(t.gev).busySpinNs]).toEqual([50_000, BUSY_SPIN_NS]);
    /** Run until an armer finds work after one more sleep; how many times the poller was asked meanwhile. */
    const pollsUntilSlept = async (expecting: boolean): Promise<number> => {
      const sleeps = loop.sleeps;
      let settle: () => void = () => undefined;
      const p = new Promise<void>((r) => { settle = r; });
      let polls = 0;
      const removePoller = loop.addPoller(() => { polls++; return false; }, () => expecting);
      const removeArmer = loop.addArmer(() => {
        if (loop.sleeps === sleeps) return false;
        settle();
        return true;
      });
      try {
        await loop.run(p);
      } finally {
        removePoller();
        removeArmer();
      }
      expect(loop.sleeps).toBe(sleeps + 1);
      return polls;
    };
    // Nothing expected: spinNs applies (busySpinNs still 2 ms).
    loop.setSpins({ spinNs: 0 });
    expect([loop.spinNs, loop.busySpinNs]).toEqual([0, 2_000_000]);
    expect(await pollsUntilSlept(false)).toBe(0);
    // An answer expected: busySpinNs applies.
    loop.setSpins({ busySpinNs: 0 });
    expect([loop.spinNs, loop.busySpinNs]).toEqual([0, 0]);
    expect(await pollsUntilSlept(true)).toBe(0);
    expect(loop.fruitlessSpinNs).toBe(0);
    // And back: a bound again means a spin before the sleep.
    loop.setSpins({ spinNs: 100_000 });
    expect(await pollsUntilSlept(false)).toBeGreaterThan(4);
    expect(loop.fruitlessSpinNs).toBeGreaterThanOrEqual(100_000);
  });
});

describe('KernelLoop: microtask turns and yields', () => {
  /** A continuation chain: one step per microtask turn, `steps` long; `at()` is how far it got. */
  function chain(steps: number) {
    let n = 0;
    let done: () => void = () => undefined;
    const finished = new Promise<void>((r) => { done = r; });
    const step = (): void => {
      if (++n >= steps) done();
      else void Promise.resolve().then(step);
    };
    void Promise.resolve().then(step);
    return { at: () => n, finished };
  }

  it('after a poller found work, only polledTurns turns run before the next look', async () => {
    const t = await bench();
    const loop = new KernelLoop(t.gev, { microtaskTurns: 16, polledTurns: 2, spinNs: 1_000_000 });
    const c = chain(200);
    const seen: number[] = [];
    // Work at every look: the loop goes straight back to the rings after its few turns.
    const remove = loop.addPoller(() => { seen.push(c.at()); return true; });
    try {
      await loop.run(c.finished);
      const gaps = seen.slice(2).map((n, i) => n - seen[i + 1]!);
      expect(gaps.length).toBeGreaterThan(20);
      expect(Math.max(...gaps)).toBeLessThanOrEqual(3);
      expect(loop.sleeps).toBe(0);
    } finally {
      remove();
    }
  });

  it('a chain longer than its turns goes on within the spin: the spin yields to it every yieldNs', async () => {
    const t = await bench();
    // An answer is "due" for ever and the bound is long (2 s): without the
    // yields the loop would spin through it after every 4 turns, then sleep.
    const loop = new KernelLoop(t.gev, { microtaskTurns: 4, polledTurns: 2, busySpinNs: 2e9, yieldNs: 1_000 });
    const remove = loop.addPoller(() => false, () => true);
    try {
      const c = chain(12);
      await loop.run(c.finished);
      expect(c.at()).toBe(12);
      expect(loop.sleeps).toBe(0);
    } finally {
      remove();
    }
  });

  it('never sleeps straight after the few turns that follow ring work', async () => {
    const t = await bench();
    // One round of pollers per spin: a spin that finds nothing ends at once, and the loop would sleep.
    const loop = new KernelLoop(t.gev, { microtaskTurns: 16, polledTurns: 1, spins: 1 });
    let c: ReturnType<typeof chain> | undefined;
    // The ring work starts a chain of 6 turns; then the rings stay quiet.
    const remove = loop.addPoller(() => {
      if (c) return false;
      c = chain(6);
      return true;
    });
    try {
      let settle: () => void = () => undefined;
      const p = new Promise<void>((r) => { settle = r; });
      void (async () => { while (!c) await undefined; await c.finished; settle(); })();
      await loop.run(p);
      expect(loop.sleeps).toBe(0);
    } finally {
      remove();
    }
  });
});
