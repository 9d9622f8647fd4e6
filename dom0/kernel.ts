/**
 * Dom0's kernel: the control domain. It builds the guests named on its command
 * line, streams the hypervisor console (every guest's console_io output) to the
 * host's stdout with each line prefixed by its domain's name, destroys guests
 * that shut down, and powers the host off when none is left (unless `keep=1`).
 *
 * Command line: `guests=<base64 JSON of PvBuildConfig[]> keep=0|1`.
 */
import { writeSync } from 'node:fs';
import type { KernelApi } from '../shared/guest/api.ts';
import { Xen } from '../shared/guest/xen.ts';
import { SHUTDOWN_poweroff } from '../shared/hypercall.ts';
import { buildPvDomain, type PvBuildConfig } from './builder.ts';
import { XenCtrl } from './libxc.ts';
import { consoleLinePrefix, shutdownReasonName } from './names.ts';

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

const POLL_MS = 20;

export default async function dom0(k: KernelApi): Promise<void> {
  const xen = new Xen(k);
  const ctrl = new XenCtrl(xen);
  const host = k.host;
  if (!host) throw new Error('dom0 needs host services');
  const cmd = parseDom0Cmdline(xen.cmdline);
  const names = new Map<number, string>([[0, 'Domain-0']]);
  let conIndex = 0;
  const out = (s: string): void => { writeSync(1, s); };

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

  const v = xen.version();
  xen.print(`dom0: up on Xen ${v.major}.${v.minor}, ${xen.nrPages} pages, building ${cmd.guests.length} guest(s)\n`);
  const ours = new Set<number>();
  for (const g of cmd.guests) {
    try {
      const domid = await buildPvDomain(ctrl, g);
      names.set(domid, g.name);
      ours.add(domid);
      ctrl.unpauseDomain(domid);
      xen.print(`dom0: created ${g.name} as domain ${domid} (${g.memoryMiB} MiB, kernel ${g.kernel})\n`);
    } catch (e) {
      xen.print(`dom0: cannot create ${g.name}: ${e instanceof Error ? e.message : String(e)}\n`);
    }
  }

  for (;;) {
    drainConsole();
    for (const d of ctrl.listDomains(1)) {
      if (!ours.has(d.domid) || !d.shutdown || d.dying) continue;
      xen.print(`dom0: domain ${d.domid} (${names.get(d.domid) ?? '?'}) has shut down, reason ${shutdownReasonName(d.shutdownReason)}; destroying\n`);
      await ctrl.destroyDomain(d.domid, () => host.sleep(1));
      ours.delete(d.domid);
    }
    if (ours.size === 0 && !cmd.keep) break;
    await host.sleep(POLL_MS);
  }
  xen.print('dom0: all guests have shut down; powering off\n');
  drainConsole();
  xen.shutdown(SHUTDOWN_poweroff);
}
