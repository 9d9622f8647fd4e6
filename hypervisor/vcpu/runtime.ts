/**
 * The "CPU" of a PV TypeScript vCPU: trusted code on the vCPU's thread that
 * waits to be scheduled, loads the guest kernel named by the image header at the
 * context's entry address, hands it its capabilities, and turns every hypercall
 * into a synchronous call into the hypervisor on this same thread, with a
 * preemption point on the way in and out.
 */
import path from 'node:path';
import { pathToFileURL, fileURLToPath } from 'node:url';
import type { HostServices, HypercallFn, KernelApi, KernelEntry, Reg } from '../../shared/guest/api.ts';
import { decodeKernelImage } from '../../shared/guest/image.ts';
import { RUNSTATE_blocked, RUNSTATE_offline, RUNSTATE_runnable, RUNSTATE_running } from '../../shared/hypercall.ts';
import { logger, RateLimiter, limitedWarn } from '../../shared/log.ts';
import { PAGE_SIZE } from '../../shared/types.ts';
import { domainCrash, domidOfSlot, runstateChange } from '../domain.ts';
import { copyFromGuest } from '../mm/p2m.ts';
import type { PlatformPort } from '../platform-port.ts';
import {
  NO_PCPU, RELEASE_BLOCKED, RELEASE_OFFLINE, RELEASE_PREEMPTED, RELEASE_YIELD, pcpuClaim, pcpuGranted, pcpuHeld,
  pcpuPreemptRequested, pcpuRelease, pcpuRequest, pcpuTake,
} from '../sched/pcpu.ts';
import { D, G, HvState, V, VPF_down, VPF_initialised, VPF_killed, VPF_shutdown, DOMSTATE_ACTIVE } from '../state.ts';
import { doHypercall } from '../hypercall/table.ts';
import { VcpuCtx, type SchedHooks } from './context.ts';
import { makeGuestMemory } from './guest-memory.ts';
import { dmaRunQueued } from './dma-jobs.ts';
import { makeHostDma } from './host-dma.ts';

/** The project root: kernel paths in images are relative to it. */
export const PROJECT_ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');

const log = logger('vcpu');
const limiter = new RateLimiter(5, 10);

/** Thrown through guest code to leave it when the domain is destroyed (caught by the runtime only). */
class VcpuExit extends Error {}

export interface VcpuRuntimeOptions {
  readonly hv: HvState;
  readonly slot: number;
  readonly vcpu: number;
  readonly port: PlatformPort;
  /** End this thread now (worker: process.exit). */
  readonly exitThread: () => never;
}

export class VcpuRuntime implements SchedHooks {
  readonly ctx: VcpuCtx;
  private readonly hv: HvState;
  private readonly slot: number;
  private readonly vcpu: number;
  private readonly wakeIdx: number;
  private readonly flagsIdx: number;
  /** The pCPU this vCPU last ran on: the first one it tries to claim when it wakes. */
  private lastPcpu = NO_PCPU;

  constructor(private readonly o: VcpuRuntimeOptions) {
    this.hv = o.hv;
    this.slot = o.slot;
    this.vcpu = o.vcpu;
    this.wakeIdx = o.hv.v(o.slot, o.vcpu, V.wake);
    this.flagsIdx = o.hv.v(o.slot, o.vcpu, V.pause_flags);
    this.ctx = new VcpuCtx(o.hv, o.slot, o.vcpu, o.port, this);
  }

  private flags(): number { return Atomics.load(this.hv.vcpu, this.flagsIdx); }
  private killed = (): boolean => (this.flags() & VPF_killed) !== 0 || Atomics.load(this.hv.g, G.HALT) !== 0;

  /**
   * Sleep on the futex word until `ready()` holds (true) or system time passes
   * `deadline` (false; 0n waits for ever). Leaves the thread if the domain is killed.
   */
  private waitUntil(ready: () => boolean, deadline = 0n): boolean {
    for (;;) {
      const gen = Atomics.load(this.hv.vcpu, this.wakeIdx);
      if (this.killed()) this.exit();
      if (ready()) return true;
      let ms = 1000;
      if (deadline > 0n) {
        const left = Number(deadline - this.hv.now()) / 1e6;
        if (left <= 0) return false;
        ms = Math.min(ms, left);
      }
      Atomics.wait(this.hv.vcpu, this.wakeIdx, gen, ms);
    }
  }

