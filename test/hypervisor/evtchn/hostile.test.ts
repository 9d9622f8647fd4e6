/**
 * XTF-style hostile guests against event channels: exhausting the port space,
 * ports that are foreign, closed, huge or not integers, a guest scribbling over
 * its own shared_info bitmaps, and a peer destroyed mid-connection. Whatever a
 * guest does, the hypervisor answers with an error code and other domains
 * carry on.
 */
import { beforeEach, describe, expect, it } from 'vitest';
import { TestMachine, type TestVcpu } from '../../helpers/machine.ts';
import { EventChannels } from '../../../shared/guest/evtchn.ts';
import { EFAULT, EINVAL, ENOSPC, ESRCH } from '../../../shared/errno.ts';
import {
  EVTCHNOP_bind_vcpu, EVTCHNOP_close, EVTCHNOP_send, EVTCHNOP_unmask, EVTCHNSTAT_interdomain,
  EVTCHNSTAT_ipi, EVTCHNSTAT_unbound, VIRQ_DOM_EXC, VIRQ_TIMER,
} from '../../../shared/abi/event-channel.ts';
import { DOMCTL_U, XEN_DOMCTL_CREATEDOMAIN } from '../../../shared/abi/domctl.ts';
import { XEN_DOMCTL_createdomain } from '../../../shared/hypercall.ts';
import { StructView } from '../../../shared/layout.ts';
import { bindVcpu as hvBindVcpu, bindInterdomain as hvBindInterdomain, closePort, sendPort } from '../../../hypervisor/evtchn/evtchn.ts';
import { HOSTILE_REGS } from '../hypercall/helpers.ts';
import {
  allocUnbound, bindInterdomain, bindIpi, bindVcpu, bindVirq, bits, close, connect, EVTCHN, eventArea, send, status,
  unmask,
  pairWithEvents, takeAll, type Dom,
} from './helpers.ts';


