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
import { Dom0Loop, IDLE_MS, IDLE_MS_HOST_TOOLS } from '../../dom0/loop.ts';
import { portState, ECS_VIRQ } from '../../hypervisor/evtchn/evtchn.ts';

function setup() {
  const m = new TestMachine();
  const ev = new EventChannels(m.dom0.xen);
  const errors: unknown[] = [];
  const loop = new Dom0Loop(ev, (e) => errors.push(e));
  return { m, ev, loop, errors };
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
});