  private runnable = (): boolean => {
    const f = this.flags();
    return (f & VPF_initialised) !== 0 && (f & (VPF_down | VPF_shutdown)) === 0 &&
      Atomics.load(this.hv.dom, this.hv.d(this.slot, D.pause_count)) === 0 &&
      Atomics.load(this.hv.dom, this.hv.d(this.slot, D.state)) === DOMSTATE_ACTIVE;
  };

  /**
   * Get a pCPU: wait to be runnable (offline meanwhile), ask the scheduler,
   * wait for its grant. Leaves the thread if the domain is killed meanwhile.
   */
  private acquire(): void {
    if (!this.runnable()) {
      runstateChange(this.hv, this.slot, this.vcpu, RUNSTATE_offline);
      this.waitUntil(this.runnable);
    }
    runstateChange(this.hv, this.slot, this.vcpu, RUNSTATE_runnable);
    const p = pcpuClaim(this.hv, this.slot, this.vcpu, this.lastPcpu);
    if (p === NO_PCPU) {
      pcpuRequest(this.hv, this.slot, this.vcpu);
      this.resume();
      return;
    }
    this.lastPcpu = p;
    runstateChange(this.hv, this.slot, this.vcpu, RUNSTATE_running);
  }

  /**
   * Runnable, holding no pCPU, and known to the scheduler as runnable (it
   * asked, or it was preempted or yielded): wait for the grant and take it.
   * A grant that comes after the vCPU stopped being runnable, or together
   * with a request to give it back, is given back at once.
   */
  private resume(): void {
    const { hv, slot, vcpu } = this;
    for (;;) {
      this.waitUntil(() => pcpuGranted(hv, slot, vcpu));
      this.lastPcpu = pcpuTake(hv, slot, vcpu);
      if (!this.runnable()) {
        this.giveBack(RUNSTATE_offline, RELEASE_OFFLINE);
        this.acquire();
        return;
      }
      if (!pcpuPreemptRequested(hv, slot, vcpu)) break;
      this.giveBack(RUNSTATE_runnable, RELEASE_PREEMPTED);
    }
    runstateChange(hv, slot, vcpu, RUNSTATE_running);
  }

  /** Stop running: runstate `state` from now, and the pCPU goes back to the scheduler (RELEASE_*). */
  private giveBack(state: number, reason: number): void {
    runstateChange(this.hv, this.slot, this.vcpu, state);
    pcpuRelease(this.hv, this.slot, this.vcpu, reason);
  }

  /** Leave the guest for good: release the pCPU and end the thread. */
  exit(): never {
    if (pcpuHeld(this.hv, this.slot, this.vcpu) !== NO_PCPU) this.giveBack(RUNSTATE_offline, RELEASE_OFFLINE);
    // Ends the thread at once, whatever guest frames are on the stack.
    this.o.exitThread();
    throw new VcpuExit();
  }

  /**
   * A preemption point (every hypercall, on the way in and out, and
   * KernelApi.preempt()): honour kill, shutdown, pause, down, and the
   * scheduler's request for the pCPU. Costs a few atomic loads when there is
   * nothing to do.
   */
  preemptionPoint(): void {
    if (this.killed()) this.exit();
    if (!this.runnable()) {
      if (this.flags() & VPF_shutdown) this.park();
      this.giveBack(RUNSTATE_offline, RELEASE_OFFLINE);
      this.acquire();
      return;
    }
    if (pcpuPreemptRequested(this.hv, this.slot, this.vcpu)) {
      this.giveBack(RUNSTATE_runnable, RELEASE_PREEMPTED);
      this.resume();
    }
  }

  /**
   * KernelApi.preempt(): a preemption point, where a kernel that spins (a
   * frontend polling its ring, Dom0's loop) also runs a queued host DMA job,
   * as Xen runs softirq work where a CPU finds time (dma-jobs.ts). One atomic
   * load when none is queued.
   */
  private explicitPreemptionPoint(): void {
    this.preemptionPoint();
    if (Atomics.load(this.hv.g, G.DMA_QUEUED) > 0) dmaRunQueued(this.hv, this.slot, this.vcpu);
  }

  // SchedHooks: called by hypercall handlers on this thread.

  yield(): void {
    this.giveBack(RUNSTATE_runnable, RELEASE_YIELD);
    this.resume();
  }

  block(wakeup: () => boolean, deadline = 0n): boolean {
    if (wakeup()) return true;
    this.giveBack(RUNSTATE_blocked, RELEASE_BLOCKED);
    const woke = this.waitUntil(() => wakeup() && this.runnable(), deadline);
    this.acquire();
    return woke;
  }

