/**
 * xl.cfg domain configuration files (xl.cfg(5)), parsed into a typed
 * DomainConfig and printed back.
 *
 * The syntax is Xen's (cfgsyntax.ts). The keys are a subset of Xen's, with
 * Xen's names, meanings, defaults and value forms:
 *
 *   name, type (pv|hvm), builder (deprecated), kernel, memory, maxmem, vcpus,
 *   maxvcpus, cpus, cpu_weight, cap, on_poweroff, on_reboot, on_watchdog,
 *   on_crash, on_soft_reset, disk, vif, cmdline, root, extra, uuid.
 *
 * Unlike xl, which ignores keys it does not know, every unknown key is an
 * error, and so is a Xen key this host does not implement: a domain is
 * created exactly as written or not at all. Every problem is reported with
 * the file, line and column of the setting at fault (XlCfgError).
 */
import type { PvBuildConfig } from '../builder.ts';
import {
  type CfgIssue, type CfgPos, type CfgSetting, type CfgValue, parseCfgNumber, parseCfgSyntax, quoteCfgString,
  quoteForMessage, XlCfgError,
} from './cfgsyntax.ts';
import { type CpuSet, parseCpuList, printCpuList } from './cpulist.ts';
import { type DiskSpec, parseDiskSpec, printDiskSpec, vdevNumber } from './disk.ts';
import { parseVifSpec, printVifSpec, type VifSpec } from './vif.ts';

export { XlCfgError, type CfgIssue } from './cfgsyntax.ts';
export type { CpuSet } from './cpulist.ts';
export type { DiskSpec } from './disk.ts';
export type { VifSpec, VifRate } from './vif.ts';

export type GuestType = 'pv' | 'hvm';

/** Xen's actions on shutdown (xl.cfg(5), "Event Actions"). */
export const SHUTDOWN_ACTIONS = ['destroy', 'restart', 'rename-restart', 'preserve', 'coredump-destroy', 'coredump-restart', 'soft-reset'] as const;
export type ShutdownAction = (typeof SHUTDOWN_ACTIONS)[number];

/** A parsed domain configuration, every default filled in. */
export interface DomainConfig {
  readonly name: string;
  readonly type: GuestType;
  /** The kernel (PV: a TypeScript module; HVM: a RISC-V image), as written. */
  readonly kernel: string;
  /** Initial memory, MiB. Default 32 (libxl's). */
  readonly memory: number;
  /** Ceiling for ballooning, MiB, >= memory. Default: memory. */
  readonly maxmem: number;
  /** vCPUs online at start. Default 1. */
  readonly vcpus: number;
  /** vCPUs the domain may bring up, >= vcpus. Default: vcpus. */
  readonly maxvcpus: number;
  /** Hard affinity: one set for every vCPU, or one per vCPU (`cpus = [ "2", "3-5" ]`). */
  readonly cpus?: CpuSet | readonly CpuSet[];
  /** cpu_weight, 1..65535; the scheduler's default (256) when absent. */
  readonly cpuWeight?: number;
  /** cap, % of one pCPU, 0 = none. */
  readonly cap?: number;
  readonly onPoweroff: ShutdownAction;
  readonly onReboot: ShutdownAction;
  readonly onWatchdog: ShutdownAction;
  readonly onCrash: ShutdownAction;
  readonly onSoftReset: ShutdownAction;
  readonly disks: readonly DiskSpec[];
  readonly vifs: readonly VifSpec[];
  readonly cmdline?: string;
  readonly root?: string;
  readonly extra?: string;
  /** Lower-case 8-4-4-4-12 hex; the host makes one up when absent. */
  readonly uuid?: string;
}

export const DEFAULT_MEMORY_MIB = 32;
/** The parser's sanity bound on vCPUs (Xen's HVM_MAX_VCPUS); the host has its own, lower, limit. */
export const MAX_VCPUS = 128;

/**
 * Keys of xl.cfg(5) that this host does not implement. Naming them is an
 * error with a message that says so, rather than "unknown key".
 */
