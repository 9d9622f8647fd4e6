import path from 'node:path';
import { fileURLToPath } from 'node:url';
/**
 * Dom0's kernel: the control domain, through which everything is created and
 * wired. It runs
 *  - xenstored (xenstored/service.ts): the store, served to domains over their
 *    rings, to Dom0 itself in-process, and to host tools over the UNIX socket
 *    ($XENSTORED_PATH, printed at start);
 *  - xenconsoled (xenconsoled/daemon.ts): every guest's console ring, logged
 *    to `guest-<name>.log` and streamed to the host's stdout as `<name> | ...`;
 *  - the toolstack (toolstack/control.ts over toolstack/domain.ts): it
 *    creates the guests named on its command line as libxl does (build,
 *    XenStore entries, INTRODUCE, unpause) and applies each managed guest's
 *    on_poweroff / on_reboot / on_crash action when it shuts down;
 *  - blkback (blkback/driver.ts): the block backend, serving every vbd the
 *    toolstack creates under /local/domain/0/backend/vbd (docs/block.md);
 *  - the control socket for `xl` (xl/server.ts, $XENTS_CONTROL_PATH): the
 *    toolstack's ControlHandlers, run as work posted to the loop;
 * and streams the hypervisor console (every domain's console_io output and
 * Xen's own lines) to stdout, prefixed by the name of its source. It learns of
 * shutdowns and deaths from VIRQ_DOM_EXC, and powers the host off when no
 * guest is left (unless `keep=1`).
 *
 * The loop (loop.ts): each turn dispatches events, runs work posted by host
 * I/O callbacks, handles domain exceptions, serves the consoles, copies the
 * hypervisor console, then sleeps in SCHEDOP_block until the next event or a
 * short deadline.
 *
 * Command line: `guests=<base64 JSON of PvBuildConfig[]> keep=0|1
 * [shutdown_timeout=<seconds>]` (how long a guest asked to shut down by xl
 * has before it is destroyed; default 30).
 */
import { writeSync } from 'node:fs';
import type { KernelApi } from '../shared/guest/api.ts';
import { Xen } from '../shared/guest/xen.ts';
import { EventChannels } from '../shared/guest/evtchn.ts';
import { VIRQ_CON_RING, VIRQ_DOM_EXC } from '../shared/abi/event-channel.ts';
import { SHUTDOWN_poweroff } from '../shared/hypercall.ts';
import type { PvBuildConfig } from './builder.ts';
import { XenCtrl } from './libxc.ts';
import { Dom0Loop, type Dom0LoopOptions } from './loop.ts';
import { consoleLinePrefix } from './names.ts';
import { Dom0Toolstack } from './toolstack/control.ts';
import { writeDom0Entries } from './toolstack/domain.ts';
import { SHUTDOWN_crash } from '../shared/hypercall.ts';
import { guestsOfConfigDir, parseGuestSpec } from './toolstack/guest-spec.ts';
import { postedHandlers } from './xl/handlers.ts';
import { ControlServer } from './xl/server.ts';
import { Xenconsoled } from './xenconsoled/daemon.ts';
import { XenstoredService } from './xenstored/service.ts';
import { GrantTable } from '../shared/guest/gnttab.ts';
import { BlkbackDriver } from './blkback/driver.ts';

export interface Dom0Cmdline {
  readonly guests: readonly PvBuildConfig[];
  readonly keep: boolean;
  /** Seconds a guest asked to shut down has before it is destroyed; default 30. */
  readonly shutdownTimeoutS?: number;
  /** `configs=<dir>`: build the guests of every xl.cfg file there (see toolstack/guest-spec.ts). */
  readonly configDir?: string;
  /** `guest=<name>=<kernel>[:MiB]` entries. */
  readonly guestSpecs?: readonly string[];
  /**
   * blkback's switches, as Linux's xen_blkback module parameters on Dom0's
   * command line: `xen_blkback.feature_persistent=0|1`,
   * `xen_blkback.max_ring_page_order=N` (0: single-page rings only),
   * `xen_blkback.max_persistent_grants=N`,
   * `xen_blkback.persistent_grant_unused_seconds=N` (0: never time out),
   * `xen_blkback.max_queues=N` (multi-queue-max-queues; default 1); and ours,
   * `xen_blkback.feature_indirect=0|1` (Linux always offers indirect segments),
   * `xen_blkback.dma_jobs=0|1` (large READs out as host DMA jobs).
   */
  readonly blkback?: BlkbackSwitches;
  /**
   * `poll_us=N` (ours): how long Dom0's loop spins on its rings after the
   * last request before it blocks (Dom0LoopOptions.spinUs; default SPIN_US,
   * 1000; 0: never spin; at most POLL_US_MAX). On a host where other
   * processes are busy the spin holds a core the frontend needs
   * (docs/block.md, "On a busy host").
   */
  readonly pollUs?: number;
}