  park(): void {
    this.giveBack(RUNSTATE_offline, RELEASE_OFFLINE);
    this.waitUntil(() => false);
  }

  /** The hypercall function given to the guest. */
  private hypercallFn(): HypercallFn {
    const ctx = this.ctx;
    return (op: number, a1?: Reg, a2?: Reg, a3?: Reg, a4?: Reg, a5?: Reg): number => {
      this.preemptionPoint();
      const rc = doHypercall(ctx, op, a1, a2, a3, a4, a5);
      this.preemptionPoint();
      return rc;
    };
  }

  private hostServices(): HostServices {
    const off = async <T>(p: Promise<T>): Promise<T> => {
      this.giveBack(RUNSTATE_blocked, RELEASE_BLOCKED);
      try {
        return await p;
      } finally {
        if (this.killed()) this.exit();
        this.acquire();
      }
    };
    return Object.freeze({
      sleep: (ms: number) => off(new Promise<void>((r) => setTimeout(r, ms))),
      wait: <T>(p: Promise<T>) => off(p),
      dma: makeHostDma(this.hv, this.slot),
    });
  }

  private crash(why: string): void {
    limitedWarn(limiter, log, `d${domidOfSlot(this.hv, this.slot)}`, { domid: domidOfSlot(this.hv, this.slot), vcpu: this.vcpu }, `domain crashed: ${why}`);
    domainCrash(this.hv, this.slot, why, this.o.port);
  }

  /** Resolve and import the kernel the image header names; null (and the domain crashed) if impossible. */
  private async loadKernel(): Promise<KernelEntry | null> {
    const entry = Atomics.load(this.hv.vcpu, this.hv.v(this.slot, this.vcpu, V.entry_gpa)) >>> 0;
    const page = copyFromGuest(this.hv, this.slot, entry, PAGE_SIZE);
    const rel = page ? decodeKernelImage(page) : null;
    if (!rel) {
      this.crash(`no kernel image at gpa 0x${entry.toString(16)}`);
      return null;
    }
    const file = path.resolve(PROJECT_ROOT, rel);
    try {
      const mod = (await import(pathToFileURL(file).href)) as { default?: unknown };
      if (typeof mod.default !== 'function') {
        this.crash(`kernel ${rel} has no default export function`);
        return null;
      }
      return mod.default as KernelEntry;
    } catch (e) {
      this.crash(`cannot load kernel ${rel}: ${e instanceof Error ? e.message : String(e)}`);
      return null;
    }
  }

  /** Run the vCPU: wait to be runnable, load the kernel, run it. Resolves when the thread should end. */
  async run(): Promise<void> {
    try {
      this.waitUntil(this.runnable);
      this.acquire();
      const kernel = await this.loadKernel();
      if (!kernel) this.park();
      const privileged = (Atomics.load(this.hv.dom, this.hv.d(this.slot, D.flags)) & 1) !== 0;
      const api: KernelApi = Object.freeze({
        hypercall: this.hypercallFn(),
        rdtsc: () => this.hv.now(),
        preempt: () => this.explicitPreemptionPoint(),
        mem: makeGuestMemory(this.hv, this.slot),
        startInfo: Atomics.load(this.hv.vcpu, this.hv.v(this.slot, this.vcpu, V.arg0_gpa)) >>> 0,
        vcpuId: this.vcpu,
        host: privileged ? this.hostServices() : undefined,
      });
      try {
        await kernel!(api);
      } catch (e) {
        if (e instanceof VcpuExit) throw e;
        this.crash(`guest kernel threw: ${e instanceof Error ? `${e.name}: ${e.message}` : String(e)}`);
        this.park();
      }
      // The kernel returned without SCHEDOP_shutdown: this vCPU goes offline; the
      // last one to do so takes the domain down, as a real kernel returning would.
      Atomics.or(this.hv.vcpu, this.flagsIdx, VPF_down);
      if (!this.anyVcpuUp()) this.crash('kernel returned without SCHEDOP_shutdown');
      this.park();
    } catch (e) {
      if (!(e instanceof VcpuExit)) throw e;
    }
  }

  private anyVcpuUp(): boolean {
    const max = Atomics.load(this.hv.dom, this.hv.d(this.slot, D.max_vcpus));
    for (let v = 0; v < max; v++) {
      if (!(Atomics.load(this.hv.vcpu, this.hv.v(this.slot, v, V.pause_flags)) & VPF_down)) return true;
    }
    return false;
  }
}