const XEN_KEYS_UNSUPPORTED = new Set([
  'pool', 'cpus_soft', 'vnuma', 'ramdisk', 'bootloader', 'bootloader_args', 'firmware', 'pvshim', 'pvshim_path',
  'pvshim_cmdline', 'pvshim_extra', 'seclabel', 'init_seclabel', 'stubdomain_seclabel', 'device_model_stubdomain_seclabel',
  'max_grant_frames', 'max_maptrack_frames', 'max_grant_version', 'nomigrate', 'driver_domain', 'device_tree', 'dtdev', 'pci',
  'pci_permissive', 'pci_msitranslate', 'pci_seize', 'pci_power_mgmt', 'rdm', 'rdm_mem_boundary', 'usb', 'usbctrl', 'usbdev',
  'usbdevice', 'vfb', 'vkb', 'channel', 'vtpm', 'p9', 'pvcalls', 'vdispl', 'vsnd', 'connectors', 'tsc_mode', 'localtime',
  'rtc_timeoffset', 'boot', 'device_model_version', 'device_model_override', 'device_model_args', 'device_model_args_pv',
  'device_model_args_hvm', 'device_model_user', 'device_model_stubdomain_override', 'serial', 'vnc', 'vnclisten',
  'vncdisplay', 'vncunused', 'vncpasswd', 'sdl', 'opengl', 'keymap', 'spice', 'acpi', 'acpi_s3', 'acpi_s4', 'acpi_laptop_slate',
  'apic', 'pae', 'hap', 'oos', 'nestedhvm', 'viridian', 'shadow_memory', 'vga', 'videoram', 'stdvga', 'soundhw', 'irqs',
  'iomem', 'ioports', 'e820_host', 'gic_version', 'altp2m', 'vpmu', 'vuart', 'cpuid', 'hpet', 'vpt_align', 'timer_mode',
  'mmio_hole', 'smbios_firmware', 'acpi_firmware', 'ms_vm_genid', 'claim_mode', 'max_event_channels', 'xen_platform_pci',
  'nx', 'mca_caps', 'msr_relaxed', 'gfx_passthru', 'dm_restrict', 'passthrough', 'vcpu_hard_affinity', 'vcpu_soft_affinity',
  'cpupool', 'trap_unmapped_accesses', 'llc_colors', 'feature', 'event_channels', 'suppress_vmdesc', 'bios', 'bios_path_override',
  'on_xend_start', 'on_xend_stop', 'maxmem_kb', 'xsm', 'vif2', 'vscsi', 'nic', 'uuid_prefix', 'blkdev_start',
]);

const KNOWN_KEYS = [
  'name', 'type', 'builder', 'kernel', 'memory', 'maxmem', 'vcpus', 'maxvcpus', 'cpus', 'cpu_weight', 'cap',
  'on_poweroff', 'on_reboot', 'on_watchdog', 'on_crash', 'on_soft_reset', 'disk', 'vif', 'cmdline', 'root', 'extra', 'uuid',
] as const;
type Key = (typeof KNOWN_KEYS)[number];
const KNOWN = new Set<string>(KNOWN_KEYS);

const DEFAULT_ACTIONS = {
  on_poweroff: 'destroy', on_reboot: 'restart', on_watchdog: 'destroy', on_crash: 'destroy', on_soft_reset: 'soft-reset',
} as const satisfies Record<string, ShutdownAction>;

/** Where extra `KEY=VALUE` lines (xl create's trailing arguments) are reported. */
export const COMMAND_LINE = '<command line>';

export interface ParseXlCfgOptions {
  /** The name issues are reported under; default "<config>". */
  readonly file?: string;
  /** Extra lines applied after the file, as `xl create cfg KEY=VALUE...` does. */
  readonly extra?: readonly string[];
}

/**
 * Parse an xl.cfg source into a DomainConfig. Throws XlCfgError (and nothing
 * else) listing every problem: syntax errors, then unknown or unsupported
 * keys, then bad values.
 */
