/**
 * `xl` against a running host: the platform boots Dom0 alone (keep=1), and
 * the real CLI (node dom0/xl/bin.mjs, a child process) talks to it over the
 * control socket: info and dmesg, create a guest from an xl.cfg, list it,
 * type at its console (it echoes), shut it down and wait, create it again, reboot it (on_reboot = restart),
 * balloon it with mem-set (down, back up, refused above maxmem), destroy it; after
 * each, nothing of the guest is left (domain, xenstore nodes, Dom0's event
 * channels and maptrack, frames, threads). Errors name the domain.
 */
import { spawn } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { Platform } from '../../hypervisor/platform/platform.ts';
import { hostConfig } from '../../hypervisor/config.ts';
import { ConsoleTap } from '../helpers/console-tap.ts';
import { encodeDom0Cmdline } from '../../dom0/kernel.ts';
import { D, DOMSTATE_FREE, G, type HvState } from '../../hypervisor/state.ts';
import { frameInvariantViolations } from '../helpers/machine.ts';
import { liveSlot } from '../../hypervisor/domain.ts';
import { until } from '../helpers/until.ts';
import { xl } from '../helpers/xl-run.ts';

const ROOT = resolve(import.meta.dirname, '../..');
const dir = mkdtempSync(join(tmpdir(), 'xents-xl-test-'));
const ENV_KEYS = ['XENSTORED_PATH', 'XENTS_CONTROL_PATH', 'XENTS_LOG_DIR'] as const;
const saved = Object.fromEntries(ENV_KEYS.map((k) => [k, process.env[k]]));
afterAll(() => {
  for (const [k, v] of Object.entries(saved)) {
    if (v === undefined) delete process.env[k];
    else process.env[k] = v;
  }
  rmSync(dir, { recursive: true, force: true });
});

/** Domains in the table, by domid. */
function liveDomids(hv: HvState): number[] {
  const out: number[] = [];
  for (let s = 0; s < hv.cfg.maxDomains; s++) {
    if (Atomics.load(hv.dom, hv.d(s, D.state)) !== DOMSTATE_FREE) out.push(hv.dom[hv.d(s, D.domid)]);
  }
  return out.sort((a, b) => a - b);
}

