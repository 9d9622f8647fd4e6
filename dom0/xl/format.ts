/**
 * xl's output formats, character for character: each function quotes the
 * printf format of the Xen source it follows (tools/xl/xl_info.c, xl_vcpu.c,
 * xl_sched.c, xl_utils.c). Pure: data in, text out, every line ending in \n.
 */
import type { DomainConfig, ShutdownAction } from '../toolstack/xlcfg.ts';
import { cpuSetMembers } from '../toolstack/cpulist.ts';
import { isCpuSetList, kernelCmdline } from '../toolstack/xlcfg.ts';
import type { DomainSummary, DomainVcpus, HostInfo, SchedParams, SchedPoolParams, VbdInfo, VcpuInfo } from './types.ts';

// ---------------------------------------------------------------- printf pieces

/** `%Nd`, `%Nu`, `%Ns`: right-aligned in N columns (never truncated). */
export const rj = (v: string | number, n: number): string => String(v).padStart(n);
/** `%-Ns`: left-aligned in N columns (never truncated). */
export const lj = (v: string | number, n: number): string => String(v).padEnd(n);
/**
 * printf's `%.Pf`: the nearest decimal, and on an exact tie the even one
 * (glibc rounds the exact binary value, ties to even; toFixed rounds ties up).
 */
export function cFixed(v: number, p: number): string {
  if (!Number.isFinite(v)) return String(v);
  const wide = Math.abs(v).toFixed(Math.min(100, p + 60));
  const dot = wide.indexOf('.');
  const cut = dot + 1 + p;
  const tail = wide.slice(cut);
  if (!/^50*$/.test(tail)) return v.toFixed(p);
  // An exact tie: keep the truncated digits if the last is even, else round up.
  const digits = wide.slice(0, cut).replace('.', '');
  let n = BigInt(digits);
  if (n % 2n === 1n) n += 1n;
  const s = n.toString().padStart(p + 1, '0');
  const out = p > 0 ? `${s.slice(0, s.length - p)}.${s.slice(s.length - p)}` : s;
  return v < 0 && n !== 0n ? `-${out}` : out;
}

/** `%N.Pf`. */
export const fixed = (v: number, n: number, p: number): string => cFixed(v, p).padStart(n);
/** C's `(float)x / 1e9`: xl casts nanoseconds to float before dividing. */
export const nsToSecondsAsFloat = (ns: number): number => Math.fround(ns) / 1e9;

// ---------------------------------------------------------------- xl list

/** xl_info.c list_domains: `static const char shutdown_reason_letters[]= "-rscwS";` */
const SHUTDOWN_REASON_LETTERS = '-rscwS';

/**
 * The State column of `xl list`: `%c%c%c%c%c%c` of running r, blocked b,
 * paused p, shutdown s, the shutdown reason's letter (- poweroff, r reboot,
 * s suspend, c crash, w watchdog, S soft reset; ? unknown), dying d.
 */
export function listStateString(d: DomainSummary): string {
  const reason = d.shutdown ? d.shutdownReason : 0;
  const letter = reason >= 0 && reason < SHUTDOWN_REASON_LETTERS.length ? SHUTDOWN_REASON_LETTERS[reason] : '?';
  return (d.running ? 'r' : '-') + (d.blocked ? 'b' : '-') + (d.paused ? 'p' : '-') + (d.shutdown ? 's' : '-') + letter + (d.dying ? 'd' : '-');
}

export interface ListOptions {
  /** -v: UUID, reason code and security label columns. */
  readonly verbose?: boolean;
  /** -Z: security label column. */
  readonly context?: boolean;
}

/**
 * `xl list`:
 *   printf("Name                                        ID   Mem VCPUs\tState\tTime(s)");
 *   printf("%-40s %5d %5lu %5d     %c%c%c%c%c%c  %8.1f", name, domid,
 *          (current_memkb + outstanding_memkb) / 1024, vcpu_online, ..., (float)cpu_time / 1e9);
 */