export function parseXlCfg(text: string, opts: ParseXlCfgOptions = {}): DomainConfig {
  const file = opts.file ?? '<config>';
  const base = text.length === 0 || text.endsWith('\n') ? text : text + '\n';
  const baseLines = countNewlines(base);
  const extra = opts.extra ?? [];
  const src = extra.length > 0 ? base + extra.join('\n') + '\n' : base;
  // Line 0 is the builder's "the file as a whole" (a missing key): reported at line 1.
  const relocate = (i: CfgIssue): CfgIssue => {
    if (i.line === 0) return { ...i, line: 1 };
    return extra.length > 0 && i.line > baseLines ? { ...i, file: COMMAND_LINE, line: i.line - baseLines } : i;
  };
  let settings: CfgSetting[];
  try {
    settings = parseCfgSyntax(src, file);
  } catch (e) {
    if (e instanceof XlCfgError) throw new XlCfgError(e.issues.map(relocate));
    throw e;
  }
  const b = new ConfigBuilder(file);
  const cfg = b.build(settings);
  if (b.issues.length > 0 || !cfg) {
    // In source order: the file's lines, then the command line's.
    throw new XlCfgError([...b.issues].sort((x, y) => x.line - y.line || x.column - y.column).map(relocate));
  }
  return cfg;
}

function countNewlines(s: string): number {
  let n = 0;
  for (let i = s.indexOf('\n'); i >= 0; i = s.indexOf('\n', i + 1)) n++;
  return n;
}

/** A domain name xl and our host accept, or a message saying why not. */
export function checkDomainName(name: string): string | null {
  if (name.length === 0) return 'the domain name is empty';
  if (name.length > 64) return `the domain name is longer than 64 characters`;
  if (/[\x00-\x20\x7f/]/.test(name)) return `the domain name ${JSON.stringify(name)} contains a space, a control character or /`;
  if (/^\d+$/.test(name)) return `the domain name ${JSON.stringify(name)} is a number, which xl would take for a domain id`;
  return null;
}

class ConfigBuilder {
  readonly issues: CfgIssue[] = [];
  constructor(private readonly file: string) {}

  private error(pos: CfgPos, message: string): void {
    this.issues.push({ file: this.file, line: pos.line, column: pos.column, message });
  }

