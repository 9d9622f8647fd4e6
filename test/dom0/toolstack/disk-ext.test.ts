/**
 * Our extensions of the disk spec (dom0/toolstack/disk.ts): `size=` and
 * `backendtype=null`, how they parse, print back and are refused where they
 * make no sense; validateDiskSpec for specs off the control socket; and a
 * property test that printDiskSpec then parseDiskSpec is the identity over
 * every key.
 */
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import {
  parseDiskSize, parseDiskSpec, printDiskSize, printDiskSpec, validateDiskSpec, type DiskSpec,
} from '../../../dom0/toolstack/disk.ts';
import { parseXlCfg, printXlCfg, toPvBuildConfig } from '../../../dom0/toolstack/xlcfg.ts';
import { resolveConfigPaths } from '../../../dom0/toolstack/load.ts';

describe('size=', () => {
  it.each([
    ['512', 512], ['1024', 1024], ['4K', 4096], ['1M', 1024 ** 2], ['10G', 10 * 1024 ** 3], ['3K', 3072],
  ])('%s is %d bytes', (v, n) => { expect(parseDiskSize(v)).toBe(n); });

  it.each([
    ['100', /not a multiple of 512/], ['0', /above 0/], ['0G', /above 0/], ['1T', /invalid size/], ['1k', /invalid size/],
    ['-1', /invalid size/], ['', /invalid size/], ['1.5G', /invalid size/], ['99999999999999999', /invalid size/],
    ['9999999999999G', /too large/],
  ])('refuses %s', (v, re) => { expect(parseDiskSize(v)).toMatch(re); });

  it('prints with the largest suffix that divides it', () => {
    expect(printDiskSize(512)).toBe('512');
    expect(printDiskSize(3072)).toBe('3K');
    expect(printDiskSize(1024 ** 2 * 3)).toBe('3M');
    expect(printDiskSize(1024 ** 3)).toBe('1G');
  });

  it('parses in both forms, and is refused where it makes no sense', () => {
    expect(parseDiskSpec('vdev=xvda, size=1G, target=/d/a.img')).toMatchObject({ size: 1024 ** 3, target: '/d/a.img' });
    expect(parseDiskSpec('/d/a.img,raw,xvda,w,size=4M')).toMatchObject({ size: 4 * 1024 ** 2, vdev: 'xvda', access: 'rw' });
    expect(parseDiskSpec('vdev=xvda, size=1G, size=2G, target=/a')).toMatch(/size respecified/);
    expect(parseDiskSpec('vdev=xvda, size=1G, size=1G, target=/a')).toMatchObject({ size: 1024 ** 3 });
    expect(parseDiskSpec('/d/a.iso,raw,hdc:cdrom,size=1M')).toMatch(/CD-ROM/);
    expect(parseDiskSpec('vdev=xvda, size=12, target=/a')).toMatch(/multiple of 512/);
  });
});

describe('backendtype=null', () => {
  it('a null device: size, no target', () => {
    expect(parseDiskSpec('vdev=xvdb, backendtype=null, size=1G')).toEqual({
      target: '', vdev: 'xvdb', format: 'raw', access: 'rw', devtype: 'disk', backendtype: 'null', size: 1024 ** 3,
    });
    expect(parseDiskSpec('vdev=xvdb, access=ro, backendtype=null, size=1M')).toMatchObject({ access: 'ro' });
  });

  it('is refused without a size, with a target, or as a CD-ROM', () => {
    expect(parseDiskSpec('vdev=xvdb, backendtype=null')).toMatch(/needs size=/);
    expect(parseDiskSpec('vdev=xvdb, backendtype=null, size=1M, target=/a')).toMatch(/takes no target/);
    expect(parseDiskSpec('vdev=hdc, devtype=cdrom, backendtype=null, size=1M')).toMatch(/not a CD-ROM/);
    expect(parseDiskSpec('vdev=xvdb, backendtype=nul, size=1M')).toMatch(/unknown value for backendtype/);
  });

  it('goes through xl.cfg, its printing, and the build config', () => {
    const c = parseXlCfg('name="a"\nkernel="k.ts"\ndisk=["vdev=xvdb, backendtype=null, size=64M", "vdev=xvda, size=1G, target=/x/a.img"]\n');
    expect(parseXlCfg(printXlCfg(c))).toEqual(c);
    expect(toPvBuildConfig(c).disks).toEqual(c.disks);
    expect(JSON.parse(JSON.stringify(toPvBuildConfig(c)))).toEqual(toPvBuildConfig(c));
    // A missing target with size= is for the host to create, not an error of the file.
    expect(resolveConfigPaths(c, '/', 'a.cfg', (p) => p === '/k.ts').disks[1]).toMatchObject({ target: '/x/a.img', size: 1024 ** 3 });
  });
});

