/**
 * Disk specifications of xl.cfg's `disk=` list (xl-disk-configuration(5);
 * libxlutil's libxlu_disk_l.l and libxlu_disk.c), in both forms:
 *
 *   'format=raw, vdev=xvda, access=rw, target=/images/root.img'
 *   'file:/images/root.img,xvda,w'          (positional: target, [format,] vdev, access)
 *
 * Parsing follows libxlutil's scanner: `key=value` parameters and flags in any
 * order; `target=` eats the rest of the string; positional parameters fill
 * target, format, vdev and access in that order (format is skipped after a
 * deprecated `file:`/`phy:`/`raw:`... prefix); a deprecated prefix is accepted
 * where Xen accepts it.
 *
 * What Dom0 can serve is narrower than what Xen can parse: raw files (or an
 * empty CD-ROM drive) through blkback. Everything else parses, then is refused
 * with a message saying so, so that no domain is created half-configured.
 *
 * Two extensions of ours (not Xen's; xl would refuse them):
 *   size=<n>[K|M|G]    create the target, sparse, at this size if it does not
 *                      exist (1024-based; bytes without a suffix, a multiple
 *                      of 512); an existing file is used as it is.
 *   backendtype=null   a null device for benchmarks: reads return zeroes,
 *                      writes are dropped; needs size=, takes no target.
 */

export type DiskAccess = 'rw' | 'ro';
export type DiskDevtype = 'disk' | 'cdrom';
/** The formats we can serve; Xen also knows qcow, qcow2, vhd and qed. */
export type DiskFormat = 'raw' | 'empty';
/** Backend types we serve: Xen's `phy` and our `null`. */
export type DiskBackendtype = 'phy' | 'null';

/** Sector size of the size= extension: sizes are whole sectors. */
export const DISK_SECTOR_BYTES = 512;

export interface DiskSpec {
  /** The backing file (Xen's pdev_path); '' for an empty CD-ROM drive. */
  readonly target: string;
  /** The guest's device name: xvda, xvdb1, hdc, sda, d0p1, or a number. */
  readonly vdev: string;
  readonly format: DiskFormat;
  readonly access: DiskAccess;
  readonly devtype: DiskDevtype;
  /** The backend domain's name (a driver domain); default Dom0. */
  readonly backend?: string;
  /**
   * `phy`, blkback serving the file; `null` (our extension), a device of
   * `size` bytes whose reads return zeroes and whose writes are dropped.
   */
  readonly backendtype?: DiskBackendtype;
  /**
   * Our extension `size=`: bytes, a positive multiple of 512. With a target:
   * create it sparse at this size if it does not exist. With
   * backendtype=null: the device's size.
   */
  readonly size?: number;
  /** `discard` / `no-discard`. */
  readonly discard?: boolean;
  /** `direct-io-safe`. */
  readonly directIoSafe?: boolean;
  /** `trusted` / `untrusted`. */
  readonly trusted?: boolean;
}

const XEN_FORMATS = new Set(['raw', 'qcow', 'qcow2', 'vhd', 'empty', 'qed']);
const XEN_BACKENDTYPES = new Set(['phy', 'tap', 'qdisk', 'standalone']);
/** Parameters Xen knows that we do not implement: parse, then refuse. */
const UNSUPPORTED_PARAMS = new Set(['script', 'colo-host', 'colo-port', 'colo-export', 'active-disk', 'hidden-disk', 'grant_usage']);
const UNSUPPORTED_FLAGS = new Set(['colo', 'no-colo']);

interface DiskDraft {
  target?: string;
  vdev?: string;
  format?: string;
  access?: DiskAccess;
  cdrom?: boolean;
  backend?: string;
  backendtype?: string;
  specification?: string;
  discard?: boolean;
  directIoSafe?: boolean;
  trusted?: boolean;
  size?: number;
  hadDeprecatedPrefix: boolean;
  accessSet: boolean;
}

