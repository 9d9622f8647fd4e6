/**
 * Connections: byte streams in and out, the 4096 limit dropping a connection,
 * and the bounds that keep a client that never reads from growing xenstored:
 * back-pressure on outstanding requests, dropped duplicate, excess and stale
 * watch events.
 */
import { describe, expect, it } from 'vitest';
import { Xenstored, type XsConnection } from '../../../dom0/xenstored/connection.ts';
import {
  encodeMessage, encodeStrings, splitStrings, XS, XsParser, type XsMessage, type XsTypeName,
} from '../../../shared/xenstore/wire.ts';

const dec = new TextDecoder();

function req(type: XsTypeName, parts: string[], reqId = 1, txId = 0): Uint8Array {
  return encodeMessage({ type: XS[type], reqId, txId, payload: encodeStrings(parts) });
}

function write(path: string, value: string, reqId = 1): Uint8Array {
  const p = encodeStrings([path, value]);
  return encodeMessage({ type: XS.XS_WRITE, reqId, txId: 0, payload: p.subarray(0, p.length - 1) });
}

/** Everything queued for `c`, parsed. */
function readAll(d: Xenstored, c: XsConnection, chunk = 1 << 20): XsMessage[] {
  const p = new XsParser();
  while (c.hasOutput()) p.push(d.takeOutput(c, chunk));
  const out: XsMessage[] = [];
  for (let r = p.next(); r.kind === 'message'; r = p.next()) out.push(r.msg);
  return out;
}

function text(m: XsMessage): string {
  return splitStrings(m.payload).strings.map((s) => dec.decode(s)).join('|');
}

function setup(limits = {}, now = () => 0) {
  const closed: string[] = [];
  const d = new Xenstored({ limits, now, onClose: (_c, why) => closed.push(why) });
  const dom0 = d.connectDomain(0);
  const tools = d.connectSocket();
  d.receive(tools, req('XS_INTRODUCE', ['1', '10', '3']));
  d.receive(tools, req('XS_MKDIR', ['/local/domain/1']));
  d.receive(tools, req('XS_SET_PERMS', ['/local/domain/1', 'n1']));
  readAll(d, tools);
  const domU = [...d.connections()].find((c) => c.domid === 1)!;
  return { d, dom0, tools, domU, closed };
}

