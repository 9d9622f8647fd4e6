/**
 * xl's output formats against literal lines worked out by hand from Xen's
 * printf formats (quoted beside each case), not from our code.
 */
import { describe, expect, it } from 'vitest';
import { parseXlCfg } from '../../../dom0/toolstack/xlcfg.ts';
import {
  formatCpuBitmap, formatInfo, formatList, formatListLong, formatSchedCredit2Pool, formatSchedCreditPool, formatSchedHeader,
  formatSchedRow, formatUptime, formatVcpuList, listStateString, uptimeToString,
} from '../../../dom0/xl/format.ts';
import type { DomainSummary, VcpuInfo } from '../../../dom0/xl/types.ts';
import { formatTop, topStateString } from '../../../dom0/xl/xentop.ts';
import { formatLsLine, sanitiseValue, unsanitiseValue } from '../../../dom0/xl/xsformat.ts';
import { FAKE_HOST_INFO } from './fake-host.ts';

const dom = (over: Partial<DomainSummary>): DomainSummary => ({
  domid: 0, name: 'Domain-0', uuid: '00000000-0000-0000-0000-000000000000', memKiB: 1024 * 1024, maxMemKiB: 1024 * 1024,
  outstandingKiB: 0, vcpus: 1, maxVcpus: 1, running: true, blocked: false, paused: false, shutdown: false, dying: false,
  shutdownReason: 0, cpuTimeNs: 12_300_000_000, startTime: 0, ...over,
});

describe('xl list', () => {
  // printf("Name                                        ID   Mem VCPUs\tState\tTime(s)");
  // printf("%-40s %5d %5lu %5d     %c%c%c%c%c%c  %8.1f", ...)
  it('prints the header and rows of xl_info.c list_domains', () => {
    const out = formatList([
      dom({}),
      dom({ domid: 7, name: 'guest-with-a-long-name-of-more-than-40-chars', memKiB: 4096, vcpus: 2, running: false, blocked: true, cpuTimeNs: 250_000_000 }),
    ]);
    expect(out).toBe(
      'Name                                        ID   Mem VCPUs\tState\tTime(s)\n'
      + 'Domain-0                                     0  1024     1     r-----      12.3\n'
      + 'guest-with-a-long-name-of-more-than-40-chars     7     4     2     -b----       0.2\n',
    );
  });

  it('adds memory still claimed (outstanding) and divides by 1024, rounding down', () => {
    expect(formatList([dom({ memKiB: 5000, outstandingKiB: 200 })]).split('\n')[1]).toBe(
      'Domain-0                                     0     5     1     r-----      12.3');
  });

  it('spells the state from the flags, with the shutdown reason\'s letter from "-rscwS"', () => {
    const off = { running: false };
    expect(listStateString(dom({ ...off, paused: true, blocked: true }))).toBe('-bp---');
    expect(listStateString(dom({ ...off, shutdown: true, shutdownReason: 0 }))).toBe('---s--');
    expect(listStateString(dom({ ...off, shutdown: true, shutdownReason: 1 }))).toBe('---sr-');
    expect(listStateString(dom({ ...off, shutdown: true, shutdownReason: 3 }))).toBe('---sc-');
    expect(listStateString(dom({ ...off, shutdown: true, shutdownReason: 4 }))).toBe('---sw-');
    expect(listStateString(dom({ ...off, shutdown: true, shutdownReason: 5 }))).toBe('---sS-');
    expect(listStateString(dom({ ...off, shutdown: true, shutdownReason: 9 }))).toBe('---s?-');
    expect(listStateString(dom({ ...off, dying: true, shutdown: true, shutdownReason: 3 }))).toBe('---scd');
    // The reason is only read when the shutdown flag is set.
    expect(listStateString(dom({ ...off, shutdownReason: 3 }))).toBe('------');
  });

  // if (verbose) printf("   UUID                            Reason-Code\tSecurity Label");
  // printf(" " LIBXL_UUID_FMT, ...); shutdown ? printf(" %8x", reason) : printf(" %8s", "-"); printf(" %16s", label ?: "-")
  it('-v adds UUID, reason code and security label', () => {
    const out = formatList([dom({ uuid: '6f8c2b1a-0000-4000-8000-00000000abcd' }), dom({ domid: 3, name: 'x', running: false, shutdown: true, shutdownReason: 3 })], { verbose: true });
    expect(out.split('\n')).toEqual([
      'Name                                        ID   Mem VCPUs\tState\tTime(s)   UUID                            Reason-Code\tSecurity Label',
      'Domain-0                                     0  1024     1     r-----      12.3 6f8c2b1a-0000-4000-8000-00000000abcd        -                -',
      'x                                            3  1024     1     ---sc-      12.3 00000000-0000-0000-0000-000000000000        3                -',
      '',
    ]);
  });

  it('-l prints libxl-shaped JSON, four-space indented', () => {
    const cfg = parseXlCfg('name = "web"\nkernel = "/k.ts"\nmemory = 8\nmaxmem = 16\nvcpus = 2\ncpus = "1"\nextra = "x=1"\ndisk = [ "/d.img,raw,xvda,w" ]\nvif = [ "mac=00:16:3e:00:00:01" ]\non_crash = "preserve"\n');
    const text = formatListLong([{ summary: dom({}), config: null }, { summary: dom({ domid: 1, name: 'web' }), config: cfg }], 4);
    expect(text.startsWith('[\n    {\n        "domid": 0,')).toBe(true);
    const arr = JSON.parse(text) as Array<{ domid: number; config: Record<string, unknown> }>;
    expect(arr[0].config).toEqual({
      c_info: { type: 'pv', name: 'Domain-0', uuid: '00000000-0000-0000-0000-000000000000' },
      b_info: { max_vcpus: 1, avail_vcpus: [0], max_memkb: 1048576, target_memkb: 1048576 },
    });
    expect(arr[1].config).toMatchObject({
      b_info: { max_vcpus: 2, avail_vcpus: [0, 1], max_memkb: 16384, target_memkb: 8192, vcpu_hard_affinity: [[1], [1]], 'type.pv': { kernel: '/k.ts', cmdline: 'x=1' } },
      disks: [{ pdev_path: '/d.img', vdev: 'xvda', format: 'raw', readwrite: 1, is_cdrom: 0 }],
      nics: [{ devid: 0, mac: '00:16:3e:00:00:01', nictype: 'vif' }],
      on_poweroff: 'destroy', on_reboot: 'restart', on_crash: 'preserve', on_soft_reset: 'soft_reset',
    });
  });
});

