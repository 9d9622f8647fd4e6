/**
 * The hypercall table (Xen: arch/x86/hypercall.c): number -> handler, default
 * -ENOSYS. Handlers decode, validate, check privilege (xsm.ts), act, and return
 * a Xen status; guest input never throws here.
 */
import { EINVAL, ENOSYS } from '../../shared/errno.ts';
import {
  NR_hypercalls, __HYPERVISOR_console_io, __HYPERVISOR_domctl, __HYPERVISOR_memory_op, __HYPERVISOR_sched_op,
  __HYPERVISOR_sysctl, __HYPERVISOR_vcpu_op, __HYPERVISOR_xen_version, __HYPERVISOR_event_channel_op,
  __HYPERVISOR_set_timer_op,
} from '../../shared/hypercall.ts';
import type { VcpuCtx } from '../vcpu/context.ts';
import { doConsoleIo } from './console-io.ts';
import { doDomctl } from './domctl.ts';
import { doMemoryOp } from './memory-op.ts';
import { doSchedOp } from './sched-op.ts';
import { doSysctl } from './sysctl.ts';
import { doVcpuOp } from './vcpu-op.ts';
import { doXenVersion } from './xen-version.ts';
import { doEventChannelOp } from './event-channel-op.ts';
import { doSetTimerOp } from './set-timer-op.ts';
// Grant tables (hypervisor/gnttab): __HYPERVISOR_grant_table_op = 20.
import { doGrantTableOp } from '../gnttab/op.ts';
import { __HYPERVISOR_grant_table_op } from '../../shared/hypercall.ts';

/** Register arguments as the guest passed them (already checked to be integers). */
export type Handler = (ctx: VcpuCtx, a1: number, a2: number, a3: number, a4: number, a5: number) => number;

const table: Array<Handler | undefined> = new Array<Handler | undefined>(NR_hypercalls).fill(undefined);
table[__HYPERVISOR_memory_op] = doMemoryOp;
table[__HYPERVISOR_xen_version] = doXenVersion;
table[__HYPERVISOR_console_io] = doConsoleIo;
table[__HYPERVISOR_vcpu_op] = doVcpuOp;
table[__HYPERVISOR_sched_op] = doSchedOp;
table[__HYPERVISOR_sysctl] = doSysctl;
table[__HYPERVISOR_domctl] = doDomctl;
table[__HYPERVISOR_event_channel_op] = doEventChannelOp;
table[__HYPERVISOR_set_timer_op] = doSetTimerOp;
table[__HYPERVISOR_grant_table_op] = doGrantTableOp;

/** Register the handler of a hypercall number (used by later subsystems). */
export function registerHypercall(op: number, h: Handler): void {
  if (!Number.isInteger(op) || op < 0 || op >= NR_hypercalls) throw new Error(`bad hypercall number ${op}`);
  table[op] = h;
}

/**
 * A register value: guests pass JS numbers (or bigints, as 64-bit registers).
 * Registers are unsigned: a negative number is its 64-bit two's complement,
 * above 2^53 like every wider value, so it reads as MAX_SAFE_INTEGER (out of
 * range everywhere), never as a negative index or count.
 * Anything else cannot be in a register: NaN marks it so the call fails -EINVAL.
 */
function reg(x: unknown): number {
  if (typeof x === 'number') return Number.isSafeInteger(x) ? (x < 0 ? Number.MAX_SAFE_INTEGER : x + 0) : NaN;
  if (typeof x === 'bigint') {
    const u = BigInt.asUintN(64, x);
    return u <= BigInt(Number.MAX_SAFE_INTEGER) ? Number(u) : Number.MAX_SAFE_INTEGER;
  }
  if (x === undefined) return 0;
  return NaN;
}

/** Enter the hypervisor: run hypercall `op` for the calling vCPU, on this thread. */
export function doHypercall(ctx: VcpuCtx, op: unknown, a1?: unknown, a2?: unknown, a3?: unknown, a4?: unknown, a5?: unknown): number {
  const nr = reg(op);
  const h = Number.isInteger(nr) && nr >= 0 && nr < NR_hypercalls ? table[nr] : undefined;
  if (!h) return -ENOSYS;
  const r1 = reg(a1), r2 = reg(a2), r3 = reg(a3), r4 = reg(a4), r5 = reg(a5);
  if (Number.isNaN(r1) || Number.isNaN(r2) || Number.isNaN(r3) || Number.isNaN(r4) || Number.isNaN(r5)) return -EINVAL;
  return h(ctx, r1, r2, r3, r4, r5);
}
