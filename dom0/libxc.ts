/**
 * Dom0's control library (the role of libxc): domctl, sysctl and foreign
 * mappings over the raw hypercall interface, built on the shared guest library.
 * Errors come back as XenError with Xen's errno.
 */
import {
  DOMCTL_U, VCPU_GUEST_CONTEXT, VGCF_online, XEN_DOMCTL, XEN_DOMCTL_CREATEDOMAIN, XEN_DOMCTL_GETDOMAININFO,
  XEN_DOMCTL_INTERFACE_VERSION, XEN_DOMCTL_MAX_MEM, XEN_DOMCTL_MAX_VCPUS, XEN_DOMCTL_VCPUCONTEXT,
  XEN_DOMINF_dying, XEN_DOMINF_paused, XEN_DOMINF_shutdown, XEN_DOMINF_shutdownmask, XEN_DOMINF_shutdownshift,
  XEN_DOMINF_blocked, XEN_DOMINF_running,
} from '../shared/abi/domctl.ts';
import {
  SYSCTL_U, XEN_SYSCTL, XEN_SYSCTL_GETDOMAININFOLIST, XEN_SYSCTL_INTERFACE_VERSION, XEN_SYSCTL_PHYSINFO,
  XEN_SYSCTL_READCONSOLE, XEN_SYSCTL_SCHED_ID,
} from '../shared/abi/sysctl.ts';
import { XEN_ADD_TO_PHYSMAP_BATCH } from '../shared/abi/memory.ts';
import { EVTCHN_ALLOC_UNBOUND, EVTCHNOP_alloc_unbound } from '../shared/abi/event-channel.ts';
import { EAGAIN } from '../shared/errno.ts';
import { check, Xen, XenError } from '../shared/guest/xen.ts';
import {
  XENMAPSPACE_gmfn_foreign, XENMEM_add_to_physmap_batch, XEN_DOMCTL_createdomain, XEN_DOMCTL_destroydomain,
  XEN_DOMCTL_getdomaininfo, XEN_DOMCTL_max_mem, XEN_DOMCTL_max_vcpus, XEN_DOMCTL_pausedomain,
  XEN_DOMCTL_getvcpuinfo, XEN_DOMCTL_setvcpucontext, XEN_DOMCTL_unpausedomain, XEN_SYSCTL_getdomaininfolist, XEN_SYSCTL_physinfo,
  XEN_SYSCTL_readconsole, XEN_SYSCTL_sched_id, __HYPERVISOR_domctl, __HYPERVISOR_memory_op, __HYPERVISOR_sysctl,
  __HYPERVISOR_event_channel_op,
} from '../shared/hypercall.ts';
import { StructView, type Fields, type Layout } from '../shared/layout.ts';
import {
  XEN_DOMCTL_SCHEDOP_getinfo, XEN_DOMCTL_SCHEDOP_putinfo, XEN_DOMCTL_SCHEDULER_OP, XEN_DOMCTL_VCPUAFFINITY,
  XEN_VCPUAFFINITY_HARD, XEN_VCPUAFFINITY_SOFT,
} from '../shared/abi/domctl.ts';
import { XEN_DOMCTL_scheduler_op, XEN_DOMCTL_setvcpuaffinity } from '../shared/hypercall.ts';
import { DOMID_SELF, PAGE_SIZE } from '../shared/types.ts';

export interface DomainInfo {
  readonly domid: number;
  readonly flags: number;
  readonly dying: boolean;
  readonly shutdown: boolean;
  readonly shutdownReason: number;
  readonly paused: boolean;
  readonly blocked: boolean;
  readonly running: boolean;
  readonly totPages: number;
  readonly maxPages: number;
  readonly cpuTimeNs: bigint;
  readonly onlineVcpus: number;
  readonly maxVcpuId: number;
  readonly sharedInfoFrame: number;
  readonly handle: Uint8Array;
}

export interface PhysInfo {
  readonly nrCpus: number;
  readonly totalPages: number;
  readonly freePages: number;
  readonly cpuKhz: number;
  readonly capabilities: number;
}

/** A domain's credit or credit2 parameters (xen_domctl_sched_credit / _credit2). */
export interface SchedCreditParams {
  /** 1..65535; in a put, 0 leaves it unchanged. */
  readonly weight: number;
  /** % of one pCPU, 0 = none; in a credit put, 0xffff leaves it unchanged. */
  readonly cap: number;
}

/** The effective affinity the hypervisor reports back after setvcpuaffinity. */
export interface VcpuAffinity {
  readonly hard: number[];
  readonly soft: number[];
}

