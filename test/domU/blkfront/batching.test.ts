/**
 * blkfront's request batching: requests submitted in one burst are pushed
 * every PUSH_EARLY and at the burst's end, with one notification at most for
 * a backend that asked once, and none is left unpushed when the kernel idles.
 */
import { describe, expect, it } from 'vitest';
import { bench, DEVID } from './setup.ts';
import { KernelLoop } from '../../../shared/guest/kloop.ts';
import { BlockFront } from '../../../domU/blkfront/blkfront.ts';
import { PUSH_EARLY } from '../../../domU/blkfront/push.ts';
import type { FrontRing, RingMemory } from '../../../shared/ring/ring.ts';
import { SRING_HEADER } from '../../../shared/abi/ring.ts';

/** Requests put on the ring but not yet published (req_prod_pvt - req_prod). */
const unpushed = (dev: BlockFront): number => (dev as unknown as { ring: { front: { unpushed: number } } }).ring.front.unpushed;

describe('blkfront request batching', () => {
  it('a burst is pushed every PUSH_EARLY requests and at its end, with one notification; the microtask fallback pushes without a loop', async () => {
    const t = await bench();
    const dev = await t.connect();
    t.back.misbehave.hold = true;
    const n0 = dev.stats.notifies;
    const burst = PUSH_EARLY + 2;
    const ps = Array.from({ length: burst }, (_, i) => dev.write(i * 8, new Uint8Array(4096).fill(i + 1)));
    // The first PUSH_EARLY were published as the burst grew (the backend asked: one notification); the rest wait.
    expect(dev.inFlight).toBe(burst);
    expect(unpushed(dev)).toBe(2);
    expect(dev.stats.notifies - n0).toBe(1);
    // Continuations that submit more, a turn apart, join the same burst.
    await undefined;
    const more = dev.write(80, new Uint8Array(512));
    await undefined;
    expect(unpushed(dev)).toBe(3);
    for (let i = 0; i < 4; i++) await undefined;
    expect(unpushed(dev)).toBe(0);
    expect(dev.stats.notifies - n0).toBe(1);
    await t.settle(3);
    expect(t.back.heldCount).toBe(burst + 1);
    t.back.misbehave.hold = false;
    t.back.release();
    await t.run(Promise.all([...ps, more]));
  });

  it('a full ring is pushed at once', async () => {
    const t = await bench();
    const dev = await t.connect();
    t.back.misbehave.hold = true;
    const ps = Array.from({ length: 40 }, (_, i) => dev.write(i * 8, new Uint8Array(4096)));
    expect(dev.inFlight).toBe(32);
    expect(dev.queued).toBe(8);
    expect(unpushed(dev)).toBe(0);
    t.back.misbehave.hold = false;
    await t.settle(3);
    t.back.release();
    await t.run(Promise.all(ps));
  });

  it('the kernel loop flushes before it sleeps: nothing is left unpushed while the vCPU sleeps', async () => {
    const t = await bench();
    const loop = new KernelLoop(t.gev, { spinNs: 0 });
    const dev = await t.run(BlockFront.connect({ ev: t.gev, gnttab: t.ggnt, xs: t.gxs.client, devid: DEVID, loop }));
    t.back.misbehave.hold = true;
    const ps = [dev.read(0, 8), dev.read(8, 8)];
    expect(unpushed(dev)).toBe(2);
    loop.sleep();
    expect(unpushed(dev)).toBe(0);
    t.back.misbehave.hold = false;
    await t.settle(3);
    t.back.release();
    await t.run(Promise.all(ps));
  });

  it('while the loop polls, rsp_event stays unarmed (no notifications); its last look before sleeping arms it and sees what came meanwhile', async () => {
    const t = await bench();
    const loop = new KernelLoop(t.gev, { spinNs: 0 });
    const dev = await t.run(BlockFront.connect({ ev: t.gev, gnttab: t.ggnt, xs: t.gxs.client, devid: DEVID, loop }));
    const front = (dev as unknown as { ring: { front: FrontRing } }).ring.front;
    // The ring's own view of its pages (blkfront's ring need not be contiguous in our physmap).
    const ringMem = (front as unknown as { mem: RingMemory }).mem;
    const rspEvent = (): number => ringMem.atomicLoad32(front.base + SRING_HEADER.fields.rsp_event.offset);
    const notified = (): boolean => t.gev.isPending(dev.eventChannel);
    t.back.misbehave.hold = true;
    const ps = [dev.read(0, 8), dev.read(8, 8), dev.read(16, 8)];
    loop.flush();
    await t.settle(3);
    expect(t.back.heldCount).toBe(3);
    t.gev.dispatch();

    // The poller takes a response without arming rsp_event...
    t.back.release(1);
    expect(loop.poll()).toBe(true);
    t.gev.dispatch(); // the event the first response raised (rsp_event was armed at connect): nothing left to take
    expect(((rspEvent() - front.rspCons) | 0) <= 0).toBe(true);
    // ...so the next one comes without an event.
    t.back.release(1);
    expect(notified()).toBe(false);
    // The last look before sleeping finds it: the vCPU must not sleep.
    expect(loop.arm()).toBe(true);
    // Nothing left: armed at rsp_cons + 1, and the next response notifies.
    expect(loop.arm()).toBe(false);
    expect(rspEvent()).toBe((front.rspCons + 1) >>> 0);
    t.back.release(1);
    expect(notified()).toBe(true);
    t.back.misbehave.hold = false;
    await t.run(Promise.all(ps));
  });
});
