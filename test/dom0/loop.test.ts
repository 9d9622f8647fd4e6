/**
 * Dom0's loop (dom0/loop.ts) on Dom0's in-thread vCPU context: posted work
 * runs in order, one failure does not stop the rest, work posted while
 * running runs in the same call; idle() sleeps in SCHEDOP_block with a
 * VIRQ_TIMER deadline, not at all when work is waiting, and briefly while
 * host tools are connected.
 */
import { describe, expect, it } from 'vitest';
import { TestMachine } from '../helpers/machine.ts';
import { EventChannels } from '../../shared/guest/evtchn.ts';
import { Dom0Loop, IDLE_MS, IDLE_MS_HOST_TOOLS, SPIN_TURN_MAX_QUIET_US, SPIN_TURN_MAX_US, SPIN_US } from '../../dom0/loop.ts';
import { portState, ECS_VIRQ } from '../../hypervisor/evtchn/evtchn.ts';

/**
 * `spinRecentMs`: how recent ring work must be for idle() to spin. Tests that
 * expect a spin widen it (default 2 ms), so that a pause of the test process
 * (a GC, a loaded CI host) between serving and idle() cannot skip the spin.
 */
function setup(spinUs?: number, spinRecentMs = 1000) {
  const m = new TestMachine();
  const ev = new EventChannels(m.dom0.xen);
  const errors: unknown[] = [];
  const loop = new Dom0Loop(ev, (e) => errors.push(e), { ...(spinUs !== undefined ? { spinUs } : {}), spinRecentMs });
  return { m, ev, loop, errors };
}

/** A poller on a fresh IPI port serving `work` (a queue of request counts, then none). */
function poller(ev: EventChannels, loop: Dom0Loop, work: number[]) {
  const port = ev.bindIpi();
  let calls = 0;
  const remove = loop.addPoller(port, () => { calls++; return work.shift() ?? 0; });
  return { port, remove, calls: () => calls };
}

