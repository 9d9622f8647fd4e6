/**
 * Event-channel ping-pong between two DomUs (benchmark and real-thread test).
 * Command line: `role=ping|pong peer=<domid> rounds=<n> spin=<µs>`.
 * ping allocates an unbound port for its peer and publishes its number in
 * XenStore (its data/evtchn-port, readable by pong), as split drivers
 * publish theirs; pong reads it, binds it and signals ready; then ping sends and waits for
 * the answer `rounds` times, and pong answers each event. With spin > 0 a side polls
 * its pending bit for up to that long before blocking in SCHEDOP_block.
 * ping reports `BENCH {...}` with the round-trip times.
 */
import type { KernelApi } from '../../../shared/guest/api.ts';
import { EventChannels } from '../../../shared/guest/evtchn.ts';
import { Xen } from '../../../shared/guest/xen.ts';
import { SHUTDOWN_poweroff } from '../../../shared/hypercall.ts';
import { EVTCHNSTAT_interdomain } from '../../../shared/abi/event-channel.ts';
import { GuestXenbus } from '../../../shared/guest/xenbus.ts';
import { readWhenThere } from './peer-node.ts';

function args(cmdline: string): Map<string, string> {
  return new Map(cmdline.split(/\s+/).filter(Boolean).map((kv) => kv.split('=') as [string, string]));
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

/** Where ping publishes its port, relative to its home. */
const PORT_NODE = 'data/evtchn-port';

export default async function pingpong(k: KernelApi): Promise<void> {
  const xen = new Xen(k);
  const a = args(xen.cmdline);
  const peer = Number(a.get('peer'));
  const rounds = Number(a.get('rounds') ?? 2000);
  const spinNs = BigInt(Math.round(Number(a.get('spin') ?? 0) * 1000));
  const ev = new EventChannels(xen);
  const xs = new GuestXenbus(ev);
  if (a.get('role') === 'ping') {
    const port = ev.allocUnbound(peer);
    // pong says it is ready; only then do we send (an event sent earlier could
    // coalesce with the one bind_interdomain raised at pong, which pong
    // clears). "ready" may come while we still wait for xenstored (pong can
    // read the port as soon as setPerms is applied); it stays pending for
    // the handler either way.
    let ready = false;
    ev.on(port, () => { ready = true; });
    const me = Number(await xs.wait(xs.client.read('domid')));
    await xs.wait(xs.client.write(PORT_NODE, String(port)));
    await xs.wait(xs.client.setPerms(PORT_NODE, [{ domid: me, access: 'n' }, { domid: peer, access: 'r' }]));
    while (!ready) ev.wait();
    if (ev.status(port).status !== EVTCHNSTAT_interdomain) throw new Error(`port ${port} is not bound to domain ${peer}`);
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
    const remote = Number(await readWhenThere(ev, xs, `/local/domain/${peer}/${PORT_NODE}`));
    const port = ev.bindInterdomain(peer, remote);
    ev.clear(port); // the event bind_interdomain raised on the new port: not one of ping's
    ev.send(port); // ready
    for (let i = 0; i < rounds; i++) {
      waitFor(ev, port, spinNs);
      ev.send(port);
    }
    xen.print(`pong done after ${rounds} rounds\n`);
  }
  xen.shutdown(SHUTDOWN_poweroff);
}
