/**
 * A domain's xenbus client talking to xenstored over the xenstore ring page
 * (fake guest memory; the event channel is a queued callback each way).
 */
import { describe, expect, it } from 'vitest';
import { Xenstored } from '../../../dom0/xenstored/connection.ts';
import { XsRingBackend } from '../../../dom0/xenstored/ring.ts';
import { XENSTORE_DOMAIN_INTERFACE, XENSTORE_ERROR_RINGIDX, XENSTORE_SERVER_FEATURE_ERROR } from '../../../shared/abi/xs-ring.ts';
import { XenbusClient } from '../../../shared/xenbus/client.ts';
import { XsRingFrontTransport } from '../../../shared/xenbus/ring-transport.ts';
import { encodeMessage, encodeStrings, XS } from '../../../shared/xenstore/wire.ts';
import { xsRingWrite } from '../../../shared/xenstore/ring.ts';
import { FakeRingMemory } from '../../helpers/fake-ring-memory.ts';

const F = XENSTORE_DOMAIN_INTERFACE.fields;

function setup(start = 0) {
  const d = new Xenstored();
  let toolsRx: (b: Uint8Array) => void = () => {};
  const sockConn = d.connectSocket();
  const tools = new XenbusClient({ send: (b) => d.receive(sockConn, b), onReceive: (h) => { toolsRx = h; } });
  sockConn.transport = { output: () => { while (sockConn.hasOutput()) { const b = d.takeOutput(sockConn, 1 << 16); queueMicrotask(() => toolsRx(b)); } }, resume: () => {}, closed: () => {} };
  const mem = new FakeRingMemory();
  for (const f of ['req_cons', 'req_prod', 'rsp_cons', 'rsp_prod'] as const) mem.atomicStore32(mem.base + F[f].offset, start);
  const conn = d.connectDomain(3);
  let back: XsRingBackend | undefined;
  let front: XsRingFrontTransport | undefined;
  let frontKicks = 0;
  front = new XsRingFrontTransport(mem, mem.base, () => queueMicrotask(() => back!.kick()));
  back = new XsRingBackend(d, conn, mem, mem.base, () => { frontKicks++; queueMicrotask(() => front!.onEvent()); });
  const guest = new XenbusClient(front);
  return { d, mem, conn, back, front, guest, tools, frontKicks: () => frontKicks };
}

describe('xenstore over the ring', () => {
  it('requests and replies larger than the ring, at the u32 wrap; watches across domains', async () => {
    const { guest, tools, mem } = setup(0xfffffc00);
    expect(mem.atomicLoad32(mem.base + F.server_features.offset)).toBe(XENSTORE_SERVER_FEATURE_ERROR);
    await tools.mkdir('/local/domain/3');
    await tools.setPerms('/local/domain/3', [{ domid: 3, access: 'n' }]);
    const big = 'v'.repeat(1900);
    await Promise.all(Array.from({ length: 10 }, (_, i) => guest.write(`data/${i}`, big + i)));
    const got = await Promise.all(Array.from({ length: 10 }, (_, i) => guest.read(`data/${i}`)));
    expect(got).toEqual(Array.from({ length: 10 }, (_, i) => big + i));
    const events: string[] = [];
    await guest.watch('control', (p) => events.push(p));
    await tools.write('/local/domain/3/control/shutdown', 'poweroff');
    await guest.read('data/0');
    expect(events).toEqual(['control', 'control/shutdown']);
    expect(await guest.read('control/shutdown')).toBe('poweroff');
    expect(mem.atomicLoad32(mem.base + F.req_prod.offset)).toBeLessThan(0xfffffc00); // wrapped
  });

  it('a guest that stops reading leaves its requests in its own ring (back-pressure)', () => {
    const { mem, conn, back } = setup();
    const reqs: number[] = [];
    for (let i = 0; i < 200; i++) reqs.push(...encodeMessage({ type: XS.XS_READ, reqId: i, txId: 0, payload: encodeStrings(['name']) }));
    let off = 0;
    // Write as the guest would, never reading rsp; kick the backend each time.
    for (let round = 0; round < 20 && off < reqs.length; round++) {
      const w = xsRingWrite(mem, mem.base, 'req', new Uint8Array(reqs.slice(off)));
      if (w.ok) off += w.written;
      back.kick();
    }
    expect(conn.outstanding).toBe(20);
    expect(conn.queuedBytes).toBeLessThanOrEqual(20 * 30);
    // The rsp ring is full of replies nobody reads; 20 more wait in xenstored; the guest's req ring
    // holds the rest, which xenstored does not take.
    expect((mem.atomicLoad32(mem.base + F.rsp_prod.offset) - mem.atomicLoad32(mem.base + F.rsp_cons.offset)) >>> 0).toBeGreaterThan(1000);
    const pending = (mem.atomicLoad32(mem.base + F.req_prod.offset) - mem.atomicLoad32(mem.base + F.req_cons.offset)) >>> 0;
    expect(pending).toBe(1024);
    expect(off).toBeLessThan(reqs.length);
  });

  it('impossible indexes from the guest set XENSTORE_ERROR_RINGIDX and drop the connection', () => {
    const { mem, conn, back } = setup();
    mem.atomicStore32(mem.base + F.req_prod.offset, 5000);
    back.kick();
    expect(mem.atomicLoad32(mem.base + F.error.offset)).toBe(XENSTORE_ERROR_RINGIDX);
    expect(conn.closed).toBe(true);
  });
});
