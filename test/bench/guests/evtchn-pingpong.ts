/**
 * Event-channel ping-pong between two DomUs (benchmark and real-thread test).
 * Command line: `role=ping|pong peer=<domid> rounds=<n> spin=<µs>`.
 * ping allocates an unbound port for its peer (the first port of a fresh
 * domain: 1); pong binds it and signals ready; then ping sends and waits for
 * the answer `rounds` times, and pong answers each event. With spin > 0 a side polls
 * its pending bit for up to that long before blocking in SCHEDOP_block.
 * ping reports `BENCH {...}` with the round-trip times.
 */
import type { KernelApi } from '../../../shared/guest/api.ts';
import { EventChannels } from '../../../shared/guest/evtchn.ts';
import { Xen } from '../../../shared/guest/xen.ts';
import { SHUTDOWN_poweroff } from '../../../shared/hypercall.ts';
import { EVTCHNSTAT_interdomain } from '../../../shared/abi/event-channel.ts';
import { EINVAL } from '../../../shared/errno.ts';
import { XenError } from '../../../shared/guest/xen.ts';

function args(cmdline: string): Map<string, string> {
  return new Map(cmdline.split(/\s+/).filter(Boolean).map((kv) => kv.split('=') as [string, string]));
}

function sleep(ev: EventChannels, ns: bigint): void {
  ev.poll([], ev.systemTime() + ns);
}

/** Wait for an event on `port`: spin on its pending bit up to `spinNs`, then block. */
function waitFor(ev: EventChannels, port: number, spinNs: bigint): void {
  let got = false;
  ev.on(port, () => { got = true; });
  if (spinNs > 0n) {
    const until = ev.xen.k.rdtsc() + spinNs;
    while (!ev.isPending(port) && ev.xen.k.rdtsc() < until) { /* spin */ }
  }
  ev.dispatch();
  while (!got) ev.wait();
}

export default function pingpong(k: KernelApi): void {
  const xen = new Xen(k);
  const a = args(xen.cmdline);
  const peer = Number(a.get('peer'));
  const rounds = Number(a.get('rounds') ?? 2000);
  const spinNs = BigInt(Math.round(Number(a.get('spin') ?? 0) * 1000));
  const ev = new EventChannels(xen);
  if (a.get('role') === 'ping') {
    const port = ev.allocUnbound(peer);
    while (ev.status(port).status !== EVTCHNSTAT_interdomain) sleep(ev, 1_000_000n);
    // pong says it is ready; only then do we send (an event sent earlier could
    // coalesce with the one bind_interdomain raised at pong and be lost).
    waitFor(ev, port, 0n);
    const rtt: number[] = [];
    for (let i = 0; i < rounds; i++) {
      const t0 = k.rdtsc();
      ev.send(port);
      waitFor(ev, port, spinNs);
      rtt.push(Number(k.rdtsc() - t0) / 1000);
    }
    rtt.sort((x, y) => x - y);
    const warm = rtt.slice(0, rtt.length);
    xen.print(`BENCH ${JSON.stringify({ name: 'evtchn-pingpong', rounds, spinUs: Number(spinNs) / 1000, medianUs: warm[Math.floor(warm.length / 2)], p90Us: warm[Math.floor(warm.length * 0.9)] })}\n`);
  } else {
    let port = -1;
    while (port < 0) {
      try {
        port = ev.bindInterdomain(peer, 1);
      } catch (e) {
        if (!(e instanceof XenError) || e.rc !== -EINVAL) throw e;
        sleep(ev, 1_000_000n);
      }
    }
    ev.dispatch(); // the pending event bind_interdomain raised
    ev.send(port); // ready
    for (let i = 0; i < rounds; i++) {
      waitFor(ev, port, spinNs);
      ev.send(port);
    }
    xen.print(`pong done after ${rounds} rounds\n`);
  }
  xen.shutdown(SHUTDOWN_poweroff);
}