/** Parse one disk spec string; returns the spec or a message naming what is wrong. */
export function parseDiskSpec(spec: string): DiskSpec | string {
  const d: DiskDraft = { hadDeprecatedPrefix: false, accessSet: false };
  let i = 0;
  while (i < spec.length) {
    const ws = /^[ \t\n]+/.exec(spec.slice(i));
    if (ws) { i += ws[0].length; continue; }
    const rest = spec.slice(i);
    if (rest.startsWith('target=')) {
      let v = rest.slice('target='.length);
      if (v.endsWith(',')) v = v.slice(0, -1);
      const e = save(d, 'target', v);
      if (e) return e;
      break;
    }
    // Xen's own prefixes match whatever follows them; another word and a
    // colon is taken for an unknown prefix only before a non-alphanumeric.
    const prefix = /^(raw|qcow2?|vhd|iscsi|e?nbd|drbd|tapdisk|tap2?|aio|ioemu|file|phy):/.exec(rest)
      ?? /^([a-z][a-z0-9]*):(?![a-z0-9])/.exec(rest);
    if (prefix) {
      const e = deprecatedPrefix(d, prefix[1]);
      if (e) return e;
      i += prefix[0].length;
      continue;
    }
    const comma = rest.indexOf(',');
    const token = comma < 0 ? rest : rest.slice(0, comma);
    i += comma < 0 ? rest.length : comma + 1;
    const e = token.includes('=') ? parameter(d, token) : flagOrPositional(d, token);
    if (e) return e;
  }
  return finish(d);
}

function save(d: DiskDraft, what: 'target' | 'vdev' | 'backend', v: string): string | null {
  const prev = d[what];
  if (prev !== undefined && prev !== '' && prev !== v) return `${what} respecified ("${prev}", then "${v}")`;
  d[what] = v;
  return null;
}

function setFormat(d: DiskDraft, v: string): string | null {
  const f = v === '' ? 'raw' : v;
  if (!XEN_FORMATS.has(f)) return `unknown value for format: "${v}" (Xen's formats: raw, qcow, qcow2, vhd, qed, empty)`;
  if (d.format !== undefined && d.format !== f) return `format respecified ("${d.format}", then "${f}")`;
  d.format = f;
  return null;
}

function setAccess(d: DiskDraft, v: string): string | null {
  if (v === 'r' || v === 'ro') d.access = 'ro';
  else if (v === 'w' || v === 'rw' || v === '') d.access = 'rw';
  else return `unknown value for access: "${v}" (r, ro, w or rw)`;
  return null;
}

/** Deprecated `prefix:` before a target (libxlu_disk_l.l). */
function deprecatedPrefix(d: DiskDraft, p: string): string | null {
  if (p === 'raw' || p === 'qcow' || p === 'qcow2' || p === 'vhd') {
    d.hadDeprecatedPrefix = true;
    return setFormat(d, p);
  }
  if (['iscsi', 'nbd', 'enbd', 'drbd'].includes(p)) return `"${p}:" disks (block-${p} scripts) are not supported`;
  if (['tapdisk', 'tap', 'tap2', 'aio', 'ioemu', 'file', 'phy'].includes(p)) {
    d.hadDeprecatedPrefix = true;
    return null;
  }
  return `unknown deprecated disk prefix "${p}:"`;
}

