/**
 * The xenbus client against the real xenstored (dom0/xenstored) over an
 * in-memory byte transport that cuts the stream at random places: the same
 * client code Dom0 and DomU kernels use on the ring.
 */
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { Xenstored, type XsConnection } from '../../../dom0/xenstored/connection.ts';
import { NO_TX, XenbusClient, XenbusError, type XenbusTransport } from '../../../shared/xenbus/client.ts';

/** A transport to `c` of `d` that delivers in pieces of at most `chunk` bytes, asynchronously. */
function pipe(d: Xenstored, c: XsConnection, chunk = 1 << 20): XenbusTransport {
  let deliver: (b: Uint8Array) => void = () => {};
  const pump = (): void => {
    while (c.hasOutput()) {
      const b = d.takeOutput(c, chunk);
      queueMicrotask(() => deliver(b));
    }
  };
  c.transport = { output: pump, resume: () => {}, closed: () => {} };
  return {
    send: (bytes) => {
      for (let i = 0; i < bytes.length; i += chunk) {
        const part = bytes.slice(i, i + chunk);
        queueMicrotask(() => d.receive(c, part));
      }
    },
    onReceive: (h) => { deliver = h; },
  };
}

function world(chunk?: number) {
  const d = new Xenstored();
  const dom0c = d.connectDomain(0);
  const dom0 = new XenbusClient(pipe(d, dom0c, chunk));
  return { d, dom0 };
}

async function domU(d: Xenstored, dom0: XenbusClient, domid: number, chunk?: number): Promise<XenbusClient> {
  let conn: XsConnection | undefined;
  // The daemon creates the domain's connection at INTRODUCE; grab it from the connection list.
  await dom0.introduce(domid, 1000 + domid, 5);
  conn = [...d.connections()].find((c) => c.domid === domid);
  await dom0.mkdir(`/local/domain/${domid}`);
  await dom0.setPerms(`/local/domain/${domid}`, [{ domid, access: 'n' }]);
  return new XenbusClient(pipe(d, conn!, chunk));
}

