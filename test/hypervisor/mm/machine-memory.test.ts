/**
 * Machine memory placement: the buffer is a shared WebAssembly.Memory's (it
 * starts at a host page boundary), frame 0 starts MEM_SKEW bytes into it,
 * clear of the host copy's slow band (state.ts explains the measured reason),
 * and every view of machine memory the hypervisor makes agrees on where a
 * frame is.
 */
import { describe, expect, it } from 'vitest';
import { HvState, machineMemory, MEM_SKEW, nrFramesOf } from '../../../hypervisor/state.ts';
import { hostConfig } from '../../../hypervisor/config.ts';
import { PAGE_SIZE } from '../../../shared/types.ts';

describe('machine memory placement', () => {
  const cfg = hostConfig({ memMiB: 4 });
  const hv = new HvState(cfg, HvState.allocate(cfg));

  it('frames start MEM_SKEW bytes into the buffer, clear of 1-31 bytes either side of a page boundary', () => {
    expect(MEM_SKEW % 64).toBe(0);
    const past = MEM_SKEW % PAGE_SIZE;
    expect(past).toBeGreaterThanOrEqual(32);
    expect(PAGE_SIZE - past).toBeGreaterThanOrEqual(32);
    expect(hv.mem8.byteOffset).toBe(MEM_SKEW);
    expect(hv.mem8.byteLength).toBe(nrFramesOf(cfg) * PAGE_SIZE);
    expect(hv.buffers.mem.byteLength).toBeGreaterThanOrEqual(MEM_SKEW + nrFramesOf(cfg) * PAGE_SIZE);
    expect(hv.mem32.byteOffset).toBe(MEM_SKEW);
    expect(hv.mem32.length * 4).toBe(hv.mem8.byteLength);
  });

  it('machine memory is a shared WebAssembly.Memory\'s buffer: a zeroed SharedArrayBuffer in whole 64 KiB pages, shared with a worker', async () => {
    const mem = machineMemory(3 * 65536 + 100);
    expect(mem).toBeInstanceOf(SharedArrayBuffer);
    expect(mem.byteLength).toBe(4 * 65536);
    const i32 = new Int32Array(mem);
    expect(i32.every((x) => x === 0)).toBe(true);
    expect(hv.buffers.mem.byteLength % 65536).toBe(0);
    // The same bytes in another thread: it adds 1 to word 5 and answers.
    const { Worker } = await import('node:worker_threads');
    const w = new Worker('const { workerData, parentPort } = require("node:worker_threads"); Atomics.add(new Int32Array(workerData), 5, 1); parentPort.postMessage(0);', { eval: true, workerData: mem });
    await new Promise((r) => w.once('message', r));
    await w.terminate();
    expect(Atomics.load(i32, 5)).toBe(1);
  });

  it('mem8, mem32, machineView and machineBytes name the same bytes for a machine address', () => {
    const ma = 7 * PAGE_SIZE + 12;
    hv.mem8.set([1, 2, 3, 4], ma);
    expect(hv.mem32[ma / 4]).toBe(0x04030201);
    expect(hv.machineView(ma, 4).getUint32(0, true)).toBe(0x04030201);
    expect([...hv.machineBytes(ma, 4)]).toEqual([1, 2, 3, 4]);
    hv.machineView().setUint16(ma + 4, 0xbeef, true);
    expect(hv.mem8[ma + 4]).toBe(0xef);
    expect(hv.mem8[ma + 5]).toBe(0xbe);
  });

  it('refuses buffers laid out without the skew', () => {
    const plain = { mem: new SharedArrayBuffer(nrFramesOf(cfg) * PAGE_SIZE), state: HvState.allocate(cfg).state };
    expect(() => new HvState(cfg, plain)).toThrow(/machine memory is smaller/);
  });
});
