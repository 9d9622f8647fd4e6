/**
 * The toolstack's vbd half (dom0/toolstack/vbd.ts) against the real
 * xenstored (dom0/xenstored) over an in-memory transport: the nodes
 * diskAdd writes (paths, values, permissions), the backing-file check and
 * sparse creation, removal waiting for the backend to close (the test plays
 * blkback, a fake peer writing the backend's state), forced removal and
 * block-list's view.
 */
import { existsSync, mkdtempSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { Xenstored, type XsConnection } from '../../../dom0/xenstored/connection.ts';
import { XenbusClient, type XenbusTransport } from '../../../shared/xenbus/client.ts';
import { parseDiskSpec, type DiskSpec } from '../../../dom0/toolstack/disk.ts';
import {
  diskAdd, diskList, diskRemove, diskRemoveAll, parseVbdDevid, vbdEntries, VbdError,
} from '../../../dom0/toolstack/vbd.ts';

function pipe(d: Xenstored, c: XsConnection): XenbusTransport {
  let deliver: (b: Uint8Array) => void = () => {};
  c.transport = {
    output: () => { while (c.hasOutput()) { const b = d.takeOutput(c, 1 << 20); queueMicrotask(() => deliver(b)); } },
    resume: () => {}, closed: () => {},
  };
  return { send: (bytes) => { queueMicrotask(() => d.receive(c, bytes)); }, onReceive: (h) => { deliver = h; } };
}

const D = 3;
let dir: string;
let xb: XenbusClient;

beforeEach(async () => {
  dir = mkdtempSync(join(tmpdir(), 'xents-vbd-'));
  const d = new Xenstored();
  xb = new XenbusClient(pipe(d, d.connectDomain(0)));
  // What createPvGuest has made by the time disks are added.
  const ro = [{ domid: 0, access: 'n' as const }, { domid: D, access: 'r' as const }];
  for (const p of [`/local/domain/${D}`, `/local/domain/${D}/device`]) { await xb.mkdir(p); await xb.setPerms(p, ro); }
  for (const p of [`/libxl/${D}`, `/libxl/${D}/device`]) { await xb.mkdir(p); await xb.setPerms(p, [{ domid: 0, access: 'n' }]); }
});
afterEach(() => { rmSync(dir, { recursive: true, force: true }); });

const spec = (s: string): DiskSpec => {
  const r = parseDiskSpec(s);
  if (typeof r === 'string') throw new Error(r);
  return r;
};
const perms = async (p: string): Promise<string[]> => (await xb.getPerms(p)).map((x) => `${x.access}${x.domid}`);
/** Every node under `root` with its value, relative to it. */
async function tree(root: string): Promise<Record<string, string>> {
  const out: Record<string, string> = {};
  const walk = async (p: string, rel: string): Promise<void> => {
    for (const k of await xb.directory(p)) {
      const kids = await xb.directory(`${p}/${k}`);
      if (kids.length === 0) out[rel + k] = await xb.read(`${p}/${k}`);
      else await walk(`${p}/${k}`, `${rel}${k}/`);
    }
  };
  await walk(root, '');
  return out;
}
const errOf = async (p: Promise<unknown>): Promise<string> => {
  try { await p; return 'ok'; } catch (e) { return e instanceof VbdError ? `${e.code}: ${e.message}` : String(e); }
};

describe('diskAdd: the nodes libxl__device_disk_add writes', () => {
  const BE = (devid: number): string => `/local/domain/0/backend/vbd/${D}/${devid}`;
  const FE = (devid: number): string => `/local/domain/${D}/device/vbd/${devid}`;
  const cases: Array<{ name: string; spec: (dir: string) => string; devid: number; back: Record<string, string>; front: Record<string, string> }> = [
    {
      name: 'a writable disk (xvda)', spec: (d) => `format=raw, vdev=xvda, access=rw, target=${d}/a.img`, devid: 51712,
      back: { removable: '0', mode: 'w', 'device-type': 'disk', type: 'phy', dev: 'xvda', 'discard-enable': '1' },
      front: { 'device-type': 'disk', 'virtual-device': '51712', trusted: '1' },
    },
    {
      name: 'a read-only disk, positional (xvdb, r)', spec: (d) => `${d}/a.img,raw,xvdb,r`, devid: 51728,
      back: { removable: '0', mode: 'r', 'device-type': 'disk', 'discard-enable': '0' },
      front: { 'virtual-device': '51728' },
    },
    {
      name: 'a CD-ROM (hdc:cdrom)', spec: (d) => `${d}/a.img,raw,hdc:cdrom`, devid: 5632,
      back: { removable: '1', mode: 'r', 'device-type': 'cdrom', dev: 'hdc' },
      front: { 'device-type': 'cdrom', 'virtual-device': '5632' },
    },
    {
      name: 'flags: no-discard, direct-io-safe, untrusted', spec: (d) => `vdev=xvdc, no-discard, direct-io-safe, untrusted, target=${d}/a.img`, devid: 51744,
      back: { 'discard-enable': '0', 'direct-io-safe': '1' },
      front: { trusted: '0' },
    },
    {
      name: 'a null device (backendtype=null, size=1G)', spec: () => 'vdev=xvdd, backendtype=null, size=1G', devid: 51760,
      back: { type: 'null', params: String(1024 ** 3), mode: 'w' },
      front: {},
    },
  ];
  for (const c of cases) {
    it(c.name, async () => {
      writeFileSync(join(dir, 'a.img'), Buffer.alloc(4096));
      const s = spec(c.spec(dir));
      const dev = await diskAdd(xb, D, s);
      expect(dev).toMatchObject({ devid: c.devid, frontendPath: FE(c.devid), backendPath: BE(c.devid) });
      const back = await tree(BE(c.devid));
      expect(back).toMatchObject({
        frontend: FE(c.devid), 'frontend-id': String(D), online: '1', bootable: '1', state: '1',
        params: s.backendtype === 'null' ? String(s.size) : join(dir, 'a.img'), ...c.back,
      });
      expect(Object.keys(back).sort()).toEqual([
        'bootable', 'dev', 'device-type', ...(s.directIoSafe ? ['direct-io-safe'] : []), 'discard-enable', 'frontend', 'frontend-id',
        'mode', 'online', 'params', 'removable', 'state', 'type',
      ]);
      const front = await tree(FE(c.devid));
      expect(front).toEqual({
        backend: BE(c.devid), 'backend-id': '0', state: '1', 'virtual-device': String(c.devid),
        'device-type': s.devtype, trusted: s.trusted === false ? '0' : '1', ...c.front,
      });
      expect(await tree(`/libxl/${D}/device/vbd/${c.devid}`)).toEqual({ ...back, frontend: FE(c.devid), backend: BE(c.devid) });
      // Permissions (libxl__device_generic_add): the guest owns its frontend, Dom0 reads;
      // Dom0 owns the backend, the guest reads; libxl's record is Dom0's alone.
      expect(await perms(FE(c.devid))).toEqual([`n${D}`, 'r0']);
      for (const k of Object.keys(front)) expect(await perms(`${FE(c.devid)}/${k}`)).toEqual([`n${D}`, 'r0']);
      expect(await perms(BE(c.devid))).toEqual(['n0', `r${D}`]);
      for (const k of Object.keys(back)) expect(await perms(`${BE(c.devid)}/${k}`)).toEqual(['n0', `r${D}`]);
      expect(await perms(`/libxl/${D}/device/vbd/${c.devid}/backend`)).toEqual(['n0']);
    });
  }

  it('refuses a devid in use, by name or by number, and writes nothing more', async () => {
    writeFileSync(join(dir, 'a.img'), '');
    await diskAdd(xb, D, spec(`${dir}/a.img,raw,xvda,w`));
    const before = await tree(`/local/domain/0/backend/vbd/${D}`);
    expect(await errOf(diskAdd(xb, D, spec(`${dir}/a.img,raw,xvda,r`)))).toMatch(/^EEXIST: device already exists in xenstore/);
    expect(await errOf(diskAdd(xb, D, spec(`${dir}/a.img,raw,51712,r`)))).toMatch(/^EEXIST/);
    expect(await tree(`/local/domain/0/backend/vbd/${D}`)).toEqual(before);
  });

  it('refuses a missing target as libxl does, with nothing written', async () => {
    const missing = join(dir, 'nope.img');
    expect(await errOf(diskAdd(xb, D, spec(`${missing},raw,xvda,w`))))
      .toBe(`ENOENT: Disk vdev=xvda failed to stat: ${missing}: No such file or directory`);
    expect(await xb.tryRead(`/local/domain/0/backend/vbd/${D}`)).toBeUndefined();
    expect(await xb.directory(`/local/domain/${D}/device`)).toEqual([]);
    expect(await xb.directory(`/libxl/${D}/device`)).toEqual([]);
    expect(await errOf(diskAdd(xb, D, spec(`${dir},raw,xvda,w`)))).toMatch(/^EINVAL: Disk vdev=xvda: .* is not a regular file/);
  });

  it('size= creates a missing target sparse, and uses an existing one as it is', async () => {
    const f = join(dir, 'new.img');
    const dev = await diskAdd(xb, D, spec(`vdev=xvda, size=1G, target=${f}`));
    expect(dev.createdFile).toBe(f);
    const st = statSync(f);
    expect(st.size).toBe(1024 ** 3);
    expect(st.blocks * 512).toBeLessThan(1024 * 1024); // sparse: nothing allocated
    expect(await xb.read(`/local/domain/0/backend/vbd/${D}/51712/params`)).toBe(f);
    const g = join(dir, 'old.img');
    writeFileSync(g, Buffer.alloc(1024));
    const dev2 = await diskAdd(xb, D, spec(`vdev=xvdb, size=4M, target=${g}`));
    expect(dev2.createdFile).toBeUndefined();
    expect(statSync(g).size).toBe(1024);
  });

  it('a refused device removes the file it created, and creates none for a devid in use', async () => {
    writeFileSync(join(dir, 'a.img'), '');
    await diskAdd(xb, D, spec(`${dir}/a.img,raw,xvda,w`));
    const f = join(dir, 'new.img');
    expect(await errOf(diskAdd(xb, D, spec(`vdev=xvda, size=1M, target=${f}`)))).toMatch(/^EEXIST/);
    expect(existsSync(f)).toBe(false);
  });

  it('refuses a guest without a xenstore home', async () => {
    expect(await errOf(diskAdd(xb, 9, spec('vdev=xvda, backendtype=null, size=1M')))).toMatch(/^ENOENT: domain 9 has no xenstore home/);
  });

  it('vbdEntries is pure and names the devid', () => {
    expect(vbdEntries(1, spec('vdev=xvdb, backendtype=null, size=512')).backend.params).toBe('512');
    expect(parseVbdDevid('xvdb')).toBe(51728);
    expect(parseVbdDevid('51728')).toBe(51728);
    expect(parseVbdDevid('floppy')).toBeNull();
  });
});

describe('diskRemove: libxl__initiate_device_generic_remove', () => {
  const BE = `/local/domain/0/backend/vbd/${D}/51712`;
  const FE = `/local/domain/${D}/device/vbd/51712`;
  const add = async (): Promise<void> => { await diskAdd(xb, D, spec('vdev=xvda, backendtype=null, size=1M')); };

  it('asks the backend to close, waits for Closed, then removes every node', async () => {
    await add();
    await xb.write(`${BE}/state`, '4'); // blkback connected
    const seen: string[] = [];
    let closed = false;
    // The fake backend: on Closing, it tears down and reports Closed.
    await xb.watch(`${BE}/state`, () => {
      void xb.tryRead(`${BE}/state`).then(async (v) => {
        if (v === undefined) return;
        seen.push(v);
        if (v === '5') {
          expect(await xb.read(`${BE}/online`)).toBe('0');
          await new Promise((r) => setTimeout(r, 20));
          closed = true;
          await xb.write(`${BE}/state`, '6');
        }
      });
    }, 'fake-blkback');
    const r = await diskRemove(xb, D, 51712, { timeoutMs: 5000 });
    expect(r).toEqual({ devid: 51712, timedOut: false });
    expect(closed).toBe(true);
    expect(seen).toContain('5');
    for (const p of [FE, BE, `/libxl/${D}/device/vbd/51712`, `/local/domain/0/backend/vbd/${D}`]) expect(await xb.tryRead(p)).toBeUndefined();
    // Empty parents go (libxl__xs_path_cleanup), the guest's device/ and libxl's device/ stay.
    expect(await xb.tryRead(`/local/domain/${D}/device/vbd`)).toBeUndefined();
    expect(await xb.directory(`/local/domain/${D}/device`)).toEqual([]);
    expect(await xb.directory(`/libxl/${D}/device`)).toEqual([]);
  });

  it('removes the nodes anyway when the backend does not close in time, and logs it', async () => {
    await add();
    const log: string[] = [];
    const r = await diskRemove(xb, D, 51712, { timeoutMs: 30, log: (l) => log.push(l) });
    expect(r.timedOut).toBe(true);
    expect(log[0]).toMatch(/did not close within 30 ms; removing it anyway/);
    expect(await xb.tryRead(FE)).toBeUndefined();
    expect(await xb.tryRead(BE)).toBeUndefined();
  });

  it('uses the sleep it is given for the timeout', async () => {
    await add();
    const asked: number[] = [];
    const r = await diskRemove(xb, D, 51712, { sleep: async (ms) => { asked.push(ms); } });
    expect(asked).toEqual([10_000]);
    expect(r.timedOut).toBe(true);
  });

  it('does not wait for a backend already Closed', async () => {
    await add();
    await xb.write(`${BE}/state`, '6');
    const r = await diskRemove(xb, D, 51712, { timeoutMs: 60_000 });
    expect(r.timedOut).toBe(false);
    expect(await xb.tryRead(BE)).toBeUndefined();
  });

  it('force removes at once, without touching the backend state', async () => {
    await add();
    const states: string[] = [];
    await xb.watch(`${BE}/state`, () => { void xb.tryRead(`${BE}/state`).then((v) => { if (v !== undefined) states.push(v); }); }, 'w');
    const r = await diskRemove(xb, D, 51712, { force: true, timeoutMs: 60_000 });
    expect(r.timedOut).toBe(false);
    expect(states).not.toContain('5');
    expect(await xb.tryRead(FE)).toBeUndefined();
    expect(await xb.tryRead(BE)).toBeUndefined();
  });

  it('refuses a device that does not exist', async () => {
    expect(await errOf(diskRemove(xb, D, 51728))).toBe('ENOENT: Device 51728 not connected');
  });

  it('diskRemoveAll removes the guest\'s backend directory (domain destroy)', async () => {
    await add();
    await diskRemoveAll(xb, D);
    expect(await xb.tryRead(`/local/domain/0/backend/vbd/${D}`)).toBeUndefined();
    await diskRemoveAll(xb, D); // nothing left: not an error
  });
});

describe('diskList: what xl block-list shows', () => {
  it('reads the frontend\'s state, event channel and ring-ref, -1 where absent or not a number', async () => {
    await diskAdd(xb, D, spec('vdev=xvdb, backendtype=null, size=1M'));
    await diskAdd(xb, D, spec('vdev=xvda, backendtype=null, size=1M'));
    const FE = `/local/domain/${D}/device/vbd/51712`;
    await xb.write(`${FE}/event-channel`, '7');
    await xb.write(`${FE}/ring-ref`, '9');
    await xb.write(`${FE}/state`, '4');
    await xb.write(`/local/domain/${D}/device/vbd/51728/ring-ref`, 'junk');
    expect(await diskList(xb, D)).toEqual([
      { devid: 51712, vdev: 'xvda', backendId: 0, frontendId: D, state: 4, evtchn: 7, ringRef: 9, backendPath: `/local/domain/0/backend/vbd/${D}/51712` },
      { devid: 51728, vdev: 'xvdb', backendId: 0, frontendId: D, state: 1, evtchn: -1, ringRef: -1, backendPath: `/local/domain/0/backend/vbd/${D}/51728` },
    ]);
    expect(await diskList(xb, 42)).toEqual([]);
  });
});

describe('a guest\'s own frontend nodes', () => {
  it('are not taken for devices, nor their backend key trusted on removal', async () => {
    // The guest owns device/vbd/<devid>: it may write what it likes there.
    await xb.write(`/local/domain/${D}/device/vbd/999/backend`, '/local/domain/0/name');
    expect(await diskList(xb, D)).toEqual([]);
    await xb.write('/local/domain/0/name', 'Domain-0');
    await diskRemove(xb, D, 999, { force: true });
    expect(await xb.read('/local/domain/0/name')).toBe('Domain-0');
    expect(await xb.tryRead(`/local/domain/${D}/device/vbd/999`)).toBeUndefined();
  });
});
