/** do_set_timer_op (Xen: common/sched/core.c): arm or stop the caller's singleshot timer. */
import { setSingleshot } from '../timer/timers.ts';
import type { VcpuCtx } from '../vcpu/context.ts';

/** timeout: absolute system time in ns; 0 stops the timer. A past deadline fires at once. */
export function doSetTimerOp(ctx: VcpuCtx, timeout: number): number {
  setSingleshot(ctx.hv, ctx.slot, ctx.vcpu, timeout > 0 ? BigInt(timeout) : 0n);
  return 0;
}
