/**
 * The serial input ring (Xen: console.c serial_rx_ring, 128 bytes): bytes typed
 * on the host console, read by Dom0 with CONSOLEIO_read. The platform is the
 * only producer; readers take console lock order level 5 (conring_lock).
 */
import { lock, unlock } from '../shared/lock.ts';
import { G, HvState, SERIAL_RX_SIZE } from './state.ts';

/** Platform: queue input bytes; bytes that do not fit are dropped (as a UART overrun). Returns bytes queued. */
export function serialRxPut(hv: HvState, data: Uint8Array): number {
  lock(hv.g, G.CONRING_LOCK);
  try {
    let prod = hv.g[G.SERIAL_RX_PROD] >>> 0;
    const cons = hv.g[G.SERIAL_RX_CONS] >>> 0;
    let n = 0;
    for (const c of data) {
      if (((prod - cons) >>> 0) >= SERIAL_RX_SIZE) break;
      hv.serialRx[prod & (SERIAL_RX_SIZE - 1)] = c;
      prod = (prod + 1) >>> 0;
      n++;
    }
    hv.g[G.SERIAL_RX_PROD] = prod | 0;
    return n;
  } finally {
    unlock(hv.g, G.CONRING_LOCK);
  }
}

/**
 * Take up to `count` pending input bytes. With `deliver`, they are consumed only
 * if it accepts them, so a failed copy to the guest loses no input (Xen moves
 * serial_rx_cons only after copy_to_guest succeeds); null if it refused them.
 */
export function serialRxRead(hv: HvState, count: number, deliver?: (data: Uint8Array) => boolean): Uint8Array | null {
  lock(hv.g, G.CONRING_LOCK);
  try {
    const prod = hv.g[G.SERIAL_RX_PROD] >>> 0;
    let cons = hv.g[G.SERIAL_RX_CONS] >>> 0;
    const n = Math.min(count, (prod - cons) >>> 0);
    const out = new Uint8Array(n);
    for (let i = 0; i < n; i++) {
      out[i] = hv.serialRx[cons & (SERIAL_RX_SIZE - 1)];
      cons = (cons + 1) >>> 0;
    }
    if (deliver && !deliver(out)) return null;
    hv.g[G.SERIAL_RX_CONS] = cons | 0;
    return out;
  } finally {
    unlock(hv.g, G.CONRING_LOCK);
  }
}