function parameter(d: DiskDraft, token: string): string | null {
  const eq = token.indexOf('=');
  const key = token.slice(0, eq);
  const v = token.slice(eq + 1);
  switch (key) {
    case 'format': return setFormat(d, v);
    case 'access': d.accessSet = true; return setAccess(d, v);
    case 'vdev': return save(d, 'vdev', v);
    case 'backend': return save(d, 'backend', v);
    case 'devtype':
      if (v === 'cdrom') d.cdrom = true;
      else if (v === 'disk') d.cdrom = false;
      else return `unknown value for devtype: "${v}" (disk or cdrom)`;
      return null;
    case 'backendtype':
      if (!XEN_BACKENDTYPES.has(v) && v !== 'null') return `unknown value for backendtype: "${v}" (phy, tap, qdisk or standalone; null is ours)`;
      d.backendtype = v;
      return null;
    case 'size': {
      const n = parseDiskSize(v);
      if (typeof n === 'string') return n;
      if (d.size !== undefined && d.size !== n) return `size respecified (${d.size}, then ${n} bytes)`;
      d.size = n;
      return null;
    }
    case 'specification':
      if (v !== 'xen' && v !== 'virtio') return `unknown value for specification: "${v}" (xen or virtio)`;
      d.specification = v;
      return null;
    default:
      if (UNSUPPORTED_PARAMS.has(key)) return `${key}= is not supported`;
      if (/^[a-z][-a-z0-9_]*$/.test(key)) return `unknown parameter "${key}="`;
      return `bad disk syntax near "${token}"`;
  }
}

function flagOrPositional(d: DiskDraft, token: string): string | null {
  switch (token) {
    case 'cdrom': d.cdrom = true; return null;
    case 'discard': d.discard = true; return null;
    case 'no-discard': d.discard = false; return null;
    case 'direct-io-safe': d.directIoSafe = true; return null;
    case 'trusted': d.trusted = true; return null;
    case 'untrusted': d.trusted = false; return null;
    default:
      if (UNSUPPORTED_FLAGS.has(token)) return `${token} is not supported`;
      return positional(d, token);
  }
}

/** Positional parameters: target, then format (unless a prefix gave it), vdev, access. */
function positional(d: DiskDraft, token: string): string | null {
  if (d.target === undefined) return save(d, 'target', token);
  if (!d.hadDeprecatedPrefix && d.format === undefined) {
    if (d.target === '') {
      const e = vdevAndDevtype(d, token);
      if (e === null) {
        d.format = 'empty';
        return null;
      }
      if (e !== undefined) return e;
    }
    return setFormat(d, token);
  }
  if (d.vdev === undefined) {
    const e = vdevAndDevtype(d, token);
    return e === undefined ? save(d, 'vdev', token) : e;
  }
  if (!d.accessSet) {
    d.accessSet = true;
    return setAccess(d, token);
  }
  return `too many positional parameters at "${token}"`;
}

/** `vdev:cdrom` / `vdev:disk`: null when taken, undefined when not that form, else an error. */
function vdevAndDevtype(d: DiskDraft, token: string): string | null | undefined {
  const colon = token.lastIndexOf(':');
  if (colon < 0) return undefined;
  const e = save(d, 'vdev', token.slice(0, colon));
  if (e) return e;
  const t = token.slice(colon + 1);
  if (t === 'cdrom') d.cdrom = true;
  else if (t === 'disk') d.cdrom = false;
  else return `unknown deprecated type "${t}" after "${token.slice(0, colon)}:" (cdrom or disk)`;
  return null;
}