describe('xenstored connections', () => {
  it('INTRODUCE creates the domain\'s connection; requests cut anywhere give the same replies', () => {
    const { d, domU } = setup();
    expect(domU.privileged).toBe(false);
    const stream = new Uint8Array([...write('a', 'x', 7), ...req('XS_READ', ['a'], 8), ...req('XS_DIRECTORY', [''], 9)]);
    d.receive(domU, stream.subarray(0, 5));
    d.receive(domU, stream.subarray(5, 30));
    for (let i = 30; i < stream.length; i++) d.receive(domU, stream.subarray(i, i + 1));
    // Partial reads from the output queue (as a ring with little room does) still give whole messages.
    const got = readAll(d, domU, 7);
    expect(got.map((m) => [m.type, m.reqId, text(m)])).toEqual([
      [XS.XS_WRITE, 7, 'OK'], [XS.XS_READ, 8, ''], [XS.XS_ERROR, 9, 'EINVAL'],
    ]);
    expect(dec.decode(got[1].payload)).toBe('x');
  });

  it('a payload over 4096 bytes drops the connection, with its watches and transactions', () => {
    const { d, domU, dom0, closed } = setup();
    d.receive(domU, req('XS_WATCH', ['a', 't']));
    d.receive(domU, req('XS_TRANSACTION_START', ['']));
    readAll(d, domU);
    const big = new Uint8Array(16);
    new DataView(big.buffer).setUint32(12, 4097, true);
    d.receive(domU, big);
    expect(domU.closed).toBe(true);
    expect(closed).toEqual(['payload of 4097 bytes exceeds 4096']);
    expect(domU.sc.watches).toHaveLength(0);
    expect(domU.sc.transactions.size).toBe(0);
    // Nothing more is processed or queued for it.
    d.receive(domU, req('XS_READ', ['a']));
    expect(domU.hasOutput()).toBe(false);
    d.receive(dom0, write('/local/domain/1/a', 'x'));
    expect(domU.hasOutput()).toBe(false);
  });

  it('a domain that never reads: at most 20 requests are answered, the rest wait (bounded memory)', () => {
    const { d, domU } = setup();
    const many: number[] = [];
    for (let i = 0; i < 200; i++) many.push(...write(`k${i}`, 'v'.repeat(100), i));
    d.receive(domU, new Uint8Array(many));
    expect(domU.outstanding).toBe(20);
    expect(domU.wantsInput()).toBe(false);
    const queued = domU.queuedBytes;
    expect(queued).toBeLessThanOrEqual(20 * (16 + 4096));
    // The transport reads no more while it waits; the parser holds what was already received.
    let handled = 0;
    for (;;) {
      const got = readAll(d, domU);
      if (got.length === 0) break;
      handled += got.length;
    }
    expect(handled).toBe(200);
    expect(domU.outstanding).toBe(0);
    expect(domU.wantsInput()).toBe(true);
  });

  it('events a domain\'s writes fire for a watcher that never reads are charged to the writer', () => {
    const { d, dom0, domU } = setup();
    d.receive(dom0, req('XS_WATCH', ['/local/domain/1', 'w']));
    readAll(d, dom0);
    for (let i = 0; i < 30; i++) {
      d.receive(domU, write(`k${i}`, ''));
      readAll(d, domU);
    }
    // Each write fires one event into dom0's queue, charged to domain 1 until dom0 takes it:
    // after 20, domain 1's remaining writes wait.
    expect(domU.outstanding).toBe(20);
    expect(domU.canProcess()).toBe(false);
    expect(dom0.queuedEvents).toBe(20);
    readAll(d, dom0);
    // Taking them resumed domain 1: its other 10 writes ran (10 replies, 10 more events, all taken).
    expect(readAll(d, domU)).toHaveLength(10);
    expect(domU.outstanding).toBe(0);
    expect(d.store.tree.get('/local/domain/1/k29')).toBeDefined();
  });

  it('watch events beyond the cap are dropped; identical ones are not queued twice; stale ones expire', () => {
    let now = 0;
    const { d, dom0, tools } = setup({ maxQueuedEvents: 5, eventTimeoutMs: 1000 }, () => now);
    d.receive(dom0, req('XS_WATCH', ['/x', 'w']));
    expect(readAll(d, dom0).map(text)).toEqual(['OK', '/x|w']);
    d.receive(tools, write('/x', '1'));
    d.receive(tools, write('/x', '2'));
    d.receive(tools, write('/x', '3'));
    expect(dom0.queuedEvents).toBe(1);
    for (let i = 0; i < 10; i++) d.receive(tools, write(`/x/${i}`, ''));
    expect(dom0.queuedEvents).toBe(5);
    expect(dom0.droppedEvents).toBe(2 + 6);
    now = 1500;
    expect(d.expire()).toBe(5);
    d.receive(tools, write('/x/late', ''));
    expect(readAll(d, dom0).map(text)).toEqual(['/x/late|w']);
    expect(dom0.droppedEvents).toBe(8 + 5);
    // Once taken, the same event may be queued again.
    d.receive(tools, write('/x', '4'));
    expect(readAll(d, dom0).map(text)).toEqual(['/x|w']);
  });

  it('a privileged client that never reads is not read either once its queue is full', () => {
    const { d, tools } = setup({ maxQueuedBytes: 64 * 1024 });
    d.receive(tools, write('/big', 'x'.repeat(4000)));
    readAll(d, tools);
    const reqs: number[] = [];
    for (let i = 0; i < 100; i++) reqs.push(...req('XS_READ', ['/big'], i));
    d.receive(tools, new Uint8Array(reqs));
    expect(tools.queuedBytes).toBeLessThan(64 * 1024 + 4112);
    expect(tools.wantsInput()).toBe(false);
    let n = 0;
    for (;;) {
      const got = readAll(d, tools, 4096);
      if (got.length === 0) break;
      n += got.length;
    }
    expect(n).toBe(100);
  });

  it('RELEASE and domain destruction close the domain\'s connection', () => {
    const { d, tools, domU, closed } = setup();
    d.receive(tools, req('XS_RELEASE', ['1']));
    expect(readAll(d, tools).map(text)).toEqual(['OK']);
    expect(domU.closed).toBe(true);
    expect(closed).toEqual(['domain released']);
  });
});