/** The largest `poll_us` taken (1 s); a larger or malformed one is ignored. */
export const POLL_US_MAX = 1_000_000;

export interface BlkbackSwitches {
  readonly persistent?: boolean;
  readonly multiPageRing?: boolean;
  readonly indirect?: boolean;
  readonly maxPersistentGrants?: number;
  readonly persistentGrantUnusedSeconds?: number;
  readonly maxQueues?: number;
  readonly dmaJobs?: boolean;
}

const BLKBACK_PARAMS = {
  'xen_blkback.feature_persistent': 'persistent',
  'xen_blkback.max_ring_page_order': 'multiPageRing',
  'xen_blkback.feature_indirect': 'indirect',
  'xen_blkback.max_persistent_grants': 'maxPersistentGrants',
  'xen_blkback.persistent_grant_unused_seconds': 'persistentGrantUnusedSeconds',
  'xen_blkback.max_queues': 'maxQueues',
  'xen_blkback.dma_jobs': 'dmaJobs',
} as const;

function encodeBlkback(b: BlkbackSwitches | undefined): string {
  if (!b) return '';
  const out: string[] = [];
  if (b.persistent !== undefined) out.push(`xen_blkback.feature_persistent=${b.persistent ? 1 : 0}`);
  if (b.multiPageRing !== undefined) out.push(`xen_blkback.max_ring_page_order=${b.multiPageRing ? 4 : 0}`);
  if (b.indirect !== undefined) out.push(`xen_blkback.feature_indirect=${b.indirect ? 1 : 0}`);
  if (b.maxPersistentGrants !== undefined) out.push(`xen_blkback.max_persistent_grants=${b.maxPersistentGrants}`);
  if (b.persistentGrantUnusedSeconds !== undefined) out.push(`xen_blkback.persistent_grant_unused_seconds=${b.persistentGrantUnusedSeconds}`);
  if (b.maxQueues !== undefined) out.push(`xen_blkback.max_queues=${b.maxQueues}`);
  if (b.dmaJobs !== undefined) out.push(`xen_blkback.dma_jobs=${b.dmaJobs ? 1 : 0}`);
  return out.map((o) => ` ${o}`).join('');
}

/** blkback's switches from the command line's key=value pairs; unknown or malformed values are ignored (as the kernel does). */
function parseBlkback(kv: ReadonlyMap<string, string>): BlkbackSwitches | undefined {
  const b: { -readonly [K in keyof BlkbackSwitches]: BlkbackSwitches[K] } = {};
  for (const [key, field] of Object.entries(BLKBACK_PARAMS)) {
    const v = kv.get(key);
    if (v === undefined || !/^\d+$/.test(v)) continue;
    if (field === 'maxPersistentGrants' || field === 'persistentGrantUnusedSeconds' || field === 'maxQueues') b[field] = Number(v);
    else b[field] = Number(v) > 0;
  }
  return Object.keys(b).length > 0 ? b : undefined;
}

export function encodeDom0Cmdline(c: Dom0Cmdline): string {
  const t = c.shutdownTimeoutS !== undefined ? ` shutdown_timeout=${c.shutdownTimeoutS}` : '';
  const dir = c.configDir !== undefined ? ` configs=${c.configDir}` : '';
  const specs = (c.guestSpecs ?? []).map((g) => ` guest=${g}`).join('');
  const g = c.guests.length > 0 ? `guests=${Buffer.from(JSON.stringify(c.guests)).toString('base64')} ` : '';
  const poll = c.pollUs !== undefined ? ` poll_us=${c.pollUs}` : '';
  return `${g}keep=${c.keep ? 1 : 0}${t}${dir}${specs}${encodeBlkback(c.blkback)}${poll}`;
}

