/**
 * Runs a real ring-end method one shared-memory access at a time, so that a
 * test can interleave two ends at the granularity of ring.h's atomic steps
 * (each 32-bit index load or store, each entry read or write).
 *
 * JavaScript cannot suspend a synchronous method, so each step re-runs the
 * method from its start on the end's saved private state, replaying the
 * accesses already done (loads return the values they returned then; stores
 * and writes are not repeated), performs exactly one new access on the shared
 * memory, and abandons the run just before a second new access. When a run
 * returns without wanting a new access the call is complete; only then does
 * `run` commit the end's private state. The method must be deterministic in
 * what it loads (ring.ts's are): a replay that diverges throws.
 */
import type { RingMemory } from '../../../shared/ring/ring.ts';

type Access =
  | { readonly op: 'load'; readonly gpa: number; readonly value: number }
  | { readonly op: 'store'; readonly gpa: number; readonly value: number }
  | { readonly op: 'read'; readonly gpa: number; readonly bytes: Uint8Array }
  | { readonly op: 'write'; readonly gpa: number };

const YIELD = Symbol('yield');

export class SteppedCall<R> {
  private readonly log: Access[] = [];
  private finished = false;
  private value: R | undefined;

  /** `run` calls the method on an end built over the memory it is given, and commits that end's private state. */
  constructor(private readonly shared: RingMemory, private readonly run: (mem: RingMemory) => R) {}

  get done(): boolean { return this.finished; }
  /** Shared accesses performed so far. */
  get accesses(): number { return this.log.length; }

  get result(): R {
    if (!this.finished) throw new Error('call not finished');
    return this.value as R;
  }

  /** Perform at most one more shared access; true once the method has returned. */
  step(): boolean {
    if (this.finished) throw new Error('call already finished');
    let i = 0;
    let liveDone = false;
    const replayOr = <A extends Access>(op: A['op'], gpa: number, live: () => A): A => {
      if (i < this.log.length) {
        const a = this.log[i++]!;
        if (a.op !== op || a.gpa !== gpa) throw new Error(`replay diverged at access ${i - 1}: ${a.op}@${a.gpa} then, ${op}@${gpa} now`);
        return a as A;
      }
      if (liveDone) throw YIELD;
      liveDone = true;
      const a = live();
      this.log.push(a);
      i++;
      return a;
    };
    const shared = this.shared;
    const mem: RingMemory = {
      atomicLoad32: (gpa) => replayOr<Extract<Access, { op: 'load' }>>('load', gpa, () => ({ op: 'load', gpa, value: shared.atomicLoad32(gpa) })).value,
      atomicStore32: (gpa, v) => { replayOr('store', gpa, () => { shared.atomicStore32(gpa, v); return { op: 'store', gpa, value: v }; }); },
      read: (gpa, len) => replayOr<Extract<Access, { op: 'read' }>>('read', gpa, () => ({ op: 'read', gpa, bytes: shared.read(gpa, len) })).bytes.slice(),
      write: (gpa, data) => { replayOr('write', gpa, () => { shared.write(gpa, data); return { op: 'write', gpa }; }); },
    };
    try {
      this.value = this.run(mem);
    } catch (e) {
      if (e === YIELD) return false;
      throw e;
    }
    this.finished = true;
    return true;
  }

  /** Step to the end (no interleaving): the method's result. */
  runToEnd(): R {
    while (!this.step()) { /* next access */ }
    return this.result;
  }
}
