/**
 * The value grammars inside xl.cfg: disk specs (xl-disk-configuration(5),
 * libxlu_disk_l.l), vif specs (xl-network-configuration(5), libxlu_vif.c) and
 * CPULISTs (xl.cfg(5) cpus=).
 */
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { formatRanges, parseCpuList, printCpuList, cpuSetMembers } from '../../../dom0/toolstack/cpulist.ts';
import { parseDiskSpec, printDiskSpec, vdevNumber } from '../../../dom0/toolstack/disk.ts';
import { parseVifRate, parseVifSpec, printVifSpec, rateBytesPerInterval } from '../../../dom0/toolstack/vif.ts';

describe('disk specs', () => {
  const ok: Array<[string, Record<string, unknown>]> = [
    ['format=raw, vdev=xvda, access=rw, target=/img/a.img', { target: '/img/a.img', vdev: 'xvda', access: 'rw', format: 'raw' }],
    ['vdev=xvda,target=/img/a.img', { target: '/img/a.img', access: 'rw' }],
    ['file:/img/a.img,xvda,w', { target: '/img/a.img', vdev: 'xvda', access: 'rw' }],
    ['phy:/dev/vg/root,xvda,r', { target: '/dev/vg/root', vdev: 'xvda', access: 'ro' }],
    ['raw:/img/a.img,xvda,ro', { target: '/img/a.img', vdev: 'xvda', format: 'raw', access: 'ro' }],
    ['tap:aio:/img/a.img,xvda,w', { target: '/img/a.img', vdev: 'xvda' }],
    ['/img/a.img,raw,xvda,rw', { target: '/img/a.img', format: 'raw', vdev: 'xvda', access: 'rw' }],
    ['/img/a.img,,xvda', { target: '/img/a.img', format: 'raw', vdev: 'xvda', access: 'rw' }],
    ['/img/cd.iso,raw,hdc,devtype=cdrom', { target: '/img/cd.iso', vdev: 'hdc', devtype: 'cdrom', access: 'ro' }],
    ['/img/cd.iso,raw,hdc:cdrom', { vdev: 'hdc', devtype: 'cdrom', access: 'ro' }],
    [',,hdc:cdrom', { target: '', format: 'empty', vdev: 'hdc', devtype: 'cdrom' }],
    ['vdev=xvdb, access=ro, backend=driverdom, backendtype=phy, discard, direct-io-safe, untrusted, target=/x',
      { backend: 'driverdom', backendtype: 'phy', discard: true, directIoSafe: true, trusted: false, access: 'ro' }],
    ['  vdev=xvda,  target=/x', { vdev: 'xvda', target: '/x' }],
  ];
  it.each(ok)('%s', (spec, want) => {
    const r = parseDiskSpec(spec);
    expect(typeof r).toBe('object');
    expect(r).toMatchObject(want);
  });

  it('needs a vdev; target= takes the rest but one trailing comma', () => {
    expect(parseDiskSpec('target=/img/a,b.img,,')).toBe('no vdev specified');
    expect(parseDiskSpec('vdev=xvda,target=/img/a,b.img,,')).toMatchObject({ target: '/img/a,b.img,' });
  });

  const bad: Array<[string, RegExp]> = [
    ['/img/a.img,xvda,w', /unknown value for format: "xvda"/],
    ['vdev=xvda', /no target specified/],
    ['format=qcow2,vdev=xvda,target=/x', /format qcow2 is not supported/],
    ['format=bogus,vdev=xvda,target=/x', /unknown value for format: "bogus"/],
    ['access=rwx,vdev=xvda,target=/x', /unknown value for access: "rwx"/],
    ['vdev=xvda,vdev=xvdb,target=/x', /vdev respecified/],
    ['backendtype=qdisk,vdev=xvda,target=/x', /backendtype qdisk is not supported/],
    ['script=block-iscsi,vdev=xvda,target=/x', /script= is not supported/],
    ['nbd:host:1234,xvda,w', /"nbd:" disks \(block-nbd scripts\) are not supported/],
    ['weird:/x,xvda,w', /unknown deprecated disk prefix "weird:"/],
    ['/x,raw,xvda,w,extra', /too many positional parameters at "extra"/],
    ['/x,raw,hdz9999,w', /invalid vdev "hdz9999"/],
    ['/x,raw,hdc:floppy', /unknown deprecated type "floppy"/],
  ];
  it.each(bad)('refuses %s', (spec, msg) => {
    const r = parseDiskSpec(spec);
    expect(typeof r).toBe('string');
    expect(r).toMatch(msg);
  });

  it('numbers vdevs as xen-vbd-interface(7) does', () => {
    expect(vdevNumber('xvda')).toBe(51712);
    expect(vdevNumber('xvdb')).toBe(51728);
    expect(vdevNumber('xvda1')).toBe(51713);
    expect(vdevNumber('xvdq')).toBe((1 << 28) | (16 << 8));
    expect(vdevNumber('hda')).toBe(768);
    expect(vdevNumber('hdc')).toBe(5632);
    expect(vdevNumber('sda')).toBe(2048);
    expect(vdevNumber('d0p1')).toBe((1 << 28) | 1);
    expect(vdevNumber('51712')).toBe(51712);
    expect(vdevNumber('floppy')).toBeNull();
  });

  it('printDiskSpec parses back to the same spec, whatever the target', () => {
    fc.assert(fc.property(fc.string({ minLength: 1 }).filter((s) => !/[\x00-\x1f\x7f]/.test(s)), fc.boolean(), (target, ro) => {
      const spec = { target, vdev: 'xvdb', format: 'raw' as const, access: ro ? 'ro' as const : 'rw' as const, devtype: 'disk' as const };
      expect(parseDiskSpec(printDiskSpec(spec))).toEqual(spec);
    }));
  });
});

