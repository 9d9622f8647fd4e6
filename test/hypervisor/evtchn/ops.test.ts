/**
 * __HYPERVISOR_event_channel_op (32), every EVTCHNOP sub-op, success and
 * failure, with Xen 4.17's semantics and error codes (common/event_channel.c).
 * Raw calls (helpers.ts) so each status is seen exactly; bits are read from the
 * guest's own shared_info through its memory accessors.
 */
import { beforeEach, describe, expect, it } from 'vitest';
import { TestMachine, type TestVcpu } from '../../helpers/machine.ts';
import { EventChannels } from '../../../shared/guest/evtchn.ts';
import { EEXIST, EFAULT, EINVAL, ENOENT, ENOSYS, EPERM, ESRCH } from '../../../shared/errno.ts';
import {
  EVTCHNOP_alloc_unbound, EVTCHNOP_bind_interdomain, EVTCHNOP_bind_ipi, EVTCHNOP_bind_pirq, EVTCHNOP_bind_vcpu,
  EVTCHNOP_bind_virq, EVTCHNOP_close, EVTCHNOP_reset, EVTCHNOP_send, EVTCHNOP_status, EVTCHNOP_unmask,
  EVTCHNSTAT_closed, EVTCHNSTAT_interdomain, EVTCHNSTAT_ipi, EVTCHNSTAT_unbound, EVTCHNSTAT_virq, VIRQ_CON_RING,
  VIRQ_CONSOLE, VIRQ_DEBUG, VIRQ_DOM_EXC, VIRQ_ENOMEM, VIRQ_TIMER,
} from '../../../shared/abi/event-channel.ts';
import { DOMID_SELF } from '../../../shared/types.ts';
import { sendVirq } from '../../../hypervisor/evtchn/evtchn.ts';
import { UNMAPPED } from '../hypercall/helpers.ts';
import {
  allocUnbound, bindInterdomain, bindIpi, bindVcpu, bindVirq, bits, close, connect, EVTCHN, eventArea, reset, send,
  status, unmask,
  pairWithEvents, takeAll, type Dom,
} from './helpers.ts';