  build(settings: readonly CfgSetting[]): DomainConfig | null {
    const byKey = new Map<Key, CfgSetting>();
    for (const s of settings) {
      if (KNOWN.has(s.key)) { byKey.set(s.key as Key, s); continue; }
      this.unknownKey(s);
    }
    const get = (k: Key): CfgSetting | undefined => byKey.get(k);
    const eof: CfgPos = { line: 0, column: 1 };

    const name = this.string(get('name'));
    if (name === undefined && !get('name')) this.error(eof, 'name is mandatory (name = "NAME")');
    if (name !== undefined) {
      const bad = checkDomainName(name);
      if (bad) this.error(get('name')!.value.pos, bad);
    }
    const type = this.guestType(get('type'), get('builder'));
    const kernel = this.string(get('kernel'));
    if (kernel === undefined && !get('kernel')) this.error(eof, 'kernel is mandatory: this host boots every guest from a kernel (kernel = "PATHNAME")');
    if (kernel === '') this.error(get('kernel')!.value.pos, 'kernel is empty');

    const memoryIn = this.integer(get('memory'), 1, 1 << 30);
    const memory = memoryIn ?? DEFAULT_MEMORY_MIB;
    const maxmemIn = this.integer(get('maxmem'), 1, 1 << 30);
    const maxmem = maxmemIn ?? memory;
    // Compare only values that were read (a bad memory= is reported once, not twice).
    if (maxmemIn !== undefined && (memoryIn !== undefined || !get('memory')) && maxmem < memory) {
      this.error(get('maxmem')!.value.pos, `maxmem (${maxmem}) must be equal to or greater than memory (${memory})`);
    }
    const vcpusIn = this.integer(get('vcpus'), 1, MAX_VCPUS);
    const vcpus = vcpusIn ?? 1;
    const maxvcpusIn = this.integer(get('maxvcpus'), 1, MAX_VCPUS);
    const maxvcpus = maxvcpusIn ?? vcpus;
    if (maxvcpusIn !== undefined && (vcpusIn !== undefined || !get('vcpus')) && maxvcpus < vcpus) {
      this.error(get('maxvcpus')!.value.pos, `maxvcpus (${maxvcpus}) must be equal to or greater than vcpus (${vcpus})`);
    }
    const cpus = this.cpus(get('cpus'), maxvcpus);
    const cpuWeight = this.integer(get('cpu_weight'), 1, 65535);
    const cap = this.integer(get('cap'), 0, 65535);

    const actions = {} as Record<keyof typeof DEFAULT_ACTIONS, ShutdownAction>;
    for (const k of Object.keys(DEFAULT_ACTIONS) as (keyof typeof DEFAULT_ACTIONS)[]) {
      actions[k] = this.action(get(k)) ?? DEFAULT_ACTIONS[k];
    }
    const disks = this.specList(get('disk'), 'disk', parseDiskSpec);
    const vifs = this.specList(get('vif'), 'vif', parseVifSpec);
    this.checkDisks(disks, get('disk'));
    this.checkVifs(vifs, get('vif'));
    const cmdline = this.string(get('cmdline'));
    const root = this.string(get('root'));
    const extra = this.string(get('extra'));
    const uuid = this.uuid(get('uuid'));

    if (this.issues.length > 0 || name === undefined || kernel === undefined) return null;
    return {
      name, type, kernel, memory, maxmem, vcpus, maxvcpus,
      ...(cpus !== undefined ? { cpus } : {}),
      ...(cpuWeight !== undefined ? { cpuWeight } : {}),
      ...(cap !== undefined ? { cap } : {}),
      onPoweroff: actions.on_poweroff, onReboot: actions.on_reboot, onWatchdog: actions.on_watchdog,
      onCrash: actions.on_crash, onSoftReset: actions.on_soft_reset,
      disks, vifs,
      ...(cmdline !== undefined ? { cmdline } : {}),
      ...(root !== undefined ? { root } : {}),
      ...(extra !== undefined ? { extra } : {}),
      ...(uuid !== undefined ? { uuid } : {}),
    };
  }

  private unknownKey(s: CfgSetting): void {
    const k = s.key;
    if (XEN_KEYS_UNSUPPORTED.has(k)) {
      this.error(s.pos, `${quoteForMessage(k)} is an xl.cfg key this host does not implement; remove it (accepted keys: ${KNOWN_KEYS.join(', ')})`);
      return;
    }
    const lower = k.toLowerCase();
    if (lower !== k && (KNOWN.has(lower) || XEN_KEYS_UNSUPPORTED.has(lower))) {
      this.error(s.pos, `unknown key ${quoteForMessage(k)}: keys are lower case (${lower})`);
      return;
    }
    const within = lower.length <= 4 ? 1 : 2;
    const near = KNOWN_KEYS.filter((c) => editDistance(c, lower) <= within).sort((a, b) => editDistance(a, lower) - editDistance(b, lower));
    this.error(s.pos, `unknown key ${quoteForMessage(k)}${near.length > 0 ? ` (did you mean ${near[0]}?)` : ''}`);
  }

  /** An atom as a string (numbers keep their text, as in libxlutil). */
  private string(s: CfgSetting | undefined): string | undefined {
    if (!s) return undefined;
    const v = s.value;
    if (v.kind === 'list') {
      this.error(v.pos, `${s.key} takes a single value, not a list`);
      return undefined;
    }
    return v.kind === 'string' ? v.value : v.text;
  }

  /** An integer in [min, max]; a quoted number is accepted, as libxlutil's xlu_cfg_get_long does. */
  private integer(s: CfgSetting | undefined, min: number, max: number): number | undefined {
    const text = this.string(s);
    if (text === undefined || !s) return undefined;
    const n = parseCfgNumber(text);
    if (n === null) {
      this.error(s.value.pos, `${s.key} must be a number, not ${quoteForMessage(text)}${/^\d+\s*[kKmMgG]/.test(text) ? ` (${s.key === 'memory' || s.key === 'maxmem' ? 'in MiB, ' : ''}without a unit)` : ''}`);
      return undefined;
    }
    if (n < min || n > max) {
      this.error(s.value.pos, `${s.key} = ${n} is out of range (${min} to ${max})`);
      return undefined;
    }
    return n;
  }

