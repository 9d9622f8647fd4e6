/**
 * What the toolstack reports about the host and its domains: the data behind
 * every `xl` command, as it crosses the control socket (plain objects of
 * numbers, strings, booleans and byte arrays; msgpack carries them as they are).
 *
 * The shapes follow libxl's (libxl_dominfo, libxl_physinfo + libxl_version_info,
 * libxl_vcpuinfo, xenstat's per-device counters), with only the fields xl prints.
 */
import { hostname, machine, release, version } from 'node:os';
import type { DomainInfo } from '../libxc.ts';

/** One domain, as `xl list` shows it (libxl_dominfo). */
export interface DomainSummary {
  readonly domid: number;
  readonly name: string;
  /** 8-4-4-4-12 hex; all zeroes when the domain has none. */
  readonly uuid: string;
  /** Current memory, KiB (tot_pages * 4). */
  readonly memKiB: number;
  /** max_pages * 4, KiB. */
  readonly maxMemKiB: number;
  /** Claimed but not yet allocated, KiB; 0 if unsupported. */
  readonly outstandingKiB: number;
  /** vCPUs online. */
  readonly vcpus: number;
  /** max_vcpu_id + 1. */
  readonly maxVcpus: number;
  readonly running: boolean;
  readonly blocked: boolean;
  readonly paused: boolean;
  readonly shutdown: boolean;
  readonly dying: boolean;
  /** SHUTDOWN_* (shared/hypercall.ts); meaningful when `shutdown`. */
  readonly shutdownReason: number;
  /** Total CPU time of all its vCPUs, ns. */
  readonly cpuTimeNs: number;
  /** When it was created, seconds since the epoch (Xen's /vm/<uuid>/start_time). */
  readonly startTime: number;
  /** The XSM label; absent without one. */
  readonly ssidLabel?: string;
}

/** The host, as `xl info` shows it (uname + libxl_physinfo + libxl_version_info). */
export interface HostInfo {
  readonly host: string;
  readonly release: string;
  readonly version: string;
  readonly machine: string;
  readonly nrCpus: number;
  readonly maxCpuId: number;
  readonly nrNodes: number;
  readonly coresPerSocket: number;
  readonly threadsPerCore: number;
  readonly cpuKhz: number;
  /** Eight 32-bit words. */
  readonly hwCaps: readonly number[];
  /** Words printed after `virt_caps :`, e.g. pv, hvm, hap, gnttab-v1. */
  readonly virtCaps: readonly string[];
  readonly totalPages: number;
  readonly freePages: number;
  readonly outstandingPages: number;
  readonly sharingFreedPages: number;
  readonly sharingUsedFrames: number;
  readonly freeCpus: number;
  readonly pageSize: number;
  readonly xenMajor: number;
  readonly xenMinor: number;
  /** XENVER_extraversion, e.g. ".0-ts". */
  readonly xenExtra: string;
  readonly xenCaps: string;
  /** credit, credit2, null ... */
  readonly xenScheduler: string;
  readonly virtStart: number;
  readonly xenChangeset: string;
  readonly xenCommandline: string;
  readonly ccCompiler: string;
  readonly ccCompileBy: string;
  readonly ccCompileDomain: string;
  readonly ccCompileDate: string;
  readonly buildId: string;
}

/** One vCPU, as `xl vcpu-list` shows it (libxl_vcpuinfo). */
export interface VcpuInfo {
  readonly vcpuid: number;
  /** The pCPU it runs or last ran on. */
  readonly cpu: number;
  readonly online: boolean;
  readonly running: boolean;
  readonly blocked: boolean;
  readonly cpuTimeNs: number;
  /** Hard affinity: the pCPUs it may run on. */
  readonly hard: readonly number[];
  /** Soft affinity: the pCPUs it prefers. */
  readonly soft: readonly number[];
}

/** A domain's scheduling parameters (libxl_domain_sched_params). */
export interface SchedParams {
  /** The scheduler they belong to: credit, credit2, null ... */
  readonly scheduler: string;
  readonly weight: number;
  readonly cap: number;
}

/** The scheduler's global parameters (xl sched-credit -s; cpupool Pool-0). */
export interface SchedPoolParams {
  readonly scheduler: string;
  readonly poolName: string;
  readonly tsliceMs: number;
  readonly ratelimitUs: number;
  readonly migrationDelayUs: number;
}

