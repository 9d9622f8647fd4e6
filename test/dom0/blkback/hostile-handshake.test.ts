/**
 * A hostile or broken frontend at the handshake: whatever it writes in its
 * xenstore directory (a ring-ref that is no grant of ours, one granted to
 * another domain, a bogus or foreign event channel, a ring-page-order past
 * the maximum, a missing ring-ref<i>, garbage), blkback answers as Linux's
 * does with xenbus_dev_fatal: an `error` node and state Closing (5). Dom0
 * keeps nothing of it (no mapping, no port), and another device of the same
 * guest still connects.
 */
import { describe, expect, it } from 'vitest';
import { BlkTestbed, FakeBlkfront } from '../../helpers/fake-blkfront.ts';
import { tempDisk } from '../../helpers/temp-disk.ts';

/** What the frontend publishes: each case builds its keys from a good ring and port. */
interface Good { readonly ref: number; readonly port: number; readonly f: FakeBlkfront }
const CASES: ReadonlyArray<{ readonly name: string; readonly keys: (g: Good) => Record<string, string>; readonly error: RegExp }> = [
  { name: 'ring-ref not a number', keys: (g) => ({ 'ring-ref': 'abc', 'event-channel': String(g.port) }), error: /ring-ref/ },
  { name: 'ring-ref that was never granted', keys: (g) => ({ 'ring-ref': '3000', 'event-channel': String(g.port) }), error: /map/ },
  {
    name: 'ring-ref granted to another domain',
    keys: (g) => {
      const gfn = g.f.v.xen.allocGfn();
      return { 'ring-ref': String(g.f.gt.grantAccess(7, gfn)), 'event-channel': String(g.port) };
    },
    error: /map/,
  },
  { name: 'event-channel not a number', keys: (g) => ({ 'ring-ref': String(g.ref), 'event-channel': 'x' }), error: /event-channel/ },
  { name: 'event-channel that is no port of the guest', keys: (g) => ({ 'ring-ref': String(g.ref), 'event-channel': '4000' }), error: /event channel|bind/ },
  {
    name: 'event-channel unbound for another domain',
    keys: (g) => ({ 'ring-ref': String(g.ref), 'event-channel': String(g.f.ev.allocUnbound(7)) }),
    error: /event channel|bind/,
  },
  { name: 'no event-channel', keys: (g) => ({ 'ring-ref': String(g.ref) }), error: /event-channel/ },
  { name: 'ring-page-order past the maximum', keys: (g) => ({ 'ring-page-order': '9', 'ring-ref0': String(g.ref), 'event-channel': String(g.port) }), error: /ring page order exceed max/ },
  { name: 'ring-page-order 1 without ring-ref1', keys: (g) => ({ 'ring-page-order': '1', 'ring-ref0': String(g.ref), 'event-channel': String(g.port) }), error: /ring-ref1/ },
  { name: 'no ring-ref at all', keys: (g) => ({ 'event-channel': String(g.port) }), error: /ring-ref/ },
];

describe('blkback facing a hostile frontend at the handshake', () => {
  for (const c of CASES) {
    it(`${c.name}: error node, Closing, nothing kept; the guest's next device still connects`, async () => {
      const tb = await BlkTestbed.start();
      const f = await FakeBlkfront.create(tb);
      await tb.addVbd(f.domid, f.devid, { params: tempDisk(4096) });
      expect(await f.backendState()).toBe('2');
      const before = tb.dom0Resources();
      // A good ring page and port, which the case may or may not publish.
      const good: Good = { ...f.spareRing(), f };
      expect(await f.publishExpectingFatal(c.keys(good))).toMatch(c.error);
      expect(tb.dom0Resources()).toEqual(before);

      const g = f.sibling({ devid: 51728 });
      await tb.addVbd(g.domid, g.devid, { params: tempDisk(4096) });
      await g.connect();
      expect(await g.backendState()).toBe('4');
      await tb.unplug(f.domid, f.devid);
      await tb.unplug(g.domid, g.devid);
      expect(tb.driver.deviceCount).toBe(0);
    });
  }
});
