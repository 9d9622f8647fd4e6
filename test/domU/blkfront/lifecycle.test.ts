import { describe, expect, it } from 'vitest';
import fc from 'fast-check';
import { bench, DEVID, outcome, pattern, sameBytes, unplugWithHeld } from './setup.ts';
import { BLKIF_OP_WRITE } from '../../../shared/abi/blkif.ts';
import { ECS_FREE, ECS_RESERVED, portState } from '../../../hypervisor/evtchn/evtchn.ts';
import { EVTCHN_2L_PORTS } from '../../../hypervisor/state.ts';
import { liveSlot } from '../../../hypervisor/domain.ts';

type Bench = Awaited<ReturnType<typeof bench>>;

function openPorts(t: Bench): number {
  const slot = liveSlot(t.m.hv, t.g.domid);
  let n = 0;
  for (let p = 1; p < EVTCHN_2L_PORTS; p++) {
    const st = portState(t.m.hv, slot, p);
    if (st !== ECS_FREE && st !== ECS_RESERVED) n++;
  }
  return n;
}

describe('blkfront: hostile backends', () => {
  it('a response with an unknown id stops the ring, fails what is in flight, logs once, goes Closing', async () => {
    const t = await bench();
    const dev = await t.connect();
    t.back.misbehave.hold = true;
    const ps = [dev.read(0, 8), dev.read(8, 8), dev.read(16, 8)];
    await t.settle(3);
    t.back.misbehave.wrongId = 999n;
    t.back.release(1);
    const res = await t.run(Promise.all(ps.map(outcome)));
    expect(res).toEqual(['ring-broken', 'ring-broken', 'ring-broken']);
    expect(t.warnings.filter((w) => w.includes('unknown id'))).toHaveLength(1);
    await expect(dev.read(0, 8)).rejects.toMatchObject({ reason: 'ring-broken' });
    await t.until(async () => (await t.xb.read(`/local/domain/${t.g.domid}/device/vbd/${DEVID}/state`)) !== '4');
    await t.until(() => dev.isFinalised);
    expect(dev.state).toBe('Closed');
  });

  it('a response with the wrong operation is hostile too', async () => {
    const t = await bench();
    const dev = await t.connect();
    t.back.misbehave.wrongOp = 3;
    expect(await outcome(t.run(dev.read(0, 8)))).toBe('ring-broken');
    expect(t.warnings.some((w) => w.includes('wrong operation'))).toBe(true);
  });

  it('an impossible rsp_prod stops the ring', async () => {
    const t = await bench();
    const dev = await t.connect();
    t.back.misbehave.hold = true;
    const p = dev.write(0, pattern(0, 8));
    await t.settle(3);
    t.back.corruptRspProd();
    expect(await outcome(t.run(p))).toBe('ring-broken');
    expect(t.warnings.filter((w) => w.includes('impossible'))).toHaveLength(1);
  });
});

