/**
 * The `xl` command line against a control server with a fake Dom0 behind it:
 * most commands run in-process through main() with captured I/O; the last
 * group runs the real executable (dom0/xl/bin.mjs) as a child process, as a
 * user would with `npx xl`.
 */
import { execFile } from 'node:child_process';
import { mkdtempSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { PassThrough } from 'node:stream';
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import type { CliIo } from '../../../dom0/xl/cli-context.ts';
import { main } from '../../../dom0/xl/cli.ts';
import { ControlServer } from '../../../dom0/xl/server.ts';
import { FakeHost } from './fake-host.ts';

const ROOT = resolve(import.meta.dirname, '../../..');
const HEADER = 'Name                                        ID   Mem VCPUs\tState\tTime(s)\n';
const DOM0_ROW = 'Domain-0                                     0    16     1     r-----       1.5\n';

let dir: string;
let sock: string;
let host: FakeHost;
let server: ControlServer;

beforeAll(() => { dir = mkdtempSync(join(tmpdir(), 'xl-cli-')); sock = join(dir, 'control.sock'); });
afterAll(() => { rmSync(dir, { recursive: true, force: true }); });
beforeEach(async () => {
  await server?.close();
  host = new FakeHost();
  server = await ControlServer.listen(host, { path: sock });
  return async () => { await server.close(); };
});

interface Run { code: number; out: string; err: string }

/** `onOut`: called with everything printed so far, after each piece (tests that answer the output). */
async function xl(args: string[], o: { argv0?: string; stdin?: PassThrough; socket?: string; onOut?: (out: string) => void } = {}): Promise<Run> {
  let out = '';
  let err = '';
  const io: CliIo = {
    out: (s) => {
      out += typeof s === 'string' ? s : new TextDecoder().decode(s);
      o.onOut?.(out);
    },
    err: (s) => { err += s; },
    env: { XENTS_CONTROL_PATH: o.socket ?? sock },
    cwd: ROOT,
    stdin: (o.stdin ?? new PassThrough()) as unknown as NodeJS.ReadStream,
    stdoutIsTTY: false,
    columns: undefined,
    now: () => new Date(1_700_000_000_000 + 3_723_000),
    interrupted: new Promise(() => {}),
  };
  const code = await main(args, { argv0: o.argv0 ?? 'xl', io });
  return { code, out, err };
}

const createHello = async (): Promise<void> => {
  expect((await xl(['create', '-q', 'domU/configs/hello.cfg'])).code).toBe(0);
};

describe('xl create and list', () => {
  it('creates from a config file and lists the domain', async () => {
    const r = await xl(['create', 'domU/configs/hello.cfg']);
    expect(r).toEqual({ code: 0, out: '', err: 'Parsing config from domU/configs/hello.cfg\n' });
    expect(host.domains.get(1)?.config).toMatchObject({ name: 'hello', kernel: join(ROOT, 'domU/guests/hello.ts'), memory: 4, maxmem: 8 });
    expect(await xl(['list'])).toEqual({
      code: 0, err: '',
      out: HEADER + DOM0_ROW + 'hello                                        1     4     1     -b----       3.0\n',
    });
    expect((await xl(['list', 'hello'])).out).toBe(HEADER + 'hello                                        1     4     1     -b----       3.0\n');
    expect(JSON.parse((await xl(['list', '-l', 'hello'])).out)[0]).toMatchObject({ domid: 1, config: { c_info: { name: 'hello' } } });
  });

  it('-p leaves it paused, KEY=VALUE arguments override the file, -n only prints', async () => {
    expect((await xl(['create', '-p', 'domU/configs/hello.cfg', 'name="h2"', 'memory=6'])).code).toBe(0);
    expect(host.calls).toContain('create h2 paused');
    expect(host.domains.get(1)?.summary.memKiB).toBe(6 * 1024);
    const dry = await xl(['create', '-n', 'domU/configs/hello.cfg'], { socket: join(dir, 'no-host.sock') });
    expect(dry.code).toBe(0);
    expect(dry.out).toMatch(/^name = "hello"\ntype = "pv"\nkernel = ".*\/domU\/guests\/hello\.ts"\nmemory = 4\n/);
  });

  it('reports every problem of a bad config with file, line and column, and creates nothing', async () => {
    const f = join(dir, 'bad.cfg');
    writeFileSync(f, 'name = "bad"\nkernel = "domU/guests/hello.ts"\nmemory = 64M\nnmae = "x"\ndisk = [ "phy:/dev/sda" ]\n');
    const r = await xl(['create', f]);
    expect(r.code).toBe(1);
    expect(r.err.split('\n')).toEqual([
      `Parsing config from ${f}`,
      `${f}:3:10: memory must be a number, not \`64M' (in MiB, without a unit)`,
      `${f}:4:1: unknown key \`nmae' (did you mean name?)`,
      `${f}:5:10: disk \`phy:/dev/sda': no vdev specified`,
      'xl: 3 errors in the configuration; no domain was created',
      '',
    ]);
    expect(host.calls.some((c) => c.startsWith('create'))).toBe(false);
  });

  it('says which file is missing, and which kernel', async () => {
    expect(await xl(['create', 'nope.cfg'])).toMatchObject({ code: 1, err: 'xl: Failed to read config file: nope.cfg: No such file or directory\n' });
    const f = join(dir, 'nokernel.cfg');
    writeFileSync(f, 'name = "k"\nkernel = "domU/guests/nope.ts"\n');
    const r = await xl(['create', '-q', f]);
    expect(r.code).toBe(1);
    expect(r.err).toMatch(/^xl: .*nokernel\.cfg: kernel "domU\/guests\/nope\.ts" does not exist/);
  });

  it('refuses a name already in use, naming the domain', async () => {
    await createHello();
    expect(await xl(['create', '-q', 'domU/configs/hello.cfg'])).toMatchObject({ code: 1, err: 'xl: a domain named "hello" already exists (domain hello)\n' });
  });
});

describe('xl domain commands', () => {
  it('destroy, with errors that name the domain', async () => {
    await createHello();
    expect(await xl(['destroy', 'nope'])).toEqual({ code: 1, out: '', err: 'xl: no such domain (domain nope)\n' });
    expect((await xl(['destroy', '0'])).err).toBe('xl: Not destroying domain 0; use -f to force.\nThis can only be done when using a disaggregated hardware domain and toolstack.\n');
    expect((await xl(['destroy', '-f', 'Domain-0'])).err).toBe('xl: Domain-0 cannot be destroyed (stop the host instead) (domain Domain-0)\n');
    expect(await xl(['destroy', 'hello'])).toEqual({ code: 0, out: '', err: '' });
    expect((await xl(['list'])).out).toBe(HEADER + DOM0_ROW);
  });

  it('pause, unpause, rename, domid, domname, mem-set, mem-max', async () => {
    await createHello();
    expect((await xl(['pause', 'hello'])).code).toBe(0);
    expect((await xl(['list', '1'])).out).toContain('--p---');
    expect((await xl(['unpause', '1'])).code).toBe(0);
    expect((await xl(['rename', 'hello', 'web'])).code).toBe(0);
    expect((await xl(['domid', 'web'])).out).toBe('1\n');
    expect((await xl(['domname', '1'])).out).toBe('web\n');
    expect((await xl(['domid', 'hello'])).err).toBe("xl: Can't get domid of domain name 'hello', maybe this domain does not exist.\n");
    expect((await xl(['mem-set', 'web', '2m'])).code).toBe(0);
    expect((await xl(['mem-max', 'web', '16384k'])).code).toBe(0);
    expect(host.calls).toEqual(expect.arrayContaining(['mem-set 1 2048', 'mem-max 1 16384']));
    expect(await xl(['mem-set', 'web', 'lots'])).toMatchObject({ code: 1, err: 'xl: invalid memory size: lots\n' });
    expect((await xl(['mem-set', 'web', '1g'])).err).toBe("xl: memory 1048576 KiB is above the domain's maximum of 16384 KiB (domain web)\n");
  });

  it('shutdown -w waits for the domain', async () => {
    await createHello();
    const r = await xl(['shutdown', '-w', 'hello']);
    expect(r.code).toBe(0);
    expect(r.err).toMatch(/^Shutting down domain 1\nWaiting for 1 domains\nDomain 1 has been (shut down, reason code 0|destroyed)\n$/);
    expect((await xl(['shutdown'])).err).toBe('xl: You must specify -a or a domain id.\n');
  });

  it('reboot -a asks every guest, not Dom0', async () => {
    await createHello();
    await xl(['create', '-q', 'domU/configs/hello.cfg', 'name="h2"']);
    const r = await xl(['reboot', '-a']);
    expect(r).toEqual({ code: 0, out: '', err: 'Rebooting domain 1\nRebooting domain 2\n' });
  });

  it('console carries output and input until Ctrl-]', async () => {
    await createHello();
    const stdin = new PassThrough();
    // Each key is typed once the output before it is there (not after a
    // fixed time: a loaded machine may not have attached the console yet).
    let typed = 0;
    const run = xl(['console', 'hello'], {
      stdin,
      onOut: (out) => {
        if (typed === 0 && out.includes('hello console\n')) { typed++; stdin.write('echo\n'); }
        if (typed === 1 && out.includes('ECHO\n')) { typed++; stdin.write(Buffer.from([0x1d])); }
      },
    });
    const r = await run;
    expect(r).toEqual({ code: 0, out: 'hello console\nECHO\n', err: '' });
    expect(host.domains.get(1)?.consoles.size).toBe(0);
  });

  it('create -c creates paused, attaches the console, then unpauses (as xl)', async () => {
    const stdin = new PassThrough();
    let typed = false;
    const run = xl(['create', '-q', '-c', 'domU/configs/hello.cfg'], {
      stdin,
      onOut: (out) => {
        if (!typed && out.includes('hello console\n')) { typed = true; stdin.write(Buffer.from([0x1d])); }
      },
    });
    const r = await run;
    expect(r).toEqual({ code: 0, out: 'hello console\n', err: '' });
    expect(host.calls.filter((c) => /^(create|unpause)/.test(c))).toEqual(['create hello paused', 'unpause 1']);
    expect(host.domains.get(1)?.summary.paused).toBe(false);
  });
});

describe('xl host commands', () => {
  it('info, info NAME, dmesg', async () => {
    expect((await xl(['info'])).out).toContain('xen_scheduler          : credit\n');
    expect(await xl(['info', 'xen_version'])).toEqual({ code: 0, out: '4.17.0-ts\n', err: '' });
    expect((await xl(['dmesg'])).out).toBe('(XEN) Xen version 4.17.0-ts\n(XEN) 2 pCPUs\n');
  });

  it('vcpu-list, sched-credit, uptime, top', async () => {
    await createHello();
    expect((await xl(['vcpu-list', 'hello'])).out).toBe(
      'Name                                ID  VCPU   CPU State   Time(s) Affinity (Hard / Soft)\n'
      + 'hello                                1     0    0   -b-       1.0  all / all\n');
    expect((await xl(['sched-credit', '-d', 'hello', '-w', '512'])).code).toBe(0);
    expect((await xl(['sched-credit'])).out).toBe(
      'Cpupool Pool-0: tslice=30ms ratelimit=1000us migration-delay=0us\n'
      + 'Name                                ID Weight  Cap\n'
      + 'Domain-0                             0    256    0\n'
      + 'hello                                1    512    0\n');
    expect((await xl(['sched-credit', '-d', 'hello'])).out).toBe('Name                                ID Weight  Cap\nhello                                1    512    0\n');
    expect((await xl(['sched-credit', '-w', '5'])).err).toBe('xl: Must specify a domain.\n');
    expect((await xl(['sched-credit2'])).err).toBe('xl: the host runs the credit scheduler, not credit2 (use xl sched-credit)\n');
    expect((await xl(['uptime'])).out).toBe('Name                                ID Uptime\nDomain-0                             0  1:02:03\nhello                                1  1:02:03\n');
    const top = await xl(['top', '-b', '-i', '2', '-d', '0.05']);
    expect(top.code).toBe(0);
    expect(top.out.split('\n').filter((l) => l.includes('NAME  STATE'))).toHaveLength(2);
  });
});

describe('xl usage', () => {
  it('knows its commands and options, and says so with xl\'s exit codes', async () => {
    expect((await xl(['help'])).out).toContain('\n create              Create a domain from config file <filename>\n');
    expect((await xl(['help', 'create'])).out).toMatch(/^Usage: xl \[-v\] create <ConfigFile> \[options\] \[vars\]/);
    expect(await xl(['frob'])).toMatchObject({ code: 1, err: "xl: command not implemented: frob\nRun 'xl help' for the list of commands.\n" });
    const bad = await xl(['list', '-q']);
    expect(bad.code).toBe(2);
    expect(bad.err).toMatch(/^option `q' not supported\.\nUsage: xl \[-v\] list/);
    const few = await xl(['create']);
    expect(few.code).toBe(2);
    expect(few.err).toMatch(/^'xl create' requires at least 1 argument\.\n\nUsage: xl \[-v\] create/);
    expect((await xl(['destroy', '--help'])).code).toBe(0);
  });

  it('says plainly when no host is running', async () => {
    const r = await xl(['list'], { socket: join(dir, 'no-host.sock') });
    expect(r.code).toBe(1);
    expect(r.err).toBe(`xl: no host is running (nothing listens on the control socket ${join(dir, 'no-host.sock')}); start one with \`npm start\`\n`);
  });
});

describe('xenstore tools', () => {
  it('read, write, ls, rm, list, exists', async () => {
    await createHello();
    expect(await xl(['-p', '/local/domain/1/name'], { argv0: 'xenstore-read' })).toEqual({ code: 0, out: '/local/domain/1/name: hello\n', err: '' });
    expect(await xl(['/local/domain/1/name', '/nope'], { argv0: 'xenstore-read' })).toEqual({ code: 1, out: '', err: "xenstore-read: couldn't read path /nope\n" });
    expect((await xl(['/tool/a/b', 'x\\ty', '/tool/c', ''], { argv0: 'xenstore-write' })).code).toBe(0);
    expect([...host.xenstore.get('/tool/a/b') ?? []]).toEqual([0x78, 0x09, 0x79]);
    expect((await xl(['read', '/tool/a/b'], { argv0: 'xenstore' })).out).toBe('x\\ty\n');
    expect((await xl(['/tool'], { argv0: 'xenstore-ls' })).out).toBe('a = ""\n b = "x\\ty"\nc = ""\n');
    expect((await xl(['-p', '/tool'], { argv0: 'xenstore-list' })).out).toBe('/tool/a\n/tool/c\n');
    expect((await xl(['/tool/a/b'], { argv0: 'xenstore-exists' })).code).toBe(0);
    expect((await xl(['-t', '/tool/a/b'], { argv0: 'xenstore-rm' })).code).toBe(0);
    expect(host.xenstore.has('/tool/a')).toBe(false);
    expect(host.xenstore.has('/tool/c')).toBe(true);
    expect((await xl(['/tool/a/b'], { argv0: 'xenstore-exists' })).code).toBe(1);
    expect(await xl(['/nope'], { argv0: 'xenstore-ls' })).toMatchObject({ code: 1, err: 'xenstore-ls: xs_directory (/nope): No such file or directory\n' });
    expect(await xl(['/x'], { argv0: 'xenstore-write' })).toMatchObject({ code: 1, err: 'Usage: xenstore-write [-h] [-s] key value [...]\n' });
    expect((await xl(['xenstore-read', '/local/domain/0/name'])).out).toBe('Domain-0\n');
  });

  it('watch prints each path that fires, -n events then exits', async () => {
    // The write once the watch has fired for its registration (so it is set).
    let wrote = false;
    const run = xl(['-n', '2', '/tool'], {
      argv0: 'xenstore-watch',
      onOut: (out) => {
        if (!wrote && out.includes('/tool\n')) { wrote = true; void xl(['/tool/x', '1'], { argv0: 'xenstore-write' }); }
      },
    });
    expect(await run).toEqual({ code: 0, out: '/tool\n/tool/x\n', err: '' });
    expect(host.watches.size).toBe(0);
  });
});

describe('the xl executable (child process)', () => {
  const BIN = join(ROOT, 'dom0/xl/bin.mjs');
  const run = (file: string, args: string[], socket = sock): Promise<Run> => new Promise((res) => {
    execFile(process.execPath, [file, ...args], { cwd: ROOT, env: { ...process.env, XENTS_CONTROL_PATH: socket } }, (e, out, err) => {
      res({ code: e ? (typeof e.code === 'number' ? e.code : 1) : 0, out, err });
    });
  });

  it('create, list, destroy: output and exit codes', async () => {
    expect(await run(BIN, ['create', 'domU/configs/hello.cfg'])).toEqual({ code: 0, out: '', err: 'Parsing config from domU/configs/hello.cfg\n' });
    expect(await run(BIN, ['list'])).toEqual({ code: 0, err: '', out: HEADER + DOM0_ROW + 'hello                                        1     4     1     -b----       3.0\n' });
    expect(await run(BIN, ['destroy', 'hello'])).toEqual({ code: 0, out: '', err: '' });
    expect(await run(BIN, ['destroy', 'hello'])).toEqual({ code: 1, out: '', err: 'xl: no such domain (domain hello)\n' });
    expect((await run(BIN, ['list', '--bogus'])).code).toBe(2);
  }, 30_000);

  it('exits 1 with a clear message when no host runs', async () => {
    const r = await run(BIN, ['list'], join(dir, 'no-host.sock'));
    expect(r.code).toBe(1);
    expect(r.err).toMatch(/^xl: no host is running \(nothing listens on the control socket .*no-host\.sock\); start one with `npm start`\n$/);
  }, 30_000);

  it('is xenstore-read when run under that name', async () => {
    const link = join(dir, 'xenstore-read');
    symlinkSync(BIN, link);
    expect(await run(link, ['/local/domain/0/name'])).toEqual({ code: 0, out: 'Domain-0\n', err: '' });
  }, 30_000);
});