export function formatList(domains: readonly DomainSummary[], o: ListOptions = {}): string {
  let out = 'Name                                        ID   Mem VCPUs\tState\tTime(s)';
  if (o.verbose) out += '   UUID                            Reason-Code\tSecurity Label';
  if (o.context && !o.verbose) out += '   Security Label';
  out += '\n';
  for (const d of domains) {
    out += `${lj(d.name, 40)} ${rj(d.domid, 5)} ${rj(Math.floor((d.memKiB + d.outstandingKiB) / 1024), 5)} ${rj(d.vcpus, 5)}     ${listStateString(d)}  ${fixed(nsToSecondsAsFloat(d.cpuTimeNs), 8, 1)}`;
    if (o.verbose) {
      out += ` ${d.uuid}`;
      out += d.shutdown ? ` ${rj(d.shutdownReason.toString(16), 8)}` : ` ${rj('-', 8)}`;
    }
    if (o.verbose || o.context) out += ` ${rj(d.ssidLabel ?? '-', 16)}`;
    out += '\n';
  }
  return out;
}

/** libxl's enum names for on_* actions (libxl_action_on_shutdown_to_string). */
const LIBXL_ACTION: Readonly<Record<ShutdownAction, string>> = {
  destroy: 'destroy', restart: 'restart', 'rename-restart': 'restart_rename', preserve: 'preserve',
  'coredump-destroy': 'coredump_destroy', 'coredump-restart': 'coredump_restart', 'soft-reset': 'soft_reset',
};

export interface ListLongEntry {
  readonly summary: DomainSummary;
  /** The configuration it was created with; null for Dom0 and domains built another way. */
  readonly config: DomainConfig | null;
}

/**
 * `xl list -l`: a JSON array of `{ "domid": N, "config": libxl_domain_config }`,
 * pretty-printed with four-space indents as libxl's yajl generator does. The
 * config object has libxl's shape (c_info, b_info, disks, nics, on_*), limited
 * to the fields we have.
 */
export function formatListLong(entries: readonly ListLongEntry[], nrCpus: number): string {
  const arr = entries.map(({ summary: s, config: c }) => {
    const b_info: Record<string, unknown> = {
      max_vcpus: c?.maxvcpus ?? s.maxVcpus,
      avail_vcpus: Array.from({ length: c?.vcpus ?? s.vcpus }, (_, i) => i),
      max_memkb: c ? c.maxmem * 1024 : s.maxMemKiB,
      target_memkb: c ? c.memory * 1024 : s.memKiB,
    };
    if (c?.cpus !== undefined) {
      const sets = isCpuSetList(c.cpus) ? c.cpus : Array.from({ length: c.maxvcpus }, () => c.cpus as never);
      b_info.vcpu_hard_affinity = sets.map((set) => cpuSetMembers(set, nrCpus));
    }
    if (c && (c.cpuWeight !== undefined || c.cap !== undefined)) {
      b_info.sched_params = { ...(c.cpuWeight !== undefined ? { weight: c.cpuWeight } : {}), ...(c.cap !== undefined ? { cap: c.cap } : {}) };
    }
    if (c) b_info[`type.${c.type}`] = { kernel: c.kernel, cmdline: kernelCmdline(c) };
    const config: Record<string, unknown> = {
      c_info: { type: c?.type ?? 'pv', name: s.name, uuid: s.uuid },
      b_info,
    };
    if (c) {
      if (c.disks.length > 0) {
        config.disks = c.disks.map((d) => ({
          pdev_path: d.target, vdev: d.vdev, ...(d.backend ? { backend_domname: d.backend } : {}),
          ...(d.backendtype ? { backend: d.backendtype } : {}),
          format: d.format, readwrite: d.access === 'rw' ? 1 : 0, is_cdrom: d.devtype === 'cdrom' ? 1 : 0,
        }));
      }
      if (c.vifs.length > 0) {
        config.nics = c.vifs.map((v, i) => ({
          devid: v.devid ?? i, ...(v.mac ? { mac: v.mac } : {}), ...(v.ip ? { ip: v.ip } : {}),
          ...(v.bridge ? { bridge: v.bridge } : {}), ...(v.vifname ? { ifname: v.vifname } : {}),
          ...(v.backend ? { backend_domname: v.backend } : {}), ...(v.mtu ? { mtu: v.mtu } : {}),
          nictype: v.type === 'ioemu' ? 'vif_ioemu' : 'vif',
        }));
      }
      config.on_poweroff = LIBXL_ACTION[c.onPoweroff];
      config.on_reboot = LIBXL_ACTION[c.onReboot];
      config.on_watchdog = LIBXL_ACTION[c.onWatchdog];
      config.on_crash = LIBXL_ACTION[c.onCrash];
      config.on_soft_reset = LIBXL_ACTION[c.onSoftReset];
    }
    return { domid: s.domid, config };
  });
  return JSON.stringify(arr, null, 4) + '\n';
}

