/**
 * `xl block-attach`, `block-list` and `block-detach` against a running host
 * (real threads, the real CLI in a child process, a real image file): a disk
 * attached to a running guest is connected by the guest's blkfront and used;
 * block-list shows it Connected; block-detach closes it through the
 * Closing/Closed states and removes every node; Dom0 is left with no channel
 * or mapping of it. Bad requests get xl's messages and exit code 1.
 */
import { existsSync, mkdtempSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { Platform } from '../../hypervisor/platform/platform.ts';
import { hostConfig } from '../../hypervisor/config.ts';
import { ConsoleTap } from '../helpers/console-tap.ts';
import { encodeDom0Cmdline } from '../../dom0/kernel.ts';
import { D } from '../../hypervisor/state.ts';
import { until } from '../helpers/until.ts';
import { xl } from '../helpers/xl-run.ts';

const dir = mkdtempSync(join(tmpdir(), 'xents-xl-block-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

describe('xl block-attach / block-detach on a running guest', () => {
  it('hot-plugs a disk the guest uses, lists it, unplugs it, and leaves nothing behind', async () => {
    const platform = new Platform(hostConfig({ memMiB: 64, pcpus: 2 }));
    const hv = platform.hv;
    const tap = new ConsoleTap(hv);
    const guest = { name: 'hp', kernel: 'test/fixtures/guests/blk-hotplug.ts', memoryMiB: 8 };
    platform.boot({ kernel: 'dom0/kernel.ts', memMiB: 4, cmdline: encodeDom0Cmdline({ guests: [guest], keep: true, shutdownTimeoutS: 20 }) });
    try {
      await until('the guest and the control socket', () => tap.text.includes('blk-hotplug: ready') && tap.text.includes('xl: control socket listening on'), 30_000);
      const dom0Slot = hv.domidMap[0];
      const before = { evtchn: hv.dom[hv.d(dom0Slot, D.evtchn_in_use)], maptrack: hv.dom[hv.d(dom0Slot, D.maptrack_in_use)] };

      const img = join(dir, 'b.img');
      const attach = await xl('block-attach', 'hp', `format=raw, vdev=xvdb, access=rw, size=4M, target=${img}`);
      expect(attach.code, attach.stderr).toBe(0);
      expect(statSync(img).size).toBe(4 << 20);
      // xvdb is device 51728 (202 << 8 | 1 << 4).
      await until('the guest to use the disk', () => /vbd 51728: connected, 8192 sectors, round trip ok/.test(tap.text), 30_000);

      const list = await xl('block-list', 'hp');
      expect(list.code, list.stderr).toBe(0);
      const row = list.stdout.split('\n').find((l) => l.startsWith('51728'));
      expect(row, list.stdout).toBeDefined();
      const cols = row!.trim().split(/\s+/);
      expect(cols[1]).toBe('0'); // backend domain
      expect(cols[3]).toBe('4'); // frontend state: Connected
      expect(cols[6]).toBe('/local/domain/0/backend/vbd/1/51728');
      expect((await xl('xenstore-read', '/local/domain/0/backend/vbd/1/51728/state')).stdout.trim()).toBe('4');

      // Errors: a device that is not there; a missing image without size=.
      const none = await xl('block-detach', 'hp', 'xvdc');
      expect(none.code).toBe(1);
      expect(none.stderr).toMatch(/xvdc not connected/);
      const missing = await xl('block-attach', 'hp', `format=raw, vdev=xvdc, access=rw, target=${join(dir, 'nope.img')}`);
      expect(missing.code).toBe(1);
      expect(missing.stderr).toMatch(/nope\.img.*No such file or directory/);
      expect(existsSync(join(dir, 'nope.img'))).toBe(false);

      const detach = await xl('block-detach', 'hp', 'xvdb');
      expect(detach.code, detach.stderr).toBe(0);
      await until('the guest to see the disk go', () => tap.text.includes('vbd 51728: closed'), 30_000);
      const after = await xl('block-list', 'hp');
      expect(after.stdout).not.toMatch(/^51728/m);
      expect((await xl('xenstore-exists', '/local/domain/0/backend/vbd/1/51728')).code).toBe(1);
      expect((await xl('xenstore-exists', '/local/domain/1/device/vbd/51728')).code).toBe(1);
      await until("Dom0's channel and mappings of the disk to go", () =>
        hv.dom[hv.d(dom0Slot, D.evtchn_in_use)] === before.evtchn && hv.dom[hv.d(dom0Slot, D.maptrack_in_use)] === before.maptrack, 10_000);
      // The image is the guest's disk: it stays, with what the guest wrote.
      expect(statSync(img).size).toBe(4 << 20);

      const down = await xl('shutdown', '-w', 'hp');
      expect(down.code, down.stderr).toBe(0);
    } finally {
      tap.stop();
      await platform.stop();
    }
  }, 120_000);
});
