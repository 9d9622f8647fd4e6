/**
 * The hypervisor console ring (Xen: drivers/char/console.c "conring"): every
 * line the hypervisor prints and every line a guest writes with CONSOLEIO_write,
 * read back by Dom0 with XEN_SYSCTL_readconsole (`xl dmesg`).
 *
 * Producer and consumer are free-running u32 indexes; writers hold conring_lock.
 * Guest lines carry Xen's "(d<N>) " prefix, the hypervisor's "(XEN) "; Dom0's
 * own output goes in unprefixed, as Xen does for the hardware domain.
 */
import { VIRQ_CON_RING } from '../shared/abi/event-channel.ts';
import { lock, unlock } from '../shared/lock.ts';
import { sendDom0Virq } from './evtchn/evtchn.ts';
import { G, HvState } from './state.ts';

const enc = new TextEncoder();

/** Append raw bytes. Caller need not hold the lock. */
export function conringPut(hv: HvState, data: Uint8Array): void {
  const size = hv.cfg.conringSize;
  lock(hv.g, G.CONRING_LOCK);
  try {
    let prod = hv.g[G.CONRING_PROD] >>> 0;
    // Only the last `size` bytes can survive; skip the rest.
    const src = data.length > size ? data.subarray(data.length - size) : data;
    prod = (prod + (data.length - src.length)) >>> 0;
    for (let i = 0; i < src.length; ) {
      const at = (prod & (size - 1));
      const n = Math.min(src.length - i, size - at);
      hv.conring.set(src.subarray(i, i + n), at);
      i += n;
      prod = (prod + n) >>> 0;
    }
    // Publish after the bytes (seq-cst store orders the copies before it).
    Atomics.store(hv.g, G.CONRING_PROD, prod | 0);
  } finally {
    unlock(hv.g, G.CONRING_LOCK);
  }
  // Xen's notify_dom0_con_ring: Dom0's console daemon reads the ring when told.
  sendDom0Virq(hv, VIRQ_CON_RING);
}

/** printk: one hypervisor line, "(XEN) " prefixed. */
export function printk(hv: HvState, line: string): void {
  conringPut(hv, enc.encode(`(XEN) ${line}\n`));
}

/**
 * Per-domain line assembly for guest console writes (Xen's per-domain pbuf of
 * 200 bytes): only printable ASCII and tab survive for unprivileged guests; a
 * line is emitted at '\n' or when the buffer fills.
 */
export class GuestConsoleLine {
  static readonly PBUF_SIZE = 200;
  private buf: number[] = [];

  constructor(private readonly hv: HvState, private readonly domid: number, private readonly hardwareDomain: boolean) {}

  write(data: Uint8Array): void {
    for (const c of data) {
      if (c === 0x0a) {
        this.flush();
        continue;
      }
      if (!this.hardwareDomain && !(c === 0x09 || (c >= 0x20 && c < 0x7f))) continue;
      this.buf.push(c);
      if (this.buf.length >= GuestConsoleLine.PBUF_SIZE - 1) this.flush();
    }
  }

  flush(): void {
    const prefix = this.hardwareDomain ? '' : `(d${this.domid}) `;
    const line = new Uint8Array(prefix.length + this.buf.length + 1);
    line.set(enc.encode(prefix), 0);
    line.set(this.buf, prefix.length);
    line[line.length - 1] = 0x0a;
    this.buf = [];
    conringPut(this.hv, line);
  }
}

/**
 * read_console_ring(): copy up to `count` bytes starting at `index` (when
 * `incremental` and inside the live window) or at the oldest byte still held;
 * returns the bytes and the index after them. `clear` moves the consumer (a
 * caller that must deliver the bytes first passes false, then conringClear).
 */
export function conringRead(hv: HvState, count: number, incremental: boolean, index: number, clear: boolean): { data: Uint8Array; index: number } {
  const size = hv.cfg.conringSize;
  lock(hv.g, G.CONRING_LOCK);
  try {
    const p = hv.g[G.CONRING_PROD] >>> 0;
    let c = hv.g[G.CONRING_CONS] >>> 0;
    // The writer may have lapped the consumer.
    if (((p - c) >>> 0) > size) c = (p - size) >>> 0;
    let start = c;
    if (incremental && ((index - c) >>> 0) <= ((p - c) >>> 0)) start = index >>> 0;
    const avail = (p - start) >>> 0;
    const n = Math.min(avail, Math.max(0, count));
    const out = new Uint8Array(n);
    for (let i = 0; i < n; ) {
      const at = ((start + i) >>> 0) & (size - 1);
      const k = Math.min(n - i, size - at);
      out.set(hv.conring.subarray(at, at + k), i);
      i += k;
    }
    const end = (start + n) >>> 0;
    if (clear) hv.g[G.CONRING_CONS] = end | 0;
    return { data: out, index: end };
  } finally {
    unlock(hv.g, G.CONRING_LOCK);
  }
}

/** The `clear` of read_console_ring(), after the copy out succeeded: consume up to `end`. */
export function conringClear(hv: HvState, end: number): void {
  const size = hv.cfg.conringSize;
  lock(hv.g, G.CONRING_LOCK);
  try {
    const p = hv.g[G.CONRING_PROD] >>> 0;
    // Writers may have lapped `end` meanwhile: keep at most the last `size` bytes.
    hv.g[G.CONRING_CONS] = (((p - end) >>> 0) > size ? p - size : end) | 0;
  } finally {
    unlock(hv.g, G.CONRING_LOCK);
  }
}
