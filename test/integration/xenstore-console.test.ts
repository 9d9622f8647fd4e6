/**
 * XenStore and the console on the real machine (platform, Dom0's kernel and
 * DomU vCPU threads): two guests talk to xenstored over their rings and write
 * their console rings; the test process talks to the running host's
 * xenstored over its UNIX socket in raw protocol bytes (not our client),
 * watching @introduceDomain/@releaseDomain and reading and writing nodes; it
 * shuts each guest down the PV way (control/shutdown), and checks that no
 * node, event channel, frame or thread of it is left.
 */
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { connect, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { Platform } from '../../hypervisor/platform/platform.ts';
import { hostConfig } from '../../hypervisor/config.ts';
import { ConsoleTap } from '../helpers/console-tap.ts';
import { encodeDom0Cmdline } from '../../dom0/kernel.ts';
import { ECS_FREE, ECS_RESERVED, ECS_VIRQ, portState } from '../../hypervisor/evtchn/evtchn.ts';
import { D, DOMSTATE_FREE, EVTCHN_2L_PORTS, G, type HvState } from '../../hypervisor/state.ts';
import { frameInvariantViolations } from '../helpers/machine.ts';
import { until } from '../helpers/until.ts';

// xs_wire.h message types, written out here on purpose: this client shares no code with ours.
const XS_DIRECTORY = 1;
const XS_READ = 2;
const XS_GET_PERMS = 3;
const XS_WATCH = 4;
const XS_WRITE = 11;
const XS_WATCH_EVENT = 15;
const XS_ERROR = 16;
const XS_IS_DOMAIN_INTRODUCED = 17;

/** A xenstore client in raw protocol bytes: 16-byte header (type, req_id, tx_id, len; little-endian), payload. */
class RawXenstoreClient {
  private buf = Buffer.alloc(0);
  private nextId = 1;
  private readonly pending = new Map<number, (m: { type: number; payload: Buffer }) => void>();
  readonly events: Array<[string, string]> = [];

  private constructor(private readonly sock: Socket) {
    sock.on('data', (d: Buffer) => {
      this.buf = Buffer.concat([this.buf, d]);
      while (this.buf.length >= 16) {
        const type = this.buf.readUInt32LE(0);
        const reqId = this.buf.readUInt32LE(4);
        const len = this.buf.readUInt32LE(12);
        if (this.buf.length < 16 + len) break;
        const payload = this.buf.subarray(16, 16 + len);
        this.buf = this.buf.subarray(16 + len);
        if (type === XS_WATCH_EVENT) {
          const [path, token] = payload.toString('utf8').split('\0');
          this.events.push([path, token]);
        } else {
          this.pending.get(reqId)?.({ type, payload });
          this.pending.delete(reqId);
        }
      }
    });
  }

  static async connect(path: string): Promise<RawXenstoreClient> {
    const sock = await new Promise<Socket>((resolve, reject) => {
      const s = connect(path);
      s.once('connect', () => resolve(s));
      s.once('error', reject);
    });
    return new RawXenstoreClient(sock);
  }

  /** Send one request; resolves with the reply (an XS_ERROR reply too). */
  request(type: number, ...parts: Array<string | Buffer>): Promise<{ type: number; payload: Buffer }> {
    const payload = Buffer.concat(parts.map((p) => (typeof p === 'string' ? Buffer.from(p, 'utf8') : p)));
    const h = Buffer.alloc(16);
    const id = this.nextId++;
    h.writeUInt32LE(type, 0);
    h.writeUInt32LE(id, 4);
    h.writeUInt32LE(0, 8);
    h.writeUInt32LE(payload.length, 12);
    return new Promise((resolve) => {
      this.pending.set(id, resolve);
      this.sock.write(Buffer.concat([h, payload]));
    });
  }

  /** The value, or `!ERRNO` for an error reply. */
  async read(path: string): Promise<string> {
    const r = await this.request(XS_READ, `${path}\0`);
    return r.type === XS_ERROR ? `!${r.payload.toString('utf8').replace(/\0$/, '')}` : r.payload.toString('utf8');
  }

  /** NUL-separated strings of the reply, or [`!ERRNO`]. */
  async strings(type: number, ...args: string[]): Promise<string[]> {
    const r = await this.request(type, ...args.map((a) => `${a}\0`));
    if (r.type === XS_ERROR) return [`!${r.payload.toString('utf8').replace(/\0$/, '')}`];
    return r.payload.toString('utf8').split('\0').filter((s) => s.length > 0);
  }

  async write(path: string, value: string): Promise<string> {
    const r = await this.request(XS_WRITE, `${path}\0`, value);
    return r.payload.toString('utf8').replace(/\0$/, '');
  }

  close(): void { this.sock.destroy(); }
}

/** A domain's ports in use, as [port, state]. */
function openPorts(hv: HvState, slot: number): Array<[number, number]> {
  const out: Array<[number, number]> = [];
  for (let p = 1; p < EVTCHN_2L_PORTS; p++) {
    const st = portState(hv, slot, p);
    if (st !== ECS_FREE && st !== ECS_RESERVED) out.push([p, st]);
  }
  return out;
}

const dir = mkdtempSync(join(tmpdir(), 'xents-xs-test-'));
const saved = { XENSTORED_PATH: process.env.XENSTORED_PATH, XENTS_LOG_DIR: process.env.XENTS_LOG_DIR };
afterAll(() => {
  for (const [k, v] of Object.entries(saved)) {
    if (v === undefined) delete process.env[k];
    else process.env[k] = v;
  }
  rmSync(dir, { recursive: true, force: true });
});

describe('xenstored and xenconsoled in the running Dom0', () => {
  it('serves guests over their rings and host tools over the socket; nothing of a destroyed guest is left', async () => {
    const sockPath = join(dir, 'xenstored.sock');
    process.env.XENSTORED_PATH = sockPath;
    process.env.XENTS_LOG_DIR = dir;
    const platform = new Platform(hostConfig({ memMiB: 64, pcpus: 2, maxDomains: 16, p2mEntries: 8192 }));
    const hv = platform.hv;
    const tap = new ConsoleTap(hv);
    const guests = [
      { name: 'alpha', kernel: 'test/fixtures/guests/xs-client.ts', memoryMiB: 1, cmdline: 'peer=2' },
      { name: 'beta', kernel: 'test/fixtures/guests/xs-client.ts', memoryMiB: 1, cmdline: 'peer=1' },
    ];
    platform.boot({ kernel: 'dom0/kernel.ts', memMiB: 4, cmdline: encodeDom0Cmdline({ guests, keep: true }) });
    let xs: RawXenstoreClient | undefined;
    try {
      await until('the xenstored socket', () => existsSync(sockPath) && tap.text.includes(`xenstored: listening on ${sockPath}`));
      xs = await RawXenstoreClient.connect(sockPath);
      expect(await xs.strings(XS_WATCH, '@introduceDomain', 'intro')).toEqual(['OK']);
      expect(await xs.strings(XS_WATCH, '@releaseDomain', 'release')).toEqual(['OK']);

      // The guests did their XenStore work over their rings.
      await until('both guests to report', () => (tap.text.match(/XSTEST /g) ?? []).length === 2);
      const reports = [...tap.text.matchAll(/\(d(\d)\) XSTEST (\{.*\})/g)].map((m) => JSON.parse(m[2]) as Record<string, unknown>);
      for (const r of reports) {
        expect(r).toMatchObject({ writeOwn: 'ok', readOwn: `hello from ${String(r.name)}`, readPeer: 'EACCES', writePeer: 'EACCES', readPeerName: 'EACCES' });
        expect(r.wroteLong).toBe(3001);
      }
      expect(reports.map((r) => [r.name, r.domid]).sort()).toEqual([['alpha', 1], ['beta', 2]]);

      // The host tool reads what the toolstack and the guests wrote.
      expect(await xs.read('/local/domain/1/name')).toBe('alpha');
      expect(await xs.read('/local/domain/2/name')).toBe('beta');
      expect(await xs.read('/local/domain/0/name')).toBe('Domain-0');
      expect(await xs.read('/local/domain/2/data/greeting')).toBe('hello from beta');
      expect(await xs.read('/local/domain/1/data/intruder')).toBe('!ENOENT');
      expect(await xs.strings(XS_GET_PERMS, '/local/domain/1')).toEqual(['n0', 'r1']);
      expect(await xs.strings(XS_IS_DOMAIN_INTRODUCED, '1')).toEqual(['T']);
      expect(xs.events).toContainEqual(['@introduceDomain', 'intro']);

      // Console output went to each guest's log, the long line whole (flow control).
      const alphaLog = join(dir, 'console', 'guest-alpha.log');
      await until('alpha\'s console log', () => existsSync(alphaLog) && readFileSync(alphaLog, 'utf8').includes('x'.repeat(3000)));
      expect(readFileSync(alphaLog, 'utf8')).toBe(`console: alpha ready\n${'x'.repeat(3000)}\n`);
      expect(tap.text).toContain('xenconsoled: domain 1 (alpha) console connected');

      // Shut alpha down the PV way; Dom0 destroys it and every daemon lets go.
      const releases = xs.events.filter(([p]) => p === '@releaseDomain').length;
      expect(await xs.write('/local/domain/1/control/shutdown', 'poweroff')).toBe('OK');
      await until('domain 1 to be destroyed', () => tap.text.includes('Domain 1 destroyed'));
      await until('xenstored to forget domain 1', async () => (await xs!.strings(XS_IS_DOMAIN_INTRODUCED, '1'))[0] === 'F');
      expect(xs.events.filter(([p]) => p === '@releaseDomain').length).toBeGreaterThan(releases);
      expect(tap.text).toMatch(/dom0: domain 1 \(alpha\) has shut down, reason poweroff; destroying/);
      expect(tap.text).toContain('xenconsoled: domain 1 (alpha) console closed');
      expect(readFileSync(alphaLog, 'utf8')).toContain('console: alpha bye\n');
      expect(await xs.read('/local/domain/1/name')).toBe('!ENOENT');
      expect(await xs.strings(XS_DIRECTORY, '/local/domain')).toEqual(['0', '2']);
      expect(await xs.strings(XS_DIRECTORY, '/local/domain/0/backend/console')).toEqual(['2']);
      expect(await xs.strings(XS_DIRECTORY, '/vm')).toHaveLength(1);
      expect(hv.domidMap[1]).toBe(-1);

      // And beta.
      expect(await xs.write('/local/domain/2/control/shutdown', 'poweroff')).toBe('OK');
      await until('domain 2 to be destroyed', () => tap.text.includes('Domain 2 destroyed'));
      await until('xenstored to forget domain 2', async () => (await xs!.strings(XS_IS_DOMAIN_INTRODUCED, '2'))[0] === 'F');
      expect(await xs.strings(XS_DIRECTORY, '/local/domain')).toEqual(['0']);
      expect(await xs.strings(XS_DIRECTORY, '/vm')).toEqual([]);
      expect(await xs.strings(XS_DIRECTORY, '/libxl')).toEqual([]);

      // Nothing of either guest is left: Dom0 holds only its VIRQ ports (DOM_EXC, CON_RING, TIMER),
      // every frame but Dom0's is free, only Dom0's thread runs.
      const dom0Slot = hv.domidMap[0];
      await until('Dom0 to close the guests\' ports', () => openPorts(hv, dom0Slot).every(([, st]) => st === ECS_VIRQ));
      expect(openPorts(hv, dom0Slot).map(([, st]) => st)).toEqual([ECS_VIRQ, ECS_VIRQ, ECS_VIRQ]);
      for (let s = 0; s < hv.cfg.maxDomains; s++) {
        if (Atomics.load(hv.dom, hv.d(s, D.state)) !== DOMSTATE_FREE) expect(hv.dom[hv.d(s, D.domid)]).toBe(0);
      }
      expect(frameInvariantViolations(hv)).toEqual([]);
      const dom0Pages = hv.dom[hv.d(dom0Slot, D.tot_pages)];
      expect(Atomics.load(hv.g, G.XENHEAP_PAGES)).toBe(1);
      expect(Atomics.load(hv.g, G.FREE_PAGES)).toBe(hv.nrFrames - dom0Pages - 1);
      expect(platform.liveThreads).toBe(1);
    } finally {
      xs?.close();
      tap.stop();
      await platform.stop();
    }
    expect(platform.liveThreads).toBe(0);
  }, 60_000);
});