describe('blkfront: reconnection and unplug', () => {
  it('a backend that crashes with requests in flight and comes back gets them all again (blkif_recover)', async () => {
    for (const persistent of [true, false]) {
      const t = await bench();
      const dev = await t.connect({ persistent });
      await t.run(dev.write(0, pattern(0, 64, 3)));
      t.back.misbehave.hold = true;
      const reads = Array.from({ length: 40 }, (_, i) => dev.read((i % 8) * 8, 8));
      const writes = [dev.write(64, pattern(64, 24, 5)), dev.write(200, pattern(200, 8 * 30, 6))];
      await t.settle(3);
      expect(t.back.heldCount).toBe(32);
      t.back.release(5);
      await t.settle(2);
      await t.back.crash();
      await t.until(() => dev.state === 'Closed');
      expect(dev.eventChannel).toBe(0);
      t.back.misbehave.hold = false;
      await t.back.restart();
      await t.until(() => dev.state === 'Connected');
      const got = await t.run(Promise.all(reads));
      const base = pattern(0, 64, 3);
      got.forEach((b, i) => expect(b).toEqual(base.subarray((i % 8) * 4096, (i % 8 + 1) * 4096)));
      await t.run(Promise.all(writes));
      expect(t.back.disk.subarray(64 * 512, 88 * 512)).toEqual(pattern(64, 24, 5));
      expect(t.back.disk.subarray(200 * 512, 440 * 512)).toEqual(pattern(200, 240, 6));
      expect(dev.stats.rings).toBe(2);
      expect(dev.stats.reissued).toBeGreaterThan(0);
      expect(t.back.frontStates.slice(-4)).toEqual(['Closed', 'Initialising', 'Initialised', 'Connected']);
    }
  });

  it('requests left unanswered by a crash go out again in submission order, before what waited behind them (a later write to a sector still wins)', async () => {
    const t = await bench();
    const dev = await t.connect({ persistent: true });
    const slots = dev.features.ringSize;
    t.back.misbehave.hold = true;
    // A ring's worth of 4 KiB writes at sectors 0, 8, ...; then six more: five past them, the last over
    // the fifth write (sector 32), which is still unanswered when the backend crashes.
    const writes = Array.from({ length: slots }, (_, i) => dev.write(i * 8, pattern(i * 8, 8, 1)));
    const extra = [...Array.from({ length: 5 }, (_, k) => (slots + k) * 8), 32];
    for (const s of extra) writes.push(dev.write(s, pattern(s, 8, 9)));
    await t.settle(3);
    expect([t.back.heldCount, dev.queued]).toEqual([slots, 6]);
    // Four answered: four of the six go on the ring, two still wait in the driver's queue.
    t.back.release(4);
    await t.settle(2);
    expect([t.back.heldCount, dev.queued]).toEqual([slots, 2]);
    await t.back.crash();
    await t.until(() => dev.state === 'Closed');
    const before = t.back.seen.length;
    t.back.misbehave.hold = false;
    await t.back.restart();
    await t.run(Promise.all(writes));
    const again = t.back.seen.slice(before).flatMap((s) => (s.req.kind === 'rw' ? [s.req.sector] : []));
    expect(again).toEqual([...Array.from({ length: slots - 4 }, (_, i) => (i + 4) * 8), ...extra]);
    expect(dev.stats.reissued).toBe(slots);
    expect(t.back.disk.subarray(32 * 512, 40 * 512)).toEqual(pattern(32, 8, 9));
  });

  it('a Linux-style backend that drops the ring answers our Initialising with InitWait; nothing is lost', async () => {
    const t = await bench();
    const dev = await t.connect({ persistent: false });
    t.back.misbehave.hold = true;
    const data = pattern(0, 8 * 50, 4);
    const w = dev.write(0, data);
    const rs = Array.from({ length: 10 }, (_, i) => dev.read(1000 + i * 8, 8));
    await t.settle(3);
    t.back.misbehave.hold = false;
    await t.back.bounce();
    await t.run(Promise.all([w, ...rs]));
    expect(sameBytes(t.back.disk.subarray(0, data.length), data)).toBe(true);
    expect(t.back.frontStates.slice(-4)).toEqual(['Closed', 'Initialising', 'Initialised', 'Connected']);
    expect(dev.grantStats.granted).toBe(dev.grantStats.ended);
  });

  it('I/O submitted while the backend is away waits for it', async () => {
    const t = await bench();
    const dev = await t.connect();
    await t.back.crash();
    await t.until(() => dev.state === 'Closed');
    const p = dev.write(0, pattern(0, 8, 2));
    await t.settle(5);
    await t.back.restart();
    await t.run(p);
    expect(t.back.disk.subarray(0, 4096)).toEqual(pattern(0, 8, 2));
  });

  it('hot-unplug: answered requests complete, the rest fail with "removed", everything is released', async () => {
    const t = await bench();
    const ports = openPorts(t);
    const dev = await t.connect();
    expect(openPorts(t)).toBe(ports + 1);
    const res = await unplugWithHeld(t, dev, () => Array.from({ length: 40 }, (_, i) => dev.read(i * 8, 8)), 10);
    expect(res.filter((r) => r === 'ok')).toHaveLength(10);
    expect(res.filter((r) => r === 'removed')).toHaveLength(30);
    await t.run(dev.closed);
    expect(dev.isFinalised).toBe(true);
    expect(openPorts(t)).toBe(ports);
    expect(t.ggnt.freeRefCount).toBe(t.refsBefore);
    expect(t.v.xen.freePageCount).toBe(t.pagesBefore);
    await expect(dev.read(0, 8)).rejects.toMatchObject({ reason: 'removed' });
  });

  it('close() while the backend is away fails what waits with "closed" and releases everything', async () => {
    const t = await bench();
    const dev = await t.connect();
    await t.back.crash();
    await t.until(() => dev.state === 'Initialising');
    const p = dev.write(0, pattern(0, 8));
    await t.run(dev.close());
    expect(await outcome(p)).toBe('closed');
    expect(dev.state).toBe('Closed');
    expect(t.ggnt.freeRefCount).toBe(t.refsBefore);
    expect(t.v.xen.freePageCount).toBe(t.pagesBefore);
  });

  it('unplug with nothing in flight: Closing, Closed, released; the Linux-style backend closes behind us', async () => {
    const t = await bench();
    const dev = await t.connect();
    await t.back.unplug();
    await t.run(dev.closed);
    expect(dev.state).toBe('Closed');
    expect(await t.back.backState()).toBe('6');
    expect(t.back.connected).toBe(false);
    expect(t.ggnt.freeRefCount).toBe(t.refsBefore);
  });
});

