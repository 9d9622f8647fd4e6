/**
 * Benchmarks of the toolstack and XenStore on a running host (issue #5):
 *
 * - `toolstack`: domain creation time, from the `create` request on the
 *   control socket (and from spawning the real `xl` CLI) to the guest's first
 *   instruction; baseline: a plain Worker loading the same guest module
 *   through boot-worker.mjs. Then how many idle 1 MiB PV domains the machine
 *   holds (bounded), the RSS each costs and the time per create; baseline:
 *   the idle host's RSS.
 * - `xenstore`: READ/WRITE operations per second over xenstored's UNIX socket
 *   (raw protocol client, one at a time and pipelined; baseline: a raw
 *   UNIX-socket echo of the same frames, served from another thread as
 *   xenstored is) and over a guest's ring (GuestXenbus; baseline: the pure
 *   store's handle() without any transport).
 *
 * The host is booted as `npm start` does, with Dom0 kept up (keep=1), its
 * sockets in a temp dir.
 */
import { execFile } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { connect, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { Worker } from 'node:worker_threads';
import { encodeDom0Cmdline } from '../../dom0/kernel.ts';
import { resolveConfigPaths } from '../../dom0/toolstack/load.ts';
import { parseXlCfg } from '../../dom0/toolstack/xlcfg.ts';
import { ControlClient } from '../../dom0/xl/client.ts';
import { XenStore } from '../../dom0/xenstored/store.ts';
import { ConsoleTap } from '../helpers/console-tap.ts';
import { hostConfig, type HostConfig } from '../../hypervisor/config.ts';
import { Platform } from '../../hypervisor/platform/platform.ts';
import { XS } from '../../shared/xenstore/wire.ts';
import { machineLine, table, updateBenchSection } from './report.ts';
import { until } from '../helpers/until.ts';

const ROOT = resolve(import.meta.dirname, '../..');
const BOOT_WORKER = new URL('../../hypervisor/platform/boot-worker.mjs', import.meta.url);
const PROBE = new URL('./guests/worker-probe.ts', import.meta.url).href;
const FIRST_KERNEL = 'test/bench/guests/first-instruction.ts';
const RING_KERNEL = 'test/bench/guests/xs-ring.ts';

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

function quantile(xs: readonly number[], q: number): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.floor(s.length * q))];
}
const median = (xs: readonly number[]): number => quantile(xs, 0.5);
const p90 = (xs: readonly number[]): number => quantile(xs, 0.9);
const ms = (x: number): string => `${x.toFixed(1)} ms`;
const kops = (x: number): string => `${(x / 1000).toFixed(1)} k/s`;
const mib = (bytes: number): string => `${(bytes / (1 << 20)).toFixed(1)} MiB`;

// ---------------------------------------------------------------------------
// A running host.

interface Host {
  readonly platform: Platform;
  readonly client: ControlClient;
  readonly dir: string;
  readonly xenstoredPath: string;
  /** The hypervisor console so far. */
  log(): string;
  /** hv.now(): the guests' rdtsc clock, ns. */
  now(): bigint;
  /** Create a PV guest from xl.cfg lines; resolves with its domid when `create` replies. */
  create(name: string, kernel: string, memory: number, cmdline?: string): Promise<number>;
  /** Wait for `(d<domid>) <prefix> <rest>` on the console; returns rest. */
  marker(domid: number, prefix: string, timeoutMs?: number): Promise<string>;
  /** Destroy and wait until only Dom0 is left. */
  destroyAll(domids: readonly number[]): Promise<void>;
}

function cfgText(name: string, kernel: string, memory: number, cmdline?: string): string {
  return [
    `name = "${name}"`, 'type = "pv"', `kernel = "${resolve(ROOT, kernel)}"`, `memory = ${memory}`, 'vcpus = 1',
    'on_poweroff = "destroy"', 'on_reboot = "destroy"', 'on_crash = "destroy"',
    ...(cmdline ? [`cmdline = "${cmdline}"`] : []), '',
  ].join('\n');
}

