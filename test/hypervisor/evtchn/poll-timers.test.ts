/**
 * SCHEDOP_poll (sched.h, common/sched/core.c do_poll) and the guest timers that
 * raise VIRQ_TIMER: VCPUOP_set/stop_singleshot_timer, VCPUOP_set/stop_periodic_timer
 * (common/domain.c) and set_timer_op. runTimers is pure over the machine state:
 * the tests call it with a chosen `now` instead of waiting.
 */
import { beforeEach, describe, expect, it } from 'vitest';
import { TestMachine, type TestVcpu } from '../../helpers/machine.ts';
import { EventChannels } from '../../../shared/guest/evtchn.ts';
import { EFAULT, EINVAL, ENOENT, ETIME } from '../../../shared/errno.ts';
import { VIRQ_TIMER } from '../../../shared/abi/event-channel.ts';
import { SCHED_POLL } from '../../../shared/abi/sched.ts';
import { VCPU_SET_PERIODIC_TIMER, VCPU_SET_SINGLESHOT_TIMER, VCPU_SSHOTTMR_future } from '../../../shared/abi/vcpu.ts';
import { VCPU_INFO, VCPU_TIME_INFO } from '../../../shared/abi/shared-info.ts';
import {
  SCHEDOP_poll, VCPUOP_set_periodic_timer, VCPUOP_set_singleshot_timer, VCPUOP_stop_periodic_timer,
  VCPUOP_stop_singleshot_timer, __HYPERVISOR_sched_op, __HYPERVISOR_set_timer_op, __HYPERVISOR_vcpu_op,
} from '../../../shared/hypercall.ts';
import { StructView } from '../../../shared/layout.ts';
import { runTimers } from '../../../hypervisor/timer/timers.ts';
import { V } from '../../../hypervisor/state.ts';
import { ARG, BUF, UNMAPPED, put } from '../hypercall/helpers.ts';
import { bindIpi, bindVirq, bits, send, type Dom,
} from './helpers.ts';

const MS = 1_000_000n;
const SEC = 1_000_000_000n;

describe('SCHEDOP_poll', () => {
  let m: TestMachine;
  let a: Dom;
  let ea: EventChannels;
  beforeEach(async () => {
    m = new TestMachine();
    a = await m.domU();
    ea = new EventChannels(a.v.xen);
    for (let i = 0; i < 3; i++) bindIpi(a.v); // ports 1, 2, 3
  });

  /** Poll raw: the port list at BUF (or at `listAt`), nr_ports as given. */
  const poll = (ports: readonly number[], o: { nr?: number; timeout?: bigint; listAt?: number; at?: number } = {}): number => {
    const list = new Uint8Array(Math.max(ports.length, 1) * 4);
    const dv = new DataView(list.buffer);
    ports.forEach((p, i) => dv.setUint32(i * 4, p, true));
    if (o.listAt === undefined) a.v.api.mem.write(BUF, list);
    put(a.v, ARG, StructView.alloc(SCHED_POLL).set('ports', o.listAt ?? BUF).set('nr_ports', o.nr ?? ports.length).setBig('timeout', o.timeout ?? 0n));
    return a.v.call(__HYPERVISOR_sched_op, SCHEDOP_poll, o.at ?? ARG);
  };
  const sleeps = (): number => a.v.sched.wouldSleep;

  it('more than 128 ports is -EINVAL without sleeping; exactly 128 is accepted', () => {
    expect(poll(new Array<number>(129).fill(1))).toBe(-EINVAL);
    expect(poll([1], { nr: 0xffffffff })).toBe(-EINVAL);
    expect(a.v.sched.blocks).toBe(0);
    expect(poll(new Array<number>(128).fill(1))).toBe(0);
    expect(sleeps()).toBe(1);
  });

  it('an invalid port in the list is -EINVAL without sleeping', () => {
    for (const bad of [4096, 0x80000000, 0xffffffff]) expect(poll([1, bad, 2]), `port ${bad}`).toBe(-EINVAL);
    expect(a.v.sched.blocks).toBe(0);
  });

  it('an unreadable port list or sched_poll is -EFAULT without sleeping', () => {
    expect(poll([1, 2], { listAt: UNMAPPED })).toBe(-EFAULT);
    expect(poll([1], { at: UNMAPPED })).toBe(-EFAULT);
    expect(a.v.sched.blocks).toBe(0);
  });

  it('returns at once when a listed port is pending (masked or not), and leaves it pending', () => {
    expect(send(a.v, 2)).toBe(0);
    expect(poll([1, 2, 3])).toBe(0);
    expect(sleeps()).toBe(0);
    expect(bits(a.v, ea, 2).pending).toBe(true);
    ea.dispatch();
    ea.mask(3);
    expect(send(a.v, 3)).toBe(0);
    expect(bits(a.v, ea, 3)).toMatchObject({ pending: true, upcall: 0 });
    expect(poll([3])).toBe(0);
    expect(sleeps()).toBe(0);
  });

  it('sleeps when no listed port is pending, even if another one is; the vCPU is not left marked polling', () => {
    expect(send(a.v, 1)).toBe(0);
    expect(poll([2, 3])).toBe(0);
    expect(sleeps()).toBe(1);
    expect(Atomics.load(m.hv.vcpu, m.hv.v(a.slot, 0, V.polling))).toBe(0);
  });

  it('with no ports and a timeout it is a timed sleep (the guest library\'s sleep)', () => {
    expect(poll([], { timeout: m.hv.now() + SEC })).toBe(0);
    expect(sleeps()).toBe(1);
    ea.poll([], m.hv.now() + SEC);
    expect(sleeps()).toBe(2);
  });
});

