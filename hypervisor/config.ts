import os from 'node:os';

/** Scheduler names a host can be configured with (`sched=` in Xen's command line). */
export type SchedName = 'credit' | 'credit2' | 'null';

/**
 * The host ("hardware") configuration: fixed at boot, identical in every thread.
 * Plain data so it can be posted to workers.
 */
export interface HostConfig {
  /** Machine memory in MiB; one SharedArrayBuffer of 4 KiB frames. */
  readonly memMiB: number;
  /** Physical CPUs: at most this many vCPUs run at once. */
  readonly pcpus: number;
  /** Domain table slots (domain ids themselves range up to 0x7fef). */
  readonly maxDomains: number;
  /** vCPUs per domain: XEN_LEGACY_MAX_VCPUS, the vcpu_info slots in shared_info. */
  readonly maxVcpus: number;
  /** Guest-physical frames per domain: gfns at or above this are out of range (-EINVAL). */
  readonly p2mEntries: number;
  /** Hypervisor console ring, bytes (power of two; Xen's default 16 KiB). */
  readonly conringSize: number;
  readonly sched: SchedName;
}

export const DEFAULT_HOST_CONFIG: HostConfig = Object.freeze({
  memMiB: 256,
  pcpus: Math.max(1, os.availableParallelism()),
  maxDomains: 64,
  maxVcpus: 32,
  p2mEntries: 1 << 16,
  conringSize: 16384,
  sched: 'credit',
});

export function hostConfig(over: Partial<HostConfig> = {}): HostConfig {
  const c = { ...DEFAULT_HOST_CONFIG, ...over };
  const problems: string[] = [];
  if (!Number.isInteger(c.memMiB) || c.memMiB < 4) problems.push(`memMiB must be an integer >= 4 (got ${c.memMiB})`);
  if (!Number.isInteger(c.pcpus) || c.pcpus < 1 || c.pcpus > 256) problems.push(`pcpus must be 1..256 (got ${c.pcpus})`);
  if (!Number.isInteger(c.maxDomains) || c.maxDomains < 2 || c.maxDomains > 4096) problems.push(`maxDomains must be 2..4096 (got ${c.maxDomains})`);
  if (!Number.isInteger(c.maxVcpus) || c.maxVcpus < 1 || c.maxVcpus > 32) problems.push(`maxVcpus must be 1..32 (got ${c.maxVcpus})`);
  if (!Number.isInteger(c.p2mEntries) || c.p2mEntries < 64 || c.p2mEntries > (1 << 20)) problems.push(`p2mEntries must be 64..2^20 (got ${c.p2mEntries})`);
  if (!Number.isInteger(Math.log2(c.conringSize)) || c.conringSize < 1024) problems.push(`conringSize must be a power of two >= 1024 (got ${c.conringSize})`);
  if (!['credit', 'credit2', 'null'].includes(c.sched)) problems.push(`sched must be credit, credit2 or null (got ${String(c.sched)})`);
  if (problems.length > 0) throw new Error(`bad host configuration: ${problems.join('; ')}`);
  return Object.freeze(c);
}