async function withHost<T>(cfg: Partial<HostConfig>, fn: (h: Host) => Promise<T>): Promise<T> {
  const dir = mkdtempSync(join(tmpdir(), 'xents-bench-'));
  const keys = ['XENSTORED_PATH', 'XENTS_CONTROL_PATH', 'XENTS_LOG_DIR'] as const;
  const saved = Object.fromEntries(keys.map((k) => [k, process.env[k]]));
  const xenstoredPath = join(dir, 'xenstored.sock');
  process.env.XENSTORED_PATH = xenstoredPath;
  process.env.XENTS_CONTROL_PATH = join(dir, 'control.sock');
  process.env.XENTS_LOG_DIR = dir;
  const platform = new Platform(hostConfig({ memMiB: 64, pcpus: 2, maxDomains: 16, p2mEntries: 8192, ...cfg }));
  const hv = platform.hv;
  const tap = new ConsoleTap(hv, 2);
  const log = (): string => tap.text;
  let client: ControlClient | undefined;
  platform.boot({ kernel: 'dom0/kernel.ts', memMiB: 4, cmdline: encodeDom0Cmdline({ guests: [], keep: true, shutdownTimeoutS: 5 }) });
  try {
    await until('the control socket', () => existsSync(process.env.XENTS_CONTROL_PATH!) && log().includes('xl: control socket listening on'));
    await until('the xenstored socket', () => existsSync(xenstoredPath));
    const c = await ControlClient.connect(process.env.XENTS_CONTROL_PATH);
    client = c;
    const host: Host = {
      platform, client: c, dir, xenstoredPath, log, now: () => hv.now(),
      async create(name, kernel, memory, cmdline) {
        const file = join(dir, `${name}.cfg`);
        const config = resolveConfigPaths(parseXlCfg(cfgText(name, kernel, memory, cmdline), { file }), ROOT, file);
        return (await c.call('create', { config, paused: false })).domid;
      },
      async marker(domid, prefix, timeoutMs = 20_000) {
        const re = new RegExp(`^\\(d${domid}\\) ${prefix} (.*)$`, 'm');
        let m: RegExpExecArray | null = null;
        await until(`${prefix} from domain ${domid}`, () => (m = re.exec(log())) !== null, timeoutMs);
        return m![1];
      },
      async destroyAll(domids) {
        for (const d of domids) {
          try { await c.call('destroy', { domain: String(d) }); } catch { /* already gone */ }
        }
        await until('only Dom0 left', () => platform.domainCount() === 1 && platform.liveThreads === 1, 60_000);
      },
    };
    return await fn(host);
  } finally {
    tap.stop();
    client?.close();
    await platform.stop();
    for (const [k, v] of Object.entries(saved)) {
      if (v === undefined) delete process.env[k];
      else process.env[k] = v;
    }
    rmSync(dir, { recursive: true, force: true });
  }
}

// ---------------------------------------------------------------------------
// Domain creation and idle domains.

/** Baseline: a plain Worker through boot-worker.mjs importing the guest module; ms to its first line. */
async function workerSpawnMs(): Promise<number> {
  const t0 = process.hrtime.bigint();
  const w = new Worker(BOOT_WORKER, { workerData: { entry: PROBE }, stdout: false, stderr: false });
  const t = await new Promise<bigint>((res, rej) => {
    w.once('message', (m: { t: bigint }) => res(m.t));
    w.once('error', rej);
  });
  await w.terminate();
  return Number(t - t0) / 1e6;
}

/** The real CLI in a child process. */
function xlCli(...args: string[]): Promise<{ code: number; stderr: string }> {
  return new Promise((done) => {
    execFile(process.execPath, [join(ROOT, 'dom0/xl/bin.mjs'), ...args], { cwd: ROOT, env: process.env, timeout: 60_000 }, (err, _out, stderr) => {
      done({ code: err ? (typeof err.code === 'number' ? err.code : 1) : 0, stderr: String(stderr) });
    });
  });
}

const CREATE_RUNS = 12;
const CLI_RUNS = 4;
const IDLE_MAX = 64;
const IDLE_BUDGET_MS = 45_000;

