/**
 * `xl top`: xentop's screen (tools/xentop/xentop.c), as text. Pure: two
 * samples in (this one and the one before, for CPU %), one frame out.
 *
 * Batch mode (-b) prints the table only, as xentop does; the live view adds
 * xentop's three summary lines above it and a key line below.
 */
import { fixed, localHms, rj } from './format.ts';
import type { DomainStats, DomainSummary, TopSample } from './types.ts';
import { SHUTDOWN_crash } from '../../shared/hypercall.ts';

export interface TopOptions {
  readonly batch: boolean;
  /** -v: a line of per-vCPU seconds under each domain. */
  readonly vcpus: boolean;
  /** -n: a line per network interface. */
  readonly networks: boolean;
  /** -x: a line per block device. */
  readonly vbds: boolean;
  /** -r: the header before each domain. */
  readonly repeatHeader: boolean;
  /** -f: names not cut to 10 characters. */
  readonly fullName: boolean;
}

interface Row {
  readonly d: DomainSummary;
  readonly s: DomainStats;
  readonly cpuPct: number;
}

const crashed = (d: DomainSummary): boolean => d.shutdown && d.shutdownReason === SHUTDOWN_crash;

/** xentop's state letters, in its order: dying, shutdown, blocked, crashed, paused, running. */
export function topStateString(d: DomainSummary): string {
  return (d.dying ? 'd' : '-') + (d.shutdown ? 's' : '-') + (d.blocked ? 'b' : '-') + (crashed(d) ? 'c' : '-') + (d.paused ? 'p' : '-') + (d.running ? 'r' : '-');
}

const sum = <T>(xs: readonly T[], f: (x: T) => number): number => xs.reduce((a, x) => a + f(x), 0);
/** INT_FIELD_WIDTH(n) = log10(n) + 1. */
const intWidth = (n: number): number => Math.floor(Math.log10(n) + 1);

/** One frame of `xl top`. `prev` is the sample before (none: CPU % is 0, as in xentop's first frame). */
export function formatTop(cur: TopSample, prev: TopSample | null, o: TopOptions, now: Date = new Date()): string {
  const statsOf = (id: number): DomainStats => cur.stats.find((s) => s.domid === id) ?? { domid: id, nets: [], vbds: [] };
  const elapsedUs = prev ? (cur.timeNs - prev.timeNs) / 1000 : 0;
  const rows: Row[] = cur.domains.map((d) => {
    const old = prev?.domains.find((p) => p.domid === d.domid);
    // get_cpu_pct: ((cpu_ns - old_cpu_ns) / 10.0) / us_elapsed
    const cpuPct = old && elapsedUs > 0 ? (d.cpuTimeNs - old.cpuTimeNs) / 10 / elapsedUs : 0;
    return { d, s: statsOf(d.domid), cpuPct };
  });
  // The default sort field is the first column, the name (strcasecmp).
  rows.sort((a, b) => {
    const x = a.d.name.toLowerCase();
    const y = b.d.name.toLowerCase();
    return x < y ? -1 : x > y ? 1 : 0;
  });

  const totMemBytes = cur.host.totalPages * cur.host.pageSize;
  const w = {
    name: 10, netTx: 8, netRx: 8, vbdRd: 8, vbdWr: 8, vbdRsect: 10, vbdWsect: 10,
  };
  for (const r of rows) {
    if (o.fullName) w.name = Math.max(w.name, r.d.name.length);
    w.netTx = Math.max(w.netTx, intWidth(Math.floor(sum(r.s.nets, (n) => n.txBytes) / 1024) + 1));
    w.netRx = Math.max(w.netRx, intWidth(Math.floor(sum(r.s.nets, (n) => n.rxBytes) / 1024) + 1));
    w.vbdRd = Math.max(w.vbdRd, intWidth(vbdTotal(r.s, 'rdReqs') + 1));
    w.vbdWr = Math.max(w.vbdWr, intWidth(vbdTotal(r.s, 'wrReqs') + 1));
    w.vbdRsect = Math.max(w.vbdRsect, intWidth(vbdTotal(r.s, 'rdSects') + 1));
    w.vbdWsect = Math.max(w.vbdWsect, intWidth(vbdTotal(r.s, 'wrSects') + 1));
  }
  const header = [
    rj('NAME', w.name), rj('STATE', 6), rj('CPU(sec)', 10), rj('CPU(%)', 6), rj('MEM(k)', 10), rj('MEM(%)', 6),
    rj('MAXMEM(k)', 10), rj('MAXMEM(%)', 9), rj('VCPUS', 5), rj('NETS', 4), rj('NETTX(k)', w.netTx), rj('NETRX(k)', w.netRx),
    rj('VBDS', 4), rj('VBD_OO', 8), rj('VBD_RD', w.vbdRd), rj('VBD_WR', w.vbdWr), rj('VBD_RSECT', w.vbdRsect),
    rj('VBD_WSECT', w.vbdWsect), rj('SSID', 4),
  ].join(' ') + '\n';

  let out = '';
  if (!o.batch) out += summary(cur, now);
  rows.forEach((r, i) => {
    if (i === 0 || o.repeatHeader) out += header;
    const d = r.d;
    const vbdOk = vbdsReadable(r.s);
    const vbd = (k: VbdKey, width: number): string => (vbdOk ? rj(vbdTotal(r.s, k), width) : rj('-', width));
    out += [
      o.fullName ? rj(d.name, w.name) : rj(d.name.slice(0, 10), 10),
      topStateString(d),
      rj(Math.floor(d.cpuTimeNs / 1e9), 10),
      fixed(r.cpuPct, 6, 1),
      rj(d.memKiB, 10),
      fixed(((d.memKiB * 1024) / totMemBytes) * 100, 6, 1),
      rj(d.maxMemKiB, 10),
      fixed(((d.maxMemKiB * 1024) / totMemBytes) * 100, 9, 1),
      rj(d.maxVcpus, 5),
      rj(r.s.nets.length, 4),
      rj(Math.floor(sum(r.s.nets, (n) => n.txBytes) / 1024), w.netTx),
      rj(Math.floor(sum(r.s.nets, (n) => n.rxBytes) / 1024), w.netRx),
      rj(r.s.vbds.length, 4),
      vbd('ooReqs', 8), vbd('rdReqs', w.vbdRd), vbd('wrReqs', w.vbdWr), vbd('rdSects', w.vbdRsect), vbd('wrSects', w.vbdWsect),
      rj(0, 4),
    ].join(' ') + '\n';
    if (o.vcpus) out += vcpuLine(cur, d);
    if (o.networks) out += networkLines(r.s);
    if (o.vbds) out += vbdLines(r.s);
  });
  if (!o.batch) out += '  Delay  Networks  vBds  VCPUs  Repeat header  Sort order  Quit\n';
  return out;
}

