/**
 * Benchmark: where machine memory's frames lie in the host's address space
 * (hypervisor/state.ts MEM_SKEW). A page-cache-hot file is read (and written)
 * 1 MiB at a time into (from) a SharedArrayBuffer laid out as machine memory
 * is, at several offsets from the buffer's start: 0 (frames at host page
 * boundaries, as before MEM_SKEW), MEM_SKEW (where frames are now), and two
 * others. The baseline is the same call into a private Uint8Array. Each
 * figure is the median of three 300 ms runs.
 */
import { randomFillSync } from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { MEM_SKEW } from '../../hypervisor/state.ts';
import { machineLine, spread, table, timed, updateBenchSection } from './report.ts';

const MIB = 1 << 20;
const FILE_MIB = 64;
const OFFSETS = [0, MEM_SKEW, 32, 48, 64, 128, 2048, 4080] as const;

/** Calls of `step` per second over `ms`. */
function rate(ms: number, step: (i: number) => void): number {
  const r = timed(ms, step);
  return r.ops / (r.ns / 1e9);
}

const median3 = (f: () => number): number => spread([f(), f(), f()]).median;

export async function benchPlacement(): Promise<string> {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'xents-placement-'));
  const file = path.join(dir, 'f.img');
  try {
    const fd = fs.openSync(file, 'w+');
    const chunk = new Uint8Array(MIB);
    for (let i = 0; i < FILE_MIB; i++) {
      randomFillSync(chunk);
      fs.writeSync(fd, chunk, 0, MIB, i * MIB);
    }
    fs.fdatasyncSync(fd);
    for (let i = 0; i < FILE_MIB; i++) fs.readSync(fd, chunk, 0, MIB, i * MIB);
    // Laid out as machine memory: a large SharedArrayBuffer, I/O at offset + 1 MiB steps (4 buffers in turn).
    const sab = new SharedArrayBuffer(MEM_SKEW + 8 * MIB + 4096);
    const mem = new Uint8Array(sab);
    const rows: string[][] = [];
    const baseRead = median3(() => rate(300, (i) => fs.readSync(fd, chunk, 0, MIB, (i % FILE_MIB) * MIB)));
    const baseWrite = median3(() => rate(300, (i) => fs.writeSync(fd, chunk, 0, MIB, (i % FILE_MIB) * MIB)));
    for (const off of OFFSETS) {
      const rd = median3(() => rate(300, (i) => fs.readSync(fd, mem, off + (i % 4) * MIB, MIB, (i % FILE_MIB) * MIB)));
      const wr = median3(() => rate(300, (i) => fs.writeSync(fd, mem, off + (i % 4) * MIB, MIB, (i % FILE_MIB) * MIB)));
      const note = off === 0 ? 'frames at host page boundaries (first layout)' : off === MEM_SKEW ? 'MEM_SKEW: where frames are now' : off === 64 ? 'the layout before (reads best, writes slow)' : '';
      rows.push([String(off), note, `${rd.toFixed(0)} MiB/s`, `${(rd / baseRead).toFixed(2)}x`, `${wr.toFixed(0)} MiB/s`, `${(wr / baseWrite).toFixed(2)}x`]);
    }
    fs.closeSync(fd);
    const md = `## Machine memory placement (MEM_SKEW)

${machineLine()}. fs.readSync / fs.writeSync of 1 MiB, page-cache hot (a ${FILE_MIB} MiB file),
into / from a SharedArrayBuffer laid out as machine memory, at an offset from its start;
baseline: the same calls with a private 1 MiB Uint8Array in the same run
(read ${baseRead.toFixed(0)} MiB/s, write ${baseWrite.toFixed(0)} MiB/s). Medians of three 300 ms runs.

${table(['offset in the buffer (bytes)', '', 'read', 'read / private buffer', 'write', 'write / private buffer'], rows)}

The host kernel's copy out of the page cache slows down when the destination's
address is (nearly) the source's modulo 4 KiB, i.e. when a destination page
starts at a host page boundary; its copy into the page cache (writes) was fast
here only from offsets of 16 modulo 32. That is why frame 0 starts MEM_SKEW
bytes into machine memory (hypervisor/state.ts): Dom0's preadv into a granted
frame and pwritev out of one are then not the slow cases. The private buffer's placement is the allocator's, so the
baseline can land on either side (the block benchmark's 1 MiB fs baseline takes the
best of four placements, 16 bytes and 2 KiB apart, for that reason).`;
    updateBenchSection('placement', md);
    return md;
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
}
