/**
 * Disks in the domain lifecycle, on a test machine (test/helpers/machine.ts)
 * with the real xenstored service: createPvGuest creates the config's disks
 * (and leaves nothing behind when one is refused), destroyPvGuest removes
 * the guest's vbd backends, and Dom0Toolstack's block handlers (xl
 * block-attach / block-detach / block-list) work on a running guest.
 */
import { existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { TestMachine } from '../../helpers/machine.ts';
import { EventChannels } from '../../../shared/guest/evtchn.ts';
import { XenstoredService } from '../../../dom0/xenstored/service.ts';
import { createPvGuest, destroyPvGuest, writeDom0Entries } from '../../../dom0/toolstack/domain.ts';
import { Dom0Toolstack } from '../../../dom0/toolstack/control.ts';
import { parseDiskSpec, type DiskSpec } from '../../../dom0/toolstack/disk.ts';
import type { Xenconsoled } from '../../../dom0/xenconsoled/daemon.ts';
import { ControlError } from '../../../dom0/xl/protocol.ts';

const dirs: string[] = [];
afterEach(() => { for (const d of dirs.splice(0)) rmSync(d, { recursive: true, force: true }); });

const spec = (s: string): DiskSpec => {
  const r = parseDiskSpec(s);
  if (typeof r === 'string') throw new Error(r);
  return r;
};

async function setup() {
  const m = new TestMachine({}, 2);
  const ev = new EventChannels(m.dom0.xen);
  const xsd = await XenstoredService.start({ ctrl: m.ctrl, ev, post: (w) => w(), socketPath: null });
  await writeDom0Entries(xsd.xb);
  const dir = mkdtempSync(join(tmpdir(), 'xents-vbd-life-'));
  dirs.push(dir);
  return { m, xb: xsd.xb, dir };
}

describe('disks in the domain lifecycle', () => {
  it('createPvGuest creates the config\'s disks; destroyPvGuest removes their backends', async () => {
    const { m, xb, dir } = await setup();
    writeFileSync(join(dir, 'root.img'), Buffer.alloc(8192));
    const g = await createPvGuest(m.ctrl, xb, {
      name: 'disks', kernel: 'domU/guests/hello.ts', memoryMiB: 1,
      disks: [spec(`${dir}/root.img,raw,xvda,w`), spec(`vdev=xvdb, size=1M, target=${dir}/new.img`), spec('vdev=xvdc, backendtype=null, size=1G')],
    });
    const d = g.domid;
    expect(await xb.directory(`/local/domain/0/backend/vbd/${d}`)).toEqual(['51712', '51728', '51744']);
    expect(await xb.read(`/local/domain/${d}/device/vbd/51712/backend`)).toBe(`/local/domain/0/backend/vbd/${d}/51712`);
    expect(await xb.read(`/local/domain/0/backend/vbd/${d}/51744/type`)).toBe('null');
    expect(existsSync(join(dir, 'new.img'))).toBe(true);
    await destroyPvGuest(m.ctrl, xb, d);
    expect(await xb.tryRead(`/local/domain/0/backend/vbd/${d}`)).toBeUndefined();
    expect(await xb.tryRead(`/local/domain/${d}`)).toBeUndefined();
    expect(await xb.tryRead(`/libxl/${d}`)).toBeUndefined();
  });

  it('a missing disk refuses the guest before it is built, with nothing left behind', async () => {
    const { m, xb, dir } = await setup();
    const free = m.freePages();
    const doms = m.ctrl.listDomains(0, 64).length;
    await expect(createPvGuest(m.ctrl, xb, {
      name: 'nodisk', kernel: 'domU/guests/hello.ts', memoryMiB: 1,
      disks: [spec(`vdev=xvdb, size=1M, target=${dir}/made.img`), spec(`${dir}/nope.img,raw,xvda,w`)],
    })).rejects.toThrow(`Disk vdev=xvda failed to stat: ${dir}/nope.img: No such file or directory`);
    expect(m.freePages()).toBe(free);
    expect(m.ctrl.listDomains(0, 64).length).toBe(doms);
    expect(existsSync(join(dir, 'made.img'))).toBe(false);
    expect(await xb.tryRead('/local/domain/0/backend/vbd')).toBeUndefined();
  });

  it('a duplicate devid in the config (xvda and 51712) undoes the guest and the files it made', async () => {
    const { m, xb, dir } = await setup();
    const free = m.freePages();
    await expect(createPvGuest(m.ctrl, xb, {
      name: 'dup', kernel: 'domU/guests/hello.ts', memoryMiB: 1,
      disks: [spec(`vdev=xvda, size=1M, target=${dir}/a.img`), spec(`vdev=51712, size=1M, target=${dir}/b.img`)],
    })).rejects.toThrow(/device already exists in xenstore/);
    expect(m.freePages()).toBe(free);
    expect(existsSync(join(dir, 'a.img'))).toBe(false);
    expect(await xb.directory('/local/domain/0/backend/vbd').catch(() => [])).toEqual([]);
  });

  it('Dom0Toolstack: block attach, list, detach (forced and timed out) on a running guest', async () => {
    const { m, xb, dir } = await setup();
    const said: string[] = [];
    const ts = new Dom0Toolstack({
      ctrl: m.ctrl, xb, consoled: { scan: async () => {} } as unknown as Xenconsoled, sleep: (ms) => new Promise((r) => setTimeout(r, ms)),
      say: (l) => said.push(l), names: new Map(), vbdRemoveTimeoutMs: 30,
    });
    const domid = await ts.createGuest({ name: 'g', kernel: 'domU/guests/hello.ts', memoryMiB: 1 }, null, true);
    writeFileSync(join(dir, 'b.img'), '');
    expect(await ts.blockAttach(domid, spec(`${dir}/b.img,raw,xvdb,w`))).toBe(51728);
    await expect(ts.blockAttach(domid, spec(`${dir}/b.img,raw,xvdb,r`))).rejects.toMatchObject({ code: 'EEXIST' });
    await expect(ts.blockAttach(domid, spec(`${dir}/x.img,raw,xvdc,r`))).rejects.toMatchObject({ code: 'ENOENT' });
    await expect(ts.blockAttach(0, spec(`${dir}/b.img,raw,xvdc,r`))).rejects.toBeInstanceOf(ControlError);
    expect(await ts.blockList(domid)).toEqual([{
      devid: 51728, vdev: 'xvdb', backendId: 0, frontendId: domid, state: 1, evtchn: -1, ringRef: -1,
      backendPath: `/local/domain/0/backend/vbd/${domid}/51728`,
    }]);
    // No blkback here: the removal times out (30 ms) and removes the nodes anyway, saying so.
    await ts.blockDetach(domid, 51728, false);
    expect(said.some((l) => /did not close within 30 ms/.test(l))).toBe(true);
    expect(await ts.blockList(domid)).toEqual([]);
    await ts.blockAttach(domid, spec('vdev=xvdc, backendtype=null, size=1M'));
    await ts.blockDetach(domid, 51744, true);
    expect(await ts.blockList(domid)).toEqual([]);
    await expect(ts.blockDetach(domid, 51744, true)).rejects.toMatchObject({ code: 'ENOENT', message: 'Device 51744 not connected' });
    await ts.destroy(domid);
  });
});