describe('Dom0Loop', () => {
  it('runs posted work in order; a throwing piece is reported and the rest still runs', () => {
    const { loop, errors } = setup();
    const ran: number[] = [];
    loop.post(() => ran.push(1));
    loop.post(() => { throw new Error('boom'); });
    loop.post(() => { ran.push(3); loop.post(() => ran.push(4)); });
    expect(loop.hasPosted).toBe(true);
    loop.runPosted();
    expect(ran).toEqual([1, 3, 4]);
    expect(errors).toHaveLength(1);
    expect(loop.hasPosted).toBe(false);
  });

  it('binds VIRQ_TIMER; idle() blocks (SCHEDOP_block) unless work is posted', () => {
    const { m, loop } = setup();
    expect(portState(m.hv, m.dom0.ctx.slot, loop.timerPort)).toBe(ECS_VIRQ);
    loop.idle(5);
    expect(m.dom0.sched.blocks).toBe(1);
    loop.post(() => {});
    loop.idle(5);
    expect(m.dom0.sched.blocks).toBe(1);
  });

  it('sleeps IDLE_MS, or IDLE_MS_HOST_TOOLS while a host tool is connected', () => {
    const { loop } = setup();
    let clients = 0;
    loop.watchHostClients(() => clients);
    expect(loop.idleMs()).toBe(IDLE_MS);
    clients = 1;
    expect(loop.idleMs()).toBe(IDLE_MS_HOST_TOOLS);
  });

  it('settle() lets promise continuations run', async () => {
    const { loop } = setup();
    let done = false;
    void Promise.resolve().then(() => Promise.resolve()).then(() => { done = true; });
    await loop.settle();
    expect(done).toBe(true);
  });

  it('re-arms the one-shot timer only when the armed deadline is gone or too far', () => {
    const { loop } = setup();
    loop.idle(20);
    loop.idle(20);
    loop.idle(20);
    expect(loop.stats.timerArms).toBe(1);
    loop.idle(2); // armed ~20 ms ahead: later than wanted
    expect(loop.stats.timerArms).toBe(2);
    expect(loop.stats.blocks).toBe(4);
  });

  it('before it blocks, idle() arms every polled ring; an arm that finds work keeps Dom0 from blocking', () => {
    const { m, ev, loop } = setup();
    const armed: number[] = [];
    let raced = 0;
    const a = ev.bindIpi();
    const b = ev.bindIpi();
    loop.addPoller(a, () => 0, () => { armed.push(a); return 0; });
    loop.addPoller(b, () => 0, () => { armed.push(b); return raced; });
    loop.idle(1);
    expect(armed).toEqual([a, b]);
    expect(m.dom0.sched.blocks).toBe(1);
    raced = 2; // requests pushed without an event just before the arm: it serves them
    loop.idle(1);
    expect(armed).toEqual([a, b, a, b]);
    expect(m.dom0.sched.blocks).toBe(1);
    // Work is posted: no arm, no block (the loop's turn runs first).
    loop.post(() => {});
    loop.idle(1);
    expect(armed).toHaveLength(4);
  });

  it('an idle host does not spin: without recent ring work idle() blocks at once', () => {
    const { m, ev, loop } = setup();
    const p = poller(ev, loop, []);
    loop.idle(5);
    expect(loop.stats.spins).toBe(0);
    expect(p.calls()).toBe(0);
    expect(m.dom0.sched.blocks).toBe(1);
  });

  it('after ring work, spins (serving the rings) before blocking, for about SPIN_US', () => {
    const { m, ev, loop } = setup();
    const p = poller(ev, loop, [3]);
    ev.send(p.port); // the ring's event: served (3 requests), the ring is now "recently busy"
    ev.dispatch();
    expect(p.calls()).toBe(1);
    const t0 = performance.now();
    loop.idle(5); // nothing more comes: spin SPIN_US, then block
    const took = (performance.now() - t0) * 1000;
    expect(loop.stats.spins).toBe(1);
    expect(p.calls()).toBeGreaterThan(1);
    expect(took).toBeGreaterThanOrEqual(SPIN_US);
    expect(m.dom0.sched.blocks).toBe(1);
  });

  it('work found by the spin returns to the loop without blocking; so does another port\'s event', () => {
    const { m, ev, loop } = setup();
    const p = poller(ev, loop, [1, 0, 0, 2]);
    ev.send(p.port);
    ev.dispatch();
    loop.idle(5);
    expect(loop.stats.spinServed).toBeGreaterThanOrEqual(1);
    expect(m.dom0.sched.blocks).toBe(0);
    // Another port (not a ring's): its daemon's work is for the loop's turn.
    const other = ev.bindIpi();
    let seen = 0;
    ev.on(other, () => { seen++; });
    p.remove();
    const q = poller(ev, loop, [1]);
    ev.send(q.port);
    ev.dispatch();
    ev.send(other);
    loop.idle(5);
    expect(seen).toBe(1);
    expect(m.dom0.sched.blocks).toBe(0);
  });

  it('a spin that keeps finding work returns to the turn after SPIN_TURN_MAX_QUIET_US, or SPIN_TURN_MAX_US while a host client is connected', () => {
    const { m, ev, loop } = setup();
    let clients = 0;
    loop.watchHostClients(() => clients);
    const p = poller(ev, loop, []);
    // A ring that always has work: only the turn bound ends the spin.
    const busy = poller(ev, loop, Array.from({ length: 1_000_000 }, () => 1));
    ev.send(busy.port);
    ev.dispatch();
    for (const [n, bound] of [[0, SPIN_TURN_MAX_QUIET_US], [1, SPIN_TURN_MAX_US]] as const) {
      clients = n;
      const t0 = performance.now();
      loop.idle(5);
      expect((performance.now() - t0) * 1000).toBeGreaterThanOrEqual(bound);
    }
    expect(loop.stats.spins).toBe(2);
    expect(loop.stats.spinServed).toBeGreaterThan(2);
    expect(m.dom0.sched.blocks).toBe(0);
    p.remove();
    busy.remove();
  });

  it('spinUs 0 never spins', () => {
    const { m, ev, loop } = setup(0);
    const p = poller(ev, loop, [1]);
    ev.send(p.port);
    ev.dispatch();
    loop.idle(5);
    expect(loop.stats.spins).toBe(0);
    expect(m.dom0.sched.blocks).toBe(1);
  });
});
