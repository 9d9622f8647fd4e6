/**
 * The control server and client over a real UNIX socket in a temp dir, with
 * a fake Dom0 (FakeHost) behind the server: requests and replies, domain
 * resolution and errors, streams (watch, console) with cancel, input and
 * disconnect, and a raw client sending bad frames.
 */
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { connect, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { XenError } from '../../../shared/guest/xen.ts';
import { parseXlCfg } from '../../../dom0/toolstack/xlcfg.ts';
import { ControlClient } from '../../../dom0/xl/client.ts';
import { ControlError, encodeFrame, FrameDecoder } from '../../../dom0/xl/protocol.ts';
import { ControlServer } from '../../../dom0/xl/server.ts';
import { postedHandlers } from '../../../dom0/xl/handlers.ts';
import { FakeHost } from './fake-host.ts';

let dir: string;
let host: FakeHost;
let server: ControlServer;
let client: ControlClient;

const cfg = (name: string, extra = ''): ReturnType<typeof parseXlCfg> => parseXlCfg(`name = "${name}"\nkernel = "/k.ts"\nmemory = 4\n${extra}`);

beforeEach(async () => {
  dir = mkdtempSync(join(tmpdir(), 'xl-server-'));
  host = new FakeHost();
  server = await ControlServer.listen(host, { path: join(dir, 'control.sock') });
  client = await ControlClient.connect(server.path);
});

afterEach(async () => {
  client.close();
  await server.close();
  rmSync(dir, { recursive: true, force: true });
});

async function rejection(p: Promise<unknown>): Promise<ControlError> {
  try { await p; } catch (e) { if (e instanceof ControlError) return e; throw e; }
  throw new Error('expected a ControlError');
}

const until = async (cond: () => boolean, ms = 2000): Promise<void> => {
  const end = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > end) throw new Error('timed out');
    await new Promise((r) => setTimeout(r, 5));
  }
};

describe('requests', () => {
  it('answers hello, list and info', async () => {
    expect(await client.call('hello', {})).toEqual({ protocol: 1 });
    const doms = await client.call('list', {});
    expect(doms.map((d) => [d.domid, d.name])).toEqual([[0, 'Domain-0']]);
    expect((await client.call('info', {})).xenMajor).toBe(4);
  });

  it('creates, finds by name or id, and destroys', async () => {
    const r = await client.call('create', { config: cfg('web'), paused: true });
    expect(r).toEqual({ domid: 1, name: 'web' });
    expect(host.calls).toContain('create web paused');
    expect((await client.call('list', { domain: 'web' }))[0].domid).toBe(1);
    expect((await client.call('list', { domain: '1' }))[0].name).toBe('web');
    expect(await client.call('destroy', { domain: 'web' })).toEqual({ domid: 1 });
    expect(host.domains.has(1)).toBe(false);
  });

  it('names the domain in errors, with Xen\'s errno names', async () => {
    expect(await rejection(client.call('pause', { domain: 'nope' }))).toMatchObject({ code: 'ESRCH', message: 'no such domain', domain: 'nope' });
    expect(await rejection(client.call('destroy', { domain: '0' }))).toMatchObject({ code: 'EPERM', domid: 0 });
    await client.call('create', { config: cfg('web'), paused: false });
    expect(await rejection(client.call('create', { config: cfg('web'), paused: false }))).toMatchObject({ code: 'EEXIST', domain: 'web', domid: 1 });
    expect(await rejection(client.call('mem-set', { domain: 'web', memKiB: 1 << 20 }))).toMatchObject({ code: 'EINVAL', domid: 1, domain: 'web' });
    host.pause = () => { throw new XenError('domctl(pausedomain, d1)', -16); };
    expect(await rejection(client.call('pause', { domain: '1' }))).toMatchObject({ code: 'EBUSY', domid: 1, message: 'domctl(pausedomain, d1) failed: EBUSY (-16)' });
    expect(await rejection(client.call('create', { config: cfg('fail-build'), paused: false }))).toMatchObject({ code: 'EFAIL', domain: 'fail-build', message: 'cannot build: out of memory' });
  });

  it('checks arguments before calling Dom0', async () => {
    const raw = client as unknown as { call(cmd: string, args: unknown): Promise<unknown> };
    expect(await rejection(raw.call('pause', {}))).toMatchObject({ code: 'EINVAL', message: 'argument domain must be a string' });
    expect(await rejection(raw.call('mem-set', { domain: '0', memKiB: -1 }))).toMatchObject({ code: 'EINVAL' });
    expect(await rejection(raw.call('create', { config: { name: 'x' }, paused: false }))).toMatchObject({ code: 'EINVAL' });
    expect(await rejection(raw.call('create', { config: { ...cfg('x'), memory: 0 }, paused: false }))).toMatchObject({ code: 'EINVAL', message: expect.stringMatching(/memory = 0 is out of range/) });
    expect(await rejection(raw.call('rename', { domain: '0', name: '12' }))).toMatchObject({ code: 'EINVAL' });
    expect(await rejection(raw.call('frobnicate', {}))).toMatchObject({ code: 'ENOSYS' });
    expect(host.calls.filter((c) => c !== 'list')).toEqual([]);
  });

  it('runs requests concurrently and matches replies by id', async () => {
    const slow = host.info.bind(host);
    host.info = () => new Promise((r) => setTimeout(() => r(slow()), 50)) as never;
    const [i, l] = await Promise.all([client.call('info', {}), client.call('list', {})]);
    expect(i.nrCpus).toBe(2);
    expect(l).toHaveLength(1);
  });

  it('composes vcpu-list, sched-get and top from the handlers', async () => {
    await client.call('create', { config: cfg('web', 'vcpus = 2'), paused: false });
    const v = await client.call('vcpu-list', { domains: [] });
    expect(v.nrCpus).toBe(2);
    expect(v.domains.map((d) => [d.name, d.vcpus.length])).toEqual([['Domain-0', 1], ['web', 2]]);
    await client.call('sched-set', { domain: 'web', weight: 512 });
    const s = await client.call('sched-get', { domain: 'web' });
    expect(s).toMatchObject({ pool: { poolName: 'Pool-0' }, domains: [{ name: 'web', params: { weight: 512, cap: 0 } }] });
    const t = await client.call('top', { vcpus: true });
    expect(t.domains).toHaveLength(2);
    expect(t.vcpus?.[1]).toHaveLength(2);
    expect(typeof t.timeNs).toBe('number');
  });

  it('reads and writes xenstore, bytes intact', async () => {
    await client.call('xs-write', { path: '/tool/x', value: Uint8Array.from([0, 0xff, 0x41]) });
    expect([...await client.call('xs-read', { path: '/tool/x' })]).toEqual([0, 0xff, 0x41]);
    expect(await client.call('xs-directory', { path: '/tool' })).toEqual(['x']);
    await client.call('xs-rm', { path: '/tool' });
    expect(await rejection(client.call('xs-read', { path: '/tool/x' }))).toMatchObject({ code: 'ENOENT' });
  });
});

