/**
 * blkfront against the real blkback (dom0/blkback) on one thread: the same
 * xenstore keys and states, a phy disk in a temp file, and the data path
 * through Dom0's grant mappings and host DMA.
 */
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { TestMachine } from '../../helpers/machine.ts';
import { EventChannels } from '../../../shared/guest/evtchn.ts';
import { GrantTable } from '../../../shared/guest/gnttab.ts';
import { GuestXenbus } from '../../../shared/guest/xenbus.ts';
import { XenstoredService } from '../../../dom0/xenstored/service.ts';
import { createPvGuest, writeDom0Entries } from '../../../dom0/toolstack/domain.ts';
import { BlkbackDriver } from '../../../dom0/blkback/driver.ts';
import { liveSlot } from '../../../hypervisor/domain.ts';
import { BlockFront } from '../../../domU/blkfront/blkfront.ts';
import type { BlkfrontOptions } from '../../../domU/blkfront/types.ts';
import { outcome, pattern, sameBytes } from './setup.ts';

const DEVID = 51712;
const dirs: string[] = [];
afterEach(() => { for (const d of dirs.splice(0)) rmSync(d, { recursive: true, force: true }); });

async function realBench(bytes = 1 << 20) {
  const m = new TestMachine({ p2mEntries: 8192 }, 2);
  const ev = new EventChannels(m.dom0.xen);
  const posted: Array<() => void> = [];
  const xsd = await XenstoredService.start({ ctrl: m.ctrl, ev, post: (w) => posted.push(w), socketPath: null });
  const xb = xsd.xb;
  await writeDom0Entries(xb);
  const driver = await BlkbackDriver.start({ xb, ev, gt: () => new GrantTable(m.dom0.xen), dma: m.dma, post: (w) => posted.push(w) });
  const g = await createPvGuest(m.ctrl, xb, { name: 'blk', kernel: 'domU/guests/hello.ts', memoryMiB: 4 });
  m.ctrl.unpauseDomain(g.domid);
  const v = m.vcpu(liveSlot(m.hv, g.domid), 0);
  const gev = new EventChannels(v.xen);
  const gxs = new GuestXenbus(gev);
  const ggnt = new GrantTable(v.xen);
  const dir = mkdtempSync(join(tmpdir(), 'xents-blkfront-'));
  dirs.push(dir);
  const file = join(dir, 'disk.img');
  writeFileSync(file, new Uint8Array(bytes));
  const fe = `/local/domain/${g.domid}/device/vbd/${DEVID}`;
  const be = `/local/domain/0/backend/vbd/${g.domid}/${DEVID}`;
  await xb.transaction(async (tx) => {
    await xb.write(fe, '', tx);
    await xb.setPerms(fe, [{ domid: g.domid, access: 'n' }, { domid: 0, access: 'r' }], tx);
    await xb.write(`${fe}/backend`, be, tx);
    await xb.write(`${fe}/backend-id`, '0', tx);
    await xb.write(`${fe}/state`, '1', tx);
    await xb.write(be, '', tx);
    await xb.setPerms(be, [{ domid: 0, access: 'n' }, { domid: g.domid, access: 'r' }], tx);
    for (const [k, val] of Object.entries({
      frontend: fe, 'frontend-id': String(g.domid), params: file, mode: 'w', type: 'phy', 'device-type': 'disk',
      dev: 'xvda', removable: '0', bootable: '1', online: '1', state: '1',
    })) await xb.write(`${be}/${k}`, val, tx);
  });
  let hop = 0;
  const round = async (): Promise<void> => {
    ev.dispatch();
    for (const w of posted.splice(0)) w();
    await driver.settled();
    gev.dispatch();
    for (let i = 0; i < 16; i++) await undefined;
    // fdatasync completes in the host's thread pool: let macrotasks run now and then.
    if (++hop % 4 === 0) await new Promise((r) => setTimeout(r, 1));
  };
  const run = async <T>(p: Promise<T>, max = 2000): Promise<T> => {
    let settled = false;
    p.then(() => { settled = true; }, () => { settled = true; });
    for (let i = 0; i < max && !settled; i++) await round();
    if (!settled) throw new Error(`still pending after ${max} rounds`);
    return p;
  };
  const connect = (o: BlkfrontOptions = {}): Promise<BlockFront> =>
    run(BlockFront.connect({ ev: gev, gnttab: ggnt, xs: gxs.client, devid: DEVID, loop: null, options: o }));
  for (let i = 0; i < 5; i++) await round();
  return { m, xb, driver, g, v, ggnt, file, fe, be, run, round, connect, refsBefore: ggnt.freeRefCount, pagesBefore: v.xen.freePageCount };
}