export async function benchToolstack(): Promise<string> {
  // Baseline first (warm-up spawn not counted).
  await workerSpawnMs();
  const base: number[] = [];
  for (let i = 0; i < CREATE_RUNS; i++) base.push(await workerSpawnMs());

  const rssBeforeHost = process.memoryUsage().rss;
  const r = await withHost({ memMiB: 128, maxDomains: IDLE_MAX + 4, p2mEntries: 4096 }, async (h) => {
    // Warm-up create (the guest module's first compile), not counted.
    const w = await h.create('warm', FIRST_KERNEL, 1);
    await h.marker(w, 'FIRST');
    await h.destroyAll([w]);

    const first: number[] = [];
    const reply: number[] = [];
    for (let i = 0; i < CREATE_RUNS; i++) {
      const t0 = h.now();
      const d = await h.create(`first-${i}`, FIRST_KERNEL, 1);
      reply.push(Number(h.now() - t0) / 1e6);
      first.push(Number(BigInt(await h.marker(d, 'FIRST')) - t0) / 1e6);
      await h.destroyAll([d]);
    }
    const cli: number[] = [];
    for (let i = 0; i < CLI_RUNS; i++) {
      const file = join(h.dir, `cli-${i}.cfg`);
      writeFileSync(file, cfgText(`cli-${i}`, FIRST_KERNEL, 1));
      const t0 = h.now();
      const res = await xlCli('create', '-q', file);
      if (res.code !== 0) throw new Error(`xl create failed: ${res.stderr}`);
      const m = /created cli-\d+ as domain (\d+)/.exec([...h.log().matchAll(new RegExp(`created cli-${i} as domain (\\d+)`, 'g'))].at(-1)?.[0] ?? '');
      if (!m) throw new Error('xl create: no domain in the log');
      const d = Number(m[1]);
      cli.push(Number(BigInt(await h.marker(d, 'FIRST')) - t0) / 1e6);
      await h.destroyAll([d]);
    }

    // Idle domains, one by one, until creation fails or the bound.
    await sleep(300);
    const rssIdle = process.memoryUsage().rss;
    const idle: number[] = [];
    const createMs: number[] = [];
    let stop = `bound of ${IDLE_MAX} reached`;
    const start = Date.now();
    while (idle.length < IDLE_MAX) {
      if (Date.now() - start > IDLE_BUDGET_MS) { stop = `time budget (${IDLE_BUDGET_MS / 1000} s) reached`; break; }
      const t0 = h.now();
      try {
        const d = await h.create(`idle-${idle.length}`, FIRST_KERNEL, 1);
        await h.marker(d, 'FIRST', 10_000);
        idle.push(d);
        createMs.push(Number(h.now() - t0) / 1e6);
      } catch (e) {
        stop = `create failed: ${(e as Error).message.split('\n')[0]}`;
        break;
      }
    }
    await sleep(300);
    const rssFull = process.memoryUsage().rss;
    const t0 = Date.now();
    await h.destroyAll(idle);
    const destroyMs = Date.now() - t0;
    return { first, reply, cli, rssIdle, rssFull, idle: idle.length, createMs, stop, destroyMs };
  });

  const perDom = (r.rssFull - r.rssIdle) / Math.max(1, r.idle);
  const ratio = median(r.first) / median(base);
  const md = `## Domain creation and idle domains

${machineLine()}. A host booted as \`npm start\` does (Dom0 kept up, 2 pCPUs,
128 MiB). Creation: ${CREATE_RUNS} \`create\` requests through the control socket
client (dom0/xl/client.ts), each a 1 MiB PV guest whose first instruction reads
the system time (the host's clock) and prints it; timed from the request to that
instant, then destroyed. Also ${CLI_RUNS} runs of the real \`xl create\` CLI (a child
process, so Node's start-up included). Baseline: a plain Worker loading the same
guest module through boot-worker.mjs (what a vCPU thread costs at minimum), same run.

${table(['path', 'median', 'p90', 'baseline: bare Worker median', 'p90', 'ratio'], [
    ['control socket: create → first instruction', ms(median(r.first)), ms(p90(r.first)), ms(median(base)), ms(p90(base)), `${ratio.toFixed(1)}x`],
    ['control socket: create → reply', ms(median(r.reply)), ms(p90(r.reply)), '', '', ''],
    ['`xl create` CLI → first instruction', ms(median(r.cli)), ms(p90(r.cli)), ms(median(base)), ms(p90(base)), `${(median(r.cli) / median(base)).toFixed(1)}x`],
  ])}

Idle PV domains: 1 MiB guests (blocked in SCHEDOP_block after their first line)
created one by one until creation fails, ${IDLE_MAX} domains, or ${IDLE_BUDGET_MS / 1000} s.
Baseline: the idle host's RSS (Dom0 alone), same run.

${table(['idle domains held', 'stopped by', 'RSS idle host (baseline)', 'RSS with them', 'RSS per domain', 'create → first instruction, median', 'p90', 'destroy all'], [
    [r.idle, r.stop, mib(r.rssIdle), mib(r.rssFull), mib(perDom), ms(median(r.createMs)), ms(p90(r.createMs)), `${r.destroyMs} ms`],
  ])}

(Process RSS before the host was booted: ${mib(rssBeforeHost)}.)`;
  updateBenchSection('toolstack', md);
  return md;
}

// ---------------------------------------------------------------------------
// XenStore operations per second.

