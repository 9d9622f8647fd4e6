/**
 * Guest timers (Xen: common/timer.c, the singleshot and periodic vCPU timers):
 * deadlines in shared state (vcpuTime), fired by the timer thread as VIRQ_TIMER
 * on the owning vCPU. Setting an earlier deadline wakes the timer thread.
 */
import { VIRQ_TIMER } from '../../shared/abi/event-channel.ts';
import { sendVirq } from '../evtchn/evtchn.ts';
import { D, DOMSTATE_ACTIVE, G, HvState, VT } from '../state.ts';

/** Xen refuses periodic timers shorter than 1 ms (vcpu.h). */
export const MIN_PERIOD_NS = 1_000_000n;

function wakeTimerThread(hv: HvState): void {
  Atomics.add(hv.g, G.TIMER_WAKE, 1);
  Atomics.notify(hv.g, G.TIMER_WAKE);
}

/** Arm (deadline > 0) or stop (0) the vCPU's singleshot timer; deadline in system time ns. */
export function setSingleshot(hv: HvState, slot: number, vcpu: number, deadline: bigint): void {
  Atomics.store(hv.vcpuTime, hv.vt(slot, vcpu, VT.SINGLESHOT), deadline);
  if (deadline > 0n) wakeTimerThread(hv);
}

/** Arm (period > 0) or stop (0) the periodic timer; the first tick is one period from now. */
export function setPeriodic(hv: HvState, slot: number, vcpu: number, period: bigint): void {
  Atomics.store(hv.vcpuTime, hv.vt(slot, vcpu, VT.PERIOD), period);
  Atomics.store(hv.vcpuTime, hv.vt(slot, vcpu, VT.PERIODIC_NEXT), period > 0n ? hv.now() + period : 0n);
  if (period > 0n) wakeTimerThread(hv);
}

/** Fire every timer due at `now`; returns the earliest deadline still armed (0n if none). */
export function runTimers(hv: HvState, now: bigint): bigint {
  let next = 0n;
  const earliest = (t: bigint): void => { if (t > 0n && (next === 0n || t < next)) next = t; };
  for (let slot = 0; slot < hv.cfg.maxDomains; slot++) {
    if (Atomics.load(hv.dom, hv.d(slot, D.state)) !== DOMSTATE_ACTIVE) continue;
    const max = Atomics.load(hv.dom, hv.d(slot, D.max_vcpus));
    for (let v = 0; v < max; v++) {
      const ss = hv.vt(slot, v, VT.SINGLESHOT);
      const t = Atomics.load(hv.vcpuTime, ss);
      if (t > 0n) {
        if (t <= now && Atomics.compareExchange(hv.vcpuTime, ss, t, 0n) === t) sendVirq(hv, slot, v, VIRQ_TIMER);
        else earliest(t);
      }
      const period = Atomics.load(hv.vcpuTime, hv.vt(slot, v, VT.PERIOD));
      if (period > 0n) {
        const ni = hv.vt(slot, v, VT.PERIODIC_NEXT);
        let n = Atomics.load(hv.vcpuTime, ni);
        if (n <= now) {
          sendVirq(hv, slot, v, VIRQ_TIMER);
          // Missed periods are not replayed (Xen fires once and moves on).
          while (n <= now) n += period;
          Atomics.store(hv.vcpuTime, ni, n);
        }
        earliest(n);
      }
    }
  }
  return next;
}