function finish(d: DiskDraft): DiskSpec | string {
  if (d.vdev === undefined || d.vdev === '') return 'no vdev specified';
  if (!isValidVdev(d.vdev)) return `invalid vdev "${d.vdev}" (xvda, xvdb1, hdc, sda, d0p1 or a number)`;
  const cdrom = d.cdrom === true;
  const target = d.target ?? '';
  const isNull = d.backendtype === 'null';
  if (isNull) {
    if (d.size === undefined) return 'backendtype=null needs size= (the null device\'s size)';
    if (target !== '') return `backendtype=null takes no target (it has no file), not "${target}"`;
    if (cdrom) return 'backendtype=null is a disk, not a CD-ROM';
  } else if (d.size !== undefined && cdrom) {
    return 'size= creates a disk file; a CD-ROM is read-only media';
  }
  if (target === '' && !cdrom && !isNull) return 'no target specified';
  if (/[\x00-\x1f\x7f]/.test(target)) return 'the target contains a control character';
  let format = d.format ?? 'raw';
  if (cdrom && target === '') format = 'empty';
  if (format !== 'raw' && format !== 'empty') return `format ${format} is not supported: Dom0's blkback serves raw files`;
  if (format === 'empty' && target !== '') return `format empty with a target ("${target}")`;
  if (d.backendtype !== undefined && d.backendtype !== 'phy' && !isNull) return `backendtype ${d.backendtype} is not supported: Dom0 serves disks with blkback (backendtype=phy)`;
  if (d.specification === 'virtio') return 'specification=virtio is not supported (PV guests use blkfront)';
  if (d.backend !== undefined && !/^[^\s,=]+$/.test(d.backend)) return `invalid backend domain name "${d.backend}"`;
  return {
    target,
    vdev: d.vdev,
    format,
    access: cdrom ? 'ro' : d.access ?? 'rw',
    devtype: cdrom ? 'cdrom' : 'disk',
    ...(d.backend !== undefined && d.backend !== '' ? { backend: d.backend } : {}),
    ...(d.backendtype === 'phy' || isNull ? { backendtype: d.backendtype as DiskBackendtype } : {}),
    ...(d.size !== undefined ? { size: d.size } : {}),
    ...(d.discard !== undefined ? { discard: d.discard } : {}),
    ...(d.directIoSafe ? { directIoSafe: true } : {}),
    ...(d.trusted !== undefined ? { trusted: d.trusted } : {}),
  };
}

/** The canonical `key=value` form of a spec, which parses back to it. */
export function printDiskSpec(s: DiskSpec): string {
  const parts = [`format=${s.format}`, `vdev=${s.vdev}`, `access=${s.access}`, `devtype=${s.devtype}`];
  if (s.backend !== undefined) parts.push(`backend=${s.backend}`);
  if (s.backendtype !== undefined) parts.push(`backendtype=${s.backendtype}`);
  if (s.size !== undefined) parts.push(`size=${printDiskSize(s.size)}`);
  if (s.discard !== undefined) parts.push(s.discard ? 'discard' : 'no-discard');
  if (s.directIoSafe) parts.push('direct-io-safe');
  if (s.trusted !== undefined) parts.push(s.trusted ? 'trusted' : 'untrusted');
  // `target=` takes the rest of the string minus one trailing comma.
  parts.push(`target=${s.target}${s.target.endsWith(',') ? ',' : ''}`);
  return parts.join(', ');
}

const SIZE_UNITS: Readonly<Record<string, number>> = { '': 1, K: 1024, M: 1024 ** 2, G: 1024 ** 3 };

/**
 * The value of our `size=` extension: `<n>[K|M|G]`, 1024-based; without a
 * suffix, bytes, which must be a multiple of 512. Returns the bytes, or a
 * message naming what is wrong.
 */
export function parseDiskSize(v: string): number | string {
  const m = /^(\d{1,16})([KMG]?)$/.exec(v);
  if (!m) return `invalid size "${v}" (a number of bytes, a multiple of ${DISK_SECTOR_BYTES}, or with a suffix K, M or G)`;
  const n = Number(m[1]) * SIZE_UNITS[m[2]];
  if (n === 0) return 'size must be above 0';
  if (!Number.isSafeInteger(n)) return `size "${v}" is too large`;
  if (n % DISK_SECTOR_BYTES !== 0) return `size ${n} is not a multiple of ${DISK_SECTOR_BYTES} bytes (whole sectors)`;
  return n;
}

/** A size in bytes as `size=` reads it back: the largest suffix that divides it exactly. */
export function printDiskSize(bytes: number): string {
  for (const u of ['G', 'M', 'K'] as const) if (bytes % SIZE_UNITS[u] === 0) return `${bytes / SIZE_UNITS[u]}${u}`;
  return String(bytes);
}

/**
 * Check that an untrusted value (off the control socket) is a DiskSpec:
 * printed and parsed back, so every rule of the grammar applies. Returns the
 * normalised copy, or a message naming what is wrong.
 */
