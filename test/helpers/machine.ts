/**
 * A machine on the test's own thread: real shared state and real hypercall
 * handlers, with vCPU contexts for Dom0 and DomUs that the test drives directly
 * (hypercalls are synchronous calls, so no thread is needed to test policy).
 * Thread starts the hypervisor requests are recorded, not performed.
 */
import { constructDom0, initState } from '../../hypervisor/boot.ts';
import { hostConfig, type HostConfig } from '../../hypervisor/config.ts';
import { doHypercall } from '../../hypervisor/hypercall/table.ts';
import { RecordingPort } from '../../hypervisor/platform-port.ts';
import {
  HvState, D, G, OWNER_FREE, DOMSTATE_FREE, P2M_INVALID, V, VTHREAD_EXITED, VTHREAD_RUNNING, VTHREAD_STARTING,
} from '../../hypervisor/state.ts';
import { VcpuCtx, type SchedHooks } from '../../hypervisor/vcpu/context.ts';
import { makeGuestMemory } from '../../hypervisor/vcpu/guest-memory.ts';
import { makeHostDma } from '../../hypervisor/vcpu/host-dma.ts';
import { buddyFreeMap } from '../../hypervisor/mm/buddy.ts';
import { buddyOf } from '../../hypervisor/mm/frames.ts';
import type { HostDma, KernelApi, Reg } from '../../shared/guest/api.ts';
import { Xen } from '../../shared/guest/xen.ts';
import { XenCtrl } from '../../dom0/libxc.ts';
import { buildPvDomain, type PvBuildConfig } from '../../dom0/builder.ts';
import { START_INFO_GFN } from '../../shared/guest/image.ts';
import { PAGE_SIZE } from '../../shared/types.ts';
import { liveSlot, vcpuThreadExited } from '../../hypervisor/domain.ts';

/** Scheduler hooks that never sleep: they record what the vCPU asked for. */
export class RecordingSched implements SchedHooks {
  yields = 0;
  blocks = 0;
  wouldSleep = 0;
  parks = 0;
  yield(): void { this.yields++; }
  block(wakeup: () => boolean, _deadline?: bigint): boolean {
    this.blocks++;
    const w = wakeup();
    if (!w) this.wouldSleep++;
    return w;
  }
  park(): void { this.parks++; }
}

export interface TestVcpu {
  readonly ctx: VcpuCtx;
  readonly sched: RecordingSched;
  readonly api: KernelApi;
  readonly xen: Xen;
  /** Raw hypercall on this vCPU. */
  call(op: unknown, a1?: unknown, a2?: unknown, a3?: unknown, a4?: unknown, a5?: unknown): number;
}

/**
 * The platform's side of thread management, done synchronously: a requested
 * vCPU thread is recorded as started, and a kill makes it exit at once, as the
 * real platform reports a terminated worker.
 */
export class SyncPort extends RecordingPort {
  hv?: HvState;
  override killDomain(slot: number, generation: number): void {
    super.killDomain(slot, generation);
    const hv = this.hv!;
    for (let v = 0; v < hv.cfg.maxVcpus; v++) {
      const t = Atomics.load(hv.vcpu, hv.v(slot, v, V.thread));
      if (t === VTHREAD_STARTING || t === VTHREAD_RUNNING) {
        Atomics.store(hv.vcpu, hv.v(slot, v, V.thread), VTHREAD_EXITED);
        vcpuThreadExited(hv, slot, v, generation, null, this);
      }
    }
  }
}

export const TEST_CONFIG: Partial<HostConfig> = { memMiB: 16, pcpus: 2, maxDomains: 8, p2mEntries: 4096, conringSize: 4096 };

export class TestMachine {
  readonly hv: HvState;
  readonly port = new SyncPort();
  readonly dom0: TestVcpu;
  readonly ctrl: XenCtrl;
  /** Dom0's host DMA capability (what its KernelApi.host.dma is on a real vCPU thread). */
  readonly dma: HostDma;

  constructor(over: Partial<HostConfig> = {}, dom0MemMiB = 1) {
    const cfg = hostConfig({ ...TEST_CONFIG, ...over });
    this.hv = new HvState(cfg, HvState.allocate(cfg));
    this.port.hv = this.hv;
    initState(this.hv);
    const slot = constructDom0(this.hv, { kernel: 'dom0/kernel.ts', memMiB: dom0MemMiB, cmdline: '' }, this.port);
    // Dom0 is running from the test's point of view.
    Atomics.store(this.hv.dom, this.hv.d(slot, D.pause_count), 0);
    this.dom0 = this.vcpu(slot, 0);
    this.dma = makeHostDma(this.hv, slot);
    this.ctrl = new XenCtrl(this.dom0.xen);
  }