describe('xl info', () => {
  // maybe_printf("xen_version            : %d.%d%s\n", ...) and so on: the key in 23 columns, then ": ".
  it('prints xl_info.c\'s lines in its order', () => {
    const lines = formatInfo(FAKE_HOST_INFO).split('\n');
    expect(lines.slice(0, 5)).toEqual([
      'host                   : testhost',
      'release                : 6.1.0',
      'version                : #1 SMP',
      'machine                : x86_64',
      'nr_cpus                : 2',
    ]);
    expect(lines).toContain('cpu_mhz                : 2400.000');
    expect(lines).toContain('hw_caps                : 00000000:00000000:00000000:00000000:00000000:00000000:00000000:00000000');
    expect(lines).toContain('virt_caps              : pv hvm');
    expect(lines).toContain('total_memory           : 256');
    expect(lines).toContain('free_memory            : 234');
    expect(lines).toContain('xen_version            : 4.17.0-ts');
    expect(lines).toContain('xen_scheduler          : credit');
    expect(lines).toContain('platform_params        : virt_start=0x0');
    expect(lines.at(-2)).toBe('xend_config_format     : 4');
    expect(lines.indexOf('free_cpus              : 0')).toBeLessThan(lines.indexOf('xen_major              : 4'));
  });

  it('prints "virt_caps              :" with nothing after it when there are none', () => {
    expect(formatInfo({ ...FAKE_HOST_INFO, virtCaps: [] })).toContain('\nvirt_caps              :\n');
  });

  it('xl info NAME prints the values of the keys starting with NAME', () => {
    expect(formatInfo(FAKE_HOST_INFO, { filter: 'xen_version' })).toBe('4.17.0-ts\n');
    expect(formatInfo(FAKE_HOST_INFO, { filter: 'free' })).toBe('234\n0\n');
    expect(formatInfo(FAKE_HOST_INFO, { filter: 'nothing' })).toBe('');
  });

  it('-n adds the topology and NUMA tables', () => {
    const t = formatInfo(FAKE_HOST_INFO, { numa: true });
    // printf("%3d:    %4d     %4d     %4d\n", ...) and printf("%4d:    %6"PRIu64"     %6"PRIu64"      %d", ...)
    expect(t).toContain('cpu:    core    socket     node\n  0:       0        0        0\n  1:       1        0        0\n');
    expect(t).toContain('node:    memsize    memfree    distances\n   0:       256        234      10\n');
  });
});