/**
 * A foreign frame mapped into our physmap until `unmap` (xc_map_foreign_range
 * and munmap): the frame keeps a reference, so it stays allocated, and its
 * owner stays in the domain table as a zombie, until it is unmapped.
 */
/** One vCPU as XEN_DOMCTL_getvcpuinfo reports it (xc_vcpu_getinfo). */
export interface VcpuInfoRaw {
  readonly vcpu: number;
  readonly online: boolean;
  readonly blocked: boolean;
  readonly running: boolean;
  readonly cpuTimeNs: bigint;
  /** The pCPU it runs or last ran on. */
  readonly cpu: number;
}

export interface ForeignMapping {
  readonly domid: number;
  /** The frame's gfn in the foreign domain. */
  readonly gfn: number;
  /** Where it is mapped in our guest-physical space. */
  readonly gpa: number;
  /** Remove the mapping and give the local gfn back its RAM. Idempotent. */
  unmap(): void;
}

export interface CreateDomainOptions {
  readonly domid?: number;
  readonly maxVcpus?: number;
  readonly flags?: number;
  readonly handle?: Uint8Array;
  readonly ssidref?: number;
}

function toDomainInfo(v: StructView<typeof XEN_DOMCTL_GETDOMAININFO.fields>): DomainInfo {
  const flags = v.get('flags');
  return {
    domid: v.get('domain'),
    flags,
    dying: (flags & XEN_DOMINF_dying) !== 0,
    shutdown: (flags & XEN_DOMINF_shutdown) !== 0,
    shutdownReason: (flags >>> XEN_DOMINF_shutdownshift) & XEN_DOMINF_shutdownmask,
    paused: (flags & XEN_DOMINF_paused) !== 0,
    blocked: (flags & XEN_DOMINF_blocked) !== 0,
    running: (flags & XEN_DOMINF_running) !== 0,
    totPages: v.get('tot_pages'),
    maxPages: v.get('max_pages'),
    cpuTimeNs: v.getBig('cpu_time'),
    onlineVcpus: v.get('nr_online_vcpus'),
    maxVcpuId: v.get('max_vcpu_id'),
    sharedInfoFrame: v.get('shared_info_frame'),
    handle: v.bytes('handle').slice(),
  };
}

export class XenCtrl {
  constructor(readonly xen: Xen) {}

  /** Issue a domctl: returns the raw status and the struct as the hypervisor left it. */
  domctlRaw(cmd: number, domid: number, fill?: (u: Uint8Array) => void): { rc: number; op: StructView<typeof XEN_DOMCTL.fields> } {
    const op = StructView.alloc(XEN_DOMCTL).set('cmd', cmd).set('interface_version', XEN_DOMCTL_INTERFACE_VERSION).set('domain', domid);
    fill?.(op.bytes('u'));
    const rc = this.xen.k.hypercall(__HYPERVISOR_domctl, this.xen.put(op));
    return { rc, op: this.xen.get(XEN_DOMCTL) };
  }

  private domctl(name: string, cmd: number, domid: number, fill?: (u: Uint8Array) => void): StructView<typeof XEN_DOMCTL.fields> {
    const { rc, op } = this.domctlRaw(cmd, domid, fill);
    check(`domctl(${name}, d${domid})`, rc);
    return op;
  }

  sysctlRaw(cmd: number, fill?: (u: Uint8Array) => void): { rc: number; op: StructView<typeof XEN_SYSCTL.fields> } {
    const op = StructView.alloc(XEN_SYSCTL).set('cmd', cmd).set('interface_version', XEN_SYSCTL_INTERFACE_VERSION);
    fill?.(op.raw().subarray(SYSCTL_U));
    const rc = this.xen.k.hypercall(__HYPERVISOR_sysctl, this.xen.put(op));
    return { rc, op: this.xen.get(XEN_SYSCTL) };
  }

  private sub<F extends Fields>(op: { raw(): Uint8Array }, layout: Layout<F>, at: number): StructView<F> {
    return new StructView(layout, op.raw(), at);
  }

  createDomain(o: CreateDomainOptions = {}): number {
    const op = this.domctl('createdomain', XEN_DOMCTL_createdomain, o.domid ?? 0, (u) => {
      const c = new StructView(XEN_DOMCTL_CREATEDOMAIN, u);
      c.set('flags', o.flags ?? 0).set('max_vcpus', o.maxVcpus ?? 1).set('ssidref', o.ssidref ?? 0)
        .set('max_grant_frames', -1).set('max_maptrack_frames', -1).set('grant_opts', 1);
      if (o.handle) c.setBytes('handle', o.handle);
    });
    return op.get('domain');
  }

