/**
 * Dom0's toolstack lifecycle (dom0/toolstack/control.ts) without a machine:
 * the actions per shutdown reason, and what happens to managed domains that
 * shut down or ignore a shutdown request. The toolstack's create/destroy
 * (domain.ts) are replaced by records; XenCtrl by a table of domain infos.
 */
import { beforeEach, describe, expect, it, vi } from 'vitest';
import type { DomainInfo, XenCtrl } from '../../../dom0/libxc.ts';
import type { Xenconsoled } from '../../../dom0/xenconsoled/daemon.ts';
import type { XenbusClient } from '../../../shared/xenbus/client.ts';
import { SHUTDOWN_crash, SHUTDOWN_poweroff, SHUTDOWN_reboot, SHUTDOWN_suspend } from '../../../shared/hypercall.ts';
import { parseXlCfg } from '../../../dom0/toolstack/xlcfg.ts';

const calls: string[] = [];
let nextDomid = 1;
vi.mock('../../../dom0/toolstack/domain.ts', () => ({
  domainPath: (d: number) => `/local/domain/${d}`,
  createPvGuest: async (_c: unknown, _x: unknown, b: { name: string }) => {
    const domid = nextDomid++;
    calls.push(`create ${b.name} ${domid}`);
    return { domid, uuid: `uuid-${domid}` };
  },
  destroyPvGuest: async (_c: unknown, _x: unknown, domid: number) => { calls.push(`destroy ${domid}`); },
}));

const { actionFor, actionKind, DEFAULT_ACTIONS, Dom0Toolstack } = await import('../../../dom0/toolstack/control.ts');

const info = (domid: number, shutdown = false, reason = 0): DomainInfo => ({
  domid, flags: 0, dying: false, shutdown, shutdownReason: reason, paused: false, blocked: true, running: false,
  totPages: 256, maxPages: 512, cpuTimeNs: 0n, onlineVcpus: 1, maxVcpuId: 0, sharedInfoFrame: 0, handle: new Uint8Array(16),
});

function makeToolstack(now: { t: number }) {
  const writes: string[] = [];
  const domains = new Map<number, DomainInfo>();
  const ctrl = {
    unpauseDomain: (d: number) => calls.push(`unpause ${d}`),
    domainInfo: (d: number) => domains.get(d) ?? null,
  } as unknown as XenCtrl;
  const xb = { write: async (p: string, v: string) => { writes.push(`${p}=${v}`); } } as unknown as XenbusClient;
  const ts = new Dom0Toolstack({
    ctrl, xb, consoled: {} as Xenconsoled, sleep: async () => {}, say: () => {}, names: new Map(),
    shutdownTimeoutMs: 1000, now: () => now.t,
  });
  return { ts, writes, domains };
}

beforeEach(() => { calls.length = 0; nextDomid = 1; });

