/**
 * Dom0's kernel: the control domain, through which everything is created and
 * wired. It runs
 *  - xenstored (xenstored/service.ts): the store, served to domains over their
 *    rings, to Dom0 itself in-process, and to host tools over the UNIX socket
 *    ($XENSTORED_PATH, printed at start);
 *  - xenconsoled (xenconsoled/daemon.ts): every guest's console ring, logged
 *    to `guest-<name>.log` and streamed to the host's stdout as `<name> | ...`;
 *  - the toolstack (toolstack/domain.ts): it creates the guests named on its
 *    command line as libxl does (build, XenStore entries, INTRODUCE, unpause),
 *    and destroys each one that shuts down;
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
 * Command line: `guests=<base64 JSON of PvBuildConfig[]> keep=0|1`.
 */
import { writeSync } from 'node:fs';
import type { KernelApi } from '../shared/guest/api.ts';
import { Xen } from '../shared/guest/xen.ts';
import { EventChannels } from '../shared/guest/evtchn.ts';
import { VIRQ_DOM_EXC } from '../shared/abi/event-channel.ts';
import { SHUTDOWN_poweroff } from '../shared/hypercall.ts';
import type { PvBuildConfig } from './builder.ts';
import { XenCtrl } from './libxc.ts';
import { Dom0Loop } from './loop.ts';
import { consoleLinePrefix, shutdownReasonName } from './names.ts';
import { createPvGuest, destroyPvGuest, writeDom0Entries } from './toolstack/domain.ts';
import { Xenconsoled } from './xenconsoled/daemon.ts';
import { XenstoredService } from './xenstored/service.ts';

export interface Dom0Cmdline {
  readonly guests: readonly PvBuildConfig[];
  readonly keep: boolean;
}

export function encodeDom0Cmdline(c: Dom0Cmdline): string {
  return `guests=${Buffer.from(JSON.stringify(c.guests)).toString('base64')} keep=${c.keep ? 1 : 0}`;
}

export function parseDom0Cmdline(s: string): Dom0Cmdline {
  const kv = new Map(s.split(/\s+/).filter(Boolean).map((t) => {
    const i = t.indexOf('=');
    return i < 0 ? [t, ''] : [t.slice(0, i), t.slice(i + 1)];
  }));
  const g = kv.get('guests');
  const guests = g ? (JSON.parse(Buffer.from(g, 'base64').toString('utf8')) as PvBuildConfig[]) : [];
  return { guests, keep: kv.get('keep') === '1' };
}

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
  const loop = new Dom0Loop(ev, (e) => say(`error in posted work: ${errText(e)}`));
  let domExc = true;
  ev.on(ev.bindVirq(VIRQ_DOM_EXC), () => { domExc = true; });

  const v = xen.version();
  say(`up on Xen ${v.major}.${v.minor}, ${xen.nrPages} pages, building ${cmd.guests.length} guest(s)`);
  // Listening on the socket waits for the host: without our pCPU. Its
  // start-up line is printed by the loop (console_io needs the pCPU).
  const xs = await host.wait(XenstoredService.start({ ctrl, ev, post: loop.post, print: (l) => loop.post(() => say(l)) }));
  loop.watchHostClients(() => xs.socketClients);
  loop.runPosted();
  await writeDom0Entries(xs.xb);
  const consoled = await Xenconsoled.start({ ctrl, ev, xb: xs.xb, stdout: (l) => out(l + '\n'), print: say });

  const ours = new Set<number>();
  for (const g of cmd.guests) {
    try {
      const guest = await createPvGuest(ctrl, xs.xb, g);
      names.set(guest.domid, g.name);
      ours.add(guest.domid);
      ctrl.unpauseDomain(guest.domid);
      say(`created ${g.name} as domain ${guest.domid} (${g.memoryMiB} MiB, kernel ${g.kernel})`);
    } catch (e) {
      say(`cannot create ${g.name}: ${errText(e)}`);
    }
  }

  /** VIRQ_DOM_EXC: the daemons let go of dying domains; the toolstack destroys ours that shut down. */
  const domainExceptions = async (): Promise<void> => {
    domExc = false;
    const infos = ctrl.listDomains(1);
    consoled.pump(); // what a guest wrote just before shutting down
    consoled.checkDomains(infos);
    xs.checkDomains(infos);
    for (const d of infos) {
      if (!ours.has(d.domid) || !d.shutdown || d.dying) continue;
      say(`domain ${d.domid} (${names.get(d.domid) ?? '?'}) has shut down, reason ${shutdownReasonName(d.shutdownReason)}; destroying`);
      try {
        await destroyPvGuest(ctrl, xs.xb, d.domid, () => host.sleep(1));
      } catch (e) {
        say(`cannot destroy domain ${d.domid}: ${errText(e)}`);
      }
      ours.delete(d.domid);
      domExc = true; // it is dying now: look again next turn
    }
  };

  for (;;) {
    ev.dispatch();
    loop.runPosted();
    if (domExc) await domainExceptions();
    await consoled.scan();
    consoled.pump();
    drainConsole();
    await loop.settle();
    const idle = ours.size === 0 && consoled.domains.length === 0 && xs.domains.length === 0;
    if (idle && !cmd.keep) break;
    if (loop.hasPosted || domExc) continue;
    loop.idle();
  }
  say('all guests have shut down; powering off');
  consoled.close();
  await host.wait(xs.close());
  drainConsole();
  xen.shutdown(SHUTDOWN_poweroff);
}