  /** destroydomain, retried while the hypervisor stops the domain's threads (-EAGAIN). */
  async destroyDomain(domid: number, wait: () => Promise<void> | void = () => this.xen.yield()): Promise<void> {
    for (;;) {
      const { rc } = this.domctlRaw(XEN_DOMCTL_destroydomain, domid);
      if (rc !== -EAGAIN) {
        check(`domctl(destroydomain, d${domid})`, rc);
        return;
      }
      await wait();
    }
  }

  pauseDomain(domid: number): void { this.domctl('pausedomain', XEN_DOMCTL_pausedomain, domid); }
  unpauseDomain(domid: number): void { this.domctl('unpausedomain', XEN_DOMCTL_unpausedomain, domid); }

  maxMem(domid: number, kib: number): void {
    this.domctl('max_mem', XEN_DOMCTL_max_mem, domid, (u) => { new StructView(XEN_DOMCTL_MAX_MEM, u).set('max_memkb', kib); });
  }

  maxVcpus(domid: number, max: number): void {
    this.domctl('max_vcpus', XEN_DOMCTL_max_vcpus, domid, (u) => { new StructView(XEN_DOMCTL_MAX_VCPUS, u).set('max', max); });
  }

  /** Set vCPU context: entry = kernel image gpa, arg0 = start_info gpa. */
  setVcpuContext(domid: number, vcpu: number, entryGpa: number, arg0Gpa: number, online = true): void {
    const ctx = StructView.alloc(VCPU_GUEST_CONTEXT).set('flags', online ? VGCF_online : 0).set('entry', entryGpa).set('arg0', arg0Gpa);
    const at = this.xen.putArray(ctx.raw());
    this.domctl('setvcpucontext', XEN_DOMCTL_setvcpucontext, domid, (u) => {
      new StructView(XEN_DOMCTL_VCPUCONTEXT, u).set('vcpu', vcpu).set('ctxt', at);
    });
  }

  /**
   * XEN_DOMCTL_scheduler_op getinfo (xc_sched_credit_domain_get /
   * xc_sched_credit2_domain_get): `schedId` must be the host's scheduler
   * (XEN_SCHEDULER_*, see schedId()), else -EINVAL.
   */
  schedGetParams(domid: number, schedId: number): SchedCreditParams {
    const op = this.domctl('scheduler_op(getinfo)', XEN_DOMCTL_scheduler_op, domid, (u) => {
      new StructView(XEN_DOMCTL_SCHEDULER_OP, u).set('sched_id', schedId).set('cmd', XEN_DOMCTL_SCHEDOP_getinfo);
    });
    const s = this.sub(op, XEN_DOMCTL_SCHEDULER_OP, DOMCTL_U);
    return { weight: s.get('credit_weight'), cap: s.get('credit_cap') };
  }

  /** XEN_DOMCTL_scheduler_op putinfo (xc_sched_credit_domain_set): weight 1..65535, cap 0..100 * vCPUs. */
  schedSetParams(domid: number, schedId: number, p: SchedCreditParams): void {
    this.domctl('scheduler_op(putinfo)', XEN_DOMCTL_scheduler_op, domid, (u) => {
      new StructView(XEN_DOMCTL_SCHEDULER_OP, u).set('sched_id', schedId).set('cmd', XEN_DOMCTL_SCHEDOP_putinfo)
        .set('credit_weight', p.weight).set('credit_cap', p.cap);
    });
  }

