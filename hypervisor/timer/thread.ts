/**
 * The timer thread: the hypervisor's timer interrupt and its scheduler. It
 * owns the host's scheduler (SchedCore: the policy named by HostConfig.sched),
 * so that the policy object lives on this one thread; it drains the
 * scheduler's request ring, runs the scheduler tick (10 ms for credit and
 * credit2) and slice expiries, and fires guest timers (VIRQ_TIMER) at their
 * deadlines. It sleeps on G.TIMER_WAKE until the next of those; every ring
 * post and every earlier timer armed wakes it.
 */
import { workerData } from 'node:worker_threads';
import type { HostConfig } from '../config.ts';
import { SchedCore } from '../sched/core.ts';
import { schedConsumerSleeping, schedRingReady } from '../sched/ring.ts';
import { G, HvState, type MachineBuffers } from '../state.ts';
import { runTimers } from './timers.ts';

/** Longest sleep when nothing is due (a safety net: every change wakes the thread). */
const IDLE_WAIT_MS = 1000;

const { cfg, buffers } = workerData as { cfg: HostConfig; buffers: MachineBuffers };
const hv = new HvState(cfg, buffers);
const core = new SchedCore(hv);
while (Atomics.load(hv.g, G.HALT) === 0) {
  // Read the futex word before looking for work: a post after this read
  // changes it, so the wait below returns at once instead of missing it.
  const gen = Atomics.load(hv.g, G.TIMER_WAKE);
  core.run(hv.now());
  const timerDue = runTimers(hv, hv.now());
  schedConsumerSleeping(hv, true);
  if (!schedRingReady(hv)) {
    const until = Math.min(core.nextDue(), timerDue > 0n ? Number(timerDue) : Number.POSITIVE_INFINITY);
    const ms = Number.isFinite(until) ? (until - Number(hv.now())) / 1e6 : IDLE_WAIT_MS;
    if (ms > 0) Atomics.wait(hv.g, G.TIMER_WAKE, gen, Math.min(ms, IDLE_WAIT_MS));
  }
  schedConsumerSleeping(hv, false);
}
process.exit(0);