describe('hostile event-channel use', () => {
  let m: TestMachine;
  let a: Dom;
  let b: Dom;
  let ea: EventChannels;
  let eb: EventChannels;
  beforeEach(async () => {
    m = new TestMachine();
    ({ a, b, ea, eb } = await pairWithEvents(m));
  });

  /** b and a still talk both ways over a fresh channel. */
  const stillWorks = (x: Dom, ex: EventChannels, y: Dom, ey: EventChannels): void => {
    const { pa, pb } = connect(x, y);
    takeAll(y.v, ey);
    expect(send(x.v, pa)).toBe(0);
    expect(bits(y.v, ey, pb)).toMatchObject({ pending: true, sel: true, upcall: 1 });
    expect(takeAll(y.v, ey)).toBeGreaterThanOrEqual(1);
    takeAll(x.v, ex);
    expect(send(y.v, pb)).toBe(0);
    expect(bits(x.v, ex, pa)).toMatchObject({ pending: true, sel: true, upcall: 1 });
  };

  describe('port exhaustion', () => {
    it('allocating until -ENOSPC gives ports 1..4095 exactly; every allocator then fails; the hypervisor carries on', async () => {
      const c = await m.domU();
      const ec = new EventChannels(c.v.xen);
      const got: number[] = [];
      for (;;) {
        const r = allocUnbound(a.v, b.domid);
        if (r.rc !== 0) {
          expect(r.rc).toBe(-ENOSPC);
          break;
        }
        got.push(r.port);
        if (got.length > 5000) throw new Error('no -ENOSPC after 5000 ports');
      }
      expect(got.length).toBe(4095);
      expect(got[0]).toBe(1);
      expect(got[4094]).toBe(4095);
      expect(allocUnbound(a.v, b.domid).rc).toBe(-ENOSPC);
      expect(bindIpi(a.v).rc).toBe(-ENOSPC);
      expect(bindVirq(a.v, VIRQ_TIMER).rc).toBe(-ENOSPC);
      const forA = allocUnbound(b.v, a.domid).port;
      expect(bindInterdomain(a.v, b.domid, forA).rc).toBe(-ENOSPC);
      // b's port is still unbound: a's failure took nothing.
      expect(status(b.v, forA)).toMatchObject({ status: EVTCHNSTAT_unbound, dom: a.domid });
      // Other domains are unaffected, the frame accounting intact.
      stillWorks(b, eb, c, ec);
      expect(m.checkInvariants()).toEqual([]);
      // Closing one port makes exactly that one allocatable again.
      expect(close(a.v, 1234)).toBe(0);
      expect(allocUnbound(a.v, b.domid)).toEqual({ rc: 0, port: 1234 });
      expect(allocUnbound(a.v, b.domid).rc).toBe(-ENOSPC);
      expect(close(a.v, 4095)).toBe(0);
      expect(bindIpi(a.v)).toEqual({ rc: 0, port: 4095 });
      // The last port works like any other.
      expect(send(a.v, 4095)).toBe(0);
      expect(bits(a.v, ea, 4095)).toEqual({ pending: true, masked: false, sel: true, upcall: 1 });
    });

    it('a domain created with a small max_evtchn_port is limited by it (ports 1..max)', () => {
      const { rc, op } = m.ctrl.domctlRaw(XEN_DOMCTL_createdomain, 0, (u) => {
        new StructView(XEN_DOMCTL_CREATEDOMAIN, u).set('max_vcpus', 1).set('max_evtchn_port', 7)
          .set('max_grant_frames', -1).set('max_maptrack_frames', -1).set('grant_opts', 1);
      });
      expect(rc).toBe(0);
      const d = op.get('domain');
      expect(new StructView(XEN_DOMCTL_CREATEDOMAIN, op.raw(), DOMCTL_U).get('max_evtchn_port')).toBe(7);
      const ports: number[] = [];
      for (let i = 0; i < 7; i++) {
        const r = allocUnbound(m.dom0, 0, d);
        expect(r.rc).toBe(0);
        ports.push(r.port);
      }
      expect(ports).toEqual([1, 2, 3, 4, 5, 6, 7]);
      expect(allocUnbound(m.dom0, 0, d).rc).toBe(-ENOSPC);
      // Dom0 itself is not limited by it.
      expect(allocUnbound(m.dom0, d).rc).toBe(0);
      // Dom0 can still bind to one of d's ports (the new port is Dom0's).
      expect(bindInterdomain(m.dom0, d, 3).rc).toBe(0);
      expect(status(m.dom0, 3, d)).toMatchObject({ rc: 0, status: EVTCHNSTAT_interdomain, dom: 0 });
    });
  });

  describe('foreign, closed, huge and non-integer ports', () => {
    it('a port open only in another domain: close/send -EINVAL, unmask 0 and only touches the caller\'s own bits', () => {
      for (let i = 0; i < 10; i++) bindIpi(b.v);
      eb.mask(9);
      expect(send(b.v, 9)).toBe(0);
      const bBefore = eventArea(b.v, eb);
      expect(close(a.v, 9)).toBe(-EINVAL);
      expect(send(a.v, 9)).toBe(-EINVAL);
      expect(unmask(a.v, 9)).toBe(0);
      expect(bindVcpu(a.v, 9, 0)).toBe(-EINVAL);
      expect(eventArea(b.v, eb)).toEqual(bBefore);
      expect(status(b.v, 9)).toMatchObject({ status: EVTCHNSTAT_ipi });
      expect(bits(b.v, eb, 9)).toMatchObject({ pending: true, masked: true });
    });

    it('a closed port: close and send -EINVAL, unmask 0, nothing becomes pending', () => {
      const p = bindIpi(a.v).port;
      expect(close(a.v, p)).toBe(0);
      const before = eventArea(a.v, ea);
      expect(close(a.v, p)).toBe(-EINVAL);
      expect(send(a.v, p)).toBe(-EINVAL);
      expect(unmask(a.v, p)).toBe(0);
      expect(eventArea(a.v, ea)).toEqual(before);
    });

    it('ports >= 4096 up to 2^32-1: close/send/unmask/bind_vcpu/status/bind_interdomain are -EINVAL; nothing changes anywhere', () => {
      const { pa } = connect(a, b);
      const before = [eventArea(a.v, ea), eventArea(b.v, eb)];
      for (const port of [4096, 4097, 8191, 65536, 0x7fffffff, 0x80000000, 0xfffffffe, 0xffffffff]) {
        expect(close(a.v, port), `close ${port}`).toBe(-EINVAL);
        expect(send(a.v, port), `send ${port}`).toBe(-EINVAL);
        expect(unmask(a.v, port), `unmask ${port}`).toBe(-EINVAL);
        expect(bindVcpu(a.v, port, 0), `bind_vcpu ${port}`).toBe(-EINVAL);
        expect(status(a.v, port).rc, `status ${port}`).toBe(-EINVAL);
        expect(bindInterdomain(b.v, a.domid, port).rc, `bind_interdomain ${port}`).toBe(-EINVAL);
      }
      expect([eventArea(a.v, ea), eventArea(b.v, eb)]).toEqual(before);
      expect(status(a.v, pa).status).toBe(EVTCHNSTAT_interdomain);
      stillWorks(a, ea, b, eb);
    });

    it('non-register argument values are -EINVAL for every port op, never a throw', () => {
      for (const [what, x] of HOSTILE_REGS) {
        for (const cmd of [EVTCHNOP_close, EVTCHNOP_send, EVTCHNOP_unmask, EVTCHNOP_bind_vcpu]) {
          expect(a.v.call(EVTCHN, cmd, x), `${what} as the argument of cmd ${cmd}`).toBe(-EINVAL);
          expect(a.v.call(EVTCHN, x, 0), `${what} as the cmd`).toBe(-EINVAL);
        }
      }
      // A pointer that is an integer but not a guest address: -EFAULT.
      expect(a.v.call(EVTCHN, EVTCHNOP_close, 2 ** 52)).toBe(-EFAULT);
      expect(a.v.call(EVTCHN, EVTCHNOP_send, -1)).toBe(-EFAULT);
    });

    it('the hypervisor\'s port functions refuse non-integer and negative port numbers (-EINVAL)', () => {
      const p = bindIpi(a.v).port;
      for (const port of [1.5, -1, NaN, Infinity, -Infinity, 2 ** 53, p + 0.5]) {
        expect(closePort(m.hv, a.slot, port), `close ${port}`).toBe(-EINVAL);
        expect(sendPort(m.hv, a.slot, port), `send ${port}`).toBe(-EINVAL);
        expect(hvBindVcpu(m.hv, a.slot, port, 0), `bind_vcpu ${port}`).toBe(-EINVAL);
        expect(hvBindInterdomain(m.hv, b.slot, 0, a.slot, port), `bind_interdomain ${port}`).toBe(-EINVAL);
      }
      expect(status(a.v, p).status).toBe(EVTCHNSTAT_ipi);
      expect(bits(a.v, ea, p).pending).toBe(false);
    });
  });

  describe('a guest that garbles its own shared_info', () => {
    it('all ones in its vcpu_info, pending and mask bitmaps: other domains\' channels work, and so do its hypercalls', async () => {
      const c = await m.domU();
      const ec = new EventChannels(c.v.xen);
      const { pa, pb } = connect(a, b);
      const bc = connect(b, c);
      // a scribbles over everything up to and including the mask bitmap.
      a.v.api.mem.fill(ea.sharedInfo, 3072, 0xff);
      expect(a.v.api.mem.readU64(ea.sharedInfo + 2048)).toBe(0xffffffffffffffffn);
      // Sends into a are absorbed (its bits are already set); sends out of a reach b.
      takeAll(b.v, eb);
      expect(send(b.v, pb)).toBe(0);
      expect(send(a.v, pa)).toBe(0);
      expect(bits(b.v, eb, pb)).toMatchObject({ pending: true, sel: true, upcall: 1 });
      // b <-> c is untouched.
      takeAll(c.v, ec);
      takeAll(b.v, eb);
      expect(send(b.v, bc.pa)).toBe(0);
      expect(bits(c.v, ec, bc.pb)).toMatchObject({ pending: true, sel: true, upcall: 1 });
      expect(send(c.v, bc.pb)).toBe(0);
      expect(bits(b.v, eb, bc.pa)).toMatchObject({ pending: true, sel: true, upcall: 1 });
      // a's hypercalls still answer correctly.
      expect(status(a.v, pa)).toMatchObject({ rc: 0, status: EVTCHNSTAT_interdomain, dom: b.domid });
      expect(bindIpi(a.v).rc).toBe(0);
      stillWorks(b, eb, c, ec);
      expect(m.checkInvariants()).toEqual([]);
      // Once a cleans up, delivery into it is normal again.
      a.v.api.mem.fill(ea.sharedInfo, 3072, 0);
      expect(send(b.v, pb)).toBe(0);
      expect(bits(a.v, ea, pa)).toEqual({ pending: true, masked: false, sel: true, upcall: 1 });
    });

    it('random bytes in its shared_info, then a storm of sends, unmasks and closes: no throw, peers fine', () => {
      const { pa, pb } = connect(a, b);
      let seed = 12345;
      const rnd = (): number => { seed = (seed * 1103515245 + 12345) >>> 0; return seed; };
      const junk = new Uint8Array(3136);
      for (let i = 0; i < junk.length; i++) junk[i] = rnd() & 0xff;
      a.v.api.mem.write(ea.sharedInfo, junk);
      for (let i = 0; i < 200; i++) {
        const port = rnd() % 5000;
        expect([0, -EINVAL]).toContain(send(a.v, port));
        expect([0, -EINVAL]).toContain(unmask(a.v, port));
        expect([0, -EINVAL]).toContain(send(b.v, pb));
      }
      expect(() => ea.dispatch()).not.toThrow();
      expect(status(a.v, pa).status).toBe(EVTCHNSTAT_interdomain);
      takeAll(b.v, eb);
      expect(send(a.v, pa)).toBe(0);
      expect(bits(b.v, eb, pb)).toMatchObject({ pending: true, sel: true, upcall: 1 });
    });
  });

  describe('a peer destroyed mid-connection', () => {
    it('destroying the binder leaves the allocator\'s port unbound (naming it) and its sends harmless', async () => {
      const { pa } = connect(a, b);
      await m.destroy(b.domid);
      expect(status(a.v, pa)).toMatchObject({ rc: 0, status: EVTCHNSTAT_unbound, dom: b.domid });
      const before = eventArea(a.v, ea);
      for (let i = 0; i < 3; i++) expect(send(a.v, pa)).toBe(0);
      expect(eventArea(a.v, ea)).toEqual(before);
      // The dead domain cannot be bound to; a's port can be closed normally.
      expect(bindInterdomain(a.v, b.domid, 1).rc).toBe(-ESRCH);
      expect(close(a.v, pa)).toBe(0);
      expect(m.checkInvariants()).toEqual([]);
    });

    it('destroying the allocator leaves the binder\'s port unbound; a new domain reusing the slot is not reached', async () => {
      const { pb } = connect(a, b);
      takeAll(b.v, eb);
      await m.destroy(a.domid);
      expect(status(b.v, pb)).toMatchObject({ status: EVTCHNSTAT_unbound, dom: a.domid });
      const c = await m.domU();
      expect(c.slot).toBe(a.slot);
      const ec = new EventChannels(c.v.xen);
      const before = [eventArea(b.v, eb), eventArea(c.v, ec)];
      expect(send(b.v, pb)).toBe(0);
      expect([eventArea(b.v, eb), eventArea(c.v, ec)]).toEqual(before);
      stillWorks(b, eb, c, ec);
    });

    it('a port that was unbound for the destroyed domain stays unbound; Dom0 hears VIRQ_DOM_EXC', async () => {
      const e0 = new EventChannels(m.dom0.xen, 300);
      const exc = e0.bindVirq(VIRQ_DOM_EXC);
      const forB = allocUnbound(a.v, b.domid).port;
      e0.dispatch();
      await m.destroy(b.domid);
      expect(status(a.v, forB)).toMatchObject({ status: EVTCHNSTAT_unbound, dom: b.domid });
      expect(send(a.v, forB)).toBe(0);
      expect(e0.isPending(exc)).toBe(true);
      // The destroyed domain's records are gone: nobody can query it.
      expect(status(m.dom0, forB, b.domid).rc).toBe(-ESRCH);
      expect(status(m.dom0, 1, a.domid)).toMatchObject({ rc: 0, status: EVTCHNSTAT_unbound });
    });
  });
});
