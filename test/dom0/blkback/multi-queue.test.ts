/**
 * Multi-queue blkif (blkif.h "multi-queue-max-queues" / "multi-queue-num-queues"),
 * blkback's side against the fake frontend on a real temp file: the backend
 * advertises its maximum (xen_blkback.max_queues, 1 by default: Dom0 has one
 * vCPU); a frontend asking for N <= max queues gives N rings, each in its own
 * queue-<i>/ directory with its own ring-ref(s) and event channel, and each is
 * served on its own; asking for more (or 0) is refused as Linux's blkback
 * refuses it (xenbus_dev_fatal -ENOSYS); a queue whose keys are bad fails the
 * whole connection, and the queues connected before it are undone: Dom0 keeps
 * nothing.
 */
import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { BLKIF_OP_READ, BLKIF_OP_WRITE, BLKIF_RSP_OKAY } from '../../../shared/abi/blkif.ts';
import type { BlkifSegment } from '../../../shared/blkif/proto.ts';
import { parseDom0Cmdline, encodeDom0Cmdline } from '../../../dom0/kernel.ts';
import { BlkTestbed, FakeBlkfront } from '../../helpers/fake-blkfront.ts';
import { tempDisk } from '../../helpers/temp-disk.ts';

const rw = (operation: 0 | 1, id: bigint, sector: number, segs: BlkifSegment[]) =>
  ({ kind: 'rw' as const, operation, nrSegments: segs.length, handle: 0, id, sector, segs });
const pattern = (n: number, k: number): Uint8Array => Uint8Array.from({ length: n }, (_, i) => (i * 13 + k) & 0xff);

