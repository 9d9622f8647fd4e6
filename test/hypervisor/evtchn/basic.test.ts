import { describe, expect, it } from 'vitest';
import { TestMachine } from '../../helpers/machine.ts';
import { EventChannels } from '../../../shared/guest/evtchn.ts';
import { EVTCHNSTAT_interdomain, EVTCHNSTAT_unbound, VIRQ_CON_RING, VIRQ_DOM_EXC } from '../../../shared/abi/event-channel.ts';
import { printk } from '../../../hypervisor/console.ts';

describe('event channels: interdomain basics', () => {
  it('alloc_unbound + bind_interdomain connect two domains; send sets the peer pending and wakes it', async () => {
    const m = new TestMachine();
    const a = await m.domU();
    const b = await m.domU();
    const ea = new EventChannels(a.v.xen);
    const eb = new EventChannels(b.v.xen);
    const pa = ea.allocUnbound(b.domid);
    expect(ea.status(pa).status).toBe(EVTCHNSTAT_unbound);
    const pb = eb.bindInterdomain(a.domid, pa);
    // bind_interdomain marks the new local port pending.
    expect(eb.isPending(pb)).toBe(true);
    const got: number[] = [];
    eb.on(pb, (p) => got.push(p));
    expect(eb.dispatch()).toBe(1);
    expect(got).toEqual([pb]);
    expect(ea.status(pa)).toMatchObject({ status: EVTCHNSTAT_interdomain, remoteDom: b.domid, remotePort: pb });
    // A send from a reaches b's port, and b's SCHEDOP_block returns at once.
    ea.send(pa);
    expect(eb.isPending(pb)).toBe(true);
    b.v.xen.block();
    expect(b.v.sched.wouldSleep).toBe(0);
    expect(eb.dispatch()).toBe(1);
    expect(got).toEqual([pb, pb]);
    // Nothing pending now: block would sleep.
    b.v.xen.block();
    expect(b.v.sched.wouldSleep).toBe(1);
    // Close on b returns a's port to unbound (naming b).
    eb.close(pb);
    expect(ea.status(pa).status).toBe(EVTCHNSTAT_unbound);
    ea.send(pa); // dropped silently
    expect(eb.isPending(pb)).toBe(false);
  });

  it('SCHEDOP_block re-enables event delivery (clears evtchn_upcall_mask)', async () => {
    const m = new TestMachine();
    const { v } = await m.domU();
    const ev = new EventChannels(v.xen);
    v.api.mem.writeU8(ev.sharedInfo + 1, 1); // vcpu_info[0].evtchn_upcall_mask
    v.xen.block();
    expect(v.api.mem.readU8(ev.sharedInfo + 1)).toBe(0);
  });

  it('Dom0 gets VIRQ_DOM_EXC when a domain shuts down', async () => {
    const m = new TestMachine();
    const e0 = new EventChannels(m.dom0.xen, 300);
    const port = e0.bindVirq(VIRQ_DOM_EXC);
    const { v } = await m.domU();
    v.xen.shutdown(0);
    expect(e0.isPending(port)).toBe(true);
  });

  it('Dom0 gets VIRQ_CON_RING when the hypervisor console ring grows (a printk or a guest console write)', async () => {
    const m = new TestMachine();
    const e0 = new EventChannels(m.dom0.xen, 300);
    const port = e0.bindVirq(VIRQ_CON_RING);
    expect(e0.isPending(port)).toBe(false);
    printk(m.hv, 'a hypervisor line');
    expect(e0.isPending(port)).toBe(true);
    e0.on(port, () => {});
    expect(e0.dispatch()).toBe(1);
    expect(e0.isPending(port)).toBe(false);
    const { v } = await m.domU();
    e0.dispatch();
    v.xen.print('a guest line\n');
    expect(e0.isPending(port)).toBe(true);
    // Unbound: a console write raises nothing (and does not fail).
    e0.close(port);
    printk(m.hv, 'after close');
    expect(e0.isPending(port)).toBe(false);
  });
});
