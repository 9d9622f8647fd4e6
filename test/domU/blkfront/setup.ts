/**
 * blkfront's test bench: a TestMachine with Dom0's xenstored (in-process,
 * no socket), one PV guest built by the toolstack, the fake blkback on Dom0,
 * and the guest's event channels, grant table and xenbus client. Nothing
 * blocks: `round()` dispatches each side's events and runs continuations;
 * `run(p)` runs rounds until p settles.
 */
import { TestMachine, type TestVcpu } from '../../helpers/machine.ts';
import { EventChannels } from '../../../shared/guest/evtchn.ts';
import { GrantTable } from '../../../shared/guest/gnttab.ts';
import { GuestXenbus } from '../../../shared/guest/xenbus.ts';
import { XenstoredService } from '../../../dom0/xenstored/service.ts';
import { createPvGuest, writeDom0Entries } from '../../../dom0/toolstack/domain.ts';
import { liveSlot } from '../../../hypervisor/domain.ts';
import { BlockFront } from '../../../domU/blkfront/blkfront.ts';
import type { BlkfrontOptions } from '../../../domU/blkfront/types.ts';
import { FakeBlkback, type FakeBlkbackFeatures } from '../../helpers/fake-blkback.ts';

export const DEVID = 51712;

export interface BenchOptions {
  readonly sectors?: number;
  readonly features?: FakeBlkbackFeatures;
  readonly info?: number;
  readonly sectorSize?: number;
  readonly guestMiB?: number;
}

export async function bench(o: BenchOptions = {}) {
  const m = new TestMachine({}, 4);
  const ev = new EventChannels(m.dom0.xen);
  const posted: Array<() => void> = [];
  const xsd = await XenstoredService.start({ ctrl: m.ctrl, ev, post: (w) => posted.push(w), socketPath: null });
  const xb = xsd.xb;
  await writeDom0Entries(xb);
  const gnt0 = new GrantTable(m.dom0.xen, { mapSlots: 1024 });
  const g = await createPvGuest(m.ctrl, xb, { name: 'blk', kernel: 'domU/guests/hello.ts', memoryMiB: o.guestMiB ?? 4 });
  m.ctrl.unpauseDomain(g.domid);
  const v: TestVcpu = m.vcpu(liveSlot(m.hv, g.domid), 0);
  const gev = new EventChannels(v.xen);
  const gxs = new GuestXenbus(gev);
  const ggnt = new GrantTable(v.xen);
  const back = new FakeBlkback({
    api: m.dom0.api, ev, gnt: gnt0, xb, frontDomid: g.domid, devid: DEVID, sectors: o.sectors ?? 4096,
    features: o.features, info: o.info, sectorSize: o.sectorSize,
  });
  const warnings: string[] = [];

  const round = async (): Promise<void> => {
    ev.dispatch();
    for (const w of posted.splice(0)) w();
    gev.dispatch();
    for (let i = 0; i < 16; i++) await undefined;
  };
  const run = async <T>(p: Promise<T>, max = 400): Promise<T> => {
    let settled = false;
    p.then(() => { settled = true; }, () => { settled = true; });
    for (let i = 0; i < max && !settled; i++) await round();
    if (!settled) throw new Error(`still pending after ${max} rounds`);
    return p;
  };
  /** Rounds until `cond` holds (or fail). */
  const until = async (cond: () => boolean | Promise<boolean>, max = 400): Promise<void> => {
    for (let i = 0; i < max; i++) {
      if (await cond()) return;
      await round();
    }
    throw new Error('condition never held');
  };
  const settle = async (n = 20): Promise<void> => { for (let i = 0; i < n; i++) await round(); };
  const connect = (opts: BlkfrontOptions = {}): Promise<BlockFront> =>
    run(BlockFront.connect({ ev: gev, gnttab: ggnt, xs: gxs.client, devid: DEVID, loop: null, options: { warn: (msg) => warnings.push(msg), ...opts } }));
  await back.create();
  await settle(2);
  const refsBefore = ggnt.freeRefCount;
  const pagesBefore = v.xen.freePageCount;
  return { m, ev, xb, gnt0, g, v, gev, gxs, ggnt, back, round, run, until, settle, connect, warnings, refsBefore, pagesBefore };
}

/** Bytes of a recognisable pattern for sectors [sector, sector + count). */
export function pattern(sector: number, count: number, salt = 1): Uint8Array {
  const b = new Uint8Array(count * 512);
  for (let i = 0; i < b.length; i++) b[i] = ((sector * 512 + i) * 31 + salt * 7 + (i >> 9)) & 0xff;
  return b;
}

/** The outcome of a promise, for assertions: 'ok' or the error's reason/status. */
export async function outcome(p: Promise<unknown>): Promise<string> {
  try {
    await p;
    return 'ok';
  } catch (e) {
    const x = e as { reason?: string; status?: number };
    return x.reason === 'status' ? `status ${x.status}` : String(x.reason ?? e);
  }
}

/** Byte equality without vitest's element-by-element diff (slow on big arrays). */
/**
 * Hot-unplug with I/O in flight: the backend holds what `issue` submits, is
 * unplugged (online 0, Closing), answers `answered` of the held requests,
 * then its directory is removed. Returns each I/O's outcome (outcome()).
 */
export async function unplugWithHeld(t: Awaited<ReturnType<typeof bench>>, dev: { readonly state: string }, issue: () => Array<Promise<unknown>>, answered: number): Promise<string[]> {
  t.back.misbehave.hold = true;
  const ps = issue();
  await t.settle(3);
  await t.back.unplug();
  await t.until(() => dev.state === 'Closing');
  t.back.release(answered);
  await t.settle(3);
  await t.back.remove();
  return t.run(Promise.all(ps.map(outcome)));
}

export function sameBytes(a: Uint8Array, b: Uint8Array): boolean {
  return a.length === b.length && Buffer.compare(a, b) === 0;
}
