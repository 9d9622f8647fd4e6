/**
 * Dom0's wiring on one thread (test/helpers/machine.ts): xenstored's service
 * and xenconsoled on Dom0's vCPU context, guests created by the toolstack, and
 * the guests' kernels played by the test through their own vCPU contexts and
 * the guest libraries. Each side's events are dispatched by the test (there is
 * no thread to block), so every step is deterministic.
 */
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { TestMachine, type TestVcpu } from '../helpers/machine.ts';
import { EventChannels } from '../../shared/guest/evtchn.ts';
import { GuestXenbus } from '../../shared/guest/xenbus.ts';
import { XenConsole } from '../../shared/guest/console.ts';
import { XenbusError, type XenbusClient } from '../../shared/xenbus/client.ts';
import { XenstoredService } from '../../dom0/xenstored/service.ts';
import { Xenconsoled } from '../../dom0/xenconsoled/daemon.ts';
import { createPvGuest, destroyPvGuest, writeDom0Entries, type PvGuest } from '../../dom0/toolstack/domain.ts';
import { liveSlot } from '../../hypervisor/domain.ts';
import { ECS_FREE, ECS_RESERVED, portState } from '../../hypervisor/evtchn/evtchn.ts';
import { EV_REMOTE_DOM, EVTCHN_2L_PORTS, type HvState } from '../../hypervisor/state.ts';
import { CONSOLE_GFN, XENSTORE_GFN } from '../../shared/guest/image.ts';
import { XENSTORE_DOMAIN_INTERFACE, XENSTORE_ERROR_RINGIDX } from '../../shared/abi/xs-ring.ts';
import { PAGE_SIZE } from '../../shared/types.ts';

/** The ports of a domain that are in use (neither free nor reserved). */
function openPorts(hv: HvState, slot: number): Array<{ port: number; state: number; remoteDom: number }> {
  const out: Array<{ port: number; state: number; remoteDom: number }> = [];
  for (let p = 1; p < EVTCHN_2L_PORTS; p++) {
    const st = portState(hv, slot, p);
    if (st !== ECS_FREE && st !== ECS_RESERVED) out.push({ port: p, state: st, remoteDom: hv.evtchn[hv.ev(slot, p, EV_REMOTE_DOM)] });
  }
  return out;
}

interface Guest {
  readonly g: PvGuest;
  readonly v: TestVcpu;
  readonly ev: EventChannels;
  readonly xs: GuestXenbus;
}

const dirs: string[] = [];
afterEach(() => {
  for (const d of dirs.splice(0)) rmSync(d, { recursive: true, force: true });
});

async function setup() {
  const m = new TestMachine({}, 2);
  const ev = new EventChannels(m.dom0.xen);
  const posted: Array<() => void> = [];
  const xsd = await XenstoredService.start({ ctrl: m.ctrl, ev, post: (w) => posted.push(w), socketPath: null });
  const xb = xsd.xb;
  await writeDom0Entries(xb);
  const logDir = mkdtempSync(join(tmpdir(), 'xents-wiring-'));
  dirs.push(logDir);
  const lines: string[] = [];
  const said: string[] = [];
  const consoled = await Xenconsoled.start({ ctrl: m.ctrl, ev, xb, logDir, stdout: (l) => lines.push(l), print: (l) => said.push(l) });
  const special: string[] = [];
  await xb.watch('@introduceDomain', (p) => special.push(p));
  await xb.watch('@releaseDomain', (p) => special.push(p));
  const guests: Guest[] = [];

  /** One round of Dom0's loop and of every guest's: events dispatched, consoles served, continuations run. */
  const round = async (): Promise<void> => {
    ev.dispatch();
    for (const w of posted.splice(0)) w();
    await consoled.scan();
    consoled.pump();
    for (const gu of guests) gu.ev.dispatch();
    for (let i = 0; i < 8; i++) await undefined;
  };
  /** Run rounds until `p` settles. */
  const run = async <T>(p: Promise<T>): Promise<T> => {
    let settled = false;
    p.then(() => { settled = true; }, () => { settled = true; });
    for (let i = 0; i < 200 && !settled; i++) await round();
    return p;
  };
  const create = async (name: string): Promise<Guest> => {
    const g = await createPvGuest(m.ctrl, xb, { name, kernel: 'domU/guests/hello.ts', memoryMiB: 1 });
    m.ctrl.unpauseDomain(g.domid);
    const v = m.vcpu(liveSlot(m.hv, g.domid), 0);
    const gev = new EventChannels(v.xen);
    const gu: Guest = { g, v, ev: gev, xs: new GuestXenbus(gev) };
    guests.push(gu);
    await round();
    return gu;
  };
  const errnoOf = async (p: Promise<unknown>): Promise<string> => {
    try {
      await run(p);
      return 'ok';
    } catch (e) {
      return e instanceof XenbusError ? e.errno : String(e);
    }
  };
  return { m, ev, xsd, xb, consoled, logDir, lines, said, special, guests, round, run, create, errnoOf };
}