// ---------------------------------------------------------------- xl info

/** `key                    : value` as xl_info.c's maybe_printf lines ("%-23s" then ": "). */
const infoLine = (key: string, value: string | number): string => `${lj(key, 23)}: ${value}\n`;

export interface InfoOptions {
  /** `xl info NAME`: print only the values of the lines whose key starts with NAME. */
  readonly filter?: string;
  /** `xl info -n`: CPU topology and NUMA information too. */
  readonly numa?: boolean;
}

/** `xl info` (xl_info.c print_info: output_nodeinfo, output_physinfo, [topology, numainfo], output_xeninfo). */
export function formatInfo(h: HostInfo, o: InfoOptions = {}): string {
  const perMiB = (1 << 20) / h.pageSize;
  const lines: string[] = [
    infoLine('host', h.host), infoLine('release', h.release), infoLine('version', h.version), infoLine('machine', h.machine),
    infoLine('nr_cpus', h.nrCpus), infoLine('max_cpu_id', h.maxCpuId), infoLine('nr_nodes', h.nrNodes),
    infoLine('cores_per_socket', h.coresPerSocket), infoLine('threads_per_core', h.threadsPerCore),
    infoLine('cpu_mhz', `${Math.floor(h.cpuKhz / 1000)}.${String(h.cpuKhz % 1000).padStart(3, '0')}`),
    infoLine('hw_caps', Array.from({ length: 8 }, (_, i) => ((h.hwCaps[i] ?? 0) >>> 0).toString(16).padStart(8, '0')).join(':')),
    // printf("virt_caps              :%s%s...", " hvm", ...): no space unless a cap follows.
    `${lj('virt_caps', 23)}:${h.virtCaps.map((c) => ` ${c}`).join('')}\n`,
    infoLine('total_memory', Math.floor(h.totalPages / perMiB)),
    infoLine('free_memory', Math.floor((h.freePages - h.outstandingPages) / perMiB)),
    infoLine('sharing_freed_memory', Math.floor(h.sharingFreedPages / perMiB)),
    infoLine('sharing_used_memory', Math.floor(h.sharingUsedFrames / perMiB)),
    infoLine('outstanding_claims', Math.floor(h.outstandingPages / perMiB)),
    infoLine('free_cpus', h.freeCpus),
  ];
  const numa: string[] = [];
  if (o.numa) {
    numa.push('cpu_topology           :\n', 'cpu:    core    socket     node\n');
    for (let c = 0; c < h.nrCpus; c++) numa.push(`${rj(c, 3)}:    ${rj(c, 4)}     ${rj(0, 4)}     ${rj(0, 4)}\n`);
    numa.push('device topology        :\n', 'device           node\n', 'No device topology data available\n');
    numa.push('numa_info              :\n', 'node:    memsize    memfree    distances\n');
    numa.push(`${rj(0, 4)}:    ${rj(Math.floor((h.totalPages * h.pageSize) / 2 ** 20), 6)}     ${rj(Math.floor((h.freePages * h.pageSize) / 2 ** 20), 6)}      10\n`);
  }
  const xen = [
    infoLine('xen_major', h.xenMajor), infoLine('xen_minor', h.xenMinor), infoLine('xen_extra', h.xenExtra),
    infoLine('xen_version', `${h.xenMajor}.${h.xenMinor}${h.xenExtra}`), infoLine('xen_caps', h.xenCaps),
    infoLine('xen_scheduler', h.xenScheduler), infoLine('xen_pagesize', h.pageSize),
    infoLine('platform_params', `virt_start=0x${h.virtStart.toString(16)}`), infoLine('xen_changeset', h.xenChangeset),
    infoLine('xen_commandline', h.xenCommandline), infoLine('cc_compiler', h.ccCompiler), infoLine('cc_compile_by', h.ccCompileBy),
    infoLine('cc_compile_domain', h.ccCompileDomain), infoLine('cc_compile_date', h.ccCompileDate), infoLine('build_id', h.buildId),
    infoLine('xend_config_format', 4),
  ];
  const all = [...lines, ...numa, ...xen];
  if (o.filter === undefined || o.numa) return all.join('');
  // maybe_printf: if (!strncmp(str, info_name, strlen(info_name)) && (s = strchr(str, ':')) && s[1] == ' ') fputs(&s[2]).
  const f = o.filter;
  return all.filter((l) => {
    const s = l.indexOf(':');
    return l.startsWith(f) && s >= 0 && l[s + 1] === ' ';
  }).map((l) => l.slice(l.indexOf(':') + 2)).join('');
}

