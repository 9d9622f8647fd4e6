/**
 * xl.cfg parsing (xl.cfg(5), libxlutil's grammar): table-driven cases for what
 * is accepted and what is refused (with file, line and column), and
 * properties: every DomainConfig prints to text that parses back to it, and
 * no input makes the parser throw anything but an XlCfgError with positions
 * inside the input.
 */
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import {
  COMMAND_LINE, DEFAULT_MEMORY_MIB, kernelCmdline, parseXlCfg, printXlCfg, SHUTDOWN_ACTIONS, toPvBuildConfig,
  validateDomainConfig, XlCfgError, type DomainConfig,
} from '../../../dom0/toolstack/xlcfg.ts';
import type { CpuSet } from '../../../dom0/toolstack/cpulist.ts';
import type { DiskSpec } from '../../../dom0/toolstack/disk.ts';
import type { VifSpec } from '../../../dom0/toolstack/vif.ts';

const MIN = 'name = "g"\nkernel = "k.ts"\n';

function issuesOf(text: string, extra?: string[]): XlCfgError {
  try {
    parseXlCfg(text, { file: 't.cfg', ...(extra ? { extra } : {}) });
  } catch (e) {
    if (e instanceof XlCfgError) return e;
    throw e;
  }
  throw new Error('expected an XlCfgError');
}