  private guestType(t: CfgSetting | undefined, builder: CfgSetting | undefined): GuestType {
    const v = this.string(t);
    if (t && v !== undefined) {
      if (v === 'pv' || v === 'hvm') return v;
      if (v === 'pvh') {
        this.error(t.value.pos, 'type "pvh" is not supported: this host runs PV guests (type = "pv") and HVM guests (type = "hvm")');
      } else {
        this.error(t.value.pos, `invalid type ${quoteForMessage(v)} (pv or hvm)`);
      }
      return 'pv';
    }
    const b = this.string(builder);
    if (builder && b !== undefined) {
      if (b === 'generic') return 'pv';
      if (b === 'hvm') return 'hvm';
      this.error(builder.value.pos, `invalid builder ${quoteForMessage(b)} (generic or hvm; builder is deprecated, use type)`);
    }
    return 'pv';
  }

  private action(s: CfgSetting | undefined): ShutdownAction | undefined {
    const v = this.string(s);
    if (v === undefined || !s) return undefined;
    if ((SHUTDOWN_ACTIONS as readonly string[]).includes(v)) return v as ShutdownAction;
    this.error(s.value.pos, `unknown ${s.key} action ${quoteForMessage(v)} (${SHUTDOWN_ACTIONS.join(', ')})`);
    return undefined;
  }

  private cpus(s: CfgSetting | undefined, maxvcpus: number): CpuSet | readonly CpuSet[] | undefined {
    if (!s) return undefined;
    const one = (v: CfgValue): CpuSet | undefined => {
      if (v.kind === 'list') {
        this.error(v.pos, 'cpus: a list item must be a CPULIST string, not a list');
        return undefined;
      }
      const r = parseCpuList(v.kind === 'string' ? v.value : v.text);
      if (typeof r === 'string') { this.error(v.pos, `cpus: ${r}`); return undefined; }
      return r;
    };
    const v = s.value;
    if (v.kind !== 'list') return one(v);
    if (v.items.length === 0) { this.error(v.pos, 'cpus: the list is empty'); return undefined; }
    if (v.items.length > maxvcpus) {
      this.error(v.pos, `cpus: ${v.items.length} per-vCPU entries for ${maxvcpus} vCPU${maxvcpus > 1 ? 's' : ''}`);
      return undefined;
    }
    const sets = v.items.map(one);
    return sets.every((x): x is CpuSet => x !== undefined) ? sets : undefined;
  }

  private specList<T>(s: CfgSetting | undefined, what: string, parse: (spec: string) => T | string): T[] {
    if (!s) return [];
    const v = s.value;
    if (v.kind !== 'list') {
      this.error(v.pos, `${what} must be a list: ${what} = [ '...' ]`);
      return [];
    }
    const out: T[] = [];
    for (const item of v.items) {
      if (item.kind !== 'string') {
        this.error(item.pos, `${what}: each entry must be a quoted ${what} specification string`);
        continue;
      }
      const r = parse(item.value);
      if (typeof r === 'string') this.error(item.pos, `${what} ${quoteForMessage(item.value, 60)}: ${r}`);
      else out.push(r);
    }
    return out;
  }

  private checkDisks(disks: readonly DiskSpec[], s: CfgSetting | undefined): void {
    // By device number: xvda and 51712 are the same device (xen-vbd-interface(7)).
    const seen = new Map<number, string>();
    for (const d of disks) {
      const n = vdevNumber(d.vdev) ?? -1;
      const prev = seen.get(n);
      if (prev === d.vdev) this.error(s!.value.pos, `disk: vdev ${d.vdev} is used twice`);
      else if (prev !== undefined) this.error(s!.value.pos, `disk: vdevs ${prev} and ${d.vdev} are the same device (${n})`);
      seen.set(n, d.vdev);
    }
  }