type VbdKey = 'ooReqs' | 'rdReqs' | 'wrReqs' | 'rdSects' | 'wrSects';

/** tot_vbd_reqs: the sum over readable devices. */
function vbdTotal(s: DomainStats, k: VbdKey): number {
  return sum(s.vbds.filter((v) => !v.error), (v) => v[k]);
}

/** tot_vbd_reqs's return: no devices, or at least one readable. */
function vbdsReadable(s: DomainStats): boolean {
  return s.vbds.length === 0 || s.vbds.some((v) => !v.error);
}

/** do_summary. */
function summary(cur: TopSample, now: Date): string {
  const ds = cur.domains;
  let run = 0, block = 0, pause = 0, crash = 0, dying = 0, shutdown = 0;
  for (const d of ds) {
    if (d.running) run++;
    else if (d.blocked) block++;
    else if (d.paused) pause++;
    else if (d.shutdown) shutdown++;
    else if (crashed(d)) crash++;
    else if (d.dying) dying++;
  }
  const h = cur.host;
  const totK = Math.floor((h.totalPages * h.pageSize) / 1024);
  const freeK = Math.floor((h.freePages * h.pageSize) / 1024);
  return `xentop - ${localHms(now)}   Xen ${h.xenMajor}.${h.xenMinor}${h.xenExtra}\n`
    + `${ds.length} domains: ${run} running, ${block} blocked, ${pause} paused, ${crash} crashed, ${dying} dying, ${shutdown} shutdown \n`
    + `Mem: ${totK}k total, ${totK - freeK}k used, ${freeK}k free    CPUs: ${h.nrCpus} @ ${Math.floor(h.cpuKhz / 1000)}MHz\n`;
}

/** do_vcpu: "VCPUs(sec): " then " %2u: %10llus" per online vCPU, five to a line. */
function vcpuLine(cur: TopSample, d: DomainSummary): string {
  let out = 'VCPUs(sec): ';
  (cur.vcpus?.[d.domid] ?? []).forEach((v, i) => {
    if (!v.online) return;
    if (i !== 0 && i % 5 === 0) out += '\n        ';
    out += ` ${rj(v.vcpuid, 2)}: ${rj(Math.floor(v.cpuTimeNs / 1e9), 10)}s`;
  });
  return out + '\n';
}

/** do_network. */
function networkLines(s: DomainStats): string {
  return s.nets.map((n, i) => `Net${i} RX: ${rj(n.rxBytes, 8)}bytes ${rj(n.rxPackets, 8)}pkts ${rj(n.rxErrs, 8)}err ${rj(n.rxDrop, 8)}drop  `
    + `TX: ${rj(n.txBytes, 8)}bytes ${rj(n.txPackets, 8)}pkts ${rj(n.txErrs, 8)}err ${rj(n.txDrop, 8)}drop\n`).join('');
}

/** do_vbd (Linux build: "[%2x:%2x] " major:minor details). */
function vbdLines(s: DomainStats): string {
  return s.vbds.map((v) => {
    const details = `[${rj((v.dev >>> 8).toString(16), 2)}:${rj((v.dev & 0xff).toString(16), 2)}] `;
    const f = (n: number, w: number): string => (v.error ? rj('-', w) : rj(n, w));
    return `VBD BlkBack ${rj(v.dev, 4)} ${details} OO: ${f(v.ooReqs, 8)}   RD: ${f(v.rdReqs, 8)}   WR: ${f(v.wrReqs, 8)}   RSECT: ${f(v.rdSects, 10)}   WSECT: ${f(v.wrSects, 10)}\n`;
  }).join('');
}