export function validateDiskSpec(x: unknown): DiskSpec | string {
  if (typeof x !== 'object' || x === null || Array.isArray(x)) return 'the disk specification is not an object';
  const r = x as Record<string, unknown>;
  const known = new Set(['target', 'vdev', 'format', 'access', 'devtype', 'backend', 'backendtype', 'discard', 'directIoSafe', 'trusted', 'size']);
  for (const k of Object.keys(r)) if (!known.has(k)) return `unknown field ${k} in the disk specification`;
  for (const k of ['target', 'vdev', 'format', 'access', 'devtype']) if (typeof r[k] !== 'string') return `the disk's ${k} must be a string`;
  for (const k of ['backend', 'backendtype']) if (r[k] !== undefined && typeof r[k] !== 'string') return `the disk's ${k} must be a string`;
  for (const k of ['discard', 'directIoSafe', 'trusted']) if (r[k] !== undefined && typeof r[k] !== 'boolean') return `the disk's ${k} must be true or false`;
  if (r.size !== undefined && !Number.isSafeInteger(r.size)) return 'the disk\'s size must be an integer';
  const back = parseDiskSpec(printDiskSpec(r as unknown as DiskSpec));
  if (typeof back === 'string') return back;
  // A field that smuggled in more syntax (a vdev "xvda, target=...") does not come back as it went.
  if (back.vdev !== r.vdev || back.target !== r.target || (back.backend ?? undefined) !== r.backend) return 'the disk specification is malformed';
  return back;
}

const VDEV_FORMS = [/^xvd[a-z]+\d*$/, /^sd[a-z]+\d*$/, /^hd[a-z]\d*$/, /^d\d+(p\d+)?$/, /^\d+$/];

export function isValidVdev(v: string): boolean {
  return VDEV_FORMS.some((r) => r.test(v)) && vdevNumber(v) !== null;
}

/** Letters to a disk index: a=0 ... z=25, aa=26 ... (Xen's encoding). */
function diskIndex(letters: string): number {
  let n = 0;
  for (const ch of letters) n = n * 26 + (ch.charCodeAt(0) - 96);
  return n - 1;
}

/**
 * The virtual device number xenstore uses for a vdev (xen-vbd-interface(7);
 * libxl_device_disk_dev_number), or null if the name does not encode one.
 */
export function vdevNumber(v: string): number | null {
  const enc = (disk: number, part: number, major: number): number | null => {
    if (disk < 16 && part < 16) return (major << 8) | (disk << 4) | part;
    if (disk < (1 << 20) && part < 256) return (1 << 28) | (disk << 8) | part;
    return null;
  };
  let m = /^xvd([a-z]+)(\d*)$/.exec(v);
  if (m) return enc(diskIndex(m[1]), m[2] ? Number(m[2]) : 0, 202);
  m = /^sd([a-z]+)(\d*)$/.exec(v);
  if (m) {
    const disk = diskIndex(m[1]);
    const part = m[2] ? Number(m[2]) : 0;
    return disk < 16 && part < 16 ? (8 << 8) | (disk << 4) | part : null;
  }
  m = /^hd([a-z])(\d*)$/.exec(v);
  if (m) {
    const disk = diskIndex(m[1]);
    const part = m[2] ? Number(m[2]) : 0;
    const majors = [3, 22, 33, 34, 56, 57, 88, 89, 90, 91];
    const major = majors[disk >> 1];
    return major !== undefined && part < 64 ? (major << 8) | ((disk & 1) << 6) | part : null;
  }
  m = /^d(\d+)(?:p(\d+))?$/.exec(v);
  if (m) {
    const disk = Number(m[1]);
    const part = m[2] ? Number(m[2]) : 0;
    return disk < (1 << 20) && part < 256 ? (1 << 28) | (disk << 8) | part : null;
  }
  if (/^\d+$/.test(v)) {
    const n = Number(v);
    return n > 0 && n < 2 ** 31 ? n : null;
  }
  return null;
}
