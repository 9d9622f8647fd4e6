/**
 * The guest's end of the xenstore ring (start_info store_mfn + store_evtchn) as
 * a `XenbusTransport`: requests go into `req`, replies and watch events come
 * out of `rsp`. `notify` signals the event channel; the kernel calls `onEvent`
 * when the channel fires. Bytes that do not fit wait here until xenstored
 * consumes some and notifies.
 */
import { xsRingRead, xsRingWrite, type RingMemory } from '../xenstore/ring.ts';
import type { XenbusTransport } from './client.ts';

export class XsRingFrontTransport implements XenbusTransport {
  private pending: Uint8Array[] = [];
  private handler: (b: Uint8Array) => void = () => {};
  /** Set when xenstored's indexes were impossible; the ring is unusable. */
  corrupt = false;

  /** `base`: guest-physical address of the ring page. */
  constructor(private readonly mem: RingMemory, private readonly base: number, private readonly notify: () => void) {}

  send(bytes: Uint8Array): void {
    this.pending.push(bytes);
    if (this.flush()) this.notify();
  }

  onReceive(handler: (b: Uint8Array) => void): void {
    this.handler = handler;
  }

  /** The event channel fired: take replies, push waiting requests. Returns false once the ring is corrupt. */
  onEvent(): boolean {
    if (this.corrupt) return false;
    let moved = false;
    for (;;) {
      const r = xsRingRead(this.mem, this.base, 'rsp');
      if (!r.ok) {
        this.corrupt = true;
        return false;
      }
      if (r.bytes.length === 0) break;
      moved = true;
      this.handler(r.bytes);
    }
    if (this.flush()) moved = true;
    if (moved) this.notify();
    return !this.corrupt;
  }

  /** Write waiting bytes while there is room; true if any were written. */
  private flush(): boolean {
    let wrote = false;
    while (this.pending.length > 0 && !this.corrupt) {
      const head = this.pending[0];
      const r = xsRingWrite(this.mem, this.base, 'req', head);
      if (!r.ok) {
        this.corrupt = true;
        break;
      }
      if (r.written === 0) break;
      wrote = true;
      if (r.written === head.length) this.pending.shift();
      else this.pending[0] = head.subarray(r.written);
    }
    return wrote;
  }
}
