/**
 * Machine memory placement: frame 0 starts MEM_SKEW bytes into the
 * SharedArrayBuffer (state.ts explains the measured reason), and every view
 * of machine memory the hypervisor makes agrees on where a frame is.
 */
import { describe, expect, it } from 'vitest';
import { HvState, MEM_SKEW, nrFramesOf } from '../../../hypervisor/state.ts';
import { hostConfig } from '../../../hypervisor/config.ts';
import { PAGE_SIZE } from '../../../shared/types.ts';

describe('machine memory placement', () => {
  const cfg = hostConfig({ memMiB: 4 });
  const hv = new HvState(cfg, HvState.allocate(cfg));

  it('frames start MEM_SKEW bytes into the buffer, which holds exactly the frames after it', () => {
    expect(MEM_SKEW % 8).toBe(0);
    expect(MEM_SKEW % PAGE_SIZE).not.toBe(0);
    expect(hv.mem8.byteOffset).toBe(MEM_SKEW);
    expect(hv.mem8.byteLength).toBe(nrFramesOf(cfg) * PAGE_SIZE);
    expect(hv.buffers.mem.byteLength).toBe(MEM_SKEW + nrFramesOf(cfg) * PAGE_SIZE);
    expect(hv.mem32.byteOffset).toBe(MEM_SKEW);
    expect(hv.mem32.length * 4).toBe(hv.mem8.byteLength);
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
    expect(() => new HvState(cfg, plain)).toThrow(/machine memory size/);
  });
});