  /** A vCPU context for (slot, vcpu) whose start_info is at gfn 1. */
  vcpu(slot: number, vcpu: number): TestVcpu {
    const sched = new RecordingSched();
    const ctx = new VcpuCtx(this.hv, slot, vcpu, this.port, sched);
    const call = (op: unknown, a1?: unknown, a2?: unknown, a3?: unknown, a4?: unknown, a5?: unknown): number =>
      doHypercall(ctx, op, a1, a2, a3, a4, a5);
    const api: KernelApi = {
      hypercall: (op: number, a1?: Reg, a2?: Reg, a3?: Reg, a4?: Reg, a5?: Reg) => call(op, a1, a2, a3, a4, a5),
      mem: makeGuestMemory(this.hv, slot),
      rdtsc: () => this.hv.now(),
      startInfo: START_INFO_GFN * PAGE_SIZE,
      vcpuId: vcpu,
    };
    return { ctx, sched, api, xen: new Xen(api), call };
  }

  /** destroydomain through Dom0, failing (not spinning) if it never completes. */
  async destroy(domid: number): Promise<void> {
    let tries = 0;
    await this.ctrl.destroyDomain(domid, () => {
      if (++tries > 100) throw new Error(`destroydomain d${domid} still -EAGAIN after 100 tries`);
    });
  }

  /**
   * Build a PV domain through Dom0's real builder and return a context for its
   * vCPU 0. Without xenstore and console rings unless `c.rings` says so, so
   * that the domain's event channel ports start free (no xenstored runs here).
   */
  async domU(c: Partial<PvBuildConfig> = {}): Promise<{ domid: number; slot: number; v: TestVcpu }> {
    const domid = await buildPvDomain(this.ctrl, { name: 'test', kernel: 'domU/guests/hello.ts', memoryMiB: 1, rings: false, ...c });
    this.ctrl.unpauseDomain(domid);
    const slot = liveSlot(this.hv, domid);
    return { domid, slot, v: this.vcpu(slot, 0) };
  }

  freePages(): number {
    return Atomics.load(this.hv.g, G.FREE_PAGES);
  }

  /**
   * The frame-accounting invariant: every frame is free (on the buddy lists, no
   * owner, no references) or owned by one domain or Xen with references; each
   * domain's tot_pages equals the frames it owns; the free count matches.
   * Returns a list of violations (empty when all holds).
   */
  checkInvariants(): string[] {
    return frameInvariantViolations(this.hv);
  }
}

/** See TestMachine.checkInvariants; usable on a real platform's state too. */
export function frameInvariantViolations(hv: HvState): string[] {
  {
    const freePages = Atomics.load(hv.g, G.FREE_PAGES);
    const bad: string[] = [];
    const free = buddyFreeMap(buddyOf(hv));
    const owned = new Map<number, number>();
    let nFree = 0;
    for (let m = 0; m < hv.nrFrames; m++) {
      const o = hv.ftOwner[m];
      if (free[m]) {
        nFree++;
        if (o !== OWNER_FREE || hv.ftCount[m] !== 0) bad.push(`frame ${m} on a free list but owner ${o} count ${hv.ftCount[m]}`);
      } else if (o === OWNER_FREE) {
        bad.push(`frame ${m} neither free nor owned`);
      } else if (hv.ftCount[m] <= 0) {
        bad.push(`frame ${m} owned by ${o} with count ${hv.ftCount[m]}`);
      } else {
        owned.set(o, (owned.get(o) ?? 0) + 1);
      }
    }
    if (nFree !== freePages) bad.push(`FREE_PAGES ${freePages} but ${nFree} frames free`);
    for (let s = 0; s < hv.cfg.maxDomains; s++) {
      if (Atomics.load(hv.dom, hv.d(s, D.state)) === DOMSTATE_FREE) continue;
      const domid = hv.dom[hv.d(s, D.domid)];
      const tot = hv.dom[hv.d(s, D.tot_pages)];
      // Grant table frames are owned by the domain but counted in xenheap_pages, not tot_pages.
      const xh = hv.dom[hv.d(s, D.xenheap_pages)];
      if ((owned.get(domid) ?? 0) !== tot + xh) {
        bad.push(`d${domid}: tot_pages ${tot} + xenheap_pages ${xh} but owns ${owned.get(domid) ?? 0} frames`);
      }
      owned.delete(domid);
      // Every P2M RAM entry of a domain points at a frame that is not free.
      for (let g = 0; g < hv.cfg.p2mEntries; g++) {
        const e = hv.p2m[hv.p2mIndex(s, g)];
        if (e !== P2M_INVALID && free[e & 0x0fffffff]) bad.push(`d${domid} gfn ${g} maps free frame ${e & 0x0fffffff}`);
      }
    }
    owned.delete(0x7ff2);
    for (const [o, n] of owned) bad.push(`${n} frames owned by d${o}, which has no domain`);
    return bad;
  }
}