describe('xl.cfg: accepted', () => {
  it('fills in Xen\'s defaults', () => {
    expect(parseXlCfg(MIN)).toEqual({
      name: 'g', type: 'pv', kernel: 'k.ts', memory: DEFAULT_MEMORY_MIB, maxmem: DEFAULT_MEMORY_MIB, vcpus: 1, maxvcpus: 1,
      onPoweroff: 'destroy', onReboot: 'restart', onWatchdog: 'destroy', onCrash: 'destroy', onSoftReset: 'soft-reset',
      disks: [], vifs: [],
    });
  });

  const cases: Array<[string, string, Partial<DomainConfig>]> = [
    ['single quotes, ; separators, comments', `name='g'; kernel = "k.ts" # the kernel\n# memory = 9\nmemory=8;vcpus=2`, { name: 'g', memory: 8, maxmem: 8, vcpus: 2, maxvcpus: 2 }],
    ['hex, octal and quoted numbers', `${MIN}memory = 0x10\nmaxmem = 040\nvcpus = "3"`, { memory: 16, maxmem: 32, vcpus: 3 }],
    ['CRLF line endings and no final newline', 'name = "g"\r\nkernel = "k.ts"\r\nmemory = 12', { memory: 12 }],
    ['string escapes', `${MIN}extra = "a\\tb\\x41\\101\\\\\\"\\'"`, { extra: 'a\tbAA\\"\'' }],
    ['type and the deprecated builder', `${MIN}builder = "hvm"`, { type: 'hvm' }],
    ['type wins over builder', `${MIN}builder = "hvm"\ntype = "pv"`, { type: 'pv' }],
    ['a later setting replaces an earlier one', `${MIN}memory = 8\nmemory = 16`, { memory: 16 }],
    ['+= appends to a string', `${MIN}extra = "a"\nextra += " b"`, { extra: 'a b' }],
    ['on_* actions', `${MIN}on_poweroff = "preserve"\non_reboot = "rename-restart"\non_crash = "coredump-destroy"\non_watchdog = "restart"\non_soft_reset = "destroy"`,
      { onPoweroff: 'preserve', onReboot: 'rename-restart', onCrash: 'coredump-destroy', onWatchdog: 'restart', onSoftReset: 'destroy' }],
    ['cpus as a CPULIST', `${MIN}cpus = "0-3,5,^1"`, { cpus: { kind: 'cpus', cpus: [0, 2, 3, 5] } }],
    ['cpus all but some', `${MIN}cpus = "all,^2-3"`, { cpus: { kind: 'all', except: [2, 3] } }],
    ['cpus per vCPU', `${MIN}vcpus = 2\ncpus = [ "2", "3-4" ]`, { cpus: [{ kind: 'cpus', cpus: [2] }, { kind: 'cpus', cpus: [3, 4] }] }],
    ['cpus on node 0', `${MIN}cpus = "nodes:0"`, { cpus: { kind: 'all', except: [] } }],
    ['scheduling', `${MIN}cpu_weight = 512\ncap = 50`, { cpuWeight: 512, cap: 50 }],
    ['uuid, lower-cased', `${MIN}uuid = "6F8C2B1A-0000-4000-8000-00000000ABCD"`, { uuid: '6f8c2b1a-0000-4000-8000-00000000abcd' }],
  ];
  it.each(cases)('%s', (_what, text, want) => {
    expect(parseXlCfg(text)).toMatchObject(want);
  });

  it('reads disk lists spanning lines, with comments and a trailing comma, in both spec forms', () => {
    const c = parseXlCfg(`${MIN}disk = [ 'file:/img/a.img,xvda,w',   # root
      "format=raw, vdev=xvdb, access=ro, target=/img/b,c.img",
      'phy:/dev/vg/data,xvdc,r',
      '/img/d.img,raw,xvdd,rw',
      ',,hdc:cdrom',
    ]`);
    expect(c.disks).toEqual([
      { target: '/img/a.img', vdev: 'xvda', format: 'raw', access: 'rw', devtype: 'disk' },
      { target: '/img/b,c.img', vdev: 'xvdb', format: 'raw', access: 'ro', devtype: 'disk' },
      { target: '/dev/vg/data', vdev: 'xvdc', format: 'raw', access: 'ro', devtype: 'disk' },
      { target: '/img/d.img', vdev: 'xvdd', format: 'raw', access: 'rw', devtype: 'disk' },
      { target: '', vdev: 'hdc', format: 'empty', access: 'ro', devtype: 'cdrom' },
    ]);
  });

  it('reads vif specs, an empty one included', () => {
    const c = parseXlCfg(`${MIN}vif = [ 'mac=00:16:3E:00:00:01, bridge=xenbr0, ip=10.0.0.2 10.0.0.3, rate=10Mb/s@20ms', '' ]`);
    expect(c.vifs).toEqual([
      { mac: '00:16:3e:00:00:01', bridge: 'xenbr0', ip: '10.0.0.2 10.0.0.3', rate: { amount: 10, unit: 'Mb', intervalUs: 20_000 } },
      {},
    ]);
  });

  it('appends lists with +=', () => {
    const c = parseXlCfg(`${MIN}vif = [ 'bridge=a' ]\nvif += [ 'bridge=b' ]`);
    expect(c.vifs).toEqual([{ bridge: 'a' }, { bridge: 'b' }]);
  });

  it('applies xl create\'s KEY=VALUE arguments after the file', () => {
    const c = parseXlCfg(`${MIN}memory = 8`, { extra: ['memory=16', 'name="other"'] });
    expect(c).toMatchObject({ memory: 16, name: 'other' });
  });

  it('builds the kernel command line as xl does', () => {
    expect(kernelCmdline(parseXlCfg(`${MIN}root = "/dev/xvda1"\nextra = "console=hvc0"`))).toBe('root=/dev/xvda1 console=hvc0');
    expect(kernelCmdline(parseXlCfg(`${MIN}cmdline = "a b"\nextra = "ignored"`))).toBe('a b');
    expect(toPvBuildConfig(parseXlCfg(`${MIN}memory = 4\nmaxmem = 8\nextra = "x"`))).toEqual({
      name: 'g', kernel: 'k.ts', memoryMiB: 4, maxmemMiB: 8, vcpus: 1, cmdline: 'x',
    });
  });

  it('parses the example configuration', async () => {
    const { readFileSync } = await import('node:fs');
    const c = parseXlCfg(readFileSync('domU/configs/hello.cfg', 'utf8'), { file: 'hello.cfg' });
    expect(c).toMatchObject({ name: 'hello', type: 'pv', kernel: 'domU/guests/hello.ts', memory: 4, maxmem: 8, extra: 'console=hvc0' });
  });
});