describe('blkfront: close', () => {
  it('close() drains, goes Closing then Closed with the backend, and leaks no grant, port or page', async () => {
    for (const persistent of [true, false]) {
      const t = await bench();
      const ports = openPorts(t);
      const dev = await t.connect({ persistent, ringPageOrder: 1 });
      const w = dev.write(0, pattern(0, 8 * 40));
      const c = dev.close();
      await expect(dev.read(0, 8)).rejects.toMatchObject({ reason: 'closed' });
      await t.run(c);
      await t.run(w);
      expect(t.back.frontStates.slice(-2)).toEqual(['Closing', 'Closed']);
      expect(await t.back.backState()).toBe('6');
      expect(openPorts(t)).toBe(ports);
      expect(t.ggnt.freeRefCount).toBe(t.refsBefore);
      expect(t.v.xen.freePageCount).toBe(t.pagesBefore);
      expect(dev.grantStats.leaked).toBe(0);
      expect(t.m.checkInvariants()).toEqual([]);
    }
  });
});

describe('blkfront: random I/O against a model disk', () => {
  it('any sequence of reads, writes, flushes and discards, batched, matches the model', async () => {
    const SECTORS = 512;
    const op = fc.oneof(
      fc.record({ k: fc.constant('w' as const), s: fc.nat(SECTORS - 1), n: fc.integer({ min: 1, max: 200 }), salt: fc.nat(255) }),
      fc.record({ k: fc.constant('r' as const), s: fc.nat(SECTORS - 1), n: fc.integer({ min: 1, max: 200 }), salt: fc.constant(0) }),
      fc.record({ k: fc.constant('d' as const), s: fc.nat(SECTORS - 1), n: fc.integer({ min: 1, max: 64 }), salt: fc.constant(0) }),
      fc.record({ k: fc.constant('f' as const), s: fc.constant(0), n: fc.constant(0), salt: fc.constant(0) }),
    );
    // One bench per configuration, reused across runs: the model starts as a copy of the fake's disk.
    const benches = new Map<string, { t: Bench; dev: Awaited<ReturnType<Bench['connect']>> }>();
    const get = async (persistent: boolean, maxIndirectSegments: number, ringPageOrder: number) => {
      const key = `${persistent}/${maxIndirectSegments}/${ringPageOrder}`;
      let b = benches.get(key);
      if (!b) {
        const t = await bench({ sectors: SECTORS });
        b = { t, dev: await t.connect({ persistent, maxIndirectSegments, ringPageOrder }) };
        benches.set(key, b);
      }
      return b;
    };
    await fc.assert(fc.asyncProperty(
      fc.array(fc.array(op, { minLength: 1, maxLength: 12 }), { minLength: 1, maxLength: 6 }),
      fc.boolean(), fc.constantFrom(0, 32, 64), fc.constantFrom(0, 1),
      async (batches, persistent, maxIndirectSegments, ringPageOrder) => {
        const { t, dev } = await get(persistent, maxIndirectSegments, ringPageOrder);
        const model = t.back.disk.slice();
        for (const batch of batches) {
          // Requests go out in order and the fake answers in order, so overlapping I/Os in a batch are fine.
          const expects: Array<Promise<void>> = [];
          for (const o of batch) {
            const n = Math.min(o.n, SECTORS - o.s);
            if (o.k === 'w') {
              const data = pattern(o.s, n, o.salt);
              model.set(data, o.s * 512);
              expects.push(dev.write(o.s, data));
            } else if (o.k === 'r') {
              const want = model.slice(o.s * 512, (o.s + n) * 512);
              expects.push(dev.read(o.s, n).then((got) => { expect(sameBytes(got, want)).toBe(true); }));
            } else if (o.k === 'd') {
              model.fill(0, o.s * 512, (o.s + n) * 512);
              expects.push(dev.discard(o.s, n));
            } else {
              expects.push(dev.flush());
            }
          }
          await t.run(Promise.all(expects));
        }
        expect(sameBytes(t.back.disk, model)).toBe(true);
        expect(dev.inFlight).toBe(0);
        if (!persistent) expect(dev.grantStats.granted).toBe(dev.grantStats.ended);
        expect(t.back.seen.every((s) => s.req.kind !== 'rw' || s.req.operation !== BLKIF_OP_WRITE || s.segs.length <= 11)).toBe(true);
      }), { numRuns: 100 });
    for (const { t, dev } of benches.values()) {
      await t.run(dev.close());
      expect(t.ggnt.freeRefCount).toBe(t.refsBefore);
      expect(t.v.xen.freePageCount).toBe(t.pagesBefore);
    }
  }, 120_000);
});
