/**
 * The PV console for guest kernels (Linux's hvc_xen, Mini-OS's xencons): the
 * console ring page and event channel the domain builder set up and named in
 * start_info (console.domU.mfn, a gfn on our auto-translated guests, and
 * console.domU.evtchn). Output goes into `out` for xenconsoled in Dom0, which
 * logs it and shows it; input typed at an `xl console` arrives in `in`.
 *
 * Flow control: `write` puts what fits, notifies xenconsoled, and while the
 * ring is full waits on the console port (SCHEDOP_poll) for xenconsoled to
 * take bytes and notify back, as hvc_xen waits for room. It gives up, and
 * returns the count written, only if xenconsoled takes nothing for
 * `timeoutMs` (a Dom0 that stopped serving consoles must not hang the guest).
 */
import { consRingRead, consRingWrite } from '../console/ring.ts';
import type { EventChannels } from './evtchn.ts';
import { PAGE_SIZE } from '../types.ts';

/** The console ring's indexes were impossible (xenconsoled's side is broken): the console is unusable. */
export class ConsoleRingError extends Error {
  constructor() {
    super('console ring indexes are corrupt');
    this.name = 'ConsoleRingError';
  }
}

const enc = new TextEncoder();
/** How long one wait for room lasts before looking again (ns). */
const WAIT_SLICE_NS = 10_000_000n;

export class XenConsole {
  /** Guest-physical address of the ring page. */
  readonly gpa: number;

  /**
   * Take over the console named in start_info (or the given ring gfn and
   * port). Registers a handler for the port on `ev`; input is read with
   * `read`. Throws if the domain has no console ring.
   */
  constructor(private readonly ev: EventChannels, gfn: number = ev.xen.consoleGfn, readonly port: number = ev.xen.consoleEvtchn) {
    if (gfn === 0 || port === 0) throw new Error('no console ring: start_info console.domU is empty');
    this.gpa = gfn * PAGE_SIZE;
    ev.on(port, () => {});
  }

  /**
   * Write `data` (text as UTF-8) to the console. Returns the bytes written:
   * all of them unless xenconsoled took nothing for `timeoutMs`. Throws
   * ConsoleRingError if the ring indexes are corrupt.
   */
  write(data: string | Uint8Array, timeoutMs = 5000): number {
    const bytes = typeof data === 'string' ? enc.encode(data) : data;
    const mem = this.ev.xen.k.mem;
    let sent = 0;
    let lastProgress = this.ev.systemTime();
    const timeout = BigInt(timeoutMs) * 1_000_000n;
    while (sent < bytes.length) {
      const r = consRingWrite(mem, this.gpa, 'out', bytes.subarray(sent));
      if (!r.ok) throw new ConsoleRingError();
      if (r.written > 0) {
        sent += r.written;
        this.ev.send(this.port);
        lastProgress = this.ev.systemTime();
        continue;
      }
      // Full: wait for xenconsoled to take some and notify us.
      const now = this.ev.systemTime();
      if (now - lastProgress >= timeout) break;
      this.ev.poll([this.port], now + WAIT_SLICE_NS);
      this.ev.dispatch();
    }
    return sent;
  }

  /** Input waiting in the ring, at most `max` bytes (empty if none); tells xenconsoled there is room. */
  read(max = 1024): Uint8Array {
    const r = consRingRead(this.ev.xen.k.mem, this.gpa, 'in', max);
    if (!r.ok) throw new ConsoleRingError();
    if (r.bytes.length > 0) this.ev.send(this.port);
    return r.bytes;
  }
}