describe('validateDiskSpec (a spec off the control socket)', () => {
  it('accepts a spec and returns the normalised copy', () => {
    const s = parseDiskSpec('vdev=xvda, size=1G, target=/a') as DiskSpec;
    expect(validateDiskSpec(JSON.parse(JSON.stringify(s)))).toEqual(s);
  });
  it.each([
    [null, /not an object/],
    [{ vdev: 'xvda' }, /target must be a string/],
    [{ target: '/a', vdev: 'xvda', format: 'raw', access: 'rw', devtype: 'disk', size: '1G' }, /size must be an integer/],
    [{ target: '/a', vdev: 'xvda', format: 'raw', access: 'rw', devtype: 'disk', evil: 1 }, /unknown field evil/],
    [{ target: '/a', vdev: 'xvda, target=/etc/shadow', format: 'raw', access: 'rw', devtype: 'disk' }, /./],
    [{ target: '/a', vdev: 'xvda', format: 'qcow2', access: 'rw', devtype: 'disk' }, /not supported/],
    [{ target: '', vdev: 'xvda', format: 'raw', access: 'rw', devtype: 'disk', backendtype: 'null' }, /needs size=/],
  ])('refuses %j', (x, re) => {
    const r = validateDiskSpec(x);
    expect(typeof r).toBe('string');
    expect(r).toMatch(re);
  });
});

/** Any spec parseDiskSpec can produce, every key included. */
const specArb: fc.Arbitrary<DiskSpec> = fc.record({
  kind: fc.constantFrom('file', 'null', 'cdrom', 'empty-cdrom'),
  target: fc.string({ minLength: 1 }).filter((s) => !/[\x00-\x1f\x7f]/.test(s)),
  vdev: fc.constantFrom('xvda', 'xvdb1', 'xvdaa', 'hda', 'sdb', 'd3p2', '51712'),
  ro: fc.boolean(),
  backend: fc.option(fc.stringMatching(/^[a-z][a-z0-9-]{0,10}$/), { nil: undefined }),
  phy: fc.boolean(),
  size: fc.option(fc.integer({ min: 1, max: 2 ** 40 }).map((n) => n * 512), { nil: undefined }),
  discard: fc.option(fc.boolean(), { nil: undefined }),
  directIoSafe: fc.boolean(),
  trusted: fc.option(fc.boolean(), { nil: undefined }),
}).map((r): DiskSpec => {
  const common = {
    ...(r.backend !== undefined ? { backend: r.backend } : {}),
    ...(r.discard !== undefined ? { discard: r.discard } : {}),
    ...(r.directIoSafe ? { directIoSafe: true } : {}),
    ...(r.trusted !== undefined ? { trusted: r.trusted } : {}),
  };
  switch (r.kind) {
    case 'null':
      return { target: '', vdev: r.vdev, format: 'raw', access: r.ro ? 'ro' : 'rw', devtype: 'disk', backendtype: 'null', size: r.size ?? 512, ...common };
    case 'cdrom':
      return { target: r.target, vdev: r.vdev, format: 'raw', access: 'ro', devtype: 'cdrom', ...(r.phy ? { backendtype: 'phy' as const } : {}), ...common };
    case 'empty-cdrom':
      return { target: '', vdev: r.vdev, format: 'empty', access: 'ro', devtype: 'cdrom', ...common };
    default:
      return {
        target: r.target, vdev: r.vdev, format: 'raw', access: r.ro ? 'ro' : 'rw', devtype: 'disk',
        ...(r.phy ? { backendtype: 'phy' as const } : {}), ...(r.size !== undefined ? { size: r.size } : {}), ...common,
      };
  }
});

describe('printDiskSpec then parseDiskSpec', () => {
  it('is the identity, with size= and backendtype=null', () => {
    fc.assert(fc.property(specArb, (s) => {
      expect(parseDiskSpec(printDiskSpec(s))).toEqual(s);
      expect(validateDiskSpec(s)).toEqual(s);
    }), { numRuns: 500 });
  });
});

describe('xl.cfg disk list', () => {
  it('refuses two vdevs naming the same device', () => {
    expect(() => parseXlCfg('name="a"\nkernel="k.ts"\ndisk=["vdev=xvda, target=/a", "vdev=51712, target=/b"]\n'))
      .toThrow(/vdevs xvda and 51712 are the same device \(51712\)/);
    expect(() => parseXlCfg('name="a"\nkernel="k.ts"\ndisk=["vdev=xvda, target=/a", "vdev=xvda, target=/b"]\n'))
      .toThrow(/vdev xvda is used twice/);
  });
});
