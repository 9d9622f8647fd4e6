/**
 * A runner thread for the host DMA job test (dma-jobs.test.ts): builds its own
 * HvState over the machine's buffers and, as vCPU (slot, vcpu) reaching its
 * preemption point over and over, takes and runs queued jobs until the stop
 * word is set; then posts how many it ran. Loaded through
 * hypervisor/platform/boot-worker.mjs.
 */
import { parentPort, workerData } from 'node:worker_threads';
import type { HostConfig } from '../../../hypervisor/config.ts';
import { HvState, type MachineBuffers } from '../../../hypervisor/state.ts';
import { dmaRunQueued } from '../../../hypervisor/vcpu/dma-jobs.ts';

export interface DmaRunnerData {
  readonly entry: string;
  readonly cfg: HostConfig;
  readonly buffers: MachineBuffers;
  /** The vCPU this thread runs jobs as. */
  readonly slot: number;
  readonly vcpu: number;
  /** Int32 word 0: set non-zero to stop; word 1: set to 1 once this thread is looping. */
  readonly control: SharedArrayBuffer;
}

const { cfg, buffers, slot, vcpu, control } = workerData as DmaRunnerData;
const hv = new HvState(cfg, buffers);
const words = new Int32Array(control);
Atomics.store(words, 1, 1);
let ran = 0;
while (Atomics.load(words, 0) === 0) {
  if (dmaRunQueued(hv, slot, vcpu)) ran++;
}
parentPort!.postMessage(ran);