describe('xl against the running host', () => {
  it('creates, lists, shuts down, reboots and destroys a guest; nothing of it is left', async () => {
    process.env.XENSTORED_PATH = join(dir, 'xenstored.sock');
    process.env.XENTS_CONTROL_PATH = join(dir, 'control.sock');
    process.env.XENTS_LOG_DIR = dir;
    const platform = new Platform(hostConfig({ memMiB: 64, pcpus: 2, maxDomains: 16, p2mEntries: 8192 }));
    const hv = platform.hv;
    const tap = new ConsoleTap(hv);
    let con: ReturnType<typeof spawn> | undefined;
    platform.boot({ kernel: 'dom0/kernel.ts', memMiB: 4, cmdline: encodeDom0Cmdline({ guests: [], keep: true, shutdownTimeoutS: 20 }) });
    try {
      await until('the control socket', () => existsSync(process.env.XENTS_CONTROL_PATH!) && tap.text.includes('xl: control socket listening on'));
      const dom0Slot = hv.domidMap[0];
      const baseline = {
        evtchn: hv.dom[hv.d(dom0Slot, D.evtchn_in_use)],
        maptrack: hv.dom[hv.d(dom0Slot, D.maptrack_in_use)],
        free: Atomics.load(hv.g, G.FREE_PAGES),
        dom0Pages: hv.dom[hv.d(dom0Slot, D.tot_pages)],
      };
      /** xenstore-list of a path through xl (the in-process privileged connection): its children, one a line. */
      const xsList = async (path: string): Promise<string[]> => {
        const r = await xl('xenstore-list', path);
        expect(r.code, r.stderr).toBe(0);
        return r.stdout.split('\n').filter(Boolean).sort();
      };
      const guestDomids: number[] = [];
      const nothingLeft = async (what: string): Promise<void> => {
        await until(`${what}: only Dom0 left`, () => liveDomids(hv).length === 1);
        expect(liveDomids(hv)).toEqual([0]);
        await until(`${what}: Dom0's event channels back to the baseline`, () => hv.dom[hv.d(dom0Slot, D.evtchn_in_use)] === baseline.evtchn);
        expect(hv.dom[hv.d(dom0Slot, D.maptrack_in_use)]).toBe(baseline.maptrack);
        expect(frameInvariantViolations(hv)).toEqual([]);
        expect(hv.dom[hv.d(dom0Slot, D.tot_pages)]).toBe(baseline.dom0Pages);
        expect(Atomics.load(hv.g, G.FREE_PAGES)).toBe(baseline.free);
        await until(`${what}: only Dom0's thread`, () => platform.liveThreads === 1);
        const list = await xl('list');
        expect(list.code).toBe(0);
        expect(list.stdout).not.toContain('waiter');
        // No xenstore node of any guest: only Dom0's home, no console back end, no /vm, no /libxl.
        expect(await xsList('/local/domain')).toEqual(['0']);
        for (const id of guestDomids) {
          const r = await xl('xenstore-read', `/local/domain/${id}/name`);
          expect(r.code).not.toBe(0);
        }
        expect(await xsList('/vm')).toEqual([]);
        expect(await xsList('/libxl')).toEqual([]);
        const back = await xl('xenstore-list', '/local/domain/0/backend/console');
        expect(back.code === 0 ? back.stdout.trim() : '').toBe('');
      };

      // xl info and dmesg reach the hypervisor.
      const info = await xl('info');
      expect(info.code, info.stderr).toBe(0);
      expect(info.stdout).toMatch(/xen_scheduler\s*:\s*\w+/);
      expect(info.stdout).toMatch(/nr_cpus\s*:\s*2/);
      const dmesg = await xl('dmesg');
      expect(dmesg.code, dmesg.stderr).toBe(0);
      expect(dmesg.stdout).toContain('dom0: up on Xen');

      // Create; list shows it; its xenstore home exists.
      const created = await xl('create', 'test/fixtures/configs/until-shutdown.cfg');
      expect(created.code, created.stderr).toBe(0);
      await until('the guest to be up', () => tap.text.includes('created waiter as domain'));
      const domid = Number(/created waiter as domain (\d+)/.exec(tap.text)![1]);
      guestDomids.push(domid);
      expect(await xsList('/local/domain')).toEqual(['0', String(domid)]);
      const home = await xl('xenstore-read', `/local/domain/${domid}/name`);
      expect(home.stdout.trim()).toBe('waiter');
      const guestLog = join(dir, 'console', 'guest-waiter.log');
      await until('the guest\'s console', () => existsSync(guestLog) && readFileSync(guestLog, 'utf8').includes('waiter: up'));
      const list = await xl('list');
      expect(list.code, list.stderr).toBe(0);
      expect(list.stdout).toMatch(new RegExp(`^waiter\\s+${domid}\\s`, 'm'));
      expect(list.stdout).toMatch(/^Domain-0\s+0\s/m);
      const vcpus = await xl('vcpu-list', 'waiter');
      expect(vcpus.code, vcpus.stderr).toBe(0);
      expect(vcpus.stdout).toMatch(new RegExp(`^waiter\\s+${domid}\\s+0\\s`, 'm'));

      // xl console: keystrokes reach the guest (it echoes them), its output reaches us.
      con = spawn(process.execPath, [join(ROOT, 'dom0/xl/bin.mjs'), 'console', 'waiter'], { cwd: ROOT, env: process.env, stdio: ['pipe', 'pipe', 'pipe'] });
      let conOut = '';
      const c = con;
      c.stdout!.on('data', (d: Buffer) => { conOut += d.toString('utf8'); });
      c.stderr!.on('data', (d: Buffer) => { conOut += d.toString('utf8'); });
      const conExit = new Promise<number | null>((r) => c.once('exit', (code) => r(code)));
      await until('the console to echo', async () => {
        c.stdin!.write('ping\n');
        await new Promise((r) => setTimeout(r, 200));
        return conOut.includes('echo: ping');
      });

      // shutdown -w: control/shutdown = poweroff; the guest powers off; on_poweroff = destroy.
      const shut = await xl('shutdown', '-w', 'waiter');
      expect(shut.code, shut.stderr).toBe(0);
      await until('the guest\'s goodbye', () => readFileSync(guestLog, 'utf8').includes('waiter: poweroff'));
      // The console session ends with the domain, having shown its last words.
      expect(await conExit).toBe(0);
      expect(conOut).toContain('waiter: poweroff');
      expect(tap.text).toContain(`domain ${domid} (waiter) has shut down, reason poweroff; destroying`);
      await nothingLeft('after shutdown');

      // Again, then reboot: on_reboot = restart gives a new domain of the same name.
      expect((await xl('create', 'test/fixtures/configs/until-shutdown.cfg')).code).toBe(0);
      await until('the second guest', () => (tap.text.match(/created waiter as domain/g) ?? []).length === 2);
      const second = Number([...tap.text.matchAll(/created waiter as domain (\d+)/g)][1][1]);
      expect(second).not.toBe(domid);
      guestDomids.push(second);
      await until('the second guest\'s console', () => (readFileSync(guestLog, 'utf8').match(/waiter: up/g) ?? []).length >= 2);
      const reboot = await xl('reboot', 'waiter');
      expect(reboot.code, reboot.stderr).toBe(0);
      await until('the restart', () => (tap.text.match(/created waiter as domain/g) ?? []).length === 3);
      expect(tap.text).toContain(`domain ${second} (waiter) has shut down, reason reboot; restarting`);
      const third = Number([...tap.text.matchAll(/created waiter as domain (\d+)/g)][2][1]);
      guestDomids.push(third);
      await until('the restarted guest to list', async () => (await xl('list', 'waiter')).stdout.includes(`${third}`));

      // Ballooning: mem-set writes memory/target, the guest's balloon driver
      // moves tot_pages to it (down, then back up to maxmem); above maxmem is
      // refused. The leak checks after destroy cover the pages it gave back.
      await until('the restarted guest\'s balloon driver', () => (readFileSync(guestLog, 'utf8').match(/waiter: up/g) ?? []).length >= 3);
      const slot3 = liveSlot(hv, third);
      const totPages = (): number => hv.dom[hv.d(slot3, D.tot_pages)];
      expect(totPages()).toBe(512);
      const memCol = async (): Promise<number> => {
        const l = await xl('list', 'waiter');
        expect(l.code, l.stderr).toBe(0);
        return Number(new RegExp(`^waiter\\s+${third}\\s+(\\d+)\\s`, 'm').exec(l.stdout)?.[1]);
      };
      expect(await memCol()).toBe(2);
      const down = await xl('mem-set', 'waiter', '1m');
      expect(down.code, down.stderr).toBe(0);
      expect((await xl('xenstore-read', `/local/domain/${third}/memory/target`)).stdout.trim()).toBe('1024');
      await until('the balloon to shrink the guest to 1 MiB', () => totPages() === 256, 10_000);
      expect(await memCol()).toBe(1);
      const up = await xl('mem-set', 'waiter', '2048k');
      expect(up.code, up.stderr).toBe(0);
      await until('the balloon to grow the guest back to 2 MiB', () => totPages() === 512, 10_000);
      expect(await memCol()).toBe(2);
      const tooBig = await xl('mem-set', 'waiter', '3m');
      expect(tooBig.code).not.toBe(0);
      expect(tooBig.stderr).toContain('above the domain\'s maximum');
      expect((await xl('xenstore-read', `/local/domain/${third}/memory/target`)).stdout.trim()).toBe('2048');
      // Leave it ballooned down: destroy gets back what it still holds.
      expect((await xl('mem-set', 'waiter', '1m')).code).toBe(0);
      await until('the balloon to shrink the guest again', () => totPages() === 256, 10_000);

      // destroy.
      const destroyed = await xl('destroy', 'waiter');
      expect(destroyed.code, destroyed.stderr).toBe(0);
      await nothingLeft('after destroy');

      // Errors name the domain.
      const bad = await xl('destroy', 'nosuch');
      expect(bad.code).not.toBe(0);
      expect(bad.stderr).toContain('nosuch');
    } finally {
      if (con && con.exitCode === null) con.kill();
      tap.stop();
      await platform.stop();
    }
    expect(platform.liveThreads).toBe(0);
    expect(existsSync(process.env.XENTS_CONTROL_PATH!)).toBe(false);
  }, 120_000);
});