describe('timers and VIRQ_TIMER', () => {
  let m: TestMachine;
  let a: Dom;
  let ea: EventChannels;
  let port: number;
  beforeEach(async () => {
    m = new TestMachine();
    a = await m.domU({ vcpus: 2 });
    ea = new EventChannels(a.v.xen);
    port = bindVirq(a.v, VIRQ_TIMER, 0).port;
  });

  const vcpuOp = (v: TestVcpu, cmd: number, vcpu: number, arg: number): number => v.call(__HYPERVISOR_vcpu_op, cmd, vcpu, arg);
  const singleshot = (deadline: bigint, flags = 0, vcpu = 0, v: TestVcpu = a.v): number =>
    vcpuOp(v, VCPUOP_set_singleshot_timer, vcpu, put(v, ARG, StructView.alloc(VCPU_SET_SINGLESHOT_TIMER).setBig('timeout_abs_ns', deadline).set('flags', flags)));
  const periodic = (period: bigint, vcpu = 0): number =>
    vcpuOp(a.v, VCPUOP_set_periodic_timer, vcpu, put(a.v, ARG, StructView.alloc(VCPU_SET_PERIODIC_TIMER).setBig('period_ns', period)));
  /** Did VIRQ_TIMER fire since the last look? (consumes it) */
  const fired = (p = port): boolean => {
    const f = ea.isPending(p);
    if (f) a.v.api.mem.atomicAnd32(ea.sharedInfo + 2048 + (p >>> 5) * 4, ~(1 << (p & 31)));
    return f;
  };
  const far = (): bigint => m.hv.now() + 3600n * SEC;

  describe('VCPUOP_set_singleshot_timer', () => {
    it('fires VIRQ_TIMER exactly at the deadline, once', () => {
      const d = m.hv.now() + 10n * SEC;
      expect(singleshot(d)).toBe(0);
      expect(runTimers(m.hv, d - 1n)).toBe(d); // not yet; the earliest armed deadline is d
      expect(fired()).toBe(false);
      expect(bits(a.v, ea, port)).toMatchObject({ pending: false, sel: false, upcall: 0 });
      expect(runTimers(m.hv, d)).toBe(0n);
      expect(bits(a.v, ea, port)).toMatchObject({ pending: true, sel: true, upcall: 1 });
      expect(fired()).toBe(true);
      runTimers(m.hv, d + 100n * SEC);
      expect(fired()).toBe(false);
    });

    it('fires at a later now too (a late timer interrupt still delivers it)', () => {
      const d = m.hv.now() + SEC;
      expect(singleshot(d)).toBe(0);
      runTimers(m.hv, d + 5n * SEC);
      expect(fired()).toBe(true);
    });

    it('VCPU_SSHOTTMR_future with a deadline in the past is -ETIME and arms nothing', () => {
      expect(singleshot(1n, VCPU_SSHOTTMR_future)).toBe(-ETIME);
      expect(singleshot(m.hv.now() - MS, VCPU_SSHOTTMR_future)).toBe(-ETIME);
      expect(runTimers(m.hv, far())).toBe(0n);
      expect(fired()).toBe(false);
      const d = m.hv.now() + SEC;
      expect(singleshot(d, VCPU_SSHOTTMR_future)).toBe(0);
      runTimers(m.hv, d);
      expect(fired()).toBe(true);
    });

    it('without the flag a past deadline is accepted and fires at the next timer run', () => {
      expect(singleshot(m.hv.now() / 2n)).toBe(0);
      runTimers(m.hv, m.hv.now());
      expect(fired()).toBe(true);
    });

    it('a deadline of 0, or one that is negative as Xen\'s signed s_time_t (>= 2^63), is in the past, not "stop": it fires', () => {
      for (const d of [0n, 1n << 63n, (1n << 64n) - 1n]) {
        expect(singleshot(d), `deadline ${d}`).toBe(0);
        runTimers(m.hv, m.hv.now());
        expect(fired(), `deadline ${d}`).toBe(true);
      }
    });

    it('a new deadline replaces the old one', () => {
      const d1 = m.hv.now() + SEC;
      const d2 = d1 + SEC;
      expect(singleshot(d1)).toBe(0);
      expect(singleshot(d2)).toBe(0);
      runTimers(m.hv, d1);
      expect(fired()).toBe(false);
      runTimers(m.hv, d2);
      expect(fired()).toBe(true);
    });

    it('on another vCPU is -EINVAL (only the current vCPU); beyond max_vcpus -ENOENT; unreadable -EFAULT', () => {
      const d = m.hv.now() + SEC;
      expect(singleshot(d, 0, 1)).toBe(-EINVAL);
      expect(vcpuOp(a.v, VCPUOP_stop_singleshot_timer, 1, 0)).toBe(-EINVAL);
      expect(singleshot(d, 0, 2)).toBe(-ENOENT);
      expect(vcpuOp(a.v, VCPUOP_set_singleshot_timer, 0, UNMAPPED)).toBe(-EFAULT);
      // vCPU 1 may set its own.
      const p1 = bindVirq(a.v, VIRQ_TIMER, 1).port;
      expect(singleshot(d, 0, 1, m.vcpu(a.slot, 1))).toBe(0);
      runTimers(m.hv, d);
      expect(fired(p1)).toBe(true);
      expect(fired()).toBe(false);
    });

    it('VCPUOP_stop_singleshot_timer cancels it', () => {
      const d = m.hv.now() + SEC;
      expect(singleshot(d)).toBe(0);
      expect(vcpuOp(a.v, VCPUOP_stop_singleshot_timer, 0, 0)).toBe(0);
      expect(runTimers(m.hv, d + SEC)).toBe(0n);
      expect(fired()).toBe(false);
    });
  });

  describe('VCPUOP_set_periodic_timer', () => {
    it('periods below 1 ms or above STIME_DELTA_MAX (2^62-1) are -EINVAL; the bounds themselves are accepted', () => {
      for (const p of [0n, 1n, MS - 1n, 1n << 62n, (1n << 64n) - 1n]) expect(periodic(p), `period ${p}`).toBe(-EINVAL);
      expect(runTimers(m.hv, 0n)).toBe(0n); // nothing armed
      expect(periodic((1n << 62n) - 1n)).toBe(0);
      expect(periodic(MS)).toBe(0);
      expect(vcpuOp(a.v, VCPUOP_set_periodic_timer, 0, UNMAPPED)).toBe(-EFAULT);
      expect(periodic(MS, 2)).toBe(-ENOENT);
    });

    it('fires one period after it is set, then re-arms every period; missed periods are not replayed', () => {
      const P = 10n * MS;
      const before = m.hv.now();
      expect(periodic(P)).toBe(0);
      const after = m.hv.now();
      const first = runTimers(m.hv, 0n); // the armed deadline, nothing fired
      expect(first >= before + P && first <= after + P).toBe(true);
      runTimers(m.hv, first - 1n);
      expect(fired()).toBe(false);
      expect(runTimers(m.hv, first)).toBe(first + P);
      expect(fired()).toBe(true);
      runTimers(m.hv, first + P - 1n);
      expect(fired()).toBe(false);
      expect(runTimers(m.hv, first + P)).toBe(first + 2n * P);
      expect(fired()).toBe(true);
      // Five and a half periods late: one event, and the next deadline is in the future.
      const late = first + P + (11n * P) / 2n;
      const next = runTimers(m.hv, late);
      expect(fired()).toBe(true);
      expect(next > late && next <= late + P).toBe(true);
      runTimers(m.hv, next - 1n);
      expect(fired()).toBe(false);
    });

    it('VCPUOP_stop_periodic_timer stops it', () => {
      expect(periodic(MS)).toBe(0);
      expect(vcpuOp(a.v, VCPUOP_stop_periodic_timer, 0, 0)).toBe(0);
      expect(runTimers(m.hv, far())).toBe(0n);
      expect(fired()).toBe(false);
    });

    it('may be set for another vCPU of the domain (Xen has no current check): it fires on that vCPU\'s port', () => {
      const p1 = bindVirq(a.v, VIRQ_TIMER, 1).port;
      expect(periodic(MS, 1)).toBe(0);
      const first = runTimers(m.hv, 0n);
      runTimers(m.hv, first);
      expect(fired(p1)).toBe(true);
      expect(fired()).toBe(false);
      expect(bits(a.v, ea, p1, 1)).toMatchObject({ sel: true, upcall: 1 });
      expect(bits(a.v, ea, p1, 0)).toMatchObject({ sel: false, upcall: 0 });
    });
  });

  describe('set_timer_op', () => {
    it('arms the singleshot timer at an absolute deadline; 0 stops it', () => {
      const d = m.hv.now() + SEC;
      ea.setTimer(d);
      runTimers(m.hv, d - 1n);
      expect(fired()).toBe(false);
      runTimers(m.hv, d);
      expect(fired()).toBe(true);
      ea.setTimer(d + SEC);
      ea.setTimer(0n);
      expect(runTimers(m.hv, d + 10n * SEC)).toBe(0n);
      expect(fired()).toBe(false);
    });

    it('is the same timer as VCPUOP_set_singleshot_timer: either replaces or stops the other', () => {
      const d = m.hv.now() + SEC;
      expect(singleshot(d)).toBe(0);
      expect(a.v.call(__HYPERVISOR_set_timer_op, 0)).toBe(0);
      runTimers(m.hv, d);
      expect(fired()).toBe(false);
    });
  });

  it('with VIRQ_TIMER unbound a timer fires into nothing: no event, no error', async () => {
    const b = await m.domU();
    const eb = new EventChannels(b.v.xen);
    const ipi = bindIpi(b.v).port;
    const d = m.hv.now() + SEC;
    b.v.call(__HYPERVISOR_set_timer_op, d);
    expect(() => runTimers(m.hv, d)).not.toThrow();
    expect(bits(b.v, eb, ipi)).toMatchObject({ pending: false, sel: false, upcall: 0 });
    expect(runTimers(m.hv, far())).toBe(0n);
  });

  describe('pvclock', () => {
    it('every vcpu_time_info says TSC = ns since boot: mul 0x80000000, shift 1, TSC_STABLE; systemTime() is hv.now()', () => {
      for (const vcpu of [0, 1, 31]) {
        const t = new StructView(VCPU_TIME_INFO, a.v.api.mem.read(ea.sharedInfo + vcpu * 64 + VCPU_INFO.fields.time_version.offset, 32));
        expect(t.get('tsc_to_system_mul')).toBe(0x80000000);
        expect(t.get('tsc_shift')).toBe(1);
        expect(t.get('flags') & 1).toBe(1);
        expect(t.get('version') % 2).toBe(0);
      }
      const before = m.hv.now();
      const st = ea.systemTime();
      const after = m.hv.now();
      expect(st >= before && st <= after).toBe(true);
    });
  });

  it('a timer set from system time fires at that time: the guest sleeps until now + 1 ms', () => {
    const d = ea.systemTime() + MS;
    ea.setTimer(d);
    runTimers(m.hv, d - 1n);
    expect(fired()).toBe(false);
    runTimers(m.hv, d);
    expect(bits(a.v, ea, port)).toMatchObject({ pending: true, sel: true, upcall: 1 });
    // The vCPU's block returns at once: the timer's upcall is waiting.
    a.v.xen.block();
    expect(a.v.sched.wouldSleep).toBe(0);
  });
});