describe('xenbus client', () => {
  it('read, write, mkdir, rm, directory, perms, relative paths, domain path', async () => {
    const { d, dom0 } = world(3);
    const u = await domU(d, dom0, 1, 5);
    await u.write('device/vif/0/mac', '00:16:3e:00:00:01');
    expect(await u.read('device/vif/0/mac')).toBe('00:16:3e:00:00:01');
    expect(await dom0.read('/local/domain/1/device/vif/0/mac')).toBe('00:16:3e:00:00:01');
    await u.mkdir('device/vbd');
    expect(await u.directory('device')).toEqual(['vif', 'vbd']);
    expect(await u.getPerms('device')).toEqual([{ domid: 1, access: 'n' }]);
    await u.setPerms('device', [{ domid: 1, access: 'n' }, { domid: 0, access: 'r' }]);
    expect(await u.getPerms('device')).toEqual([{ domid: 1, access: 'n' }, { domid: 0, access: 'r' }]);
    await u.rm('device/vif');
    expect(await u.tryRead('device/vif/0/mac')).toBeUndefined();
    expect(await u.getDomainPath(1)).toBe('/local/domain/1');
    await expect(u.read('/tool')).rejects.toMatchObject({ errno: 'EACCES', op: 'XS_READ', path: '/tool' });
    await expect(u.isDomainIntroduced(1)).rejects.toBeInstanceOf(XenbusError);
    expect(await dom0.isDomainIntroduced(1)).toBe(true);
    expect(await dom0.isDomainIntroduced(9)).toBe(false);
    const bytes = new Uint8Array([0, 1, 2, 255]);
    await dom0.write('/bin', bytes);
    expect(await dom0.readBytes('/bin')).toEqual(bytes);
  });

  it('pipelined requests are matched to their replies', async () => {
    const { dom0 } = world(7);
    await Promise.all(Array.from({ length: 50 }, (_, i) => dom0.write(`/p/${i}`, String(i))));
    const got = await Promise.all(Array.from({ length: 50 }, (_, i) => dom0.read(`/p/${i}`)));
    expect(got).toEqual(Array.from({ length: 50 }, (_, i) => String(i)));
    expect(dom0.inFlight).toBe(0);
  });

  it('directory falls back to DIRECTORY_PART for lists over 4096 bytes', async () => {
    const { dom0 } = world();
    const names = Array.from({ length: 250 }, (_, i) => `a-rather-long-child-name-${i}`);
    await Promise.all(names.map((n) => dom0.mkdir(`/many/${n}`)));
    expect(await dom0.directory('/many')).toEqual(names);
  });

  it('a request over 4096 bytes is refused locally with E2BIG (the connection survives)', async () => {
    const { dom0 } = world();
    await expect(dom0.write('/big', 'x'.repeat(5000))).rejects.toMatchObject({ errno: 'E2BIG' });
    await dom0.write('/small', 'ok');
    expect(await dom0.read('/small')).toBe('ok');
  });

  it('watches call back for the first event and every change; unwatch stops them', async () => {
    const { d, dom0 } = world(4);
    const u = await domU(d, dom0, 2, 6);
    const seen: string[] = [];
    const w = await u.watch('device', (p) => seen.push(p));
    await dom0.write('/local/domain/2/device/vbd/768/state', '1');
    await u.read('device/vbd/768/state'); // a round trip: events sent before it have arrived
    await w.unwatch();
    await dom0.write('/local/domain/2/device/vbd/768/state', '2');
    await u.read('device/vbd/768/state');
    expect(seen).toEqual(['device', 'device/vbd/768/state']);
    const special: string[] = [];
    await dom0.watch('@releaseDomain', (p, t) => special.push(`${p} ${t}`), 'rel');
    await dom0.release(2);
    await dom0.read('/tool');
    expect(special).toEqual(['@releaseDomain rel', '@releaseDomain rel']);
  });

  it('transaction retries on EAGAIN until it commits', async () => {
    const { dom0 } = world();
    await dom0.write('/counter', '0');
    let attempts = 0;
    await dom0.transaction(async (tx) => {
      attempts++;
      const v = Number(await dom0.read('/counter', tx));
      if (attempts < 3) await dom0.write('/counter', String(v + 100)); // a conflicting writer, outside
      await dom0.write('/counter', String(v + 1), tx);
    });
    expect(attempts).toBe(3);
    expect(await dom0.read('/counter')).toBe('201');
  });

  it('concurrent increments in transactions lose no update (property)', async () => {
    await fc.assert(fc.asyncProperty(fc.integer({ min: 2, max: 6 }), fc.integer({ min: 1, max: 6 }), async (clients, each) => {
      const { d, dom0 } = world(9);
      const xs = [dom0];
      for (let i = 1; i < clients; i++) xs.push(new XenbusClient(pipe(d, d.connectSocket(), 11)));
      await dom0.write('/n', '0');
      await Promise.all(xs.map(async (x) => {
        for (let k = 0; k < each; k++) {
          await x.transaction(async (tx) => {
            const v = Number(await x.read('/n', tx));
            await x.write('/n', String(v + 1), tx);
          }, { maxAttempts: 100 });
        }
      }));
      expect(await dom0.read('/n')).toBe(String(clients * each));
    }), { numRuns: 20 });
  });

  it('an error inside the transaction aborts it and propagates', async () => {
    const { dom0 } = world();
    await expect(dom0.transaction(async (tx) => {
      await dom0.write('/t/x', '1', tx);
      await dom0.read('/t/none', tx);
    })).rejects.toMatchObject({ errno: 'ENOENT' });
    expect(await dom0.tryRead('/t/x')).toBeUndefined();
    expect(await dom0.tryRead('/t/x', NO_TX)).toBeUndefined();
  });

  it('a failed transport rejects everything in flight and after with EIO', async () => {
    const sent: Uint8Array[] = [];
    const x = new XenbusClient({ send: (b) => sent.push(b), onReceive: () => {} });
    const p = x.read('/a');
    x.fail();
    await expect(p).rejects.toMatchObject({ errno: 'EIO' });
    await expect(x.read('/b')).rejects.toMatchObject({ errno: 'EIO' });
    expect(sent).toHaveLength(1);
  });
});