  /**
   * XEN_DOMCTL_setvcpuaffinity (xc_vcpu_setaffinity): pin vCPU `vcpu` to the
   * pCPUs in `hard` (and record `soft`, if given). Returns the effective masks
   * the hypervisor wrote back. An empty hard set is -EINVAL.
   */
  setVcpuAffinity(domid: number, vcpu: number, hard: readonly number[] | null, soft: readonly number[] | null = null, nrBits = 256): VcpuAffinity {
    const bytes = Math.ceil(nrBits / 8);
    const maps = new Uint8Array(2 * bytes);
    for (const c of hard ?? []) if (c < nrBits) maps[c >>> 3] |= 1 << (c & 7);
    for (const c of soft ?? []) if (c < nrBits) maps[bytes + (c >>> 3)] |= 1 << (c & 7);
    const at = this.xen.putArray(maps);
    const flags = (hard ? XEN_VCPUAFFINITY_HARD : 0) | (soft ? XEN_VCPUAFFINITY_SOFT : 0);
    this.domctl('setvcpuaffinity', XEN_DOMCTL_setvcpuaffinity, domid, (u) => {
      new StructView(XEN_DOMCTL_VCPUAFFINITY, u).set('vcpu', vcpu).set('flags', flags)
        .set('cpumap_hard_bitmap', hard ? at : 0).set('cpumap_hard_nr_bits', nrBits)
        .set('cpumap_soft_bitmap', soft ? at + bytes : 0).set('cpumap_soft_nr_bits', nrBits);
    });
    const back = this.xen.readArray(2 * bytes);
    const cpus = (off: number): number[] => {
      const out: number[] = [];
      for (let c = 0; c < nrBits; c++) if ((back[off + (c >>> 3)] >>> (c & 7)) & 1) out.push(c);
      return out;
    };
    return { hard: hard ? cpus(0) : [], soft: soft ? cpus(bytes) : [] };
  }

  /** XEN_DOMCTL_getvcpuinfo (xc_vcpu_getinfo): struct xen_domctl_getvcpuinfo { vcpu u32; online, blocked, running u8; cpu_time u64 @8; cpu u32 @16 }. */
  getVcpuInfo(domid: number, vcpu: number): VcpuInfoRaw {
    const op = this.domctl('getvcpuinfo', XEN_DOMCTL_getvcpuinfo, domid, (u) => {
      new DataView(u.buffer, u.byteOffset, 24).setUint32(0, vcpu, true);
    });
    const b = op.raw();
    const dv = new DataView(b.buffer, b.byteOffset + DOMCTL_U, 24);
    return {
      vcpu, online: dv.getUint8(4) !== 0, blocked: dv.getUint8(5) !== 0, running: dv.getUint8(6) !== 0,
      cpuTimeNs: dv.getBigUint64(8, true), cpu: dv.getUint32(16, true),
    };
  }

  /** getdomaininfo of exactly this domain, or null if it does not exist. */
  domainInfo(domid: number): DomainInfo | null {
    const { rc, op } = this.domctlRaw(XEN_DOMCTL_getdomaininfo, domid);
    if (rc < 0) return null;
    const info = toDomainInfo(this.sub(op, XEN_DOMCTL_GETDOMAININFO, DOMCTL_U));
    return info.domid === domid ? info : null;
  }

  /** Every domain, ascending domid (sysctl getdomaininfolist). */
  listDomains(first = 0, max = 64): DomainInfo[] {
    const per = Math.min(max, Math.floor(Xen.MAX_ARRAY_BYTES / XEN_DOMCTL_GETDOMAININFO.size));
    const out: DomainInfo[] = [];
    let next = first;
    for (;;) {
      const buf = this.xen.putArray(new Uint8Array(0));
      const { rc, op } = this.sysctlRaw(XEN_SYSCTL_getdomaininfolist, (u) => {
        new StructView(XEN_SYSCTL_GETDOMAININFOLIST, u).set('first_domain', next).set('max_domains', per).set('buffer', buf);
      });
      check('sysctl(getdomaininfolist)', rc);
      const n = this.sub(op, XEN_SYSCTL_GETDOMAININFOLIST, SYSCTL_U).get('num_domains');
      const raw = this.xen.readArray(n * XEN_DOMCTL_GETDOMAININFO.size);
      for (let i = 0; i < n; i++) {
        out.push(toDomainInfo(new StructView(XEN_DOMCTL_GETDOMAININFO, raw, i * XEN_DOMCTL_GETDOMAININFO.size)));
      }
      if (n < per || out.length >= max) return out.slice(0, max);
      next = out[out.length - 1].domid + 1;
    }
  }

  physinfo(): PhysInfo {
    const { rc, op } = this.sysctlRaw(XEN_SYSCTL_physinfo);
    check('sysctl(physinfo)', rc);
    const p = this.sub(op, XEN_SYSCTL_PHYSINFO, SYSCTL_U);
    return { nrCpus: p.get('nr_cpus'), totalPages: p.get('total_pages'), freePages: p.get('free_pages'), cpuKhz: p.get('cpu_khz'), capabilities: p.get('capabilities') };
  }

  schedId(): number {
    const { rc, op } = this.sysctlRaw(XEN_SYSCTL_sched_id);
    check('sysctl(sched_id)', rc);
    return this.sub(op, XEN_SYSCTL_SCHED_ID, SYSCTL_U).get('sched_id');
  }