  private checkVifs(vifs: readonly VifSpec[], s: CfgSetting | undefined): void {
    const macs = new Set<string>();
    const devids = new Set<number>();
    for (const v of vifs) {
      if (v.mac !== undefined) {
        if (macs.has(v.mac)) this.error(s!.value.pos, `vif: mac ${v.mac} is used twice`);
        macs.add(v.mac);
      }
      if (v.devid !== undefined) {
        if (devids.has(v.devid)) this.error(s!.value.pos, `vif: devid ${v.devid} is used twice`);
        devids.add(v.devid);
      }
    }
  }

  private uuid(s: CfgSetting | undefined): string | undefined {
    const v = this.string(s);
    if (v === undefined || !s) return undefined;
    const u = v.toLowerCase();
    if (!/^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/.test(u)) {
      this.error(s.value.pos, `invalid uuid ${quoteForMessage(v)} (xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx)`);
      return undefined;
    }
    return u;
  }
}

/** Edits (insert, delete, substitute, swap two neighbours) from a to b: optimal string alignment distance. */
function editDistance(a: string, b: string): number {
  const d = Array.from({ length: a.length + 1 }, (_, i) => [i, ...Array<number>(b.length).fill(0)]);
  for (let j = 1; j <= b.length; j++) d[0][j] = j;
  for (let i = 1; i <= a.length; i++) {
    for (let j = 1; j <= b.length; j++) {
      d[i][j] = Math.min(d[i - 1][j] + 1, d[i][j - 1] + 1, d[i - 1][j - 1] + (a[i - 1] === b[j - 1] ? 0 : 1));
      if (i > 1 && j > 1 && a[i - 1] === b[j - 2] && a[i - 2] === b[j - 1]) d[i][j] = Math.min(d[i][j], d[i - 2][j - 2] + 1);
    }
  }
  return d[a.length][b.length];
}

// ---------------------------------------------------------------- printing

/** An xl.cfg text that parseXlCfg turns back into exactly `c`. */
export function printXlCfg(c: DomainConfig): string {
  const q = quoteCfgString;
  const lines = [
    `name = ${q(c.name)}`,
    `type = ${q(c.type)}`,
    `kernel = ${q(c.kernel)}`,
    `memory = ${c.memory}`,
    `maxmem = ${c.maxmem}`,
    `vcpus = ${c.vcpus}`,
    `maxvcpus = ${c.maxvcpus}`,
  ];
  if (c.cpus !== undefined) {
    lines.push(`cpus = ${isCpuSetList(c.cpus) ? `[ ${c.cpus.map((s) => q(printCpuList(s))).join(', ')} ]` : q(printCpuList(c.cpus))}`);
  }
  if (c.cpuWeight !== undefined) lines.push(`cpu_weight = ${c.cpuWeight}`);
  if (c.cap !== undefined) lines.push(`cap = ${c.cap}`);
  lines.push(
    `on_poweroff = ${q(c.onPoweroff)}`, `on_reboot = ${q(c.onReboot)}`, `on_watchdog = ${q(c.onWatchdog)}`,
    `on_crash = ${q(c.onCrash)}`, `on_soft_reset = ${q(c.onSoftReset)}`,
  );
  const list = (key: string, items: readonly string[]): void => {
    if (items.length === 0) return;
    lines.push(`${key} = [`, ...items.map((s) => `    ${q(s)},`), ']');
  };
  list('disk', c.disks.map(printDiskSpec));
  list('vif', c.vifs.map(printVifSpec));
  if (c.cmdline !== undefined) lines.push(`cmdline = ${q(c.cmdline)}`);
  if (c.root !== undefined) lines.push(`root = ${q(c.root)}`);
  if (c.extra !== undefined) lines.push(`extra = ${q(c.extra)}`);
  if (c.uuid !== undefined) lines.push(`uuid = ${q(c.uuid)}`);
  return lines.join('\n') + '\n';
}

export function isCpuSetList(c: CpuSet | readonly CpuSet[]): c is readonly CpuSet[] {
  return Array.isArray(c);
}

// ---------------------------------------------------------------- use

/**
 * The kernel command line, as xl builds it: `cmdline` if set; else
 * `root=ROOT` and `extra` joined with a space.
 */