describe('vif specs', () => {
  it('reads and prints every key', () => {
    const spec = 'mac=00:16:3e:0a:0b:0c, bridge=xenbr1, ip=192.168.1.2, vifname=web0, type=vif, backend=netdom, rate=100MB/s@20000us, mtu=9000, devid=3, gatewaydev=eth0';
    const v = parseVifSpec(spec);
    expect(v).toEqual({
      mac: '00:16:3e:0a:0b:0c', bridge: 'xenbr1', ip: '192.168.1.2', vifname: 'web0', type: 'vif', backend: 'netdom',
      rate: { amount: 100, unit: 'MB', intervalUs: 20_000 }, mtu: 9000, devid: 3, gatewaydev: 'eth0',
    });
    expect(printVifSpec(v as never)).toBe(spec);
  });

  const bad: Array<[string, RegExp]> = [
    ['mac=00:16:3e:00:00', /invalid mac/],
    ['ip=10.0.0.300', /invalid ip address "10.0.0.300"/],
    ['bridge', /expected key=value/],
    ['mtu=20', /invalid mtu "20"/],
    ['script=vif-openvswitch', /script= is not supported/],
    ['bridge=a,bridge=b', /bridge respecified/],
    ['toString=1', /unknown vif parameter "toString"/],
  ];
  it.each(bad)('refuses %s', (spec, msg) => {
    expect(parseVifSpec(spec)).toMatch(msg);
  });

  it('computes the rate as libxlu_vif.c does', () => {
    const r = parseVifRate('10Mb/s@20ms');
    expect(r).toEqual({ amount: 10, unit: 'Mb', intervalUs: 20_000 });
    expect(rateBytesPerInterval(r as never)).toBe(25_000);
    expect(rateBytesPerInterval(parseVifRate('1GB/s') as never)).toBe(50_000_000);
    expect(parseVifRate('5KB/s@1')).toEqual({ amount: 5, unit: 'KB', intervalUs: 1_000_000 });
    expect(parseVifRate('0MB/s')).toMatch(/rate overflow/);
  });
});

describe('CPULISTs', () => {
  const cases: Array<[string, unknown]> = [
    ['all', { kind: 'all', except: [] }],
    ['0-3,5,^1', { kind: 'cpus', cpus: [0, 2, 3, 5] }],
    ['all,^7', { kind: 'all', except: [7] }],
    ['^all,2', { kind: 'cpus', cpus: [2] }],
    ['node:0,^1', { kind: 'all', except: [1] }],
    ['3-1', 'CPU range 3-1 runs backwards in "3-1"'],
    ['1,,2', 'empty item in CPU list "1,,2"'],
    ['x', 'bad CPU range "x" in "x"'],
  ];
  it.each(cases)('%s', (spec, want) => { expect(parseCpuList(spec)).toEqual(want); });

  it('prints back to the same set', () => {
    fc.assert(fc.property(fc.uniqueArray(fc.integer({ min: 0, max: 300 }), { minLength: 1 }), fc.boolean(), (xs, all) => {
      const sorted = [...xs].sort((a, b) => a - b);
      const set = all ? { kind: 'all' as const, except: sorted } : { kind: 'cpus' as const, cpus: sorted };
      expect(parseCpuList(printCpuList(set))).toEqual(set);
    }));
  });

  it('resolves against the host', () => {
    expect(formatRanges([0, 1, 2, 5, 7, 8])).toBe('0-2,5,7-8');
    expect(cpuSetMembers({ kind: 'all', except: [1] }, 4)).toEqual([0, 2, 3]);
  });
});