describe('event_channel_op sub-ops', () => {
  let m: TestMachine;
  let a: Dom;
  let b: Dom;
  let ea: EventChannels;
  let eb: EventChannels;
  beforeEach(async () => {
    m = new TestMachine();
    ({ a, b, ea, eb } = await pairWithEvents(m));
  });

  describe('port 0 is reserved', () => {
    it('close, send and bind_vcpu on port 0 are -EINVAL; its status is closed; allocation starts at 1', () => {
      expect(close(a.v, 0)).toBe(-EINVAL);
      expect(send(a.v, 0)).toBe(-EINVAL);
      expect(bindVcpu(a.v, 0, 0)).toBe(-EINVAL);
      expect(status(a.v, 0)).toMatchObject({ rc: 0, status: EVTCHNSTAT_closed });
      expect(allocUnbound(a.v, b.domid)).toEqual({ rc: 0, port: 1 });
    });

    it('unmask on port 0 is 0, as in Xen (port 0 is a valid port, so evtchn_unmask passes; it only touches the caller\'s own bits)', () => {
      const before = eventArea(a.v, ea);
      expect(unmask(a.v, 0)).toBe(0);
      expect(eventArea(a.v, ea)).toEqual(before);
    });
  });

  describe('alloc_unbound', () => {
    it('gives the lowest free port, unbound for remote_dom, notified on vCPU 0', () => {
      expect(allocUnbound(a.v, b.domid)).toEqual({ rc: 0, port: 1 });
      expect(allocUnbound(a.v, b.domid)).toEqual({ rc: 0, port: 2 });
      expect(allocUnbound(a.v, b.domid)).toEqual({ rc: 0, port: 3 });
      expect(status(a.v, 2)).toMatchObject({ rc: 0, status: EVTCHNSTAT_unbound, dom: b.domid, vcpu: 0 });
      expect(close(a.v, 2)).toBe(0);
      expect(allocUnbound(a.v, b.domid)).toEqual({ rc: 0, port: 2 });
      // Nothing becomes pending on allocation.
      expect(bits(a.v, ea, 1)).toMatchObject({ pending: false, sel: false, upcall: 0 });
    });

    it('remote_dom DOMID_SELF is recorded as the caller\'s own domid', () => {
      const p = allocUnbound(a.v, DOMID_SELF).port;
      expect(status(a.v, p)).toMatchObject({ status: EVTCHNSTAT_unbound, dom: a.domid });
    });

    it('a DomU may not allocate in another domain (-EPERM), and nothing is allocated there', () => {
      expect(allocUnbound(a.v, a.domid, b.domid).rc).toBe(-EPERM);
      expect(status(b.v, 1).status).toBe(EVTCHNSTAT_closed);
      expect(allocUnbound(b.v, a.domid).port).toBe(1);
    });

    it('a missing domain is -ESRCH', () => {
      expect(allocUnbound(a.v, b.domid, 999).rc).toBe(-ESRCH);
      expect(allocUnbound(m.dom0, b.domid, 999).rc).toBe(-ESRCH);
    });

    it('Dom0 (privileged) may allocate in a DomU: the port is the DomU\'s', () => {
      const r = allocUnbound(m.dom0, 0, a.domid);
      expect(r).toEqual({ rc: 0, port: 1 });
      expect(status(a.v, 1)).toMatchObject({ status: EVTCHNSTAT_unbound, dom: 0 });
      expect(status(m.dom0, 1, a.domid)).toMatchObject({ rc: 0, status: EVTCHNSTAT_unbound, dom: 0 });
    });

    it('an unreadable argument is -EFAULT and allocates nothing', () => {
      expect(a.v.call(EVTCHN, EVTCHNOP_alloc_unbound, UNMAPPED)).toBe(-EFAULT);
      expect(allocUnbound(a.v, b.domid).port).toBe(1);
    });
  });

  describe('bind_interdomain', () => {
    it('connects both ends, and marks the new local port pending (and only it)', () => {
      const pa = allocUnbound(a.v, b.domid).port;
      const aBefore = eventArea(a.v, ea);
      const r = bindInterdomain(b.v, a.domid, pa);
      expect(r).toEqual({ rc: 0, port: 1 });
      expect(status(a.v, pa)).toMatchObject({ status: EVTCHNSTAT_interdomain, dom: b.domid, remotePort: r.port });
      expect(status(b.v, r.port)).toMatchObject({ status: EVTCHNSTAT_interdomain, dom: a.domid, remotePort: pa, vcpu: 0 });
      expect(bits(b.v, eb, r.port)).toEqual({ pending: true, masked: false, sel: true, upcall: 1 });
      expect(eventArea(a.v, ea)).toEqual(aBefore);
    });

    it('to a port that is not unbound is -EINVAL: closed, already bound, IPI, VIRQ, reserved', () => {
      const { pa } = connect(a, b);
      const ipi = bindIpi(a.v).port;
      const virq = bindVirq(a.v, VIRQ_TIMER).port;
      for (const rport of [0, 77, pa, ipi, virq]) {
        expect(bindInterdomain(b.v, a.domid, rport).rc, `remote port ${rport}`).toBe(-EINVAL);
      }
      // b's failed binds allocated nothing: its next port is 2.
      expect(bindIpi(b.v).port).toBe(2);
    });

    it('to a port unbound for a different domain is -EINVAL', async () => {
      const c = await m.domU();
      const forC = allocUnbound(a.v, c.domid).port;
      expect(bindInterdomain(b.v, a.domid, forC).rc).toBe(-EINVAL);
      expect(status(a.v, forC)).toMatchObject({ status: EVTCHNSTAT_unbound, dom: c.domid });
      expect(bindInterdomain(c.v, a.domid, forC).rc).toBe(0);
    });

    it('to a missing domain is -ESRCH; a remote port beyond the ABI is -EINVAL', () => {
      expect(bindInterdomain(b.v, 999, 1).rc).toBe(-ESRCH);
      expect(bindInterdomain(b.v, 0x7ff4, 1).rc).toBe(-ESRCH);
      for (const rport of [4096, 0x80000000, 0xffffffff]) expect(bindInterdomain(b.v, a.domid, rport).rc).toBe(-EINVAL);
    });

    it('a domain may connect to itself (DOMID_SELF): send on either end sets the other pending', () => {
      const u = allocUnbound(a.v, DOMID_SELF).port;
      const l = bindInterdomain(a.v, DOMID_SELF, u).port;
      expect(l).not.toBe(u);
      expect(status(a.v, u)).toMatchObject({ status: EVTCHNSTAT_interdomain, dom: a.domid, remotePort: l });
      takeAll(a.v, ea);
      expect(send(a.v, u)).toBe(0);
      expect(bits(a.v, ea, l).pending).toBe(true);
      expect(bits(a.v, ea, u).pending).toBe(false);
      takeAll(a.v, ea);
      expect(send(a.v, l)).toBe(0);
      expect(bits(a.v, ea, u).pending).toBe(true);
      expect(bits(a.v, ea, l).pending).toBe(false);
    });

    it('the new local port notifies vCPU 0 whichever vCPU bound it (Xen sets no notify_vcpu_id)', async () => {
      const c = await m.domU({ vcpus: 2 });
      const c1 = m.vcpu(c.slot, 1);
      const ec = new EventChannels(c.v.xen);
      const pa = allocUnbound(a.v, c.domid).port;
      const r = bindInterdomain(c1, a.domid, pa);
      expect(r.rc).toBe(0);
      expect(status(c.v, r.port).vcpu).toBe(0);
      expect(bits(c.v, ec, r.port, 0)).toMatchObject({ pending: true, sel: true, upcall: 1 });
      expect(bits(c.v, ec, r.port, 1)).toMatchObject({ sel: false, upcall: 0 });
    });

    it('an unreadable argument is -EFAULT', () => {
      expect(b.v.call(EVTCHN, EVTCHNOP_bind_interdomain, UNMAPPED)).toBe(-EFAULT);
    });
  });

  describe('close', () => {
    it('an interdomain port: the peer goes back to unbound for the closer, and can be bound again', () => {
      const { pa, pb } = connect(a, b);
      expect(close(b.v, pb)).toBe(0);
      expect(status(b.v, pb).status).toBe(EVTCHNSTAT_closed);
      expect(status(a.v, pa)).toMatchObject({ status: EVTCHNSTAT_unbound, dom: b.domid });
      expect(close(b.v, pb)).toBe(-EINVAL);
      const again = bindInterdomain(b.v, a.domid, pa);
      expect(again.rc).toBe(0);
      expect(status(a.v, pa)).toMatchObject({ status: EVTCHNSTAT_interdomain, remotePort: again.port });
    });

    it('the allocating side may close too: the binder\'s port becomes unbound for the allocator', () => {
      const { pa, pb } = connect(a, b);
      expect(close(a.v, pa)).toBe(0);
      expect(status(b.v, pb)).toMatchObject({ status: EVTCHNSTAT_unbound, dom: a.domid });
      // a can now bind to b's port (it names a).
      expect(bindInterdomain(a.v, b.domid, pb).rc).toBe(0);
    });

    it('a closed or never-opened port is -EINVAL', () => {
      const p = bindIpi(a.v).port;
      expect(close(a.v, p)).toBe(0);
      expect(close(a.v, p)).toBe(-EINVAL);
      expect(close(a.v, 1234)).toBe(-EINVAL);
    });

    it('clears the port\'s pending bit (Xen evtchn_free), so a re-used port starts clean', () => {
      const p = bindIpi(a.v).port;
      expect(send(a.v, p)).toBe(0);
      expect(bits(a.v, ea, p).pending).toBe(true);
      expect(close(a.v, p)).toBe(0);
      expect(bits(a.v, ea, p).pending).toBe(false);
    });

    it('a VIRQ port: the VIRQ can be bound again', () => {
      const p = bindVirq(a.v, VIRQ_TIMER).port;
      expect(bindVirq(a.v, VIRQ_TIMER).rc).toBe(-EEXIST);
      expect(close(a.v, p)).toBe(0);
      expect(bindVirq(a.v, VIRQ_TIMER).rc).toBe(0);
    });

    it('an unreadable argument is -EFAULT', () => {
      expect(a.v.call(EVTCHN, EVTCHNOP_close, UNMAPPED)).toBe(-EFAULT);
    });
  });

  describe('send', () => {
    it('interdomain: sets the remote port pending, not the local one', () => {
      const { pa, pb } = connect(a, b);
      takeAll(b.v, eb);
      expect(send(a.v, pa)).toBe(0);
      expect(bits(b.v, eb, pb)).toEqual({ pending: true, masked: false, sel: true, upcall: 1 });
      expect(bits(a.v, ea, pa)).toEqual({ pending: false, masked: false, sel: false, upcall: 0 });
    });

    it('unbound: dropped silently (0), nothing pending anywhere', () => {
      const p = allocUnbound(a.v, b.domid).port;
      const before = [eventArea(a.v, ea), eventArea(b.v, eb)];
      expect(send(a.v, p)).toBe(0);
      expect([eventArea(a.v, ea), eventArea(b.v, eb)]).toEqual(before);
    });

    it('IPI: sets the local port pending', () => {
      const p = bindIpi(a.v).port;
      expect(send(a.v, p)).toBe(0);
      expect(bits(a.v, ea, p)).toEqual({ pending: true, masked: false, sel: true, upcall: 1 });
    });

    it('a VIRQ port, a closed port and a never-opened port are -EINVAL', () => {
      const v = bindVirq(a.v, VIRQ_TIMER).port;
      expect(send(a.v, v)).toBe(-EINVAL);
      expect(bits(a.v, ea, v).pending).toBe(false);
      expect(send(a.v, 99)).toBe(-EINVAL);
      const p = bindIpi(a.v).port;
      expect(close(a.v, p)).toBe(0);
      expect(send(a.v, p)).toBe(-EINVAL);
    });

    it('an unreadable argument is -EFAULT', () => {
      expect(a.v.call(EVTCHN, EVTCHNOP_send, UNMAPPED)).toBe(-EFAULT);
    });
  });

  describe('bind_virq', () => {
    it('binds a per-vCPU VIRQ on each vCPU to its own port; status shows virq and vCPU', async () => {
      const c = await m.domU({ vcpus: 2 });
      const t0 = bindVirq(c.v, VIRQ_TIMER, 0);
      const t1 = bindVirq(c.v, VIRQ_TIMER, 1);
      expect(t0).toEqual({ rc: 0, port: 1 });
      expect(t1).toEqual({ rc: 0, port: 2 });
      expect(status(c.v, t1.port)).toMatchObject({ status: EVTCHNSTAT_virq, virq: VIRQ_TIMER, vcpu: 1 });
      const g = bindVirq(c.v, VIRQ_CON_RING, 0);
      expect(status(c.v, g.port)).toMatchObject({ status: EVTCHNSTAT_virq, virq: VIRQ_CON_RING, vcpu: 0 });
    });

    it('virq >= NR_VIRQS (24) is -EINVAL', () => {
      for (const virq of [24, 25, 0x7fffffff, 0xffffffff]) expect(bindVirq(a.v, virq).rc, `virq ${virq}`).toBe(-EINVAL);
      expect(bindVirq(a.v, 23).rc).toBe(0);
    });

    it('a global VIRQ on a vCPU other than 0 is -EINVAL (even one that exists)', async () => {
      const c = await m.domU({ vcpus: 2 });
      for (const virq of [VIRQ_CONSOLE, VIRQ_DOM_EXC, VIRQ_CON_RING, VIRQ_ENOMEM]) {
        expect(bindVirq(c.v, virq, 1).rc, `virq ${virq}`).toBe(-EINVAL);
      }
    });

    it('a vCPU beyond max_vcpus is -ENOENT', () => {
      expect(bindVirq(a.v, VIRQ_TIMER, 1).rc).toBe(-ENOENT);
      expect(bindVirq(a.v, VIRQ_DEBUG, 31).rc).toBe(-ENOENT);
      expect(bindVirq(a.v, VIRQ_TIMER, 0xffffffff).rc).toBe(-ENOENT);
    });

    it('binding the same VIRQ twice on a vCPU is -EEXIST, and allocates nothing', () => {
      expect(bindVirq(a.v, VIRQ_TIMER).port).toBe(1);
      expect(bindVirq(a.v, VIRQ_TIMER).rc).toBe(-EEXIST);
      expect(bindVirq(a.v, VIRQ_CON_RING).rc).toBe(0);
      expect(bindVirq(a.v, VIRQ_CON_RING).rc).toBe(-EEXIST);
      expect(bindIpi(a.v).port).toBe(3);
    });

    it('an unreadable argument is -EFAULT', () => {
      expect(a.v.call(EVTCHN, EVTCHNOP_bind_virq, UNMAPPED)).toBe(-EFAULT);
    });
  });

  describe('bind_ipi', () => {
    it('binds on the given vCPU; a vCPU beyond max_vcpus is -ENOENT', async () => {
      const c = await m.domU({ vcpus: 2 });
      const r = bindIpi(c.v, 1);
      expect(r).toEqual({ rc: 0, port: 1 });
      expect(status(c.v, 1)).toMatchObject({ status: EVTCHNSTAT_ipi, vcpu: 1 });
      expect(bindIpi(c.v, 2).rc).toBe(-ENOENT);
      expect(bindIpi(c.v, 0xffffffff).rc).toBe(-ENOENT);
      expect(a.v.call(EVTCHN, EVTCHNOP_bind_ipi, UNMAPPED)).toBe(-EFAULT);
    });
  });

  describe('status', () => {
    it('reports every kind: closed (free and reserved), unbound, interdomain, virq, ipi', () => {
      const u = allocUnbound(a.v, b.domid).port;
      const { pa: i, pb } = connect(a, b);
      const v = bindVirq(a.v, VIRQ_TIMER).port;
      const p = bindIpi(a.v).port;
      expect(status(a.v, 0)).toMatchObject({ rc: 0, status: EVTCHNSTAT_closed });
      expect(status(a.v, 100)).toMatchObject({ rc: 0, status: EVTCHNSTAT_closed });
      expect(status(a.v, u)).toMatchObject({ rc: 0, status: EVTCHNSTAT_unbound, dom: b.domid });
      expect(status(a.v, i)).toMatchObject({ rc: 0, status: EVTCHNSTAT_interdomain, dom: b.domid, remotePort: pb });
      expect(status(a.v, v)).toMatchObject({ rc: 0, status: EVTCHNSTAT_virq, virq: VIRQ_TIMER, vcpu: 0 });
      expect(status(a.v, p)).toMatchObject({ rc: 0, status: EVTCHNSTAT_ipi, vcpu: 0 });
    });

    it('of another domain: a DomU gets -EPERM, Dom0 may; a missing domain is -ESRCH; a port beyond the ABI is -EINVAL', () => {
      const p = bindIpi(b.v).port;
      expect(status(a.v, p, b.domid).rc).toBe(-EPERM);
      expect(status(m.dom0, p, b.domid)).toMatchObject({ rc: 0, status: EVTCHNSTAT_ipi });
      expect(status(a.v, p, a.domid)).toMatchObject({ rc: 0, status: EVTCHNSTAT_closed });
      expect(status(m.dom0, 1, 999).rc).toBe(-ESRCH);
      for (const port of [4096, 0xffffffff]) expect(status(a.v, port).rc).toBe(-EINVAL);
      expect(a.v.call(EVTCHN, EVTCHNOP_status, UNMAPPED)).toBe(-EFAULT);
    });
  });

  describe('bind_vcpu', () => {
    let c: Dom;
    let ec: EventChannels;
    beforeEach(async () => {
      c = await m.domU({ vcpus: 2 });
      ec = new EventChannels(c.v.xen);
    });

    it('moves unbound and interdomain ports: later events go to the new vCPU\'s vcpu_info', () => {
      const u = allocUnbound(c.v, a.domid).port;
      expect(bindVcpu(c.v, u, 1)).toBe(0);
      expect(status(c.v, u)).toMatchObject({ status: EVTCHNSTAT_unbound, vcpu: 1 });
      // The binding keeps c's notify vCPU.
      const pa = bindInterdomain(a.v, c.domid, u).port;
      expect(status(c.v, u)).toMatchObject({ status: EVTCHNSTAT_interdomain, vcpu: 1 });
      expect(send(a.v, pa)).toBe(0);
      expect(bits(c.v, ec, u, 1)).toMatchObject({ pending: true, sel: true, upcall: 1 });
      expect(bits(c.v, ec, u, 0)).toMatchObject({ sel: false, upcall: 0 });
      expect(bindVcpu(c.v, u, 0)).toBe(0);
      expect(status(c.v, u).vcpu).toBe(0);
    });

    it('moves a global VIRQ: Xen delivers it to the port\'s notify vCPU', () => {
      const p = bindVirq(c.v, VIRQ_CON_RING, 0).port;
      expect(bindVcpu(c.v, p, 1)).toBe(0);
      expect(status(c.v, p)).toMatchObject({ status: EVTCHNSTAT_virq, virq: VIRQ_CON_RING, vcpu: 1 });
      sendVirq(m.hv, c.slot, 0, VIRQ_CON_RING);
      expect(bits(c.v, ec, p, 1)).toMatchObject({ pending: true, sel: true, upcall: 1 });
      expect(bits(c.v, ec, p, 0)).toMatchObject({ sel: false, upcall: 0 });
    });

    it('closing a global VIRQ after moving it unbinds the VIRQ (it can be bound again; raising it sets nothing)', () => {
      const p = bindVirq(c.v, VIRQ_CON_RING, 0).port;
      expect(bindVcpu(c.v, p, 1)).toBe(0);
      expect(close(c.v, p)).toBe(0);
      // The freed port is reused by an IPI: raising the VIRQ must not hit it.
      const ipi = bindIpi(c.v, 0).port;
      expect(ipi).toBe(p);
      sendVirq(m.hv, c.slot, 0, VIRQ_CON_RING);
      expect(bits(c.v, ec, ipi, 0).pending).toBe(false);
      expect(bits(c.v, ec, ipi, 1).pending).toBe(false);
      expect(bindVirq(c.v, VIRQ_CON_RING, 0).rc).toBe(0);
    });

    it('per-vCPU VIRQs, IPIs, closed and reserved ports are -EINVAL', () => {
      const t = bindVirq(c.v, VIRQ_TIMER, 0).port;
      const i = bindIpi(c.v, 0).port;
      expect(bindVcpu(c.v, t, 1)).toBe(-EINVAL);
      expect(bindVcpu(c.v, i, 1)).toBe(-EINVAL);
      expect(bindVcpu(c.v, 50, 1)).toBe(-EINVAL);
      expect(bindVcpu(c.v, 0, 1)).toBe(-EINVAL);
      expect(status(c.v, t).vcpu).toBe(0);
      expect(status(c.v, i).vcpu).toBe(0);
    });

    it('a vCPU beyond max_vcpus is -ENOENT, checked before the port (Xen order); a port beyond the ABI is -EINVAL', () => {
      const u = allocUnbound(c.v, a.domid).port;
      expect(bindVcpu(c.v, u, 2)).toBe(-ENOENT);
      expect(bindVcpu(c.v, u, 0xffffffff)).toBe(-ENOENT);
      expect(bindVcpu(c.v, 5000, 7)).toBe(-ENOENT);
      expect(bindVcpu(c.v, 0, 7)).toBe(-ENOENT);
      expect(bindVcpu(c.v, 4096, 1)).toBe(-EINVAL);
      expect(bindVcpu(c.v, 0xffffffff, 0)).toBe(-EINVAL);
      expect(c.v.call(EVTCHN, EVTCHNOP_bind_vcpu, UNMAPPED)).toBe(-EFAULT);
    });
  });

  describe('unmask', () => {
    it('ports beyond the ABI are -EINVAL; an unreadable argument is -EFAULT', () => {
      for (const port of [4096, 65536, 0xffffffff]) expect(unmask(a.v, port)).toBe(-EINVAL);
      expect(a.v.call(EVTCHN, EVTCHNOP_unmask, UNMAPPED)).toBe(-EFAULT);
    });
  });

  describe('reset', () => {
    it('closes every port of the caller; peers go back to unbound; VIRQs can be rebound; port 0 stays reserved', () => {
      const u = allocUnbound(a.v, b.domid).port;
      const { pa, pb } = connect(a, b);
      const t = bindVirq(a.v, VIRQ_TIMER).port;
      const i = bindIpi(a.v).port;
      expect(send(a.v, i)).toBe(0);
      expect(reset(a.v)).toBe(0);
      for (const p of [u, pa, t, i]) expect(status(a.v, p).status, `port ${p}`).toBe(EVTCHNSTAT_closed);
      expect(bits(a.v, ea, i).pending).toBe(false);
      expect(status(b.v, pb)).toMatchObject({ status: EVTCHNSTAT_unbound, dom: a.domid });
      expect(close(a.v, 0)).toBe(-EINVAL);
      expect(bindVirq(a.v, VIRQ_TIMER)).toEqual({ rc: 0, port: 1 });
    });

    it('by a DomU on another domain is -EPERM; a missing domain is -ESRCH', () => {
      bindIpi(b.v);
      expect(reset(a.v, b.domid)).toBe(-EPERM);
      expect(status(b.v, 1).status).toBe(EVTCHNSTAT_ipi);
      expect(reset(m.dom0, 999)).toBe(-ESRCH);
      expect(a.v.call(EVTCHN, EVTCHNOP_reset, UNMAPPED)).toBe(-EFAULT);
    });

    it('by Dom0 on another domain needs it paused by the controller (-EINVAL otherwise), as Xen\'s evtchn_reset', () => {
      bindIpi(b.v);
      expect(reset(m.dom0, b.domid)).toBe(-EINVAL);
      expect(status(b.v, 1).status).toBe(EVTCHNSTAT_ipi);
      m.ctrl.pauseDomain(b.domid);
      expect(reset(m.dom0, b.domid)).toBe(0);
      expect(status(b.v, 1).status).toBe(EVTCHNSTAT_closed);
    });
  });

  it('other sub-ops (bind_pirq without physdev, FIFO init_control/expand_array/set_priority, unknown) are -ENOSYS', () => {
    for (const cmd of [EVTCHNOP_bind_pirq, 11, 12, 13, 14, 99, 0xffffffff]) {
      expect(a.v.call(EVTCHN, cmd, 0), `cmd ${cmd}`).toBe(-ENOSYS);
    }
  });

  it('EVTCHNOP numbers are Xen\'s', () => {
    expect([EVTCHNOP_bind_interdomain, EVTCHNOP_bind_virq, EVTCHNOP_bind_pirq, EVTCHNOP_close, EVTCHNOP_send,
      EVTCHNOP_status, EVTCHNOP_alloc_unbound, EVTCHNOP_bind_ipi, EVTCHNOP_bind_vcpu, EVTCHNOP_unmask, EVTCHNOP_reset])
      .toEqual([0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10]);
  });
});
