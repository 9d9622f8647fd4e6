/**
 * A rig for the scheduler core (hypervisor/sched/core.ts) on the test's own
 * thread: a real machine state (TestMachine: Dom0 and DomUs built through the
 * real hypercalls), a fake clock injected into it, a SchedCore, and fake vCPU
 * "threads" that follow the vCPU side of the token protocol (pcpu.ts) step by
 * step, as hypervisor/vcpu/runtime.ts does, without threads or waiting.
 */
import type { Logger } from '../../../shared/log.ts';
import { SchedCore } from '../../../hypervisor/sched/core.ts';
import {
  NO_PCPU, RELEASE_BLOCKED, RELEASE_PREEMPTED, pcpuClaim, pcpuGranted, pcpuHeld, pcpuPreemptRequested, pcpuRelease,
  pcpuRequest, pcpuTake, pcpuThreadExited, vcpuIndex,
} from '../../../hypervisor/sched/pcpu.ts';
import type { HostConfig } from '../../../hypervisor/config.ts';
import { D, PCPU_CLOSED, PCPU_OPEN_ANY, PCPU_OPEN_FOR } from '../../../hypervisor/state.ts';
import { TestMachine } from '../../helpers/machine.ts';

export const US = 1_000;
export const MS = 1_000_000;

/** A logger that records warnings (for the overrun reports). */
export function recordingLogger(): { log: Logger; warnings: Array<{ obj: Record<string, unknown>; msg: string }> } {
  const warnings: Array<{ obj: Record<string, unknown>; msg: string }> = [];
  const log = {
    warn: (obj: Record<string, unknown>, msg: string) => { warnings.push({ obj, msg }); },
    error: (obj: Record<string, unknown>, msg: string) => { throw new Error(`sched core error: ${msg} ${JSON.stringify(obj)}`); },
    info: () => {}, debug: () => {},
  } as unknown as Logger;
  return { log, warnings };
}

/** One vCPU "thread", driven by hand. */
export class FakeVcpu {
  /** CPU time it has had (ns of fake time while holding a pCPU). */
  ran = 0;
  private last = NO_PCPU;

  constructor(readonly rig: CoreRig, readonly slot: number, readonly vcpu = 0) {}

  get vidx(): number { return vcpuIndex(this.rig.hv, this.slot, this.vcpu); }
  get pcpu(): number { return pcpuHeld(this.rig.hv, this.slot, this.vcpu); }
  get running(): boolean { return this.pcpu !== NO_PCPU; }
  get preemptRequested(): boolean { return pcpuPreemptRequested(this.rig.hv, this.slot, this.vcpu); }

  /** Become runnable: claim an open pCPU (true) or ask for one (false). */
  wake(): boolean {
    const p = pcpuClaim(this.rig.hv, this.slot, this.vcpu, this.last);
    if (p !== NO_PCPU) {
      this.last = p;
      return true;
    }
    pcpuRequest(this.rig.hv, this.slot, this.vcpu);
    return false;
  }

  /** Take a grant if there is one. */
  take(): boolean {
    if (!pcpuGranted(this.rig.hv, this.slot, this.vcpu)) return false;
    this.last = pcpuTake(this.rig.hv, this.slot, this.vcpu);
    return true;
  }

  release(reason: number): void {
    pcpuRelease(this.rig.hv, this.slot, this.vcpu, reason);
  }

  block(): void { this.release(RELEASE_BLOCKED); }

  /** A preemption point: give the pCPU back if asked. Returns whether it did. */
  point(): boolean {
    if (!this.running || !this.preemptRequested) return false;
    this.release(RELEASE_PREEMPTED);
    return true;
  }

  exited(): void {
    pcpuThreadExited(this.rig.hv, this.slot, this.vcpu, Atomics.load(this.rig.hv.dom, this.rig.hv.d(this.slot, D.generation)));
  }
}

export class CoreRig {
  readonly m: TestMachine;
  readonly core: SchedCore;
  readonly warnings: Array<{ obj: Record<string, unknown>; msg: string }>;
  /** Fake system time, ns. */
  now = 0;

  private constructor(m: TestMachine) {
    this.m = m;
    // Inject the clock: ring timestamps, runstate times and the core all read hv.now().
    m.hv.now = () => BigInt(this.now);
    const { log, warnings } = recordingLogger();
    this.warnings = warnings;
    this.core = new SchedCore(m.hv, { log });
  }

  static create(over: Partial<HostConfig> = {}): CoreRig {
    return new CoreRig(new TestMachine({ pcpus: 2, ...over }));
  }

  get hv(): TestMachine['hv'] { return this.m.hv; }

  /** A DomU built through Dom0's real builder (paused flag cleared); its vCPU 0. */
  async domU(maxVcpus = 1): Promise<{ domid: number; slot: number; v: FakeVcpu }> {
    const { domid, slot } = await this.m.domU({ vcpus: maxVcpus });
    return { domid, slot, v: new FakeVcpu(this, slot, 0) };
  }

  /** Dom0's vCPU 0 as a fake thread. */
  dom0(): FakeVcpu {
    return new FakeVcpu(this, this.hv.domidMap[0], 0);
  }

  /** Let the scheduler thread run at the current time. */
  run(): void {
    this.core.run(BigInt(this.now));
  }

  owner(p: number): number { return Atomics.load(this.hv.pcpuOwner, p); }
  isOpen(p: number): boolean { return this.owner(p) === PCPU_OPEN_ANY; }
  isOpenFor(p: number, v: FakeVcpu): boolean { return this.owner(p) === PCPU_OPEN_FOR(v.vidx); }
  isClosed(p: number): boolean { return this.owner(p) === PCPU_CLOSED; }

  /**
   * Run `vcpus` for `durationNs` of fake time in steps of `stepNs`: every
   * holder reaches a preemption point each step; every waiter takes its grant;
   * the scheduler thread runs each step. CPU-bound: nobody blocks.
   */
  spin(vcpus: readonly FakeVcpu[], durationNs: number, stepNs = 100 * US): void {
    const end = this.now + durationNs;
    while (this.now < end) {
      this.now += stepNs;
      for (const v of vcpus) if (v.running) v.ran += stepNs;
      for (const v of vcpus) v.point();
      this.run();
      for (const v of vcpus) v.take();
    }
  }
}