async function perms(xb: XenbusClient, path: string): Promise<string[]> {
  return (await xb.getPerms(path)).map((p) => `${p.access}${p.domid}`);
}

describe('Dom0 wiring: toolstack, xenstored, xenconsoled', () => {
  it('creates a guest with libxl\'s XenStore entries and permissions, and introduces it', async () => {
    const t = await setup();
    const a = await t.create('alpha');
    const d = a.g.domid;
    const home = `/local/domain/${d}`;
    const xb = t.xb;
    expect(await xb.read(`${home}/name`)).toBe('alpha');
    expect(await xb.read(`${home}/domid`)).toBe(String(d));
    expect(await xb.read(`${home}/vm`)).toBe(`/vm/${a.g.uuid}`);
    expect(await xb.read(`/vm/${a.g.uuid}/name`)).toBe('alpha');
    expect(await xb.read(`/vm/${a.g.uuid}/uuid`)).toBe(a.g.uuid);
    expect(await xb.read(`/vm/${a.g.uuid}/image/ostype`)).toBe('linux');
    expect(await xb.read(`${home}/memory/static-max`)).toBe('1024');
    expect(await xb.read(`${home}/memory/target`)).toBe('1024');
    expect(await xb.read(`${home}/cpu/0/availability`)).toBe('online');
    expect(await xb.read(`${home}/store/ring-ref`)).toBe(String(XENSTORE_GFN));
    expect(await xb.read(`${home}/store/port`)).toBe('1');
    expect(await xb.read(`${home}/console/ring-ref`)).toBe(String(CONSOLE_GFN));
    expect(await xb.read(`${home}/console/port`)).toBe('2');
    expect(await xb.read(`${home}/console/type`)).toBe('xenconsoled');
    expect(await xb.read(`${home}/console/limit`)).toBe('1048576');
    expect(await xb.read(`${home}/console/backend`)).toBe(`/local/domain/0/backend/console/${d}/0`);
    expect(await xb.read(`/local/domain/0/backend/console/${d}/0/frontend`)).toBe(`${home}/console`);
    expect(await xb.read(`/local/domain/0/backend/console/${d}/0/state`)).toBe('1');
    expect(await xb.read(`/local/domain/0/backend/console/${d}/0/protocol`)).toBe('vt100');
    expect(await xb.read(`${home}/control/platform-feature-xs_reset_watches`)).toBe('1');
    expect(await xb.read(`/libxl/${d}/type`)).toBe('pv');
    expect(await perms(xb, home)).toEqual(['n0', `r${d}`]);
    expect(await perms(xb, `${home}/name`)).toEqual(['n0', `r${d}`]);
    expect(await perms(xb, `${home}/data`)).toEqual([`n${d}`]);
    expect(await perms(xb, `${home}/control/shutdown`)).toEqual([`n${d}`]);
    expect(await perms(xb, `${home}/console`)).toEqual(['n0', `r${d}`]);
    expect(await perms(xb, `${home}/console/backend-id`)).toEqual([`n${d}`, 'r0']);
    expect(await perms(xb, `/local/domain/0/backend/console/${d}/0`)).toEqual(['n0', `r${d}`]);
    expect(await xb.isDomainIntroduced(d)).toBe(true);
    expect(t.special).toContain('@introduceDomain');
    expect(t.xsd.domains).toEqual([d]);
    // A second guest with the same name is refused, and leaves nothing behind.
    const before = t.m.freePages();
    await expect(createPvGuest(t.m.ctrl, xb, { name: 'alpha', kernel: 'domU/guests/hello.ts', memoryMiB: 1 })).rejects.toThrow(/already exists/);
    expect(t.m.freePages()).toBe(before);
  });

  it('a guest reads and writes its own nodes over its ring, and is refused another domain\'s (EACCES)', async () => {
    const t = await setup();
    const a = await t.create('alpha');
    const b = await t.create('beta');
    const c = a.xs.client;
    expect(await t.run(c.read('name'))).toBe('alpha');
    expect(await t.run(c.read(`/local/domain/${a.g.domid}/domid`))).toBe(String(a.g.domid));
    await t.run(c.write('data/greeting', 'hi'));
    expect(await t.run(c.read('data/greeting'))).toBe('hi');
    expect(await t.xb.read(`/local/domain/${a.g.domid}/data/greeting`)).toBe('hi');
    // Dom0 (privileged) wrote this node of the guest's; the guest may still read it.
    await t.xb.write(`/local/domain/${a.g.domid}/data/from-dom0`, 'x');
    expect(await t.run(c.read('data/from-dom0'))).toBe('x');
    // Its own home is Dom0's (read-only to it), as libxl sets it up.
    expect(await t.errnoOf(c.write('name', 'mallory'))).toBe('EACCES');
    // Another domain's nodes: refused, whether they exist or not.
    await t.run(b.xs.client.write('data/secret', 's'));
    const other = `/local/domain/${b.g.domid}`;
    expect(await t.errnoOf(c.read(`${other}/data/secret`))).toBe('EACCES');
    expect(await t.errnoOf(c.read(`${other}/name`))).toBe('EACCES');
    expect(await t.errnoOf(c.read(`${other}/data/missing`))).toBe('EACCES');
    expect(await t.errnoOf(c.write(`${other}/data/x`, 'y'))).toBe('EACCES');
    expect(await t.errnoOf(c.read('/local/domain/0/name'))).toBe('EACCES');
    expect(await t.errnoOf(c.introduce(9, 2, 1))).toBe('EACCES');
    expect(await t.xb.read(`${other}/data/secret`)).toBe('s');
  });

  it('console output reaches the domain\'s log file and the terminal; input reaches the guest', async () => {
    const t = await setup();
    const a = await t.create('alpha');
    expect(t.consoled.domains).toEqual([a.g.domid]);
    const con = new XenConsole(a.ev);
    expect(con.write('first line\nsecond ')).toBe(18);
    await t.round();
    expect(con.write('line\n')).toBe(5);
    await t.round();
    const logPath = join(t.logDir, 'guest-alpha.log');
    expect(t.consoled.logPath(a.g.domid)).toBe(logPath);
    expect(readFileSync(logPath, 'utf8')).toBe('first line\nsecond line\n');
    expect(t.lines).toEqual(['alpha | first line', 'alpha | second line']);
    expect(t.said.some((l) => l.includes(`domain ${a.g.domid} (alpha) console connected`))).toBe(true);
    // xl console: output to an attached session, input into the guest's ring.
    const heard: string[] = [];
    const att = t.consoled.attach(a.g.domid, (bytes) => heard.push(new TextDecoder().decode(bytes)));
    expect(att).toBeDefined();
    con.write('to the session\n');
    expect(t.consoled.input(a.g.domid, new TextEncoder().encode('typed'))).toBe(true);
    await t.round();
    expect(heard.join('')).toBe('to the session\n');
    expect(new TextDecoder().decode(con.read())).toBe('typed');
    att!.detach();
    con.write('after detach\n');
    await t.round();
    expect(heard.join('')).toBe('to the session\n');
    expect(t.consoled.attach(99, () => {})).toBeUndefined();
    expect(t.consoled.input(99, new Uint8Array(1))).toBe(false);
  });

  it('a guest that corrupts its xenstore ring is dropped; its death is still cleaned up', async () => {
    const t = await setup();
    const a = await t.create('alpha');
    const d = a.g.domid;
    const ring = XENSTORE_GFN * PAGE_SIZE;
    a.v.api.mem.atomicStore32(ring + XENSTORE_DOMAIN_INTERFACE.fields.req_prod.offset, 5000);
    a.ev.send(a.xs.port);
    await t.round();
    expect(a.v.api.mem.atomicLoad32(ring + XENSTORE_DOMAIN_INTERFACE.fields.error.offset)).toBe(XENSTORE_ERROR_RINGIDX);
    expect(t.xsd.domains).toEqual([]);
    expect(await t.xb.isDomainIntroduced(d)).toBe(true);
    t.special.length = 0;
    await destroyPvGuest(t.m.ctrl, t.xb, d);
    const infos = t.m.ctrl.listDomains(1);
    t.consoled.checkDomains(infos);
    t.xsd.checkDomains(infos);
    expect(await t.xb.isDomainIntroduced(d)).toBe(false);
    expect(t.special).toEqual(['@releaseDomain']);
    expect(t.m.hv.domidMap[d]).toBe(-1);
    expect(t.m.checkInvariants()).toEqual([]);
  });

  it('destroy leaves no XenStore node, event channel, mapping or frame of the domain', async () => {
    const t = await setup();
    const before = t.m.freePages();
    const dom0Ports = openPorts(t.m.hv, t.m.dom0.ctx.slot).length;
    const a = await t.create('alpha');
    const b = await t.create('beta');
    await t.run(a.xs.client.write('data/x', '1'));
    new XenConsole(a.ev).write('last words\n');
    const closed: number[] = [];
    t.consoled.attach(a.g.domid, () => {}, () => closed.push(a.g.domid));
    const d = a.g.domid;
    // Dom0 serves two rings per guest: four interdomain ports.
    expect(openPorts(t.m.hv, t.m.dom0.ctx.slot).length).toBe(dom0Ports + 4);

    t.special.length = 0;
    await destroyPvGuest(t.m.ctrl, t.xb, d);
    // Its rings are still mapped by xenstored and xenconsoled: the domain is a zombie until they see it dying.
    const infos = t.m.ctrl.listDomains(1);
    expect(infos.find((i) => i.domid === d)?.dying).toBe(true);
    t.consoled.checkDomains(infos);
    t.xsd.checkDomains(infos);

    expect(readFileSync(join(t.logDir, 'guest-alpha.log'), 'utf8')).toBe('last words\n');
    expect(closed).toEqual([d]);
    expect(t.special).toContain('@releaseDomain');
    expect(await t.xb.isDomainIntroduced(d)).toBe(false);
    expect(await t.xb.tryRead(`/local/domain/${d}/name`)).toBeUndefined();
    expect(await t.xb.directory('/local/domain')).toEqual(['0', String(b.g.domid)]);
    expect(await t.xb.directory('/vm')).toEqual([b.g.uuid]);
    expect(await t.xb.directory('/local/domain/0/backend/console')).toEqual([String(b.g.domid)]);
    expect(await t.xb.directory('/libxl')).toEqual([String(b.g.domid)]);
    expect(t.xsd.domains).toEqual([b.g.domid]);
    expect(t.consoled.domains).toEqual([b.g.domid]);
    expect(liveSlot(t.m.hv, d)).toBeLessThan(0);
    expect(t.m.hv.domidMap[d]).toBe(-1);
    expect(openPorts(t.m.hv, t.m.dom0.ctx.slot).filter((p) => p.remoteDom === d)).toEqual([]);
    expect(t.m.checkInvariants()).toEqual([]);

    await destroyPvGuest(t.m.ctrl, t.xb, b.g.domid);
    const infos2 = t.m.ctrl.listDomains(1);
    t.consoled.checkDomains(infos2);
    t.xsd.checkDomains(infos2);
    expect(openPorts(t.m.hv, t.m.dom0.ctx.slot).length).toBe(dom0Ports);
    expect(t.m.freePages()).toBe(before);
    expect(t.m.checkInvariants()).toEqual([]);
    expect(t.xsd.daemon.store.check()).toEqual([]);
  });
});
