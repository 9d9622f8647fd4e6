/**
 * A multi-page ring's memory as one contiguous range: the ring library
 * (shared/ring/ring.ts) addresses a shared ring as `pages` contiguous bytes,
 * but the pages a guest allocates (or maps) need not be adjacent in its
 * guest-physical space. This presents pages[0..n) at addresses [0, n * 4096)
 * over the underlying memory, splitting reads and writes at page boundaries.
 * (A candidate for shared/ring: the backend needs the same for ring-ref0..N.)
 */
import type { RingMemory } from '../../shared/ring/ring.ts';
import { PAGE_SIZE } from '../../shared/types.ts';

export function pagedRingMemory(mem: RingMemory, pageGpas: readonly number[]): RingMemory {
  const end = pageGpas.length * PAGE_SIZE;
  const at = (a: number): number => {
    if (!Number.isInteger(a) || a < 0 || a >= end) throw new RangeError(`ring offset ${a} outside ${pageGpas.length} pages`);
    return pageGpas[Math.floor(a / PAGE_SIZE)]! + (a % PAGE_SIZE);
  };
  return {
    read(a: number, len: number): Uint8Array {
      const out = new Uint8Array(len);
      for (let done = 0; done < len;) {
        const n = Math.min(len - done, PAGE_SIZE - ((a + done) % PAGE_SIZE));
        out.set(mem.read(at(a + done), n), done);
        done += n;
      }
      return out;
    },
    readInto(a: number, dst: Uint8Array): void {
      const off = a % PAGE_SIZE;
      if (off + dst.length <= PAGE_SIZE && mem.readInto) {
        mem.readInto(at(a), dst);
        return;
      }
      for (let done = 0; done < dst.length;) {
        const n = Math.min(dst.length - done, PAGE_SIZE - ((a + done) % PAGE_SIZE));
        const part = dst.subarray(done, done + n);
        if (mem.readInto) mem.readInto(at(a + done), part);
        else part.set(mem.read(at(a + done), n));
        done += n;
      }
    },
    write(a: number, data: Uint8Array): void {
      for (let done = 0; done < data.length;) {
        const n = Math.min(data.length - done, PAGE_SIZE - ((a + done) % PAGE_SIZE));
        mem.write(at(a + done), data.subarray(done, done + n));
        done += n;
      }
    },
    // Ring indexes live in the header of page 0: aligned words never straddle pages.
    atomicLoad32: (a: number) => mem.atomicLoad32(at(a)),
    atomicStore32: (a: number, v: number) => mem.atomicStore32(at(a), v),
  };
}