describe('xl vcpu-list', () => {
  const v = (over: Partial<VcpuInfo>): VcpuInfo => ({ vcpuid: 0, cpu: 1, online: true, running: true, blocked: false, cpuTimeNs: 5_260_000_000, hard: [0, 1, 2, 3], soft: [0, 2, 3], ...over });
  // printf("%-32s %5s %5s %5s %5s %9s %s\n", "Name", "ID", "VCPU", "CPU", "State", "Time(s)", "Affinity (Hard / Soft)");
  // printf("%-32s %5u %5u", ...); online: printf("%5u %3c%c- ", ...) offline: printf("%5c %3c%cp ", '-', '-', '-'); printf("%9.1f  ", ...)
  it('prints xl_vcpu.c\'s table', () => {
    expect(formatVcpuList([{ domid: 0, name: 'Domain-0', vcpus: [v({}), v({ vcpuid: 1, online: false, running: false, cpuTimeNs: 0, hard: [1], soft: [] })] }], 4)).toBe(
      'Name                                ID  VCPU   CPU State   Time(s) Affinity (Hard / Soft)\n'
      // No blank between the VCPU and CPU fields: "%5u %5u" then "%5u %3c%c- ".
      + 'Domain-0                             0     0    1   r--       5.3  all / 0,2-3\n'
      + 'Domain-0                             0     1    -   --p       0.0  1 / none\n',
    );
  });

  it('rounds as printf does: ties to even', async () => {
    const { cFixed } = await import('../../../dom0/xl/format.ts');
    expect(cFixed(0.25, 1)).toBe('0.2');
    expect(cFixed(0.75, 1)).toBe('0.8');
    expect(cFixed(2.5, 0)).toBe('2');
    expect(cFixed(0.35, 1)).toBe('0.3'); // 0.35 is 0.34999... in binary
    expect(cFixed(12.3, 1)).toBe('12.3');
    expect(cFixed(-0.25, 1)).toBe('-0.2');
  });

  it('prints CPU maps as print_bitmap does', () => {
    expect(formatCpuBitmap([], 4)).toBe('none');
    expect(formatCpuBitmap([0, 1, 2, 3], 4)).toBe('all');
    expect(formatCpuBitmap([0, 1, 2, 3, 9], 4)).toBe('all');
    expect(formatCpuBitmap([0, 1, 2], 4)).toBe('0-2');
    expect(formatCpuBitmap([1, 2, 3], 4)).toBe('1-3');
    expect(formatCpuBitmap([0, 2], 4)).toBe('0,2');
    expect(formatCpuBitmap([0], 1)).toBe('all');
  });
});

describe('xl sched-credit', () => {
  // printf("Cpupool %s: tslice=%dms ratelimit=%dus migration-delay=%dus\n", ...)
  // printf("%-33s %4s %6s %4s\n", "Name", "ID", "Weight", "Cap"); printf("%-33s %4d %6d %4d\n", ...)
  it('prints xl_sched.c\'s lines', () => {
    const pool = { scheduler: 'credit', poolName: 'Pool-0', tsliceMs: 30, ratelimitUs: 1000, migrationDelayUs: 0 };
    expect(formatSchedCreditPool(pool)).toBe('Cpupool Pool-0: tslice=30ms ratelimit=1000us migration-delay=0us\n');
    expect(formatSchedCredit2Pool(pool)).toBe('Cpupool Pool-0: ratelimit=1000us\n');
    expect(formatSchedHeader()).toBe('Name                                ID Weight  Cap\n');
    expect(formatSchedRow('Domain-0', 0, { scheduler: 'credit', weight: 256, cap: 0 })).toBe('Domain-0                             0    256    0\n');
  });
});

