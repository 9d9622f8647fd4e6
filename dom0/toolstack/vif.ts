/**
 * Network interface specifications of xl.cfg's `vif=` list
 * (xl-network-configuration(5); xl's parse_nic_config, libxlu_vif.c):
 * comma-separated `key=value` pairs, any of them omitted ('' is a NIC with
 * every default).
 *
 *   'mac=00:16:3e:00:00:01, bridge=xenbr0, ip=10.0.0.2, rate=10Mb/s@20ms'
 */
import { isIP } from 'node:net';

/** A rate limit as written (libxlu_vif.c): `AMOUNT UNIT /s [@ INTERVAL]`. */
export interface VifRate {
  /** The number before the unit, 1 .. 2^32-1. */
  readonly amount: number;
  /** Bytes (B) or bits (b), with an SI prefix (K = 1000). */
  readonly unit: 'B' | 'KB' | 'MB' | 'GB' | 'b' | 'Kb' | 'Mb' | 'Gb';
  /** The replenishment interval in microseconds; Xen's default is 50 ms. */
  readonly intervalUs: number;
}

export interface VifSpec {
  /** Lower case, colon separated; default: a random 00:16:3e:xx:xx:xx chosen by the host. */
  readonly mac?: string;
  /** The Dom0 software bridge to attach the backend to; default xenbr0. */
  readonly bridge?: string;
  /** Addresses the guest may use, separated by spaces (as Xen keeps them). */
  readonly ip?: string;
  /** The backend interface's name; default vif<domid>.<devid>. */
  readonly vifname?: string;
  /** `vif` (PV only) or `ioemu` (emulated as well, for HVM guests). */
  readonly type?: 'vif' | 'ioemu';
  /** The backend domain's name (a driver domain); default Dom0. */
  readonly backend?: string;
  readonly rate?: VifRate;
  readonly mtu?: number;
  readonly devid?: number;
  readonly gatewaydev?: string;
}

/** Keys xl knows that we do not implement: parsed, then refused. */
const UNSUPPORTED = new Set(['script', 'model', 'accel', 'forwarddev', 'powerof', 'trusted', 'untrusted']);

const NAME = /^[^\s,=]+$/;
const UINT32_MAX = 0xffffffff;

/** Parse one vif spec string; returns the spec or a message naming what is wrong. */
export function parseVifSpec(spec: string): VifSpec | string {
  const out: Record<string, unknown> = {};
  for (const raw of spec.split(',')) {
    const pair = raw.trim();
    if (pair === '') continue;
    const eq = pair.indexOf('=');
    if (eq < 0) return `expected key=value, found "${pair}"`;
    const key = pair.slice(0, eq).trim();
    const value = pair.slice(eq + 1).trim();
    if (Object.hasOwn(out, key)) return `${key} respecified`;
    const e = setKey(out, key, value);
    if (e) return e;
  }
  return out as VifSpec;
}

function setKey(out: Record<string, unknown>, key: string, v: string): string | null {
  switch (key) {
    case 'mac': {
      const m = v.toLowerCase();
      if (!/^[0-9a-f]{2}(:[0-9a-f]{2}){5}$/.test(m)) return `invalid mac "${v}" (six hex octets: 00:16:3e:12:34:56)`;
      if (parseInt(m.slice(0, 2), 16) & 1) return `mac ${m} is a multicast address`;
      out.mac = m;
      return null;
    }
    case 'ip': {
      const ips = v.split(/\s+/).filter(Boolean);
      if (ips.length === 0) return 'ip= is empty';
      const bad = ips.find((a) => isIP(a) === 0);
      if (bad !== undefined) return `invalid ip address "${bad}"`;
      out.ip = ips.join(' ');
      return null;
    }
    case 'bridge': case 'vifname': case 'backend': case 'gatewaydev':
      if (!NAME.test(v)) return `invalid ${key} "${v}"`;
      out[key] = v;
      return null;
    case 'type':
      if (v !== 'vif' && v !== 'ioemu') return `invalid type "${v}" (vif or ioemu)`;
      out.type = v;
      return null;
    case 'mtu': {
      const n = /^\d+$/.test(v) ? Number(v) : NaN;
      if (!(n >= 68 && n <= 65535)) return `invalid mtu "${v}" (68 to 65535)`;
      out.mtu = n;
      return null;
    }
    case 'devid': {
      const n = /^\d+$/.test(v) ? Number(v) : NaN;
      if (!(n >= 0 && n <= 65535)) return `invalid devid "${v}" (0 to 65535)`;
      out.devid = n;
      return null;
    }
    case 'rate': {
      const r = parseVifRate(v);
      if (typeof r === 'string') return r;
      out.rate = r;
      return null;
    }
    default:
      if (UNSUPPORTED.has(key)) return `${key}= is not supported`;
      return `unknown vif parameter "${key}"`;
  }
}

/** `10Mb/s`, `1GB/s@20ms`, `100KB/s@500us` (libxlu_vif.c's xlu_vif_parse_rate). */
export function parseVifRate(v: string): VifRate | string {
  const m = /^(\d+)([GMK]?[Bb])\/s(?:@(\d+)([mu]?)s?)?$/.exec(v);
  if (!m) return `invalid rate "${v}" (e.g. 10Mb/s or 1MB/s@20ms)`;
  const amount = Number(m[1]);
  if (amount === 0 || amount > UINT32_MAX) return `rate overflow in "${v}"`;
  let intervalUs = 50_000;
  if (m[3] !== undefined) {
    const n = Number(m[3]);
    const mul = m[4] === 'm' ? 1000 : m[4] === 'u' ? 1 : 1_000_000;
    if (n === 0 || n * mul > UINT32_MAX) return `replenishment interval overflow in "${v}"`;
    intervalUs = n * mul;
  }
  return { amount, unit: m[2] as VifRate['unit'], intervalUs };
}

/** Bytes per second of a rate (bits are divided by 8, rounding down, as Xen does). */
export function rateBytesPerSecond(r: VifRate): number {
  const si = r.unit[0] === 'G' ? 1e9 : r.unit[0] === 'M' ? 1e6 : r.unit[0] === 'K' ? 1e3 : 1;
  const n = r.amount * si;
  return r.unit.endsWith('b') ? Math.floor(n / 8) : n;
}

/** Xen's rate_bytes_per_interval: what the backend may send per interval. */
export function rateBytesPerInterval(r: VifRate): number {
  return Math.floor((rateBytesPerSecond(r) * r.intervalUs) / 1e6);
}

/** The canonical form of a spec, which parses back to it. */
export function printVifSpec(s: VifSpec): string {
  const parts: string[] = [];
  if (s.mac !== undefined) parts.push(`mac=${s.mac}`);
  if (s.bridge !== undefined) parts.push(`bridge=${s.bridge}`);
  if (s.ip !== undefined) parts.push(`ip=${s.ip}`);
  if (s.vifname !== undefined) parts.push(`vifname=${s.vifname}`);
  if (s.type !== undefined) parts.push(`type=${s.type}`);
  if (s.backend !== undefined) parts.push(`backend=${s.backend}`);
  if (s.rate !== undefined) parts.push(`rate=${s.rate.amount}${s.rate.unit}/s@${s.rate.intervalUs}us`);
  if (s.mtu !== undefined) parts.push(`mtu=${s.mtu}`);
  if (s.devid !== undefined) parts.push(`devid=${s.devid}`);
  if (s.gatewaydev !== undefined) parts.push(`gatewaydev=${s.gatewaydev}`);
  return parts.join(', ');
}