describe('lifecycle actions', () => {
  it('maps reasons to the config\'s actions, with Xen\'s defaults', () => {
    expect(actionFor(DEFAULT_ACTIONS, SHUTDOWN_poweroff)).toBe('destroy');
    expect(actionFor(DEFAULT_ACTIONS, SHUTDOWN_reboot)).toBe('restart');
    expect(actionFor(DEFAULT_ACTIONS, SHUTDOWN_crash)).toBe('destroy');
    expect(actionFor(DEFAULT_ACTIONS, SHUTDOWN_suspend)).toBeUndefined();
    expect(actionKind('coredump-destroy')).toBe('destroy');
    expect(actionKind('rename-restart')).toBe('restart');
    expect(actionKind('preserve')).toBe('preserve');
  });

  it('destroys on poweroff, restarts on reboot, preserves when told', async () => {
    const now = { t: 0 };
    const { ts, domains } = makeToolstack(now);
    const cfg = parseXlCfg('name="a"\nkernel="k.ts"\non_crash="preserve"\n');
    const a = await ts.create(cfg, { paused: false });
    expect(calls).toEqual(['create a 1', 'unpause 1']);
    domains.set(a, info(a, true, SHUTDOWN_reboot));
    expect(await ts.domainExceptions([...domains.values()])).toBe(true);
    expect(calls.slice(2)).toEqual(['destroy 1', 'create a 2', 'unpause 2']);
    expect(ts.domainConfig(2)).toEqual(cfg);
    domains.clear();
    domains.set(2, info(2, true, SHUTDOWN_crash));
    expect(await ts.domainExceptions([...domains.values()])).toBe(false);
    expect(ts.has(2)).toBe(true);
    await ts.destroy(2);
    expect(ts.size).toBe(0);
    const b = await ts.createGuest({ name: 'b', kernel: 'k.ts', memoryMiB: 4 }, null, true);
    domains.set(b, info(b, true, SHUTDOWN_poweroff));
    await ts.domainExceptions([...domains.values()]);
    expect(calls.slice(-2)).toEqual(['create b 3', 'destroy 3']);
    expect(ts.size).toBe(0);
  });

  it('writes control/shutdown and destroys a guest that ignores it past the timeout', async () => {
    const now = { t: 0 };
    const { ts, writes, domains } = makeToolstack(now);
    const d = await ts.create(parseXlCfg('name="deaf"\nkernel="k.ts"\n'), { paused: false });
    domains.set(d, info(d));
    await ts.shutdown(d);
    expect(writes).toEqual([`/local/domain/${d}/control/shutdown=poweroff`]);
    expect(ts.shutdownsPending).toBe(true);
    now.t = 999;
    expect(await ts.checkShutdownTimeouts()).toBe(false);
    now.t = 1000;
    expect(await ts.checkShutdownTimeouts()).toBe(true);
    expect(calls.at(-1)).toBe(`destroy ${d}`);
    expect(ts.size).toBe(0);
    expect(ts.shutdownsPending).toBe(false);
    await expect(ts.shutdown(0)).rejects.toMatchObject({ code: 'EPERM' });
  });

  it('takes shutdown_timeout from Dom0\'s command line', async () => {
    const { encodeDom0Cmdline, parseDom0Cmdline } = await import('../../../dom0/kernel.ts');
    expect(parseDom0Cmdline(encodeDom0Cmdline({ guests: [], keep: true, shutdownTimeoutS: 5 }))).toEqual({ guests: [], keep: true, shutdownTimeoutS: 5 });
    expect(parseDom0Cmdline(encodeDom0Cmdline({ guests: [], keep: false }))).toEqual({ guests: [], keep: false });
  });
});

describe('xl top counters (stats)', () => {
  type VbdStatsFn = NonNullable<ConstructorParameters<typeof Dom0Toolstack>[0]['vbdStats']>;
  const make = (vbdStats?: VbdStatsFn) => new Dom0Toolstack({
    ctrl: {} as XenCtrl, xb: {} as XenbusClient, consoled: {} as Xenconsoled, sleep: async () => {}, say: () => {}, names: new Map(),
    ...(vbdStats ? { vbdStats } : {}),
  });
  const dev = (domid: number, devid: number, n: number) => ({
    domid, devid, ooReq: 0, rdReq: n, wrReq: 2 * n, fReq: 3, dsReq: 4, rdSect: 8 * n, wrSect: 16 * n,
  });

  it('without blkback: no counters', () => {
    expect(make().stats()).toEqual([]);
    expect(make(() => []).stats()).toEqual([]);
  });

  it('maps blkback\'s per-device counters to one DomainStats per domain with devices, read afresh each time', () => {
    let devs = [dev(3, 51712, 1), dev(1, 51728, 5), dev(1, 51712, 2)];
    const ts = make(() => devs);
    expect(ts.stats()).toEqual([
      { domid: 1, nets: [], vbds: [
        { dev: 51728, error: false, ooReqs: 0, rdReqs: 5, wrReqs: 10, rdSects: 40, wrSects: 80 },
        { dev: 51712, error: false, ooReqs: 0, rdReqs: 2, wrReqs: 4, rdSects: 16, wrSects: 32 },
      ] },
      { domid: 3, nets: [], vbds: [{ dev: 51712, error: false, ooReqs: 0, rdReqs: 1, wrReqs: 2, rdSects: 8, wrSects: 16 }] },
    ]);
    devs = [{ ...dev(3, 51712, 7), ooReq: 9 }];
    expect(ts.stats()).toEqual([{ domid: 3, nets: [], vbds: [{ dev: 51712, error: false, ooReqs: 9, rdReqs: 7, wrReqs: 14, rdSects: 56, wrSects: 112 }] }]);
  });

});