describe('xl uptime', () => {
  it('spells durations as uptime_to_string does', () => {
    expect(uptimeToString(59, false)).toBe(' 0:00:59');
    expect(uptimeToString(3 * 3600 + 62, false)).toBe(' 3:01:02');
    expect(uptimeToString(86400 + 3661, false)).toBe('1 day,  1:01:01');
    expect(uptimeToString(3 * 86400 + 5, false)).toBe('3 days,  0:00:05');
    expect(uptimeToString(86400 + 3661, true)).toBe('1 day,  1:01');
    expect(uptimeToString(59, true)).toBe(' 0:00');
  });

  // printf("%-33s %4s %s\n", "Name", "ID", "Uptime"); printf("%-33s %4d %s\n", ...); short: printf(" %s up %s, %s (%d)\n", ...)
  it('prints the long and the short form', () => {
    const doms = [{ domid: 0, name: 'Domain-0', startTime: 1000 }, { domid: 5, name: 'web', startTime: 1000 + 3600 }];
    expect(formatUptime(doms, 1000 + 86400 + 3661, false, '12:00:00')).toBe(
      'Name                                ID Uptime\n'
      + 'Domain-0                             0 1 day,  1:01:01\n'
      + 'web                                  5 1 day,  0:01:01\n');
    expect(formatUptime(doms, 1000 + 7200, true, '12:34:56')).toBe(' 12:34:56 up  2:00, Domain-0 (0)\n 12:34:56 up  1:00, web (5)\n');
  });
});

describe('xl top (xentop)', () => {
  const sample = (timeNs: number, cpu0: number, cpu1: number) => ({
    timeNs, host: FAKE_HOST_INFO,
    domains: [dom({ cpuTimeNs: cpu0, memKiB: 16384, maxMemKiB: 16384 }), dom({ domid: 1, name: 'a-guest-with-a-long-name', running: false, blocked: true, cpuTimeNs: cpu1, memKiB: 4096, maxMemKiB: 8192, vcpus: 2, maxVcpus: 2 })],
    stats: [{ domid: 1, nets: [{ devid: 0, txBytes: 2048, txPackets: 2, txErrs: 0, txDrop: 0, rxBytes: 10240, rxPackets: 9, rxErrs: 0, rxDrop: 1 }], vbds: [{ dev: 51712, error: false, ooReqs: 0, rdReqs: 12, wrReqs: 3, rdSects: 96, wrSects: 24 }] }],
  });
  const opts = { batch: true, vcpus: false, networks: false, vbds: false, repeatHeader: false, fullName: false };

  it('prints xentop\'s header and rows, CPU % from two samples', () => {
    const prev = sample(0, 1e9, 2e9);
    const cur = sample(1e9, 1.25e9, 2.5e9);
    expect(formatTop(cur, prev, opts).split('\n')).toEqual([
      '      NAME  STATE   CPU(sec) CPU(%)     MEM(k) MEM(%)  MAXMEM(k) MAXMEM(%) VCPUS NETS NETTX(k) NETRX(k) VBDS   VBD_OO   VBD_RD   VBD_WR  VBD_RSECT  VBD_WSECT SSID',
      'a-guest-wi --b---          2   50.0       4096    1.6       8192       3.1     2    1        2       10    1        0       12        3         96         24    0',
      // 6.25 exactly: printf rounds the tie to even.
      '  Domain-0 -----r          1   25.0      16384    6.2      16384       6.2     1    0        0        0    0        0        0        0          0          0    0',
      '',
    ]);
  });

  it('the first frame has no CPU %, the live view adds the summary, -n and -x add device lines', () => {
    const t = formatTop(sample(0, 1e9, 2e9), null, { ...opts, batch: false, networks: true, vbds: true }, new Date(2024, 0, 1, 9, 8, 7));
    const lines = t.split('\n');
    expect(lines[0]).toBe('xentop - 09:08:07   Xen 4.17.0-ts');
    expect(lines[1]).toBe('2 domains: 1 running, 1 blocked, 0 paused, 0 crashed, 0 dying, 0 shutdown ');
    expect(lines[2]).toBe('Mem: 262144k total, 22144k used, 240000k free    CPUs: 2 @ 2400MHz');
    expect(lines[4]).toContain('   0.0 ');
    expect(lines[5]).toBe('Net0 RX:    10240bytes        9pkts        0err        1drop  TX:     2048bytes        2pkts        0err        0drop');
    expect(lines[6]).toBe('VBD BlkBack 51712 [ca: 0]  OO:        0   RD:       12   WR:        3   RSECT:         96   WSECT:         24');
  });

  it('VBD columns from blkback\'s counters (as Dom0Toolstack.stats gives them): VBDS counts devices, the columns sum them and widen, -x lists each', () => {
    // Two devices of one guest, as BlkbackDriver.stats -> Dom0Toolstack.stats maps them (error: false, nets: []).
    const cur = {
      timeNs: 0, host: FAKE_HOST_INFO,
      domains: [dom({ domid: 1, name: 'guest', running: false, blocked: true, cpuTimeNs: 2e9, memKiB: 4096, maxMemKiB: 8192, vcpus: 2, maxVcpus: 2 })],
      stats: [{ domid: 1, nets: [], vbds: [
        { dev: 51712, error: false, ooReqs: 0, rdReqs: 2, wrReqs: 4, rdSects: 16, wrSects: 32 },
        { dev: 51728, error: false, ooReqs: 1, rdReqs: 1000, wrReqs: 2000, rdSects: 8000, wrSects: 12345678901 },
      ] }],
    };
    // tot_vbd_reqs sums: OO 1, RD 1002, WR 2004, RSECT 8016, WSECT 12345678933 (11 digits:
    // INT_FIELD_WIDTH(12345678934) = 11 widens VBD_WSECT from 10 to 11).
    expect(formatTop(cur, null, { ...opts, vbds: true }).split('\n')).toEqual([
      '      NAME  STATE   CPU(sec) CPU(%)     MEM(k) MEM(%)  MAXMEM(k) MAXMEM(%) VCPUS NETS NETTX(k) NETRX(k) VBDS   VBD_OO   VBD_RD   VBD_WR  VBD_RSECT   VBD_WSECT SSID',
      '     guest --b---          2    0.0       4096    1.6       8192       3.1     2    0        0        0    2        1     1002     2004       8016 12345678933    0',
      // do_vbd: "VBD %s %4d %s OO: %8llu   RD: %8llu   WR: %8llu   RSECT: %10llu   WSECT: %10llu\n", [%2x:%2x] of 0xca00, 0xca10.
      'VBD BlkBack 51712 [ca: 0]  OO:        0   RD:        2   WR:        4   RSECT:         16   WSECT:         32',
      'VBD BlkBack 51728 [ca:10]  OO:        1   RD:     1000   WR:     2000   RSECT:       8000   WSECT: 12345678901',
      '',
    ]);
  });

  it('spells states in xentop\'s order: dying, shutdown, blocked, crashed, paused, running', () => {
    expect(topStateString(dom({ running: false, shutdown: true, shutdownReason: 3 }))).toBe('-s-c--');
    expect(topStateString(dom({ running: false, paused: true, blocked: true }))).toBe('--b-p-');
  });
});

