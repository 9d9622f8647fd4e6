/**
 * Entry of a vCPU worker thread (started by the platform with workerData).
 * Builds the views over machine memory, forwards platform requests to the main
 * thread, and runs the vCPU until its domain is destroyed or the host halts.
 */
import { parentPort, workerData } from 'node:worker_threads';
import type { HostConfig } from '../config.ts';
import type { PlatformPort, PlatformRequest } from '../platform-port.ts';
import { HvState, type MachineBuffers, V, VTHREAD_RUNNING } from '../state.ts';
import { VcpuRuntime } from './runtime.ts';

export interface VcpuThreadData {
  readonly cfg: HostConfig;
  readonly buffers: MachineBuffers;
  readonly slot: number;
  readonly vcpu: number;
}

const data = workerData as VcpuThreadData;
const post = (m: PlatformRequest): void => parentPort!.postMessage(m);
const port: PlatformPort = {
  startVcpu: (slot, vcpu, generation) => post({ kind: 'start-vcpu', slot, vcpu, generation }),
  killDomain: (slot, generation) => post({ kind: 'kill-domain', slot, generation }),
  halt: (code) => post({ kind: 'halt', code }),
};
const hv = new HvState(data.cfg, data.buffers);
Atomics.store(hv.vcpu, hv.v(data.slot, data.vcpu, V.thread), VTHREAD_RUNNING);
const rt = new VcpuRuntime({ hv, slot: data.slot, vcpu: data.vcpu, port, exitThread: () => process.exit(0) });
await rt.run();
process.exit(0);
