/**
 * XenStore for guest kernels: the xenbus client over the domain's xenstore
 * ring page and event channel, as named in start_info (store_mfn, a gfn on
 * our auto-translated guests, and store_evtchn), and a way for a kernel to
 * wait for its replies.
 *
 * A PV kernel has no upcalls: replies arrive only when it scans its events.
 * `wait(p)` is the kernel's event loop while it needs `p` (KernelLoop.of(ev),
 * shared/guest/kloop.ts): it lets promise continuations run, and when nothing
 * is left to run, sleeps on every port with a handler (the xenstore port among
 * them; SCHEDOP_poll, a slice at a time) and dispatches events, until `p`
 * settles. It returns p's value or throws its error (XenbusError).
 *
 *   const ev = new EventChannels(xen);
 *   const xs = new GuestXenbus(ev);
 *   const name = await xs.wait(xs.client.read('name'));   // /local/domain/<me>/name
 */
import { XenbusClient } from '../xenbus/client.ts';
import { XsRingFrontTransport } from '../xenbus/ring-transport.ts';
import type { EventChannels } from './evtchn.ts';
import { KernelLoop } from './kloop.ts';
import { PAGE_SIZE } from '../types.ts';

export class GuestXenbus {
  readonly client: XenbusClient;
  readonly transport: XsRingFrontTransport;

  /** Connect over the ring named in start_info (or the given gfn and port). Throws if there is none. */
  constructor(private readonly ev: EventChannels, gfn: number = ev.xen.storeGfn, readonly port: number = ev.xen.storeEvtchn) {
    if (gfn === 0 || port === 0) throw new Error('no xenstore ring: start_info store_mfn is empty');
    this.transport = new XsRingFrontTransport(ev.xen.k.mem, gfn * PAGE_SIZE, () => ev.send(port));
    this.client = new XenbusClient(this.transport);
    ev.on(port, () => {
      if (!this.transport.onEvent()) this.client.fail();
    });
  }

  /** Run this kernel's event loop until `p` settles; its value, or its error thrown. */
  wait<T>(p: Promise<T>): Promise<T> {
    return KernelLoop.of(this.ev).run(p);
  }
}
