/**
 * The timer thread: the hypervisor's timer interrupt. It fires guest timers
 * (VIRQ_TIMER) at their deadlines and runs the scheduler tick every 10 ms
 * (Xen's tick); it sleeps on G.TIMER_WAKE until the next of those, and whoever
 * arms an earlier timer wakes it.
 */
import { workerData } from 'node:worker_threads';
import type { HostConfig } from '../config.ts';
import { pcpuTick } from '../sched/pcpu.ts';
import { G, HvState, type MachineBuffers } from '../state.ts';
import { runTimers } from './timers.ts';

export const TICK_NS = 10_000_000n;

const { cfg, buffers } = workerData as { cfg: HostConfig; buffers: MachineBuffers };
const hv = new HvState(cfg, buffers);
let nextTick = hv.now() + TICK_NS;
while (Atomics.load(hv.g, G.HALT) === 0) {
  const gen = Atomics.load(hv.g, G.TIMER_WAKE);
  let now = hv.now();
  if (now >= nextTick) {
    pcpuTick(hv);
    nextTick = now + TICK_NS;
  }
  const due = runTimers(hv, now);
  now = hv.now();
  const until = due > 0n && due < nextTick ? due : nextTick;
  const ms = Number(until - now) / 1e6;
  if (ms > 0) Atomics.wait(hv.g, G.TIMER_WAKE, gen, ms);
}
process.exit(0);