/** A raw xs_wire client: frames by hand, replies in order (no watches here). */
class RawXs {
  private buf: Buffer = Buffer.alloc(0);
  private readonly waiting: Array<(b: Buffer) => void> = [];
  private constructor(private readonly sock: Socket) {
    sock.setNoDelay(true);
    sock.on('data', (d: Buffer) => {
      this.buf = this.buf.length ? Buffer.concat([this.buf, d]) : d;
      while (this.buf.length >= 16) {
        const len = this.buf.readUInt32LE(12);
        if (this.buf.length < 16 + len) break;
        const m = this.buf.subarray(0, 16 + len);
        this.buf = this.buf.subarray(16 + len);
        this.waiting.shift()?.(m);
      }
    });
  }

  static open(path: string): Promise<RawXs> {
    return new Promise((res, rej) => {
      const s = connect(path, () => res(new RawXs(s)));
      s.once('error', rej);
    });
  }

  static frame(type: number, reqId: number, body: Buffer): Buffer {
    const f = Buffer.alloc(16 + body.length);
    f.writeUInt32LE(type, 0);
    f.writeUInt32LE(reqId, 4);
    f.writeUInt32LE(0, 8);
    f.writeUInt32LE(body.length, 12);
    body.copy(f, 16);
    return f;
  }

  request(frame: Buffer): Promise<Buffer> {
    return new Promise((res) => {
      this.waiting.push(res);
      this.sock.write(frame);
    });
  }

  /** `n` requests, one at a time; ops/s. */
  async serial(n: number, frame: (i: number) => Buffer): Promise<number> {
    const t0 = performance.now();
    for (let i = 0; i < n; i++) {
      const r = await this.request(frame(i));
      if (r.readUInt32LE(0) === XS.XS_ERROR) throw new Error(`xenstore error ${r.subarray(16).toString()}`);
    }
    return n / ((performance.now() - t0) / 1000);
  }

  /** `n` requests, `depth` in flight; ops/s. */
  async pipelined(n: number, depth: number, frame: (i: number) => Buffer): Promise<number> {
    const t0 = performance.now();
    let next = 0;
    const lane = async (): Promise<void> => {
      while (next < n) {
        const i = next++;
        const r = await this.request(frame(i));
        if (r.readUInt32LE(0) === XS.XS_ERROR) throw new Error(`xenstore error ${r.subarray(16).toString()}`);
      }
    };
    await Promise.all(Array.from({ length: depth }, lane));
    return n / ((performance.now() - t0) / 1000);
  }

  close(): void {
    this.sock.destroy();
  }
}

const ECHO_SERVER = `
const net = require('node:net');
const { parentPort, workerData } = require('node:worker_threads');
const s = net.createServer((c) => { c.setNoDelay(true); c.on('data', (d) => c.write(d)); c.on('error', () => {}); });
s.listen(workerData.path, () => parentPort.postMessage('up'));
`;

/** Each rate is the median of this many repetitions (the machine is noisy). */
const REPS = 5;
const SOCK_OPS = 3000;
const SOCK_PIPE_OPS = 15_000;
const DEPTH = 32;
const RING_OPS = 2000;
const RING_DEPTH = 16;
const STORE_OPS = 100_000;

interface Rates { readSerial: number; writeSerial: number; readPipelined: number }

async function socketRates(path: string, node: string): Promise<Rates> {
  const c = await RawXs.open(path);
  try {
    const nodeZ = Buffer.from(`${node}\0`);
    const readF = (i: number): Buffer => RawXs.frame(XS.XS_READ, i, nodeZ);
    const writeF = (i: number): Buffer => RawXs.frame(XS.XS_WRITE, i, Buffer.concat([nodeZ, Buffer.from(`v${i}`)]));
    await c.request(writeF(0));
    await c.serial(500, readF); // warm-up
    await c.pipelined(2000, DEPTH, readF);
    const rs: number[] = [];
    const ws: number[] = [];
    const rp: number[] = [];
    for (let rep = 0; rep < REPS; rep++) {
      rs.push(await c.serial(SOCK_OPS, readF));
      ws.push(await c.serial(SOCK_OPS, writeF));
      rp.push(await c.pipelined(SOCK_PIPE_OPS, DEPTH, readF));
    }
    return { readSerial: median(rs), writeSerial: median(ws), readPipelined: median(rp) };
  } finally {
    c.close();
  }
}

/** Baseline: the same frames echoed by a plain net server on another thread. */
async function echoRates(dir: string, node: string): Promise<Rates> {
  const path = join(dir, 'echo.sock');
  const w = new Worker(ECHO_SERVER, { eval: true, workerData: { path } });
  await new Promise((r) => w.once('message', r));
  try {
    return await socketRates(path, node);
  } finally {
    await w.terminate();
  }
}