export function kernelCmdline(c: DomainConfig): string {
  if (c.cmdline !== undefined) return c.cmdline;
  return [c.root !== undefined ? `root=${c.root}` : undefined, c.extra].filter((s): s is string => s !== undefined && s !== '').join(' ');
}

/** What the PV domain builder needs from a configuration. */
export function toPvBuildConfig(c: DomainConfig): PvBuildConfig {
  return {
    name: c.name, kernel: c.kernel, memoryMiB: c.memory, maxmemMiB: c.maxmem, vcpus: c.vcpus, cmdline: kernelCmdline(c),
    ...(c.disks.length > 0 ? { disks: c.disks } : {}),
  };
}

/**
 * Check that an untrusted value (say, a create request off the control
 * socket) is a DomainConfig, and return the normalised copy. Throws
 * XlCfgError naming the first problem.
 */
export function validateDomainConfig(x: unknown, file = '<request>'): DomainConfig {
  const fail = (msg: string): never => { throw new XlCfgError([{ file, line: 1, column: 1, message: msg }]); };
  if (typeof x !== 'object' || x === null || Array.isArray(x)) return fail('the configuration is not an object');
  const o = x as Record<string, unknown>;
  const str = (k: string, optional: boolean): void => {
    if (o[k] === undefined && optional) return;
    if (typeof o[k] !== 'string') fail(`${k} must be a string`);
  };
  const int = (k: string, optional: boolean): void => {
    if (o[k] === undefined && optional) return;
    if (!Number.isSafeInteger(o[k])) fail(`${k} must be an integer`);
  };
  const allowed = new Set(['name', 'type', 'kernel', 'memory', 'maxmem', 'vcpus', 'maxvcpus', 'cpus', 'cpuWeight', 'cap',
    'onPoweroff', 'onReboot', 'onWatchdog', 'onCrash', 'onSoftReset', 'disks', 'vifs', 'cmdline', 'root', 'extra', 'uuid']);
  for (const k of Object.keys(o)) if (!allowed.has(k)) fail(`unknown field ${k}`);
  ['name', 'type', 'kernel', 'onPoweroff', 'onReboot', 'onWatchdog', 'onCrash', 'onSoftReset'].forEach((k) => str(k, false));
  ['cmdline', 'root', 'extra', 'uuid'].forEach((k) => str(k, true));
  ['memory', 'maxmem', 'vcpus', 'maxvcpus'].forEach((k) => int(k, false));
  ['cpuWeight', 'cap'].forEach((k) => int(k, true));
  if (!Array.isArray(o.disks) || !Array.isArray(o.vifs)) fail('disks and vifs must be lists');
  const cpuSet = (s: unknown): void => {
    const c = s as Record<string, unknown>;
    const nums = (v: unknown): boolean => Array.isArray(v) && v.every((n) => Number.isSafeInteger(n) && (n as number) >= 0);
    if (typeof c !== 'object' || c === null || !((c.kind === 'all' && nums(c.except)) || (c.kind === 'cpus' && nums(c.cpus)))) fail('cpus is malformed');
  };
  if (o.cpus !== undefined) {
    if (Array.isArray(o.cpus)) o.cpus.forEach(cpuSet); else cpuSet(o.cpus);
  }
  const disk = (d: unknown): void => {
    const r = d as Record<string, unknown>;
    if (typeof r !== 'object' || r === null || typeof r.target !== 'string' || typeof r.vdev !== 'string' ||
      typeof r.format !== 'string' || typeof r.access !== 'string' || typeof r.devtype !== 'string') fail('a disk is malformed');
  };
  (o.disks as unknown[]).forEach(disk);
  (o.vifs as unknown[]).forEach((v) => { if (typeof v !== 'object' || v === null) fail('a vif is malformed'); });
  // The structure is sound: print it and parse it back, which applies every
  // rule of the file format (ranges, names, specs) in one place.
  let text: string;
  try {
    text = printXlCfg(o as unknown as DomainConfig);
  } catch {
    return fail('the configuration is malformed');
  }
  return parseXlCfg(text, { file });
}
