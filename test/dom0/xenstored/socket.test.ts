/**
 * Integration: the real xenstored socket server on a UNIX socket in a temp dir,
 * driven by a client written here from the protocol (xs_wire.h: a 16-byte
 * little-endian header, then the payload), not from our client code.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { connect, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startXenstoredSocket, xenstoredSocketPath, type XenstoredSocketServer } from '../../../dom0/xenstored/socket.ts';

// Message types from io/xs_wire.h, written out here on purpose.
const T = { DIRECTORY: 1, READ: 2, WATCH: 4, TRANSACTION_START: 6, TRANSACTION_END: 7, INTRODUCE: 8, WRITE: 11, WATCH_EVENT: 15, ERROR: 16 };

interface Msg { type: number; reqId: number; txId: number; body: Buffer }

/** A raw client: frames requests by hand, reassembles replies from the byte stream. */
class RawClient {
  private buf = Buffer.alloc(0);
  private waiting: Array<(m: Msg) => boolean> = [];
  readonly inbox: Msg[] = [];
  closed = false;
  private constructor(readonly sock: Socket) {
    sock.on('data', (d) => {
      this.buf = Buffer.concat([this.buf, d]);
      while (this.buf.length >= 16) {
        const len = this.buf.readUInt32LE(12);
        if (this.buf.length < 16 + len) break;
        const m = { type: this.buf.readUInt32LE(0), reqId: this.buf.readUInt32LE(4), txId: this.buf.readUInt32LE(8), body: this.buf.subarray(16, 16 + len) };
        this.buf = this.buf.subarray(16 + len);
        this.inbox.push(m);
        this.waiting = this.waiting.filter((w) => !w(m));
      }
    });
    sock.on('close', () => { this.closed = true; });
  }

  static open(path: string): Promise<RawClient> {
    return new Promise((resolve, reject) => {
      const s = connect(path, () => resolve(new RawClient(s)));
      s.once('error', reject);
    });
  }

  static frame(type: number, reqId: number, txId: number, body: Buffer): Buffer {
    const h = Buffer.alloc(16);
    h.writeUInt32LE(type, 0);
    h.writeUInt32LE(reqId, 4);
    h.writeUInt32LE(txId, 8);
    h.writeUInt32LE(body.length, 12);
    return Buffer.concat([h, body]);
  }

  /** Wait for the first message (already received or not) matching `pred`, and remove it from the inbox. */
  wait(pred: (m: Msg) => boolean): Promise<Msg> {
    const i = this.inbox.findIndex(pred);
    if (i >= 0) return Promise.resolve(this.inbox.splice(i, 1)[0]);
    return new Promise((resolve) => {
      this.waiting.push((m) => {
        if (!pred(m)) return false;
        this.inbox.splice(this.inbox.indexOf(m), 1);
        resolve(m);
        return true;
      });
    });
  }

  async call(type: number, body: string | Buffer, reqId: number, txId = 0): Promise<Msg> {
    this.sock.write(RawClient.frame(type, reqId, txId, typeof body === 'string' ? Buffer.from(body, 'utf8') : body));
    return this.wait((m) => m.reqId === reqId && m.type !== T.WATCH_EVENT);
  }

  close(): void { this.sock.destroy(); }
}

const s = (m: Msg) => m.body.toString('utf8');