/** One network interface's counters (xenstat_network), from the backend's view of its rings. */
export interface NetStats {
  readonly devid: number;
  readonly txBytes: number;
  readonly txPackets: number;
  readonly txErrs: number;
  readonly txDrop: number;
  readonly rxBytes: number;
  readonly rxPackets: number;
  readonly rxErrs: number;
  readonly rxDrop: number;
}

/** One virtual block device's counters (xenstat_vbd). */
export interface VbdStats {
  /** The virtual device number (xen-vbd-interface(7)). */
  readonly dev: number;
  /** The counters could not be read. */
  readonly error: boolean;
  readonly ooReqs: number;
  readonly rdReqs: number;
  readonly wrReqs: number;
  readonly rdSects: number;
  readonly wrSects: number;
}

/** A domain's ring traffic, for `xl top`. */
export interface DomainStats {
  readonly domid: number;
  readonly nets: readonly NetStats[];
  readonly vbds: readonly VbdStats[];
}

/** What `xl top` samples each interval. */
export interface TopSample {
  /** Host monotonic time of the sample, ns. */
  readonly timeNs: number;
  readonly host: HostInfo;
  readonly domains: readonly DomainSummary[];
  readonly stats: readonly DomainStats[];
  /** Per domain, when asked for (xentop -v). */
  readonly vcpus?: Readonly<Record<number, readonly VcpuInfo[]>>;
}

/** An event of `xenstore-watch`: the path that fired and the watch's token. */
export interface WatchEvent {
  readonly path: string;
  readonly token: string;
}

/** `xl vcpu-list` for one domain. */
export interface DomainVcpus {
  readonly domid: number;
  readonly name: string;
  readonly vcpus: readonly VcpuInfo[];
}

export const NIL_UUID = '00000000-0000-0000-0000-000000000000';

/**
 * A DomainSummary from getdomaininfo (libxc's DomainInfo): the helper for the
 * Dom0 side, which knows the name and start time from its own records.
 */
export function summaryFromDomainInfo(
  d: DomainInfo, name: string, startTime: number, pageKiB = 4,
): DomainSummary {
  const hex = Array.from(d.handle, (b) => b.toString(16).padStart(2, '0')).join('');
  const uuid = hex.length === 32 ? `${hex.slice(0, 8)}-${hex.slice(8, 12)}-${hex.slice(12, 16)}-${hex.slice(16, 20)}-${hex.slice(20)}` : NIL_UUID;
  return {
    domid: d.domid, name, uuid,
    memKiB: d.totPages * pageKiB, maxMemKiB: d.maxPages * pageKiB, outstandingKiB: 0,
    vcpus: d.onlineVcpus, maxVcpus: d.maxVcpuId + 1,
    running: d.running, blocked: d.blocked, paused: d.paused, shutdown: d.shutdown, dying: d.dying,
    shutdownReason: d.shutdown ? d.shutdownReason : 0,
    cpuTimeNs: Number(d.cpuTimeNs),
    startTime,
  };
}

/** The host's uname fields, for HostInfo (xl prints Dom0's uname: ours is the host's). */
export function hostUname(): Pick<HostInfo, 'host' | 'release' | 'version' | 'machine'> {
  return { host: hostname(), release: release(), version: version(), machine: machine() };
}

/**
 * One virtual block device, as `xl block-list` shows it (libxl_diskinfo,
 * read by libxl_device_disk_getinfo from the frontend's and backend's
 * xenstore nodes). A value the frontend has not written is -1, as libxl
 * reports it.
 */
export interface VbdInfo {
  /** The virtual device number (xen-vbd-interface(7)): `Vdev`. */
  readonly devid: number;
  /** The vdev name the device was created with (the backend's `dev`), '' when unknown. */
  readonly vdev: string;
  /** The backend's domain (frontend `backend-id`): `BE`. */
  readonly backendId: number;
  /** The frontend's domain: xl prints it as `handle`. */
  readonly frontendId: number;
  /** The frontend's XenbusState: `state`. */
  readonly state: number;
  /** The frontend's `event-channel`: `evt-ch`. */
  readonly evtchn: number;
  /** The frontend's `ring-ref`: `ring-ref`. */
  readonly ringRef: number;
  /** The frontend's `backend`: `BE-path`. */
  readonly backendPath: string;
}
