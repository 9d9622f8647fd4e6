/**
 * Reads the hypervisor console ring of a running host every few milliseconds,
 * so that tests and benchmarks see every line before the ring wraps.
 */
import { conringRead } from '../../hypervisor/console.ts';
import type { HvState } from '../../hypervisor/state.ts';

export class ConsoleTap {
  private index = 0;
  private buf = '';
  private readonly timer: NodeJS.Timeout;

  constructor(private readonly hv: HvState, periodMs = 5) {
    this.timer = setInterval(() => this.drain(), periodMs);
  }

  /** Everything read so far (reads what is new first). */
  get text(): string {
    this.drain();
    return this.buf;
  }

  drain(): void {
    const r = conringRead(this.hv, this.hv.cfg.conringSize, true, this.index, false);
    this.index = r.index;
    this.buf += new TextDecoder().decode(r.data);
  }

  /** Stop reading periodically (after one last read). */
  stop(): void {
    clearInterval(this.timer);
    this.drain();
  }
}
