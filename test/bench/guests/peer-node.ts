/**
 * For guest kernels that meet a peer domain through XenStore (the ping-pong
 * guests, test/fixtures/guests/late-handler.ts): wait for a node the peer
 * publishes under its own home.
 */
import type { EventChannels } from '../../../shared/guest/evtchn.ts';
import type { GuestXenbus } from '../../../shared/guest/xenbus.ts';
import { XenbusError } from '../../../shared/xenbus/client.ts';

/**
 * Read `path` until it exists and its owner has opened it to us: ENOENT
 * before it is written, EACCES between the write and the permissions. Sleeps
 * 1 ms (SCHEDOP_poll on no port) between tries; any other error is thrown.
 */
export async function readWhenThere(ev: EventChannels, xs: GuestXenbus, path: string): Promise<string> {
  for (;;) {
    try {
      return await xs.wait(xs.client.read(path));
    } catch (e) {
      if (!(e instanceof XenbusError) || (e.errno !== 'ENOENT' && e.errno !== 'EACCES')) throw e;
      ev.poll([], ev.systemTime() + 1_000_000n);
    }
  }
}