// ---------------------------------------------------------------- vcpu-list

/**
 * xl_utils.c print_bitmap: the set CPUs below `nrCpus` as ranges `0-2,5`,
 * `all` when every one is set, `none` when none is.
 */
export function formatCpuBitmap(cpus: readonly number[], nrCpus: number): string {
  const set = new Set(cpus);
  const runs: Array<[number, number]> = [];
  for (let i = 0; i < nrCpus; i++) {
    if (!set.has(i)) continue;
    let j = i;
    while (j + 1 < nrCpus && set.has(j + 1)) j++;
    runs.push([i, j]);
    i = j;
  }
  if (runs.length === 0) return 'none';
  if (runs.length === 1 && runs[0][0] === 0 && runs[0][1] === nrCpus - 1) return 'all';
  return runs.map(([a, b]) => (b > a ? `${a}-${b}` : `${a}`)).join(',');
}

/**
 * `xl vcpu-list` (xl_vcpu.c):
 *   printf("%-32s %5s %5s %5s %5s %9s %s\n", "Name", "ID", "VCPU", "CPU", "State", "Time(s)", "Affinity (Hard / Soft)");
 *   printf("%-32s %5u %5u", domname, domid, vcpuid);
 *   offline: printf("%5c %3c%cp ", '-', '-', '-');  online: printf("%5u %3c%c- ", cpu, r, b);
 *   printf("%9.1f  ", (float)vcpu_time / 1e9); hard bitmap " / " soft bitmap
 */
export function formatVcpuList(doms: readonly DomainVcpus[], nrCpus: number): string {
  let out = `${lj('Name', 32)} ${rj('ID', 5)} ${rj('VCPU', 5)} ${rj('CPU', 5)} ${rj('State', 5)} ${rj('Time(s)', 9)} Affinity (Hard / Soft)\n`;
  for (const d of doms) for (const v of d.vcpus) out += vcpuLine(d, v, nrCpus);
  return out;
}

function vcpuLine(d: DomainVcpus, v: VcpuInfo, nrCpus: number): string {
  let s = `${lj(d.name, 32)} ${rj(d.domid, 5)} ${rj(v.vcpuid, 5)}`;
  s += v.online ? `${rj(v.cpu, 5)} ${rj(v.running ? 'r' : '-', 3)}${v.blocked ? 'b' : '-'}- ` : `${rj('-', 5)} ${rj('-', 3)}-p `;
  s += `${fixed(nsToSecondsAsFloat(v.cpuTimeNs), 9, 1)}  `;
  return `${s}${formatCpuBitmap(v.hard, nrCpus)} / ${formatCpuBitmap(v.soft, nrCpus)}\n`;
}

// ---------------------------------------------------------------- sched-credit

/** xl_sched.c sched_credit_pool_output: "Cpupool %s: tslice=%dms ratelimit=%dus migration-delay=%dus". */
export function formatSchedCreditPool(p: SchedPoolParams): string {
  return `Cpupool ${p.poolName}: tslice=${p.tsliceMs}ms ratelimit=${p.ratelimitUs}us migration-delay=${p.migrationDelayUs}us\n`;
}

