/**
 * The socket server's `schedule` option, as Dom0's kernel uses it: socket
 * callbacks only queue daemon work, in order; nothing reaches the daemon (and
 * no reply comes back) until the owner runs the queue.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { connect, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { startXenstoredSocket, type XenstoredSocketServer } from '../../../dom0/xenstored/socket.ts';

const XS_READ = 2;
const XS_WRITE = 11;

function frame(type: number, reqId: number, body: string): Buffer {
  const b = Buffer.from(body, 'utf8');
  const h = Buffer.alloc(16);
  h.writeUInt32LE(type, 0);
  h.writeUInt32LE(reqId, 4);
  h.writeUInt32LE(0, 8);
  h.writeUInt32LE(b.length, 12);
  return Buffer.concat([h, b]);
}

const tick = (ms = 20): Promise<void> => new Promise((r) => setTimeout(r, ms));
/** Tick until `cond` holds (up to ~10 s: a loaded machine can take more than one tick). */
async function until(cond: () => boolean): Promise<void> {
  for (let i = 0; i < 500 && !cond(); i++) await tick();
}
let server: XenstoredSocketServer | undefined;
let dir: string | undefined;
afterEach(async () => {
  await server?.close();
  if (dir) rmSync(dir, { recursive: true, force: true });
});

describe('xenstored socket: work scheduled by its owner', () => {
  it('queues every request and runs nothing until the owner does, then answers in order', async () => {
    dir = mkdtempSync(join(tmpdir(), 'xs-sched-'));
    const queue: Array<() => void> = [];
    server = await startXenstoredSocket({ path: join(dir, 's'), schedule: (w) => queue.push(w), print: () => {} });
    const sock = await new Promise<Socket>((resolve, reject) => {
      const s = connect(join(dir!, 's'), () => resolve(s));
      s.once('error', reject);
    });
    const got: Buffer[] = [];
    sock.on('data', (d: Buffer) => got.push(d));
    sock.write(frame(XS_WRITE, 1, '/k\0v'));
    sock.write(frame(XS_READ, 2, '/k\0'));
    await until(() => queue.length > 0);
    await tick();
    expect(queue.length).toBeGreaterThan(0);
    expect(got).toEqual([]);
    expect(server.daemon.store.tree.get('/k')).toBeUndefined();
    // Run what is queued until both answers are in (the second request may
    // reach the socket in a later read, queued after the first ran).
    const answered = (): number => {
      const b = Buffer.concat(got);
      let n = 0;
      for (let at = 0; at + 16 <= b.length && at + 16 + b.readUInt32LE(at + 12) <= b.length; at += 16 + b.readUInt32LE(at + 12)) n++;
      return n;
    };
    await until(() => {
      while (queue.length > 0) queue.shift()!();
      return answered() === 2;
    });
    const all = Buffer.concat(got);
    expect(all.readUInt32LE(0)).toBe(XS_WRITE);
    expect(all.readUInt32LE(4)).toBe(1);
    const second = 16 + all.readUInt32LE(12);
    expect(all.readUInt32LE(second + 4)).toBe(2);
    expect(all.subarray(second + 16).toString('utf8')).toBe('v');
    sock.destroy();
    await until(() => queue.length > 0);
    // The close, too, is the owner's to run.
    const before = [...server.daemon.connections()].length;
    while (queue.length > 0) queue.shift()!();
    expect([...server.daemon.connections()].length).toBe(before - 1);
  });
});
