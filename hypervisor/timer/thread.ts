/**
 * The timer thread: the hypervisor's timer interrupt. Every tick (10 ms, Xen's
 * scheduler tick) it runs the scheduler's tick work; it sleeps on G.TIMER_WAKE
 * so the platform can stop it at once.
 */
import { workerData } from 'node:worker_threads';
import type { HostConfig } from '../config.ts';
import { pcpuTick } from '../sched/pcpu.ts';
import { G, HvState, type MachineBuffers } from '../state.ts';

export const TICK_MS = 10;

const { cfg, buffers } = workerData as { cfg: HostConfig; buffers: MachineBuffers };
const hv = new HvState(cfg, buffers);
while (Atomics.load(hv.g, G.HALT) === 0) {
  const gen = Atomics.load(hv.g, G.TIMER_WAKE);
  Atomics.wait(hv.g, G.TIMER_WAKE, gen, TICK_MS);
  pcpuTick(hv);
}
process.exit(0);
