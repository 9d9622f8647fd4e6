/** A single page of "guest memory" for ring tests: the RingMemory accessors over a private buffer. */
import type { RingMemory } from '../../shared/xenstore/ring.ts';

export class FakeRingMemory implements RingMemory {
  readonly bytes: Uint8Array;
  private readonly dv: DataView;
  constructor(readonly base = 0x5000, size = 4096) {
    this.bytes = new Uint8Array(size);
    this.dv = new DataView(this.bytes.buffer);
  }
  private at(gpa: number, len: number): number {
    const off = gpa - this.base;
    if (off < 0 || off + len > this.bytes.length) throw new Error(`fault at 0x${gpa.toString(16)}`);
    return off;
  }
  read(gpa: number, len: number): Uint8Array { const o = this.at(gpa, len); return this.bytes.slice(o, o + len); }
  write(gpa: number, data: Uint8Array): void { this.bytes.set(data, this.at(gpa, data.length)); }
  atomicLoad32(gpa: number): number { return this.dv.getUint32(this.at(gpa, 4), true); }
  atomicStore32(gpa: number, v: number): void { this.dv.setUint32(this.at(gpa, 4), v >>> 0, true); }
}
