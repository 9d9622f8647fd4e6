/**
 * The hypervisor's view of the vCPU making a hypercall ("current"), and what a
 * handler needs: guest memory copies, the platform port, the scheduler hooks.
 * One per vCPU thread; trusted code only.
 */
import type { Fields, Layout } from '../../shared/layout.ts';
import { StructView } from '../../shared/layout.ts';
import { GuestConsoleLine } from '../console.ts';
import { copyFromGuest, copyToGuest } from '../mm/p2m.ts';
import type { PlatformPort } from '../platform-port.ts';
import { D, DOMF_privileged, HvState } from '../state.ts';

/** What the running vCPU does when a hypercall must block, yield or park. */
export interface SchedHooks {
  /** SCHEDOP_yield. */
  yield(): void;
  /**
   * SCHEDOP_block / SCHEDOP_poll: sleep until `wakeup()` holds (checked after
   * every kick; at once if it already holds) or system time reaches `deadline`
   * (ns, 0n for none). Returns whether `wakeup()` held.
   */
  block(wakeup: () => boolean, deadline?: bigint): boolean;
  /** The domain shut down: never return to the guest (a test may return). */
  park(): void;
}

export class VcpuCtx {
  readonly console: GuestConsoleLine;

  constructor(
    readonly hv: HvState,
    readonly slot: number,
    readonly vcpu: number,
    readonly port: PlatformPort,
    readonly sched: SchedHooks,
  ) {
    this.console = new GuestConsoleLine(hv, this.domid, this.domid === 0);
  }

  get domid(): number {
    return Atomics.load(this.hv.dom, this.hv.d(this.slot, D.domid));
  }

  get privileged(): boolean {
    return (Atomics.load(this.hv.dom, this.hv.d(this.slot, D.flags)) & DOMF_privileged) !== 0;
  }

  copyFrom(gpa: number, len: number): Uint8Array | null {
    return copyFromGuest(this.hv, this.slot, gpa, len);
  }

  copyTo(gpa: number, data: Uint8Array): boolean {
    return copyToGuest(this.hv, this.slot, gpa, data);
  }

  /** Copy a struct in from guest memory (copy, then validate): null on fault. */
  readStruct<F extends Fields>(layout: Layout<F>, gpa: number): StructView<F> | null {
    const b = this.copyFrom(gpa, layout.size);
    return b ? new StructView(layout, b) : null;
  }

  writeStruct<F extends Fields>(view: StructView<F>, gpa: number): boolean {
    return this.copyTo(gpa, view.raw());
  }
}