describe('xenstore tools', () => {
  it('quotes values as xs_sanitise_value does', () => {
    expect(sanitiseValue(Uint8Array.from([0x41, 0x09, 0x0a, 0x0d, 0x5c, 0x01, 0x1b, 0x7f, 0xc3, 0x20]))).toBe('A\\t\\n\\r\\\\\\001\\x1b\\x7f\\xc3 ');
  });

  it('unquotes arguments as xs_unsanitise_value does', () => {
    expect(new TextDecoder().decode(unsanitiseValue('a\\tb\\x41\\101\\\\\\q'))).toBe('a\tbAA\\q');
    expect([...unsanitiseValue('\\0\\x7')]).toEqual([0, 7]);
    expect([...unsanitiseValue('é')]).toEqual([0xc3, 0xa9]);
  });

  it('prints xenstore-ls lines as do_ls does', () => {
    const enc = (s: string): Uint8Array => new TextEncoder().encode(s);
    const o = { perms: false, fullPath: false, maxWidth: 80 };
    expect(formatLsLine({ path: '/local/domain/0/name', name: 'name', depth: 3, value: enc('Domain-0'), perms: null }, o)).toBe('   name = "Domain-0"\n');
    // An unreadable value: printf(":\n"), then the line's own putchar('\n').
    expect(formatLsLine({ path: '/x', name: 'x', depth: 0, value: null, perms: null }, o)).toBe('x:\n\n');
    // max_width < linewid + len + TAG_LEN: printf(" = \"%.*s\\...\"", max_width - TAG_LEN - linewid, value)
    expect(formatLsLine({ path: '/x', name: 'x', depth: 0, value: enc('v'.repeat(100)), perms: null }, o)).toBe(`x = "${'v'.repeat(71)}\\..."\n`);
    // -p: dots to column 60, then "  (perms)".
    expect(formatLsLine({ path: '/a', name: 'a', depth: 0, value: enc('b'), perms: ['n0', 'r1'] }, { ...o, perms: true })).toBe(`a = "b" ${' .'.repeat(26)}  (n0,r1)\n`);
    expect(formatLsLine({ path: '/a/b', name: 'b', depth: 1, value: enc(''), perms: null }, { ...o, fullPath: true })).toBe('/a/b = ""\n');
  });
});