describe('xl.cfg: refused, with file, line and column', () => {
  const cases: Array<[string, string, number, number, RegExp]> = [
    ['an unknown key', `${MIN}nmae = "x"`, 3, 1, /unknown key `nmae' \(did you mean name\?\)/],
    ['an upper-case key', `${MIN}Memory = 4`, 3, 1, /keys are lower case \(memory\)/],
    ['a Xen key we do not implement', `${MIN}ramdisk = "/boot/initrd"`, 3, 1, /`ramdisk' is an xl.cfg key this host does not implement/],
    ['type pvh', `${MIN}type = "pvh"`, 3, 8, /type "pvh" is not supported/],
    ['a bad type', `${MIN}type = "xen"`, 3, 8, /invalid type `xen'/],
    ['a unit on a number', `${MIN}memory = 512M`, 3, 10, /memory must be a number, not `512M' \(in MiB, without a unit\)/],
    ['a negative number', `${MIN}memory = -5`, 3, 10, /syntax error near `-5' \(xl.cfg is not Python/],
    ['a bad octal number', `${MIN}memory = 08`, 3, 10, /memory must be a number, not `08'/],
    ['a bare word', `${MIN}type = pv`, 3, 8, /bare word `pv' \(strings need quotes: "pv"\)/],
    ['a missing =', `${MIN}memory 4`, 3, 8, /expected = after `memory'/],
    ['two values', `${MIN}memory = 4 5`, 3, 12, /expected a newline or ; after the value of `memory'/],
    ['an unterminated string', `${MIN}extra = "abc\nvcpus = 1`, 3, 9, /unterminated string/],
    ['an unclosed list', `${MIN}disk = [ 'a',\n`, 3, 8, /unclosed \[/],
    ['a list with no comma', `${MIN}disk = [ 'a' 'b' ]`, 3, 14, /expected , or \] in a list/],
    ['an unknown escape', `${MIN}extra = "a\\qb"`, 3, 11, /unknown escape \\q/],
    ['a list where a value is wanted', `${MIN}memory = [ 4 ]`, 3, 10, /memory takes a single value, not a list/],
    ['disk not a list', `${MIN}disk = 'file:/x,xvda,w'`, 3, 8, /disk must be a list/],
    ['a disk without vdev', `${MIN}disk = [ 'phy:/dev/sda' ]`, 3, 10, /disk `phy:\/dev\/sda': no vdev specified/],
    ['a disk format we cannot serve', `${MIN}disk = [ 'format=qcow2, vdev=xvda, target=/x' ]`, 3, 10, /format qcow2 is not supported/],
    ['an unknown disk parameter', `${MIN}disk = [ 'vdev=xvda, colour=red, target=/x' ]`, 3, 10, /unknown parameter "colour="/],
    ['a bad vdev', `${MIN}disk = [ '/x,raw,floppy,w' ]`, 3, 10, /invalid vdev "floppy"/],
    ['a vdev used twice', `${MIN}disk = [ '/x,raw,xvda,w', '/y,raw,xvda,w' ]`, 3, 8, /vdev xvda is used twice/],
    ['a multicast mac', `${MIN}vif = [ 'mac=01:00:5e:00:00:01' ]`, 3, 9, /mac 01:00:5e:00:00:01 is a multicast address/],
    ['an unknown vif key', `${MIN}vif = [ 'bridge=xenbr0,colour=red' ]`, 3, 9, /unknown vif parameter "colour"/],
    ['a bad rate', `${MIN}vif = [ 'rate=fast' ]`, 3, 9, /invalid rate "fast"/],
    ['an unknown action', `${MIN}on_crash = "reboot"`, 3, 12, /unknown on_crash action `reboot' \(destroy, restart/],
    ['maxmem below memory', `${MIN}memory = 8\nmaxmem = 4`, 4, 10, /maxmem \(4\) must be equal to or greater than memory \(8\)/],
    ['maxvcpus below vcpus', `${MIN}vcpus = 4\nmaxvcpus = 2`, 4, 12, /maxvcpus \(2\) must be equal to or greater than vcpus \(4\)/],
    ['zero vcpus', `${MIN}vcpus = 0`, 3, 9, /vcpus = 0 is out of range \(1 to 128\)/],
    ['too many per-vCPU affinities', `${MIN}cpus = [ "0", "1" ]`, 3, 8, /cpus: 2 per-vCPU entries for 1 vCPU/],
    ['an empty CPU set', `${MIN}cpus = "^1"`, 3, 8, /cpus: CPU list "\^1" selects no CPU/],
    ['a NUMA node we lack', `${MIN}cpus = "node:1"`, 3, 8, /NUMA node 1 does not exist/],
    ['a numeric name', 'name = "42"\nkernel = "k"', 1, 8, /is a number, which xl would take for a domain id/],
    ['a name with a slash', 'name = "a/b"\nkernel = "k"', 1, 8, /contains a space, a control character or \//],
    ['a bad uuid', `${MIN}uuid = "1234"`, 3, 8, /invalid uuid `1234'/],
    ['a lone carriage return (regression: the lexer looped forever on it)', `${MIN}memory = 4\rvcpus = 1`, 3, 11, /syntax error near `\\x0dvcpus'/],
    ['+= mixing kinds', `${MIN}extra = "a"\nextra += [ "b" ]`, 4, 1, /\+= on `extra' mixes a list and a single value/],
  ];
  it.each(cases)('%s', (_what, text, line, column, message) => {
    const e = issuesOf(text);
    expect(e.issues[0]).toMatchObject({ file: 't.cfg', line, column });
    expect(e.issues[0].message).toMatch(message);
    expect(e.message.split('\n')[0]).toBe(`t.cfg:${line}:${column}: ${e.issues[0].message}`);
  });

  it('requires name and kernel', () => {
    const e = issuesOf('memory = 4\n');
    expect(e.issues.map((i) => i.message)).toEqual([
      'name is mandatory (name = "NAME")',
      'kernel is mandatory: this host boots every guest from a kernel (kernel = "PATHNAME")',
    ]);
  });

  it('reports every problem at once, in source order', () => {
    const e = issuesOf(`name = "g"\nkernel = "k"\nfoo = 1\nmemory = "x"\nbar = 2\n`);
    expect(e.issues.map((i) => [i.line, i.column])).toEqual([[3, 1], [4, 10], [5, 1]]);
  });

  it('reports every syntax error at once and goes on after each', () => {
    const e = issuesOf(`name = "g"\nkernel = "k"\nmemory = 4 4\nvcpus = [\nextra = (1)\n`);
    expect(e.issues.length).toBeGreaterThanOrEqual(2);
    expect(e.issues[0].line).toBe(3);
  });

  it('reports a bad command-line setting against the command line', () => {
    const e = issuesOf(MIN, ['memory=4', 'vcpus="x"']);
    expect(e.issues[0]).toMatchObject({ file: COMMAND_LINE, line: 2, column: 7 });
  });

  it('reports a bad value of a command-line override once', () => {
    const e = issuesOf(`${MIN}maxmem = 8`, ['memory="x"']);
    expect(e.issues).toHaveLength(1);
  });
});

// ---------------------------------------------------------------- properties

const sortedUnique = (xs: number[]): number[] => [...new Set(xs)].sort((a, b) => a - b);
const cpuSetArb: fc.Arbitrary<CpuSet> = fc.oneof(
  fc.array(fc.integer({ min: 0, max: 4095 }), { maxLength: 6 }).map((xs): CpuSet => ({ kind: 'all', except: sortedUnique(xs) })),
  fc.array(fc.integer({ min: 0, max: 4095 }), { minLength: 1, maxLength: 6 }).map((xs): CpuSet => ({ kind: 'cpus', cpus: sortedUnique(xs) })),
);

/** Any text without control characters: what a path may hold. */
const freeText = fc.oneof(fc.string({ unit: 'grapheme', maxLength: 20 }), fc.string({ maxLength: 20 }))
  .filter((s) => !/[\x00-\x1f\x7f]/.test(s));
/** Any text at all, control characters included: what a quoted string may hold. */
const anyText = fc.oneof(fc.string({ unit: 'binary', maxLength: 20 }), fc.string({ unit: 'binary-ascii', maxLength: 20 }));
const ident = fc.stringMatching(/^[a-z][a-z0-9_.-]{0,10}$/);

const diskArb = (vdev: string): fc.Arbitrary<DiskSpec> => fc.record({
  cdrom: fc.boolean(), empty: fc.boolean(), target: freeText.filter((s) => s.length > 0), ro: fc.boolean(),
  backend: fc.option(ident, { nil: undefined }), phy: fc.boolean(), discard: fc.option(fc.boolean(), { nil: undefined }),
  directIoSafe: fc.boolean(), trusted: fc.option(fc.boolean(), { nil: undefined }),
}).map((r): DiskSpec => {
  const empty = r.cdrom && r.empty;
  return {
    target: empty ? '' : r.target, vdev, format: empty ? 'empty' : 'raw',
    access: r.cdrom || r.ro ? 'ro' : 'rw', devtype: r.cdrom ? 'cdrom' : 'disk',
    ...(r.backend !== undefined ? { backend: r.backend } : {}), ...(r.phy ? { backendtype: 'phy' as const } : {}),
    ...(r.discard !== undefined ? { discard: r.discard } : {}), ...(r.directIoSafe ? { directIoSafe: true } : {}),
    ...(r.trusted !== undefined ? { trusted: r.trusted } : {}),
  };
});

const octet = fc.integer({ min: 0, max: 255 });
const hex2 = (n: number): string => n.toString(16).padStart(2, '0');
const vifArb = (mac: string | undefined, devid: number | undefined): fc.Arbitrary<VifSpec> => fc.record({
  bridge: fc.option(ident, { nil: undefined }),
  ip: fc.option(fc.array(fc.tuple(octet, octet, octet, octet).map((o) => o.join('.')), { minLength: 1, maxLength: 3 }).map((a) => a.join(' ')), { nil: undefined }),
  vifname: fc.option(ident, { nil: undefined }),
  type: fc.option(fc.constantFrom('vif' as const, 'ioemu' as const), { nil: undefined }),
  backend: fc.option(ident, { nil: undefined }),
  rate: fc.option(fc.record({
    amount: fc.integer({ min: 1, max: 0xffffffff }),
    unit: fc.constantFrom('B' as const, 'KB' as const, 'MB' as const, 'GB' as const, 'b' as const, 'Kb' as const, 'Mb' as const, 'Gb' as const),
    intervalUs: fc.integer({ min: 1, max: 0xffffffff }),
  }), { nil: undefined }),
  mtu: fc.option(fc.integer({ min: 68, max: 65535 }), { nil: undefined }),
  gatewaydev: fc.option(ident, { nil: undefined }),
}).map((r) => {
  const v: Record<string, unknown> = { ...(mac !== undefined ? { mac } : {}), ...(devid !== undefined ? { devid } : {}) };
  for (const [k, x] of Object.entries(r)) if (x !== undefined) v[k] = x;
  return v as VifSpec;
});

const configArb: fc.Arbitrary<DomainConfig> = fc.record({
  name: fc.stringMatching(/^[A-Za-z_][A-Za-z0-9_.:@+-]{0,20}$/),
  type: fc.constantFrom('pv' as const, 'hvm' as const),
  kernel: anyText.filter((s) => s.length > 0),
  memory: fc.integer({ min: 1, max: 1 << 20 }),
  extraMem: fc.integer({ min: 0, max: 1 << 20 }),
  vcpus: fc.integer({ min: 1, max: 128 }),
  extraVcpus: fc.integer({ min: 0, max: 8 }),
  cpus: fc.option(fc.oneof(cpuSetArb, fc.array(cpuSetArb, { minLength: 1, maxLength: 4 })), { nil: undefined }),
  cpuWeight: fc.option(fc.integer({ min: 1, max: 65535 }), { nil: undefined }),
  cap: fc.option(fc.integer({ min: 0, max: 65535 }), { nil: undefined }),
  actions: fc.array(fc.constantFrom(...SHUTDOWN_ACTIONS), { minLength: 5, maxLength: 5 }),
  vdevs: fc.uniqueArray(fc.stringMatching(/^xvd[a-z]{1,2}$/), { maxLength: 4 }),
  vifIds: fc.uniqueArray(fc.tuple(fc.option(fc.tuple(octet, octet, octet, octet, octet, octet), { nil: undefined }), fc.option(fc.integer({ min: 0, max: 65535 }), { nil: undefined })), {
    maxLength: 3,
    selector: ([m, d]) => `${m?.join(':')}/${d}`,
  }),
  cmdline: fc.option(anyText, { nil: undefined }),
  root: fc.option(anyText, { nil: undefined }),
  extra: fc.option(anyText, { nil: undefined }),
  uuid: fc.option(fc.uuid().map((u) => u.toLowerCase()), { nil: undefined }),
}).chain((r) => {
  // Unique, unicast MACs and unique devids, as the parser demands.
  const seenMac = new Set<string>();
  const seenDev = new Set<number>();
  const ids = r.vifIds.map(([m, d]) => {
    const mac = m ? [m[0] & 0xfe, ...m.slice(1)].map(hex2).join(':') : undefined;
    const okMac = mac !== undefined && !seenMac.has(mac) ? (seenMac.add(mac), mac) : undefined;
    const okDev = d !== undefined && !seenDev.has(d) ? (seenDev.add(d), d) : undefined;
    return [okMac, okDev] as const;
  });
  const maxvcpus = Math.min(128, r.vcpus + r.extraVcpus);
  const cpus = Array.isArray(r.cpus) ? r.cpus.slice(0, maxvcpus) : r.cpus;
  return fc.tuple(fc.tuple(...r.vdevs.map(diskArb)), fc.tuple(...ids.map(([m, d]) => vifArb(m, d)))).map(([disks, vifs]): DomainConfig => ({
    name: r.name, type: r.type, kernel: r.kernel, memory: r.memory, maxmem: r.memory + r.extraMem,
    vcpus: r.vcpus, maxvcpus,
    ...(cpus !== undefined ? { cpus } : {}),
    ...(r.cpuWeight !== undefined ? { cpuWeight: r.cpuWeight } : {}),
    ...(r.cap !== undefined ? { cap: r.cap } : {}),
    onPoweroff: r.actions[0], onReboot: r.actions[1], onWatchdog: r.actions[2], onCrash: r.actions[3], onSoftReset: r.actions[4],
    disks, vifs,
    ...(r.cmdline !== undefined ? { cmdline: r.cmdline } : {}),
    ...(r.root !== undefined ? { root: r.root } : {}),
    ...(r.extra !== undefined ? { extra: r.extra } : {}),
    ...(r.uuid !== undefined ? { uuid: r.uuid } : {}),
  }));
}).filter((c) => !/^\d+$/.test(c.name));

describe('xl.cfg: properties', () => {
  it('parse(print(cfg)) is cfg', () => {
    fc.assert(fc.property(configArb, (cfg) => {
      expect(parseXlCfg(printXlCfg(cfg), { file: 'printed.cfg' })).toEqual(cfg);
    }), { numRuns: 300 });
  });

  it('validateDomainConfig accepts every config as it is', () => {
    fc.assert(fc.property(configArb, (cfg) => {
      expect(validateDomainConfig(JSON.parse(JSON.stringify(cfg)))).toEqual(cfg);
    }), { numRuns: 100 });
  });

  const lineCount = (s: string): number => s.split('\n').length;
  const check = (text: string): void => {
    try {
      parseXlCfg(text, { file: 'g.cfg' });
    } catch (e) {
      if (!(e instanceof XlCfgError)) throw e;
      expect(e.issues.length).toBeGreaterThan(0);
      for (const i of e.issues) {
        expect(i.file).toBe('g.cfg');
        expect(i.line).toBeGreaterThanOrEqual(1);
        expect(i.line).toBeLessThanOrEqual(lineCount(text) + 1);
        expect(i.column).toBeGreaterThanOrEqual(1);
        expect(i.message.length).toBeGreaterThan(0);
      }
    }
  };

  it('garbage makes an XlCfgError with a line number, never anything else', () => {
    fc.assert(fc.property(fc.string({ unit: 'binary', maxLength: 200 }), check), { numRuns: 500 });
  });

  it('near-miss configurations (config tokens shuffled) likewise', () => {
    const token = fc.constantFrom('name', 'kernel', 'memory', 'disk', 'vif', 'cpus', '=', '+=', '[', ']', ',', ';', '\n', '\r\n', ' ', '#x\n',
      '"a"', "'b'", '"\\x4', '"\\', '12', '0x1f', '08', '-1', '"pvh"', "'file:/x,xvda,w'", "'mac=00:16:3e:00:00:01'", 'Name', '(', '"0-3"');
    fc.assert(fc.property(fc.array(token, { maxLength: 40 }), (ts) => check(ts.join(''))), { numRuns: 1000 });
  });
});
