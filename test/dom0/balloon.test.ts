/**
 * The guest balloon driver (shared/guest/balloon.ts) on one thread: Dom0's
 * in-process xenstored (as test/dom0/wiring.test.ts), a guest created by the
 * toolstack's createPvGuest, its kernel played by the test through its own
 * vCPU context, GuestXenbus and Balloon. Dom0 writes memory/target (what
 * `xl mem-set` does); the guest's tot_pages follows, down and back up, never
 * above max_pages; nothing leaks when it is destroyed.
 */
import { describe, expect, it } from 'vitest';
import { TestMachine } from '../helpers/machine.ts';
import { EventChannels } from '../../shared/guest/evtchn.ts';
import { GuestXenbus } from '../../shared/guest/xenbus.ts';
import { Balloon } from '../../shared/guest/balloon.ts';
import { XenstoredService } from '../../dom0/xenstored/service.ts';
import { createPvGuest, destroyPvGuest, writeDom0Entries } from '../../dom0/toolstack/domain.ts';
import { liveSlot } from '../../hypervisor/domain.ts';
import { D } from '../../hypervisor/state.ts';

async function setup(opts: { memoryMiB: number; maxmemMiB?: number; reservePages?: number }) {
  const m = new TestMachine({}, 2);
  const ev = new EventChannels(m.dom0.xen);
  const posted: Array<() => void> = [];
  const xsd = await XenstoredService.start({ ctrl: m.ctrl, ev, post: (w) => posted.push(w), socketPath: null });
  const xb = xsd.xb;
  await writeDom0Entries(xb);
  const baseFree = m.freePages();
  const g = await createPvGuest(m.ctrl, xb, { name: 'balloon', kernel: 'domU/guests/hello.ts', memoryMiB: opts.memoryMiB, maxmemMiB: opts.maxmemMiB });
  m.ctrl.unpauseDomain(g.domid);
  const slot = liveSlot(m.hv, g.domid);
  const v = m.vcpu(slot, 0);
  const gev = new EventChannels(v.xen);
  const xs = new GuestXenbus(gev);
  const round = async (): Promise<void> => {
    ev.dispatch();
    for (const w of posted.splice(0)) w();
    gev.dispatch();
    for (let i = 0; i < 8; i++) await undefined;
  };
  const run = async <T>(p: Promise<T>): Promise<T> => {
    let settled = false;
    p.then(() => { settled = true; }, () => { settled = true; });
    for (let i = 0; i < 200 && !settled; i++) await round();
    expect(settled).toBe(true);
    return p;
  };
  const balloon = await run(Balloon.start(v.xen, xs.client, opts.reservePages === undefined ? {} : { reservePages: opts.reservePages }));
  await run(balloon.idle());
  const totPages = (): number => m.hv.dom[m.hv.d(slot, D.tot_pages)];
  const home = `/local/domain/${g.domid}`;
  /** What `xl mem-set` does, then the guest's loop until the driver is done. */
  const memSet = async (kib: number): Promise<void> => {
    await run(xb.write(`${home}/memory/target`, String(kib)));
    for (let i = 0; i < 4; i++) await round();
    await run(balloon.idle());
  };
  return { m, xb, g, slot, v, balloon, totPages, memSet, run, home, baseFree };
}

describe('the guest balloon driver', () => {
  it('follows memory/target down and back up; nothing leaks', async () => {
    const t = await setup({ memoryMiB: 2 });
    const initial = t.totPages();
    expect(initial).toBe(512);
    // The first watch event read the target the builder wrote: nothing moved.
    expect(t.balloon.state).toMatchObject({ targetKiB: 2048, targetPages: 512, currentPages: 512, balloonedOut: 0, short: false });
    const free = t.v.xen.freePageCount;

    await t.memSet(1024);
    expect(t.totPages()).toBe(256);
    expect(t.balloon.state).toMatchObject({ targetPages: 256, currentPages: 256, balloonedOut: 256, short: false });
    expect(t.v.xen.freePageCount).toBe(free - 256);
    // A ballooned-out gfn is a hole: the guest faults on it.
    const hole = t.balloon.balloonedGfns[0];
    expect(() => t.v.api.mem.readU8(hole * 4096)).toThrow();
    expect(t.m.checkInvariants()).toEqual([]);

    await t.memSet(1536);
    expect(t.totPages()).toBe(384);
    expect(t.balloon.state.balloonedOut).toBe(128);
    await t.memSet(2048);
    expect(t.totPages()).toBe(512);
    expect(t.balloon.state).toMatchObject({ balloonedOut: 0, short: false });
    expect(t.v.xen.freePageCount).toBe(free);
    // Repopulated RAM is usable again.
    t.v.api.mem.writeU8(hole * 4096, 7);
    expect(t.v.api.mem.readU8(hole * 4096)).toBe(7);

    // The driver writes nothing under memory/ (only the toolstack's nodes).
    expect((await t.run(t.xb.directory(`${t.home}/memory`))).sort()).toEqual(['static-max', 'target', 'videoram']);

    // Down again, then destroyed with pages ballooned out: all frames come back.
    await t.memSet(1000);
    expect(t.totPages()).toBe(250);
    await destroyPvGuest(t.m.ctrl, t.xb, t.g.domid, async () => undefined);
    expect(t.m.checkInvariants()).toEqual([]);
    expect(t.m.freePages()).toBe(t.baseFree);
  });

  it('keeps its reserve of free pages, and never grows past what it gave back', async () => {
    const t = await setup({ memoryMiB: 1, maxmemMiB: 2, reservePages: 16 });
    expect(t.totPages()).toBe(256);
    const free = t.v.xen.freePageCount;
    await t.memSet(0);
    expect(t.v.xen.freePageCount).toBe(16);
    expect(t.totPages()).toBe(256 - (free - 16));
    expect(t.balloon.state.short).toBe(true);
    // Up to max_mem: only what it gave back comes back (no hotplug).
    await t.memSet(2048);
    expect(t.totPages()).toBe(256);
    expect(t.balloon.state).toMatchObject({ balloonedOut: 0, short: true });
    expect(t.m.checkInvariants()).toEqual([]);
  });

  it('stops where the hypervisor says no (max_pages lowered), and gets there once it is raised', async () => {
    const t = await setup({ memoryMiB: 2 });
    await t.memSet(1024);
    expect(t.totPages()).toBe(256);
    // max_mem lowered to 1.5 MiB behind the driver's back; the target asks for 2 MiB.
    t.m.ctrl.maxMem(t.g.domid, 1536);
    await t.memSet(2048);
    expect(t.totPages()).toBe(384);
    expect(t.balloon.state).toMatchObject({ maxPages: 384, currentPages: 384, balloonedOut: 128, short: true });
    // A bad value is ignored: nothing moves.
    await t.memSet(Number.NaN);
    expect(t.totPages()).toBe(384);
    expect(t.balloon.state.targetKiB).toBeUndefined();
    // max_mem raised, target written again: all the way.
    t.m.ctrl.maxMem(t.g.domid, 2048);
    await t.memSet(2048);
    expect(t.totPages()).toBe(512);
    expect(t.balloon.state).toMatchObject({ balloonedOut: 0, short: false });
    await t.run(t.balloon.stop());
    await destroyPvGuest(t.m.ctrl, t.xb, t.g.domid, async () => undefined);
    expect(t.m.checkInvariants()).toEqual([]);
    expect(t.m.freePages()).toBe(t.baseFree);
  });
});
