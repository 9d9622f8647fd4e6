/**
 * One guest's console as xenconsoled serves it (C xenconsoled's struct domain
 * with its buffer_append and handle_tty_read): output is copied out of the
 * ring's `out` into the log, the terminal and any attached `xl console`, and
 * xenconsoled notifies the guest so that a writer waiting for room goes on;
 * input queued for the guest goes into `in` as room allows.
 *
 * The guest controls the ring indexes: an impossible one (more in flight
 * than the ring holds) stops this console for good (`broken`); nothing more
 * is read or written. Pure: memory, notification and the sinks are injected.
 */
import { consRingRead, consRingSize, consRingWrite, type ConsRingMemory } from '../../shared/console/ring.ts';
import { LineSplitter } from './lines.ts';

export interface ConsoleSinks {
  /** Raw output bytes for the guest's log file. */
  log(bytes: Uint8Array): void;
  /** One complete, defanged line of output for the terminal (no newline). */
  line(text: string): void;
}

/** Output taken from one guest per `service` call, so that one chatty guest cannot starve the others. */
export const OUTPUT_BUDGET = 64 * 1024;
/** Input waiting for room in the guest's ring, at most (`queueInput` refuses more). */
export const INPUT_LIMIT = 64 * 1024;

export type ConsoleOutputListener = (bytes: Uint8Array) => void;

export class ConsoleDomain {
  readonly listeners = new Set<ConsoleOutputListener>();
  private readonly lines: LineSplitter;
  private input: Uint8Array[] = [];
  private inputBytes = 0;
  /** The guest's ring indexes were impossible: this console is stopped. */
  broken = false;
  /** Output bytes taken from the ring so far. */
  outputBytes = 0;

  constructor(
    readonly domid: number,
    readonly name: string,
    private readonly mem: ConsRingMemory,
    private readonly base: number,
    private readonly notify: () => void,
    private readonly sinks: ConsoleSinks,
  ) {
    this.lines = new LineSplitter((l) => sinks.line(l));
  }

  /**
   * Move bytes both ways: up to `budget` bytes of output out of the ring,
   * then waiting input in. Notifies the guest if anything moved. Returns the
   * bytes moved (0 for a broken console).
   */
  service(budget = OUTPUT_BUDGET): number {
    if (this.broken) return 0;
    let moved = 0;
    while (moved < budget) {
      const r = consRingRead(this.mem, this.base, 'out', Math.min(consRingSize('out'), budget - moved));
      if (!r.ok) return this.corrupt(moved);
      if (r.bytes.length === 0) break;
      moved += r.bytes.length;
      this.outputBytes += r.bytes.length;
      this.sinks.log(r.bytes);
      this.lines.push(r.bytes);
      for (const l of this.listeners) l(r.bytes);
    }
    while (this.input.length > 0) {
      const head = this.input[0];
      const w = consRingWrite(this.mem, this.base, 'in', head);
      if (!w.ok) return this.corrupt(moved);
      if (w.written === 0) break;
      moved += w.written;
      this.inputBytes -= w.written;
      if (w.written === head.length) this.input.shift();
      else this.input[0] = head.subarray(w.written);
    }
    if (moved > 0) this.notify();
    return moved;
  }

  /** Queue bytes for the guest's `in` ring. False (nothing queued) if the console is broken or too much waits. */
  queueInput(bytes: Uint8Array): boolean {
    if (this.broken || this.inputBytes + bytes.length > INPUT_LIMIT) return false;
    if (bytes.length === 0) return true;
    this.input.push(bytes.slice());
    this.inputBytes += bytes.length;
    return true;
  }

  /** Input bytes still waiting for room. */
  get pendingInput(): number { return this.inputBytes; }

  /** The console goes away: the last unfinished line goes to the terminal. */
  finish(): void {
    this.lines.end();
    this.listeners.clear();
  }

  private corrupt(moved: number): number {
    this.broken = true;
    this.input = [];
    this.inputBytes = 0;
    return moved;
  }
}