/** Baseline: the pure store's handle(), no transport. */
function storeRates(node: string): Rates {
  const store = new XenStore();
  const conn = store.connectSocket();
  const enc = new TextEncoder();
  const nodeZ = enc.encode(`${node}\0`);
  const writeP = (i: number): Uint8Array => { const v = enc.encode(`v${i}`); const p = new Uint8Array(nodeZ.length + v.length); p.set(nodeZ); p.set(v, nodeZ.length); return p; };
  store.handle(conn, { type: XS.XS_WRITE, reqId: 0, txId: 0, payload: writeP(0) });
  const run = (n: number, msg: (i: number) => Uint8Array, type: number): number => {
    const t0 = performance.now();
    for (let i = 0; i < n; i++) {
      const out = store.handle(conn, { type, reqId: i, txId: 0, payload: msg(i) });
      if (out[0]?.msg.type === XS.XS_ERROR) throw new Error('store error');
    }
    return n / ((performance.now() - t0) / 1000);
  };
  run(20_000, () => nodeZ, XS.XS_READ); // warm-up
  const rs: number[] = [];
  const ws: number[] = [];
  for (let rep = 0; rep < REPS; rep++) {
    rs.push(run(STORE_OPS, () => nodeZ, XS.XS_READ));
    ws.push(run(STORE_OPS, writeP, XS.XS_WRITE));
  }
  return { readSerial: median(rs), writeSerial: median(ws), readPipelined: median(rs) };
}

export async function benchXenstore(): Promise<string> {
  const r = await withHost({}, async (h) => {
    const store = storeRates('/bench/node');
    const echo = await echoRates(h.dir, '/bench/node');
    const sock = await socketRates(h.xenstoredPath, '/bench/node');
    const d = await h.create('xs-ring', RING_KERNEL, 2, `ops=${RING_OPS} depth=${RING_DEPTH} reps=${REPS}`);
    const ring = JSON.parse(await h.marker(d, 'BENCH', 60_000)) as Rates;
    await until('the ring guest to go', () => h.platform.domainCount() === 1 && h.platform.liveThreads === 1, 30_000);
    return { store, echo, sock, ring };
  });
  const store = r.store;
  /** Time per operation relative to the baseline's (>1: slower). */
  const x = (a: number, b: number): string => `${(b / a).toFixed(1)}x`;
  const md = `## XenStore operations per second

${machineLine()}. A host booted as \`npm start\` does (Dom0 kept up). A small node
(a few bytes) read and written. UNIX socket: a raw xs_wire client (frames by
hand) on xenstored's socket, ${SOCK_OPS} requests one at a time and
${SOCK_PIPE_OPS} reads ${DEPTH} in flight, each the median of ${REPS} repetitions; baseline: the same frames echoed by a
plain \`net\` server on another thread (xenstored runs in Dom0's vCPU thread),
same run. Ring: a DomU doing ${RING_OPS} requests through GuestXenbus (its shared
page and event channel to Dom0's xenstored), one at a time and ${RING_DEPTH} in
flight, timed by the guest (median of ${REPS}); baseline: the pure store's
handle() in-process, no transport (${STORE_OPS} requests, median of ${REPS}),
same run, with the host up. Ratios are time per operation against the
baseline's (>1: slower).

${table(['transport', 'operation', 'xenstored', 'baseline', 'ratio (time per op vs baseline)'], [
    ['UNIX socket', 'READ, one at a time', kops(r.sock.readSerial), `${kops(r.echo.readSerial)} (echo)`, x(r.sock.readSerial, r.echo.readSerial)],
    ['UNIX socket', 'WRITE, one at a time', kops(r.sock.writeSerial), `${kops(r.echo.writeSerial)} (echo)`, x(r.sock.writeSerial, r.echo.writeSerial)],
    ['UNIX socket', `READ, ${DEPTH} in flight`, kops(r.sock.readPipelined), `${kops(r.echo.readPipelined)} (echo)`, x(r.sock.readPipelined, r.echo.readPipelined)],
    ['ring (DomU)', 'READ, one at a time', kops(r.ring.readSerial), `${kops(store.readSerial)} (handle())`, x(r.ring.readSerial, store.readSerial)],
    ['ring (DomU)', 'WRITE, one at a time', kops(r.ring.writeSerial), `${kops(store.writeSerial)} (handle())`, x(r.ring.writeSerial, store.writeSerial)],
    ['ring (DomU)', `READ, ${RING_DEPTH} in flight`, kops(r.ring.readPipelined), `${kops(store.readSerial)} (handle())`, x(r.ring.readPipelined, store.readSerial)],
  ])}`;
  updateBenchSection('xenstore', md);
  return md;
}