/** xl_sched.c sched_credit2_pool_output: "Cpupool %s: ratelimit=%dus". */
export function formatSchedCredit2Pool(p: SchedPoolParams): string {
  return `Cpupool ${p.poolName}: ratelimit=${p.ratelimitUs}us\n`;
}

/** printf("%-33s %4s %6s %4s\n", "Name", "ID", "Weight", "Cap"). */
export function formatSchedHeader(): string {
  return `${lj('Name', 33)} ${rj('ID', 4)} ${rj('Weight', 6)} ${rj('Cap', 4)}\n`;
}

/** printf("%-33s %4d %6d %4d\n", domname, domid, weight, cap). */
export function formatSchedRow(name: string, domid: number, p: SchedParams): string {
  return `${lj(name, 33)} ${rj(domid, 4)} ${rj(p.weight, 6)} ${rj(p.cap, 4)}\n`;
}

// ---------------------------------------------------------------- uptime

/** xl_info.c uptime_to_string. */
export function uptimeToString(uptime: number, short: boolean): string {
  let u = Math.max(0, Math.floor(uptime));
  const day = Math.floor(u / 86400); u -= day * 86400;
  const hour = Math.floor(u / 3600); u -= hour * 3600;
  const min = Math.floor(u / 60); u -= min * 60;
  const sec = u;
  const hm = `${rj(hour, 2)}:${String(min).padStart(2, '0')}`;
  const dayStr = day > 1 ? `${day} days, ` : day === 1 ? `${day} day, ` : '';
  return short ? `${dayStr}${hm}` : `${dayStr}${hm}:${String(sec).padStart(2, '0')}`;
}

/**
 * `xl uptime [-s]` (xl_info.c print_uptime): Dom0 first, then the others.
 *   long:  printf("%-33s %4s %s\n", "Name", "ID", "Uptime"); printf("%-33s %4d %s\n", name, domid, uptime)
 *   short: printf(" %s up %s, %s (%d)\n", now "%H:%M:%S", uptime, name, domid)
 * `nowSec` is seconds since the epoch; `localTime` the HH:MM:SS of now.
 */
export function formatUptime(doms: readonly Pick<DomainSummary, 'domid' | 'name' | 'startTime'>[], nowSec: number, short: boolean, localTime: string): string {
  let out = short ? '' : `${lj('Name', 33)} ${rj('ID', 4)} Uptime\n`;
  for (const d of doms) {
    const up = uptimeToString(nowSec - d.startTime, short);
    out += short ? ` ${localTime} up ${up}, ${d.name} (${d.domid})\n` : `${lj(d.name, 33)} ${rj(d.domid, 4)} ${up}\n`;
  }
  return out;
}

/** HH:MM:SS in local time (strftime "%H:%M:%S"). */
export function localHms(d: Date): string {
  const p = (n: number): string => String(n).padStart(2, '0');
  return `${p(d.getHours())}:${p(d.getMinutes())}:${p(d.getSeconds())}`;
}

// ---------------------------------------------------------------- block-list

/** xl_block.c main_blocklist: printf("%-5s %-3s %-6s %-5s %-6s %-8s %-30s\n", "Vdev", "BE", "handle", "state", "evt-ch", "ring-ref", "BE-path"). */
export function formatBlockListHeader(): string {
  return `${lj('Vdev', 5)} ${lj('BE', 3)} ${lj('handle', 6)} ${lj('state', 5)} ${lj('evt-ch', 6)} ${lj('ring-ref', 8)} ${lj('BE-path', 30)}\n`;
}

/** main_blocklist: printf("%-5d %-3d %-6d %-5d %-6d %-8d %-30s\n", devid, backend_id, frontend_id, state, evtchn, rref, backend). */
export function formatBlockListRow(d: VbdInfo): string {
  return `${lj(d.devid, 5)} ${lj(d.backendId, 3)} ${lj(d.frontendId, 6)} ${lj(d.state, 5)} ${lj(d.evtchn, 6)} ${lj(d.ringRef, 8)} ${lj(d.backendPath, 30)}\n`;
}
