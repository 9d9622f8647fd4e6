/**
 * xl block-attach, block-detach and block-list (dom0/xl/cmd-block.ts)
 * against the control server with the fake Dom0 behind it: argument
 * parsing, xl's messages and exit codes for odd input, the server's checks
 * (Dom0 as target, malformed specs, devids), and block-list's format.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { PassThrough } from 'node:stream';
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import type { CliIo } from '../../../dom0/xl/cli-context.ts';
import { main } from '../../../dom0/xl/cli.ts';
import { parseDiskComponents } from '../../../dom0/xl/cmd-block.ts';
import { runCommand } from '../../../dom0/xl/commands.ts';
import { formatBlockListHeader, formatBlockListRow } from '../../../dom0/xl/format.ts';
import { ControlServer } from '../../../dom0/xl/server.ts';
import { FakeHost } from './fake-host.ts';

const ROOT = resolve(import.meta.dirname, '../../..');
let dir: string;
let sock: string;
let host: FakeHost;
let server: ControlServer;

beforeAll(() => { dir = mkdtempSync(join(tmpdir(), 'xl-block-')); sock = join(dir, 'control.sock'); });
afterAll(() => { rmSync(dir, { recursive: true, force: true }); });
beforeEach(async () => {
  host = new FakeHost();
  server = await ControlServer.listen(host, { path: sock });
  await host.create({ ...(await import('../../../dom0/toolstack/xlcfg.ts')).parseXlCfg('name="web"\nkernel="k.ts"\n') }, { paused: false });
  return async () => { await server.close(); };
});

async function xl(...args: string[]): Promise<{ code: number; out: string; err: string }> {
  let out = '';
  let err = '';
  const io: CliIo = {
    out: (s) => { out += typeof s === 'string' ? s : new TextDecoder().decode(s); },
    err: (s) => { err += s; },
    env: { XENTS_CONTROL_PATH: sock }, cwd: ROOT, stdin: new PassThrough() as unknown as NodeJS.ReadStream,
    stdoutIsTTY: false, columns: undefined, now: () => new Date(0), interrupted: new Promise(() => {}),
  };
  const code = await main(args, { argv0: 'xl', io });
  return { code, out, err };
}

const HEADER = 'Vdev  BE  handle state evt-ch ring-ref BE-path                       \n';

describe('block-list format (xl_block.c main_blocklist)', () => {
  it('prints xl\'s columns, %-30s padding included', () => {
    expect(formatBlockListHeader()).toBe(HEADER);
    expect(formatBlockListRow({ devid: 51712, vdev: 'xvda', backendId: 0, frontendId: 1, state: 4, evtchn: 3, ringRef: 8, backendPath: '/local/domain/0/backend/vbd/1/51712' }))
      .toBe('51712 0   1      4     3      8        /local/domain/0/backend/vbd/1/51712\n');
    expect(formatBlockListRow({ devid: 768, vdev: 'hda', backendId: 0, frontendId: 12, state: 1, evtchn: -1, ringRef: -1, backendPath: '/x' }))
      .toBe('768   0   12     1     -1     -1       /x                            \n');
  });
});

describe('disk spec components on the command line', () => {
  it('joins components, target= last, and makes the target absolute from xl\'s directory', () => {
    expect(parseDiskComponents(['target=img/a.raw', 'vdev=xvdb', 'access=ro'], '/home/u')).toMatchObject({ target: '/home/u/img/a.raw', vdev: 'xvdb', access: 'ro' });
    expect(parseDiskComponents(['file:/a.img,xvdb,w'], '/x')).toMatchObject({ target: '/a.img', vdev: 'xvdb', access: 'rw' });
    expect(parseDiskComponents(['/a.img', 'raw', 'xvdc', 'r'], '/x')).toMatchObject({ target: '/a.img', vdev: 'xvdc', access: 'ro' });
    expect(parseDiskComponents(['vdev=xvdd', 'backendtype=null', 'size=1G'], '/x')).toMatchObject({ target: '', backendtype: 'null', size: 1024 ** 3 });
    expect(parseDiskComponents(['vdev=xvdb', 'format=qcow9', 'target=/a'], '/x')).toMatch(/^command line: config parsing error in disk specification: unknown value for format/);
    expect(parseDiskComponents(['target=/a', 'target=/b'], '/x')).toMatch(/target respecified/);
  });
});

describe('xl block-attach', () => {
  it('attaches and block-list shows it', async () => {
    expect(await xl('block-attach', 'web', 'format=raw, vdev=xvdb, access=rw, target=/img/b.raw')).toEqual({ code: 0, out: '', err: '' });
    expect(await xl('block-attach', '1', 'vdev=xvda', 'target=/img/a.raw')).toEqual({ code: 0, out: '', err: '' });
    expect(host.calls).toContain('block-attach 1 51728 /img/b.raw');
    const r = await xl('block-list', 'web');
    expect(r).toEqual({
      code: 0, err: '',
      out: HEADER
        + '51712 0   1      4     3      8        /local/domain/0/backend/vbd/1/51712\n'
        + '51728 0   1      1     -1     -1       /local/domain/0/backend/vbd/1/51728\n',
    });
  });

  it('reports libxl\'s error for a duplicate vdev or a missing file, exit 1', async () => {
    await xl('block-attach', 'web', 'vdev=xvdb, target=/img/b.raw');
    expect(await xl('block-attach', 'web', 'vdev=xvdb, target=/img/c.raw')).toEqual({
      code: 1, out: '', err: 'libxl: error: device already exists in xenstore (vdev xvdb, devid 51728)\nlibxl_device_disk_add failed.\n',
    });
    expect(await xl('block-attach', 'web', '/missing.img,raw,xvdc,w')).toEqual({
      code: 1, out: '', err: 'libxl: error: Disk vdev=xvdc failed to stat: /missing.img: No such file or directory\nlibxl_device_disk_add failed.\n',
    });
  });

  it('unknown domain, Dom0, a bad spec, too few arguments', async () => {
    expect(await xl('block-attach', 'nosuch', 'vdev=xvdb, target=/a')).toEqual({ code: 1, out: '', err: 'nosuch is an invalid domain identifier\n' });
    expect(await xl('block-attach', '77', 'vdev=xvdb, target=/a')).toEqual({ code: 1, out: '', err: '77 is an invalid domain identifier\n' });
    const d0 = await xl('block-attach', '0', 'vdev=xvdb, target=/a');
    expect(d0.code).toBe(1);
    expect(d0.err).toMatch(/^libxl: error: Domain-0 has no block frontend here.*\nlibxl_device_disk_add failed\.\n$/);
    const bad = await xl('block-attach', 'web', 'vdev=floppy, target=/a');
    expect(bad.code).toBe(1);
    expect(bad.err).toMatch(/^command line: config parsing error in disk specification: invalid vdev "floppy"/);
    const few = await xl('block-attach', 'web');
    expect(few.code).toBe(2);
    expect(few.err).toMatch(/^'xl block-attach' requires at least 2 arguments\.\n\nUsage: xl \[-v\] block-attach <Domain> <disk-spec-component\(s\)>\.\.\./);
    expect(host.calls.filter((c) => c.startsWith('block-attach'))).toEqual([]);
  });
});

describe('xl block-detach', () => {
  it('detaches by vdev name or number, -f forces', async () => {
    await xl('block-attach', 'web', 'vdev=xvdb, target=/img/b.raw');
    await xl('block-attach', 'web', 'vdev=xvdc, target=/img/c.raw');
    expect(await xl('block-detach', 'web', 'xvdb')).toEqual({ code: 0, out: '', err: '' });
    expect(await xl('block-detach', '-f', 'web', '51744')).toEqual({ code: 0, out: '', err: '' });
    expect(host.calls.filter((c) => c.startsWith('block-detach'))).toEqual(['block-detach 1 51728', 'block-detach 1 51744 force']);
    expect((await xl('block-list', 'web')).out).toBe(HEADER);
  });

  it('xl\'s messages for an unknown domain or device', async () => {
    expect(await xl('block-detach', 'nosuch', 'xvdb')).toEqual({ code: 1, out: '', err: 'nosuch is an invalid domain identifier (rc=-6)\n' });
    expect(await xl('block-detach', 'web', 'xvdb')).toEqual({ code: 1, out: '', err: 'Error: Device xvdb not connected.\n' });
    expect(await xl('block-detach', 'web', 'floppy')).toEqual({ code: 1, out: '', err: 'Error: Device floppy not connected.\n' });
    const opt = await xl('block-detach', '-x', 'web', 'xvdb');
    expect(opt.code).toBe(2);
    expect(opt.err).toMatch(/^option `x' not supported\.\n/);
    expect((await xl('help', 'block-detach')).out).toMatch(/^Usage: xl \[-v\] block-detach \[-f\] <Domain> <DevId>\n\nDestroy a domain's virtual block device\.\n\nOptions:\n\n-f /);
  });
});

describe('xl block-list', () => {
  it('lists several domains; an unknown one is reported and skipped (exit 1)', async () => {
    await xl('block-attach', 'web', 'vdev=xvda, target=/img/a.raw');
    const r = await xl('block-list', 'nosuch', 'web', '0');
    expect(r).toEqual({
      code: 1, err: 'nosuch is an invalid domain identifier\n',
      out: HEADER + '51712 0   1      4     3      8        /local/domain/0/backend/vbd/1/51712\n',
    });
  });
});

describe('the server\'s checks', () => {
  it('refuses malformed arguments before Dom0 sees them', async () => {
    const errOf = async (cmd: string, args: Record<string, unknown>): Promise<string> => {
      try { await runCommand(host, cmd, args); return 'ok'; } catch (e) { return `${(e as { code: string }).code} ${(e as Error).message}`; }
    };
    const good = { target: '/a', vdev: 'xvdb', format: 'raw', access: 'rw', devtype: 'disk' };
    expect(await errOf('block-attach', { domain: 'web', spec: { ...good, vdev: 'xvdb, target=/etc/shadow' } })).toMatch(/^EINVAL/);
    expect(await errOf('block-attach', { domain: 'web', spec: 'vdev=xvdb' })).toMatch(/^EINVAL the disk specification is not an object/);
    expect(await errOf('block-attach', { domain: 'web', spec: { ...good, size: 100 } })).toMatch(/^EINVAL .*multiple of 512/);
    expect(await errOf('block-attach', { domain: '0', spec: good })).toMatch(/^EPERM/);
    expect(await errOf('block-detach', { domain: 'web', devid: 7, force: false })).toMatch(/^EINVAL argument devid must be a string/);
    expect(await errOf('block-detach', { domain: 'web', devid: 'xvdb', force: 'yes' })).toMatch(/^EINVAL argument force/);
    expect(await errOf('block-detach', { domain: 'Domain-0', devid: 'xvdb' })).toMatch(/^EPERM/);
    expect(await errOf('block-list', { domain: 'nosuch' })).toMatch(/^ESRCH/);
    expect(host.calls.filter((c) => c.startsWith('block-'))).toEqual([]);
  });
});