describe('blkfront with the real blkback', () => {
  for (const o of [{ persistent: true, ringPageOrder: 2, maxIndirectSegments: 32 }, { persistent: false, ringPageOrder: 0, maxIndirectSegments: 0 }]) {
    it(`connects and moves data (${JSON.stringify(o)})`, async () => {
      const t = await realBench();
      const dev = await t.connect(o);
      expect(dev.sectors).toBe(2048);
      expect(dev.features).toMatchObject({ persistent: o.persistent, ringPageOrder: o.ringPageOrder, maxIndirectSegments: o.maxIndirectSegments, flushCache: true, barrier: true, discard: true });
      expect(await t.xb.read(`${t.be}/state`)).toBe('4');
      const data = pattern(10, 8 * 70, 3);
      const smalls = Array.from({ length: 40 }, (_, i) => dev.write(1200 + i * 8, pattern(1200 + i * 8, 8, i)));
      await t.run(Promise.all([dev.write(10, data), ...smalls]));
      await t.run(dev.flush());
      const file = readFileSync(t.file);
      expect(sameBytes(file.subarray(10 * 512, 10 * 512 + data.length), data)).toBe(true);
      expect(sameBytes(await t.run(dev.read(10, 8 * 70)), data)).toBe(true);
      expect(sameBytes(await t.run(dev.read(1200 + 39 * 8, 8)), pattern(1200 + 39 * 8, 8, 39))).toBe(true);
      await t.run(dev.discard(10, 16));
      expect((await t.run(dev.read(10, 16))).every((b) => b === 0)).toBe(true);
      expect(await outcome(dev.read(2047, 2))).toBe('range');
      await t.run(dev.close());
      expect(await t.xb.read(`${t.be}/state`)).toBe('6');
      expect(t.ggnt.freeRefCount).toBe(t.refsBefore);
      expect(t.v.xen.freePageCount).toBe(t.pagesBefore);
      expect(dev.grantStats.leaked).toBe(0);
    });
  }

  for (const persistent of [true, false]) {
    it(`zero-copy buffers: writePages and readPages through Dom0's grant mappings (persistent ${persistent})`, async () => {
      const t = await realBench();
      const dev = await t.connect({ persistent, maxIndirectSegments: 32 });
      const buf = dev.allocBuffer(40 * 4096);
      expect(buf.contiguous).toBe(true);
      const data = pattern(64, 8 * 40, 5);
      buf.write(0, data);
      // 40 pages: one indirect request of 32 segments, then 8 pages direct.
      await t.run(dev.writePages(64, buf));
      await t.run(dev.flush());
      expect(sameBytes(readFileSync(t.file).subarray(64 * 512, 64 * 512 + data.length), data)).toBe(true);
      expect(sameBytes(await t.run(dev.read(64, 8 * 40)), data)).toBe(true);
      const other = pattern(1000, 16, 9);
      await t.run(dev.write(1000, other));
      const rb = dev.allocBuffer(2 * 4096);
      const granted = dev.grantStats.granted;
      for (let i = 0; i < 10; i++) await t.run(dev.readPages(1000, rb));
      const got = new Uint8Array(other.length);
      rb.readInto(0, got);
      expect(sameBytes(got, other)).toBe(true);
      if (persistent) {
        // Granted once, on first use; the backend's persistent mappings hit from then on.
        expect(dev.grantStats.granted).toBe(granted + 2);
        expect(dev.bufferGrants).toBe(42);
      } else {
        expect(dev.grantStats.granted).toBe(granted + 20);
        expect(dev.grantStats.ended).toBe(dev.grantStats.granted);
      }
      dev.freeBuffer(buf);
      dev.freeBuffer(rb);
      await t.run(dev.close());
      expect(t.ggnt.freeRefCount).toBe(t.refsBefore);
      expect(t.v.xen.freePageCount).toBe(t.pagesBefore);
      expect(dev.grantStats.granted).toBe(dev.grantStats.ended);
      expect(dev.grantStats.leaked).toBe(0);
    });
  }

  it('toolstack hot-unplug: the device goes away and later I/O fails "removed"', async () => {
    const t = await realBench();
    const dev = await t.connect();
    await t.run(dev.write(0, pattern(0, 8)));
    await t.xb.write(`${t.be}/online`, '0');
    await t.xb.write(`${t.be}/state`, '5');
    await t.run(dev.closed);
    expect(dev.state).toBe('Closed');
    await expect(dev.read(0, 8)).rejects.toMatchObject({ reason: 'removed' });
    expect(t.ggnt.freeRefCount).toBe(t.refsBefore);
    expect(t.v.xen.freePageCount).toBe(t.pagesBefore);
  });
});