  /**
   * readconsole, incremental from `index` (pass back the returned index to read
   * only new output).
   */
  readConsole(index: number, incremental = true, max = Xen.MAX_ARRAY_BYTES, clear = false): { text: string; index: number } {
    const buf = this.xen.putArray(new Uint8Array(0));
    const { rc, op } = this.sysctlRaw(XEN_SYSCTL_readconsole, (u) => {
      new StructView(XEN_SYSCTL_READCONSOLE, u).set('clear', clear ? 1 : 0).set('incremental', incremental ? 1 : 0).set('index', index).set('buffer', buf).set('count', max);
    });
    check('sysctl(readconsole)', rc);
    const r = this.sub(op, XEN_SYSCTL_READCONSOLE, SYSCTL_U);
    return { text: new TextDecoder().decode(this.xen.readArray(r.get('count'))), index: r.get('index') };
  }

  /** Map frames of a foreign domain (gfns) into our physmap at localGfns; per-frame status. */
  mapForeign(domid: number, gfns: readonly number[], localGfns: readonly number[]): number[] {
    const n = gfns.length;
    if (n !== localGfns.length || n * 20 > Xen.MAX_ARRAY_BYTES) throw new Error('mapForeign: bad batch');
    const arr = new Uint8Array(n * 20);
    const dv = new DataView(arr.buffer);
    gfns.forEach((g, i) => dv.setBigUint64(i * 8, BigInt(g), true));
    localGfns.forEach((g, i) => dv.setBigUint64(n * 8 + i * 8, BigInt(g), true));
    const base = this.xen.putArray(arr);
    const x = StructView.alloc(XEN_ADD_TO_PHYSMAP_BATCH).set('domid', DOMID_SELF).set('space', XENMAPSPACE_gmfn_foreign)
      .set('size', n).set('foreign_domid', domid).set('idxs', base).set('gpfns', base + n * 8).set('errs', base + n * 16);
    check('memory_op(add_to_physmap_batch)', this.xen.k.hypercall(__HYPERVISOR_memory_op, XENMEM_add_to_physmap_batch, this.xen.put(x)));
    const errs = new DataView(this.xen.readArray(n * 20).buffer);
    return Array.from({ length: n }, (_, i) => errs.getInt32(n * 16 + i * 4, true));
  }

  /**
   * Map frame `gfn` of `domid` at one of our free gfns until the mapping's
   * `unmap` (our RAM page there goes back to the heap meanwhile). Throws
   * XenError if the frame cannot be mapped.
   */
  mapForeignPage(domid: number, gfn: number): ForeignMapping {
    const local = this.xen.allocGfn();
    const restore = (): void => {
      check('populate_physmap', this.xen.populatePhysmap([local]) === 1 ? 0 : -1);
      this.xen.releaseGfn(local);
    };
    // Our RAM page at `local` is replaced by the mapping: give it back first.
    if (this.xen.decreaseReservation([local]) !== 1) {
      this.xen.releaseGfn(local);
      throw new XenError('decrease_reservation', -1);
    }
    try {
      const [rc] = this.mapForeign(domid, [gfn], [local]);
      check(`map foreign d${domid} gfn ${gfn}`, rc);
    } catch (e) {
      restore();
      throw e;
    }
    let mapped = true;
    return {
      domid, gfn, gpa: local * PAGE_SIZE,
      unmap: () => {
        if (!mapped) return;
        mapped = false;
        this.xen.removeFromPhysmap(local);
        restore();
      },
    };
  }

  /** Run `fn` with frame `gfn` of `domid` mapped at one of our free gfns; unmaps after. */
  withForeignPage<T>(domid: number, gfn: number, fn: (gpa: number) => T): T {
    const m = this.mapForeignPage(domid, gfn);
    try {
      return fn(m.gpa);
    } finally {
      m.unmap();
    }
  }

  /**
   * xc_evtchn_alloc_unbound: a new unbound port in `domid` that `remoteDom`
   * may bind (privileged callers may name another domain, as the toolstack
   * does for a new guest's xenstore and console channels). Returns the port.
   */
  evtchnAllocUnbound(domid: number, remoteDom: number): number {
    const a = StructView.alloc(EVTCHN_ALLOC_UNBOUND).set('dom', domid).set('remote_dom', remoteDom);
    check(`event_channel_op(alloc_unbound, d${domid})`, this.xen.k.hypercall(__HYPERVISOR_event_channel_op, EVTCHNOP_alloc_unbound, this.xen.put(a)));
    return this.xen.get(EVTCHN_ALLOC_UNBOUND).get('port');
  }
}