describe('xenstored over its UNIX socket (raw protocol client)', () => {
  let dir: string;
  let server: XenstoredSocketServer;
  const printed: string[] = [];

  beforeAll(async () => {
    dir = mkdtempSync(join(tmpdir(), 'xs-test-'));
    const path = xenstoredSocketPath({ XENSTORED_PATH: join(dir, 'socket') });
    server = await startXenstoredSocket({ path, print: (l) => printed.push(l) });
  });
  afterAll(async () => {
    await server.close();
    rmSync(dir, { recursive: true, force: true });
  });

  it('prints its path; $XENSTORED_PATH chooses it; the default lives under the temp dir', () => {
    expect(printed).toEqual([`xenstored: listening on ${join(dir, 'socket')}`]);
    expect(xenstoredSocketPath({})).toContain(tmpdir());
  });

  it('write, read, directory and errors by name', async () => {
    const c = await RawClient.open(server.path);
    expect(s(await c.call(T.WRITE, '/raw/key\0value', 1))).toBe('OK\0');
    const r = await c.call(T.READ, '/raw/key\0', 2);
    expect([r.type, r.txId, s(r)]).toEqual([T.READ, 0, 'value']);
    expect(s(await c.call(T.DIRECTORY, '/raw\0', 3))).toBe('key\0');
    const e = await c.call(T.READ, '/raw/none\0', 4);
    expect([e.type, s(e)]).toEqual([T.ERROR, 'ENOENT\0']);
    // Socket clients are privileged (INTRODUCE is Dom0-only) and have no home for relative paths.
    expect(s(await c.call(T.INTRODUCE, '5\x00123\x007\x00', 5))).toBe('OK\0');
    expect(s(await c.call(T.READ, 'relative\0', 6))).toBe('EINVAL\0');
    c.close();
  });

  it('requests concatenated in one write and cut into single bytes are all answered in order', async () => {
    const c = await RawClient.open(server.path);
    const frames = Buffer.concat([
      RawClient.frame(T.WRITE, 10, 0, Buffer.from('/frag/a\0A')),
      RawClient.frame(T.WRITE, 11, 0, Buffer.from('/frag/b\0B')),
      RawClient.frame(T.READ, 12, 0, Buffer.from('/frag/a\0')),
    ]);
    c.sock.write(frames.subarray(0, 20));
    for (let i = 20; i < frames.length; i++) c.sock.write(frames.subarray(i, i + 1));
    const replies = await Promise.all([10, 11, 12].map((id) => c.wait((m) => m.reqId === id)));
    expect(replies.map(s)).toEqual(['OK\0', 'OK\0', 'A']);
    c.close();
  });

  it('a watch fires once when set and again when another client writes below it', async () => {
    const a = await RawClient.open(server.path);
    const b = await RawClient.open(server.path);
    expect(s(await a.call(T.WATCH, '/w\0tok\0', 1))).toBe('OK\0');
    const first = await a.wait((m) => m.type === T.WATCH_EVENT);
    expect([first.reqId, first.txId, s(first)]).toEqual([0, 0, '/w\0tok\0']);
    await b.call(T.WRITE, '/w/x\0', 1);
    const ev = await a.wait((m) => m.type === T.WATCH_EVENT);
    expect(s(ev)).toBe('/w/x\0tok\0');
    a.close();
    b.close();
  });

  it('transactions: a conflicting commit gets EAGAIN', async () => {
    const a = await RawClient.open(server.path);
    const b = await RawClient.open(server.path);
    await a.call(T.WRITE, '/tx/v\x000', 1);
    const tx = Number(s(await a.call(T.TRANSACTION_START, '\0', 2)).replace('\0', ''));
    expect(tx).toBeGreaterThan(0);
    expect(s(await a.call(T.READ, '/tx/v\0', 3, tx))).toBe('0');
    expect((await a.call(T.WRITE, '/tx/v\x001', 4, tx)).txId).toBe(tx);
    await b.call(T.WRITE, '/tx/v\x00other', 1);
    const end = await a.call(T.TRANSACTION_END, 'T\0', 5, tx);
    expect([end.type, s(end)]).toEqual([T.ERROR, 'EAGAIN\0']);
    expect(s(await a.call(T.READ, '/tx/v\0', 6))).toBe('other');
    a.close();
    b.close();
  });

  it('a payload over 4096 bytes gets the connection dropped; others carry on', async () => {
    const bad = await RawClient.open(server.path);
    const good = await RawClient.open(server.path);
    const h = Buffer.alloc(16);
    h.writeUInt32LE(T.WRITE, 0);
    h.writeUInt32LE(4097, 12);
    bad.sock.write(h);
    await new Promise<void>((resolve) => bad.sock.once('close', () => resolve()));
    expect(bad.closed).toBe(true);
    expect(s(await good.call(T.READ, '/raw/key\0', 1))).toBe('value');
    good.close();
  });

  it('a client that never reads costs bounded memory', async () => {
    const setup = await RawClient.open(server.path);
    await setup.call(T.WRITE, Buffer.concat([Buffer.from('/lazy\0'), Buffer.alloc(4000, 0x61)]), 1);
    setup.close();
    const lazy = await RawClient.open(server.path);
    lazy.sock.pause();
    const reqs = Buffer.concat(Array.from({ length: 2000 }, (_, i) => RawClient.frame(T.READ, 100 + i, 0, Buffer.from('/lazy\0'))));
    lazy.sock.write(reqs);
    // Until the daemon has stopped reading it (however long a loaded machine takes).
    const lazyConn = () => [...server.daemon.connections()].find((c) => c.sc.privileged && c.hasOutput());
    for (let i = 0; i < 500 && lazyConn()?.wantsInput() !== false; i++) await new Promise((r) => setTimeout(r, 20));
    const conn = lazyConn();
    expect(conn).toBeDefined();
    // 2000 replies of 4 KiB would be 8 MiB: the daemon stopped at its cap and left the rest unread.
    expect(conn!.queuedBytes).toBeLessThanOrEqual(server.daemon.limits.maxQueuedBytes + 4112);
    expect(conn!.wantsInput()).toBe(false);
    expect(conn!.parser.buffered).toBeGreaterThan(0);
    lazy.close();
  });
});