describe('streams', () => {
  it('delivers watch events until cancelled, then the host drops the watch', async () => {
    const events: string[] = [];
    const s = client.stream('xs-watch', { path: '/local/domain', token: 't' }, (e) => events.push(`${e.path} ${e.token}`));
    await until(() => events.length === 1);
    await client.call('xs-write', { path: '/local/domain/0/memory', value: new Uint8Array() });
    await until(() => events.length === 2);
    expect(events).toEqual(['/local/domain t', '/local/domain/0/memory t']);
    s.cancel();
    await s.done;
    await until(() => host.watches.size === 0);
  });

  it('ends streams when the client goes away', async () => {
    const other = await ControlClient.connect(server.path);
    const s = other.stream('xs-watch', { path: '/', token: 't' }, () => {});
    await until(() => host.watches.size === 1);
    other.close();
    await expect(s.done).rejects.toMatchObject({ code: 'ECONNRESET' });
    await until(() => host.watches.size === 0);
  });

  it('carries console output and input; input sent before the handler listens is kept (regression)', async () => {
    await client.call('create', { config: cfg('web'), paused: false });
    const chunks: string[] = [];
    const s = client.stream('console', { domain: 'web' }, (b) => chunks.push(new TextDecoder().decode(b)));
    s.input(new TextEncoder().encode('ls\n'));
    await until(() => chunks.join('').includes('LS'));
    expect(chunks.join('')).toBe('web console\nLS\n');
    s.input(new TextEncoder().encode('poweroff\n'));
    await s.done; // the domain shut down and was destroyed: the session ends
    expect(host.domains.has(1)).toBe(false);
  });

  it('refuses a console on a domain that does not exist', async () => {
    const s = client.stream('console', { domain: 'ghost' }, () => {});
    await expect(s.done).rejects.toMatchObject({ code: 'ESRCH', domain: 'ghost' });
  });
});

/** A client written from the wire format, to send what ours never would. */
class RawClient {
  readonly replies: unknown[] = [];
  closed = false;
  private readonly d = new FrameDecoder();
  private constructor(readonly sock: Socket) {
    sock.on('data', (b) => { for (const f of this.d.push(b)) this.replies.push(f.ok ? f.value : f); });
    sock.on('close', () => { this.closed = true; });
  }
  static open(path: string): Promise<RawClient> {
    return new Promise((resolve, reject) => { const s = connect(path, () => resolve(new RawClient(s))); s.once('error', reject); });
  }
}

