/**
 * blkback's xenbus side against the fake frontend (test/helpers/fake-blkfront.ts)
 * on a real temp file: probe keys, InitWait, connect, Connected, close and
 * reconnect, the fatal paths (missing file, unknown protocol), toolstack
 * removal, and no leaked mapping, port, gfn or watch afterwards.
 */
import { describe, expect, it } from 'vitest';
import { BlkTestbed, FakeBlkfront } from '../../helpers/fake-blkfront.ts';
import { tempDisk } from '../../helpers/temp-disk.ts';

describe('blkback handshake', () => {
  it('probes, publishes features, connects, reports the disk, and releases everything on unplug', async () => {
    const tb = await BlkTestbed.start();
    const before = tb.dom0Resources();
    const f = await FakeBlkfront.create(tb);
    await tb.addVbd(f.domid, f.devid, { params: tempDisk(1 << 20) });
    const be = f.be;
    const xb = tb.xb;
    expect(await xb.read(`${be}/state`)).toBe('2');
    expect(await xb.read(`${be}/feature-flush-cache`)).toBe('1');
    expect(await xb.read(`${be}/feature-barrier`)).toBe('1');
    expect(await xb.read(`${be}/feature-discard`)).toBe('1');
    expect(await xb.read(`${be}/discard-granularity`)).toBe('512');
    expect(await xb.read(`${be}/discard-alignment`)).toBe('0');
    expect(await xb.read(`${be}/discard-secure`)).toBe('0');
    expect(await xb.read(`${be}/feature-persistent`)).toBe('1');
    expect(await xb.read(`${be}/feature-max-indirect-segments`)).toBe('256');
    expect(await xb.read(`${be}/max-ring-page-order`)).toBe('4');
    await f.connect();
    expect(await f.backendState()).toBe('4');
    expect(await xb.read(`${be}/sectors`)).toBe('2048');
    expect(await xb.read(`${be}/info`)).toBe('0');
    expect(await xb.read(`${be}/sector-size`)).toBe('512');
    expect(await xb.read(`${be}/physical-sector-size`)).toBe('512');
    expect(tb.driver.device(f.domid, f.devid)?.connected).toBe(true);
    expect(tb.dom0Resources().maptrack).toBe(before.maptrack + 1);

    await tb.unplug(f.domid, f.devid);
    expect(tb.driver.deviceCount).toBe(0);
    expect(tb.dom0Resources()).toEqual(before);
    expect(tb.driver.pool.inUse).toBe(0);
    expect(tb.m.checkInvariants()).toEqual([]);
  });

  it('read-only cdrom: info has VDISK_READONLY|VDISK_CDROM, no discard', async () => {
    const tb = await BlkTestbed.start();
    const f = await FakeBlkfront.create(tb);
    await tb.addVbd(f.domid, f.devid, { params: tempDisk(4096), mode: 'r', deviceType: 'cdrom' });
    expect(await tb.xb.tryRead(`${f.be}/feature-discard`)).toBeUndefined();
    await f.connect();
    expect(await tb.xb.read(`${f.be}/info`)).toBe('5');
  });

  it('a missing file: error node, state Closing, nothing opened', async () => {
    const tb = await BlkTestbed.start();
    const f = await FakeBlkfront.create(tb);
    await tb.addVbd(f.domid, f.devid, { params: '/nonexistent/xents/disk.img' });
    expect(await tb.xb.read(`${f.be}/state`)).toBe('5');
    expect(await tb.xb.read(`${f.be}/error`)).toMatch(/cannot open \/nonexistent\/xents\/disk.img: ENOENT/);
    await tb.unplug(f.domid, f.devid);
    expect(tb.driver.deviceCount).toBe(0);
  });

  it('an unknown protocol is fatal ("unknown fe protocol"); x86_64-abi is accepted', async () => {
    const tb = await BlkTestbed.start();
    const before = tb.dom0Resources();
    const f = await FakeBlkfront.create(tb, { protocol: 'x86_32-abi' });
    await tb.addVbd(f.domid, f.devid, { params: tempDisk(4096) });
    await f.connect();
    expect(await f.backendState()).toBe('5');
    expect(await tb.xb.read(`${f.be}/error`)).toMatch(/unknown fe protocol x86_32-abi/);
    expect(tb.dom0Resources()).toEqual(before);
    const g = f.sibling({ devid: 51728, protocol: 'x86_64-abi' });
    await tb.addVbd(g.domid, g.devid, { params: tempDisk(4096) });
    await g.connect();
    expect(await g.backendState()).toBe('4');
  });

  it('frontend Closing -> Closing; Closed -> disconnect, Closed; Initialising -> InitWait; reconnects', async () => {
    const tb = await BlkTestbed.start();
    const before = tb.dom0Resources();
    const f = await FakeBlkfront.create(tb);
    await tb.addVbd(f.domid, f.devid, { params: tempDisk(8192) });
    await f.connect();
    expect(await f.backendState()).toBe('4');
    await f.setState(5);
    expect(await f.backendState()).toBe('5');
    await f.setState(6);
    expect(await f.backendState()).toBe('6');
    expect(tb.dom0Resources()).toEqual(before);
    expect(tb.driver.pool.inUse).toBe(0);
    await f.setState(1);
    expect(await f.backendState()).toBe('2');
    await f.connect();
    expect(await f.backendState()).toBe('4');
    await tb.driver.close();
    expect(tb.dom0Resources()).toEqual(before);
    expect(tb.driver.pool.inUse).toBe(0);
  });

  it('switches: no indirect, no multi-page ring (keys absent; an order-2 ring is fatal)', async () => {
    const tb = await BlkTestbed.start({ indirect: false, multiPageRing: false, persistent: false });
    const before = tb.dom0Resources();
    const f = await FakeBlkfront.create(tb, { ringOrder: 2 });
    await tb.addVbd(f.domid, f.devid, { params: tempDisk(4096) });
    expect(await tb.xb.tryRead(`${f.be}/feature-max-indirect-segments`)).toBeUndefined();
    expect(await tb.xb.tryRead(`${f.be}/max-ring-page-order`)).toBeUndefined();
    expect(await tb.xb.read(`${f.be}/feature-persistent`)).toBe('0');
    await f.connect();
    expect(await f.backendState()).toBe('5');
    expect(await tb.xb.read(`${f.be}/error`)).toMatch(/ring page order exceed max:0/);
    expect(tb.dom0Resources()).toEqual(before);
    expect(tb.driver.pool.inUse).toBe(0);
  });

  it('Dom0 gets a grant table only when the first vbd appears (no xenheap frame otherwise)', async () => {
    const tb = await BlkTestbed.start();
    let made = 0;
    const { BlkbackDriver } = await import('../../../dom0/blkback/driver.ts');
    const d = await BlkbackDriver.start({ xb: tb.xb, ev: tb.ev, gt: () => { made++; return tb.gt; }, dma: tb.m.dma, post: () => {}, root: '/local/domain/0/backend/vbd-lazy' });
    await d.settled();
    expect(made).toBe(0);
    await tb.xb.write('/local/domain/0/backend/vbd-lazy/1/5/frontend', '/x');
    await tb.xb.write('/local/domain/0/backend/vbd-lazy/1/5/online', '1');
    await tb.xb.write('/local/domain/0/backend/vbd-lazy/1/5/state', '1');
    await d.settled();
    expect(made).toBe(1);
    await d.close();
  });
});