export function parseDom0Cmdline(s: string): Dom0Cmdline {
  const pairs = s.split(/\s+/).filter(Boolean).map((t): [string, string] => {
    const i = t.indexOf('=');
    return i < 0 ? [t, ''] : [t.slice(0, i), t.slice(i + 1)];
  });
  const kv = new Map(pairs);
  const g = kv.get('guests');
  const guests = g ? (JSON.parse(Buffer.from(g, 'base64').toString('utf8')) as PvBuildConfig[]) : [];
  const t = Number(kv.get('shutdown_timeout'));
  const guestSpecs = pairs.filter(([k]) => k === 'guest').map(([, v]) => v);
  const blkback = parseBlkback(kv);
  const poll = kv.get('poll_us');
  const pollUs = poll !== undefined && /^\d+$/.test(poll) && Number(poll) <= POLL_US_MAX ? Number(poll) : undefined;
  return {
    guests, keep: kv.get('keep') === '1',
    ...(kv.has('shutdown_timeout') && Number.isFinite(t) && t >= 0 ? { shutdownTimeoutS: t } : {}),
    ...(kv.has('configs') ? { configDir: kv.get('configs') } : {}),
    ...(guestSpecs.length > 0 ? { guestSpecs } : {}),
    ...(blkback ? { blkback } : {}),
    ...(pollUs !== undefined ? { pollUs } : {}),
  };
}

/** Dom0's loop as the command line sets it: `poll_us` its spin bound (Dom0LoopOptions.spinUs), else the defaults. */
export function dom0LoopOptions(c: Dom0Cmdline): Dom0LoopOptions {
  return c.pollUs !== undefined ? { spinUs: c.pollUs } : {};
}

/** Every guest the command line names, or an error naming the file or spec that is wrong. */
export function dom0Guests(c: Dom0Cmdline, root: string): PvBuildConfig[] {
  return [
    ...c.guests,
    ...(c.configDir !== undefined ? guestsOfConfigDir(c.configDir, root) : []),
    ...(c.guestSpecs ?? []).map(parseGuestSpec),
  ];
}

/** The project root: relative guest paths and config directories are taken from it. */
const PROJECT_ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');

const errText = (e: unknown): string => (e instanceof Error ? e.message : String(e));