describe('bad frames', () => {
  it('answers a body that is not MessagePack with an error, and goes on', async () => {
    const raw = await RawClient.open(server.path);
    const h = Buffer.alloc(4);
    h.writeUInt32BE(2, 0);
    raw.sock.write(Buffer.concat([h, Buffer.from([0x92, 0x01])])); // an array of 2 with one element
    raw.sock.write(encodeFrame({ id: 5, cmd: 'hello' }));
    await until(() => raw.replies.length === 2);
    expect(raw.replies[0]).toMatchObject({ id: null, ok: false, error: { code: 'EPROTO' } });
    expect(raw.replies[1]).toEqual({ id: 5, ok: true, result: { protocol: 1 } });
    raw.sock.destroy();
  });

  it('answers malformed requests without crashing', async () => {
    const raw = await RawClient.open(server.path);
    raw.sock.write(Buffer.concat([encodeFrame('just a string'), encodeFrame({ id: -1, cmd: 'list' }), encodeFrame({ id: 9, cmd: 7 }), encodeFrame({ id: 10, cmd: 'list', args: [1] })]));
    await until(() => raw.replies.length === 4);
    expect(raw.replies.map((r) => (r as { id: unknown }).id)).toEqual([null, null, 9, 10]);
    expect(raw.replies.every((r) => (r as { ok: boolean }).ok === false)).toBe(true);
    raw.sock.destroy();
  });

  it('closes the connection on an oversized length', async () => {
    const raw = await RawClient.open(server.path);
    const h = Buffer.alloc(4);
    h.writeUInt32BE(0xffffffff, 0);
    raw.sock.write(h);
    await until(() => raw.closed);
    expect(raw.replies[0]).toMatchObject({ id: null, ok: false, error: { code: 'EPROTO' } });
    // The server itself goes on.
    expect(await client.call('hello', {})).toEqual({ protocol: 1 });
  });
});

describe('the socket', () => {
  it('says plainly that no host is running', async () => {
    const e = await rejection(ControlClient.connect(join(dir, 'nothing.sock')));
    expect(e.code).toBe('ENOTCONN');
    expect(e.message).toMatch(/no host is running .*npm start/);
  });

  it('replaces a stale socket file, refuses a live one', async () => {
    await expect(ControlServer.listen(host, { path: server.path })).rejects.toThrow(/another host is already listening/);
    const stale = join(dir, 'stale.sock');
    writeFileSync(stale, '');
    const s2 = await ControlServer.listen(host, { path: stale });
    const c2 = await ControlClient.connect(stale);
    expect(await c2.call('hello', {})).toEqual({ protocol: 1 });
    c2.close();
    await s2.close();
  });

  it('fails pending requests when the server closes', async () => {
    host.info = () => new Promise(() => {}) as never;
    const p = client.call('info', {});
    await until(() => server.connections === 1);
    await server.close();
    await expect(p).rejects.toMatchObject({ code: 'ECONNRESET' });
    server = await ControlServer.listen(host, { path: join(dir, 'control.sock') });
  });
});

describe('postedHandlers (Dom0 runs handler work in its loop, not in I/O callbacks)', () => {
  it('runs every call, keystroke and abort as posted work', async () => {
    let inLoop = false;
    const queue: Array<() => void> = [];
    const pump = setInterval(() => {
      inLoop = true;
      try { while (queue.length > 0) (queue.shift() as () => void)(); } finally { inLoop = false; }
    }, 2);
    const seen: Array<[string, boolean]> = [];
    const spied = new Proxy(host, {
      get(t, k, r) {
        const v = Reflect.get(t, k, r);
        return typeof v === 'function' ? (...a: unknown[]) => { seen.push([String(k), inLoop]); return v.apply(t, a); } : v;
      },
    });
    const s2 = await ControlServer.listen(postedHandlers(spied, (w) => queue.push(w)), { path: join(dir, 'posted.sock') });
    const c2 = await ControlClient.connect(s2.path);
    try {
      await c2.call('create', { config: cfg('web'), paused: false });
      const inputs: boolean[] = [];
      const orig = host.console.bind(host);
      host.console = (id, st) => { st.onInput(() => inputs.push(inLoop)); return orig(id, st); };
      const out: string[] = [];
      const st = c2.stream('console', { domain: 'web' }, (b) => out.push(new TextDecoder().decode(b)));
      st.input(new TextEncoder().encode('x'));
      await until(() => out.join('').includes('X'));
      st.cancel();
      await st.done;
      await until(() => host.domains.get(1)?.consoles.size === 0);
      expect(inputs).toEqual([true]);
      expect(seen.length).toBeGreaterThan(3);
      expect(seen.filter(([, l]) => !l)).toEqual([]);
    } finally {
      c2.close();
      await s2.close();
      clearInterval(pump);
    }
  });
});