describe('blkback multi-queue', () => {
  it('advertises multi-queue-max-queues: 1 by default, the max_queues option otherwise (and the Dom0 option round-trips)', async () => {
    for (const [opts, want] of [[{}, '1'], [{ maxQueues: 4 }, '4'], [{ maxQueues: 0 }, '1']] as const) {
      const tb = await BlkTestbed.start(opts);
      const f = await FakeBlkfront.create(tb);
      await tb.addVbd(f.domid, f.devid, { params: tempDisk(4096) });
      expect(await tb.xb.read(`${f.be}/multi-queue-max-queues`)).toBe(want);
    }
    const c = parseDom0Cmdline(encodeDom0Cmdline({ guests: [], keep: false, blkback: { maxQueues: 3 } }));
    expect(c.blkback).toEqual({ maxQueues: 3 });
    expect(parseDom0Cmdline('keep=0 xen_blkback.max_queues=x').blkback).toBeUndefined();
  });

  for (const ringOrder of [undefined, 1]) {
    it(`three queues${ringOrder ? ', two-page rings' : ''}: each ring served on its own, data shared through the disk, counted for the device; unplug keeps nothing`, async () => {
      const tb = await BlkTestbed.start({ maxQueues: 4 });
      const before = tb.dom0Resources();
      const f = await FakeBlkfront.create(tb, { queues: 3, ...(ringOrder ? { ringOrder } : {}) });
      const path = tempDisk(1 << 20);
      await tb.addVbd(f.domid, f.devid, { params: path });
      await f.connect();
      expect(await f.backendState()).toBe('4');
      const dev = tb.driver.device(f.domid, f.devid)!;
      expect(dev.queues).toBe(3);
      expect(new Set(f.ports).size).toBe(3);
      expect(tb.dom0Resources().ports - before.ports).toBe(3);

      // Write through queue 0, read back through queue 2.
      const a = f.page();
      f.mem.write(a.gpa, pattern(4096, 5));
      f.use(0).put(rw(BLKIF_OP_WRITE, 1n, 64, [{ gref: a.gref, firstSect: 0, lastSect: 7 }]));
      expect(await f.submit()).toEqual([{ id: 1n, operation: BLKIF_OP_WRITE, status: BLKIF_RSP_OKAY }]);
      expect(new Uint8Array(readFileSync(path).subarray(64 * 512, 72 * 512))).toEqual(pattern(4096, 5));
      const b = f.page();
      f.use(2).put(rw(BLKIF_OP_READ, 2n, 64, [{ gref: b.gref, firstSect: 0, lastSect: 7 }]));
      expect(await f.submit()).toEqual([{ id: 2n, operation: BLKIF_OP_READ, status: BLKIF_RSP_OKAY }]);
      expect(f.mem.read(b.gpa, 4096)).toEqual(pattern(4096, 5));
      // Queue 1 was asked nothing: its ring has no response.
      expect(f.use(1).responses()).toEqual([]);
      // Requests on two queues at once, each answered on its own ring.
      const c = f.page();
      f.use(1).put(rw(BLKIF_OP_READ, 3n, 64, [{ gref: c.gref, firstSect: 0, lastSect: 0 }]));
      f.push();
      f.use(2).put(rw(BLKIF_OP_READ, 4n, 65, [{ gref: c.gref, firstSect: 1, lastSect: 1 }]));
      f.push();
      const got = new Map<number, bigint[]>([[1, []], [2, []]]);
      await tb.until(() => {
        for (const q of [1, 2]) got.get(q)!.push(...f.use(q).responses().map((r) => r.id));
        return got.get(1)!.length + got.get(2)!.length === 2;
      }, 'both answers');
      expect([...got]).toEqual([[1, [3n]], [2, [4n]]]);
      expect(f.mem.read(c.gpa, 1024)).toEqual(pattern(4096, 5).subarray(0, 1024));
      expect(dev.counters.wrReq).toBe(1);
      expect(dev.counters.rdReq).toBe(3);

      await tb.unplug(f.domid, f.devid);
      expect(tb.dom0Resources()).toEqual(before);
      expect(tb.driver.pool.inUse).toBe(0);
    });
  }

  /** What the frontend publishes beyond a good queue 0 (its ring and port); each case names its error. */
  interface Good { readonly f: FakeBlkfront; ring(): { ref: number; port: number } }
  const CASES: ReadonlyArray<{ readonly name: string; readonly maxQueues: number; readonly keys: (g: Good) => Record<string, string>; readonly error: RegExp }> = [
    { name: 'more queues than the maximum', maxQueues: 2, keys: () => ({ 'multi-queue-num-queues': '3' }), error: /^38 guest requested 3 queues, exceeding the maximum of 2\.$/ },
    { name: 'two queues when the backend offers one', maxQueues: 1, keys: () => ({ 'multi-queue-num-queues': '2' }), error: /^38 guest requested 2 queues, exceeding the maximum of 1\.$/ },
    { name: 'zero queues', maxQueues: 2, keys: () => ({ 'multi-queue-num-queues': '0' }), error: /^38 guest requested 0 queues/ },
    { name: 'a negative count (a %u scan: 2^32 - 1)', maxQueues: 2, keys: () => ({ 'multi-queue-num-queues': '-1' }), error: /^38 guest requested 4294967295 queues/ },
    {
      name: 'queue 1 without an event channel',
      maxQueues: 2,
      keys: (g) => {
        const r = g.ring();
        return { 'multi-queue-num-queues': '2', 'queue-1/ring-ref': String(r.ref) };
      },
      error: /queue-1\/event-channel/,
    },
    {
      name: 'queue 1 with a ring-ref that was never granted',
      maxQueues: 2,
      keys: (g) => ({ 'multi-queue-num-queues': '2', 'queue-1/ring-ref': '3000', 'queue-1/event-channel': String(g.ring().port) }),
      error: /map/,
    },
    {
      name: 'queue 1 with an event channel unbound for another domain',
      maxQueues: 2,
      keys: (g) => ({ 'multi-queue-num-queues': '2', 'queue-1/ring-ref': String(g.ring().ref), 'queue-1/event-channel': String(g.f.ev.allocUnbound(7)) }),
      error: /event channel|bind/,
    },
  ];
  for (const c of CASES) {
    it(`hostile: ${c.name}: error node, Closing, Dom0 keeps nothing (queue 0 undone)`, async () => {
      const tb = await BlkTestbed.start({ maxQueues: c.maxQueues });
      const f = await FakeBlkfront.create(tb);
      await tb.addVbd(f.domid, f.devid, { params: tempDisk(4096) });
      const before = tb.dom0Resources();
      const good: Good = { f, ring: () => f.spareRing() };
      // Queue 0 is good (so a failure at queue 1 has something to undo).
      const q0 = good.ring();
      const keys = { 'queue-0/ring-ref': String(q0.ref), 'queue-0/event-channel': String(q0.port), ...c.keys(good) };
      expect(await f.publishExpectingFatal(keys)).toMatch(c.error);
      expect(tb.dom0Resources()).toEqual(before);
      expect(tb.driver.pool.inUse).toBe(0);
      expect(tb.driver.device(f.domid, f.devid)!.queues).toBe(0);
    });
  }
});
