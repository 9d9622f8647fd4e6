import { describe, expect, it } from 'vitest';
import { bench, DEVID } from './setup.ts';
import { handshakeAction } from '../../../domU/blkfront/handshake.ts';

describe('blkfront handshake', () => {
  it('the transition table: talk on InitWait, connect on Connected, restart when a closed backend returns', () => {
    expect(handshakeAction('Initialising', 'InitWait')).toBe('talk');
    expect(handshakeAction('Initialised', 'Connected')).toBe('connect');
    expect(handshakeAction('Connected', 'Connected')).toBe('none');
    expect(handshakeAction('Connected', 'Closing')).toBe('front-close');
    expect(handshakeAction('Connected', 'Closed')).toBe('backend-closed');
    expect(handshakeAction('Closing', 'Closing')).toBe('close-when-drained');
    expect(handshakeAction('Closed', 'InitWait')).toBe('restart');
    expect(handshakeAction('Closed', 'gone')).toBe('check-unplug');
    expect(handshakeAction('Initialising', 'unknown')).toBe('none');
  });

  it('order 0: ring-ref, event-channel, protocol, feature-persistent; Initialised then Connected; disk details read', async () => {
    const t = await bench({ sectors: 2048, info: 0 });
    const dev = await t.connect();
    const f = `/local/domain/${t.g.domid}/device/vbd/${DEVID}`;
    expect(dev.state).toBe('Connected');
    expect(await t.xb.read(`${f}/state`)).toBe('4');
    expect(await t.xb.read(`${f}/ring-ref`)).toMatch(/^\d+$/);
    expect(await t.xb.tryRead(`${f}/ring-page-order`)).toBeUndefined();
    expect(Number(await t.xb.read(`${f}/event-channel`))).toBe(dev.eventChannel);
    expect(await t.xb.read(`${f}/protocol`)).toBe('x86_64-abi');
    expect(await t.xb.read(`${f}/feature-persistent`)).toBe('1');
    expect(t.back.frontStates).toEqual(['Initialising', 'Initialised', 'Connected']);
    expect(await t.back.backState()).toBe('4');
    expect(t.back.ringOrder).toBe(0);
    expect(dev.sectors).toBe(2048);
    expect(dev.sectorSize).toBe(512);
    expect(dev.readOnly).toBe(false);
    expect(dev.features).toMatchObject({ flushCache: true, barrier: true, discard: true, persistent: true, maxIndirectSegments: 32, ringPageOrder: 0, ringSize: 32 });
  });

  it('multi-page ring: ring-page-order and ring-ref0..N-1, capped by max-ring-page-order', async () => {
    const t = await bench({ features: { maxRingPageOrder: 2 } });
    const dev = await t.connect({ ringPageOrder: 3 });
    const f = `/local/domain/${t.g.domid}/device/vbd/${DEVID}`;
    expect(await t.xb.read(`${f}/ring-page-order`)).toBe('2');
    expect(await t.xb.tryRead(`${f}/ring-ref`)).toBeUndefined();
    const refs = await Promise.all([0, 1, 2, 3].map((i) => t.xb.read(`${f}/ring-ref${i}`)));
    expect(new Set(refs).size).toBe(4);
    expect(await t.xb.tryRead(`${f}/ring-ref4`)).toBeUndefined();
    expect(dev.features.ringSize).toBe(128);
    expect(t.back.ringOrder).toBe(2);
    // A ring-sized burst works over the four pages.
    const ps = Array.from({ length: 128 }, (_, i) => dev.write(i * 8, new Uint8Array(4096).fill(i)));
    await t.run(Promise.all(ps));
    expect(t.back.disk[127 * 4096]).toBe(127);
  });

  it('without max-ring-page-order or persistence the backend gets order 0 and feature-persistent is still ours to say', async () => {
    const t = await bench({ features: { maxRingPageOrder: undefined, persistent: false, maxIndirectSegments: 0 } });
    const dev = await t.connect({ ringPageOrder: 2, persistent: true });
    expect(dev.features).toMatchObject({ ringPageOrder: 0, persistent: false, maxIndirectSegments: 0 });
    expect(await t.xb.read(`/local/domain/${t.g.domid}/device/vbd/${DEVID}/feature-persistent`)).toBe('1');
  });

  it('read-only disks (VDISK_READONLY) refuse writes and discards, zero-copy ones too; reads go on', async () => {
    const t = await bench({ info: 4 });
    const dev = await t.connect();
    expect(dev.readOnly).toBe(true);
    await expect(dev.write(0, new Uint8Array(512))).rejects.toMatchObject({ reason: 'unsupported' });
    await expect(dev.discard(0, 8)).rejects.toMatchObject({ reason: 'unsupported' });
    const buf = dev.allocBuffer(4096);
    await expect(dev.writePages(0, buf)).rejects.toMatchObject({ reason: 'unsupported' });
    let called = false;
    expect(dev.queuePages('write', 0, buf, 0, 8, () => { called = true; })).toMatchObject({ reason: 'unsupported' });
    expect(t.back.seen).toHaveLength(0);
    await t.run(dev.readPages(0, buf));
    expect(t.back.seen).toHaveLength(1);
    expect(called).toBe(false);
    expect(buf.pending).toBe(0);
    dev.freeBuffer(buf);
  });
});