export default async function dom0(k: KernelApi): Promise<void> {
  const xen = new Xen(k);
  const ctrl = new XenCtrl(xen);
  const host = k.host;
  if (!host) throw new Error('dom0 needs host services');
  const cmd = parseDom0Cmdline(xen.cmdline);
  const names = new Map<number, string>([[0, 'Domain-0']]);
  const out = (s: string): void => { writeSync(1, s); };
  const say = (s: string): void => xen.print(`dom0: ${s}\n`);

  let conIndex = 0;
  const drainConsole = (): void => {
    for (;;) {
      const r = ctrl.readConsole(conIndex);
      conIndex = r.index;
      if (r.text.length === 0) return;
      for (const line of r.text.split('\n')) {
        if (line.length > 0) out(consoleLinePrefix(line, names) + '\n');
      }
    }
  };

  const ev = new EventChannels(xen);
  const loop = new Dom0Loop(ev, (e) => say(`error in posted work: ${errText(e)}`), dom0LoopOptions(cmd));
  let domExc = true;
  ev.on(ev.bindVirq(VIRQ_DOM_EXC), () => { domExc = true; });
  // The hypervisor's console ring is read when Xen says it grew
  // (VIRQ_CON_RING, as xenconsoled does), not on every turn of the loop.
  let conRing = true;
  ev.on(ev.bindVirq(VIRQ_CON_RING), () => { conRing = true; });

  const v = xen.version();
  let guests: PvBuildConfig[];
  try {
    guests = dom0Guests(cmd, PROJECT_ROOT);
  } catch (e) {
    // A configuration that does not parse: say which and where, build nothing.
    say(`cannot read the guest configurations: ${errText(e)}`);
    drainConsole();
    xen.shutdown(SHUTDOWN_crash);
    return;
  }
  say(`up on Xen ${v.major}.${v.minor}, ${xen.nrPages} pages, building ${guests.length} guest(s)`);
  // Listening on the socket waits for the host: without our pCPU. Its
  // start-up line is printed by the loop (console_io needs the pCPU).
  const xs = await host.wait(XenstoredService.start({ ctrl, ev, post: loop.post, print: (l) => loop.post(() => say(l)) }));
  loop.watchHostClients(() => xs.socketClients);
  loop.runPosted();
  await writeDom0Entries(xs.xb);
  // blkback maps frontends' grants through Dom0's own grant table (it grants
  // nothing itself), set up when the first vbd appears.
  const blkback = await BlkbackDriver.start({ xb: xs.xb, ev, gt: () => new GrantTable(xen), dma: host.dma, post: loop.post,
    addPoller: (port, serve, arm) => loop.addPoller(port, serve, arm), ...cmd.blkback,
  });
  // An fdatasync completion is a host callback: it runs only while Dom0 is awake, so sleep briefly while one is due.
  loop.watchHostClients(() => blkback.pendingHostIo);
  const consoled = await Xenconsoled.start({ ctrl, ev, xb: xs.xb, stdout: (l) => out(l + '\n'), print: say });

  const toolstack = new Dom0Toolstack({
    ctrl, xb: xs.xb, consoled, names, say, vbdStats: () => blkback.stats(),
    // Between destroydomain retries: offer the pCPU (SCHEDOP_yield), then wait
    // holding it. Not host.sleep: xl's handlers run alongside the loop, which
    // must not make hypercalls while the pCPU is given away.
    sleep: async (ms) => { xen.yield(); await new Promise((r) => setTimeout(r, ms)); },
    ...(cmd.shutdownTimeoutS !== undefined ? { shutdownTimeoutMs: cmd.shutdownTimeoutS * 1000 } : {}),
  });
  for (const g of guests) {
    try {
      await toolstack.createGuest(g, null, false);
    } catch (e) {
      say(`cannot create ${g.name}: ${errText(e)}`);
    }
  }

  // xl's control socket. Listening waits for the host (without our pCPU); a
  // host already listening there leaves this one without xl.
  let control: ControlServer | undefined;
  try {
    control = await host.wait(ControlServer.listen(postedHandlers(toolstack, loop.post)));
    const path = control.path;
    loop.post(() => say(`xl: control socket listening on ${path}`));
    const c = control;
    loop.watchHostClients(() => c.connections);
  } catch (e) {
    loop.post(() => say(`xl: no control socket: ${errText(e)}`));
  }

  /** VIRQ_DOM_EXC: the daemons let go of dying domains; the toolstack acts on ours that shut down. */
  const domainExceptions = async (): Promise<void> => {
    domExc = false;
    const infos = ctrl.listDomains(1);
    consoled.pump(); // what a guest wrote just before shutting down
    consoled.checkDomains(infos);
    xs.checkDomains(infos);
    if (await toolstack.domainExceptions(infos)) domExc = true; // dying now: look again next turn
  };

  for (;;) {
    ev.dispatch();
    loop.runPosted();
    if (domExc) await domainExceptions();
    if (toolstack.shutdownsPending && (await toolstack.checkShutdownTimeouts())) domExc = true;
    await consoled.scan();
    consoled.pump();
    if (conRing) {
      conRing = false;
      drainConsole();
    }
    await loop.settle();
    const idle = toolstack.size === 0 && consoled.domains.length === 0 && xs.domains.length === 0;
    if (idle && !cmd.keep) break;
    if (loop.hasPosted || domExc) continue;
    loop.idle();
  }
  say('all guests have shut down; powering off');
  if (control) await host.wait(control.close());
  consoled.close();
  await blkback.close();
  await host.wait(xs.close());
  drainConsole();
  xen.shutdown(SHUTDOWN_poweroff);
}
