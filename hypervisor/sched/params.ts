/**
 * What XEN_DOMCTL_scheduler_op and XEN_DOMCTL_setvcpuaffinity set, kept in
 * shared memory: the hypercall handler (any thread) validates, stores here,
 * and posts an event; the scheduler thread applies the stored value to its
 * policy object. getinfo reads the stored value, so no hypercall waits for the
 * scheduler thread.
 *
 * Each record carries the generation of the domain slot it was written for; a
 * record from an earlier domain in a reused slot reads as "never set"
 * (defaults: weight 256, no cap, every pCPU).
 *
 * Writers hold the domain's lock; readers take it too, so weight and cap, or
 * the two masks, are never seen half-written.
 */
import { domLock, domUnlock } from '../domain.ts';
import { D, HvState, SCHED_CPUMASK_WORDS, SD, SV } from '../state.ts';
import { CSCHED_DEFAULT_WEIGHT } from './policy/credit-acct.ts';
import type { SchedParams } from './policy/types.ts';
import { SCHED_EV_AFFINITY, SCHED_EV_PARAMS, schedPost } from './ring.ts';

export const DEFAULT_PARAMS: SchedParams = Object.freeze({ weight: CSCHED_DEFAULT_WEIGHT, cap: 0 });

function generation(hv: HvState, slot: number): number {
  return Atomics.load(hv.dom, hv.d(slot, D.generation));
}

function sd(slot: number, w: number): number {
  return slot * SD.WORDS + w;
}

/** The slot's parameters as last stored for its current domain, else the defaults. */
export function storedParams(hv: HvState, slot: number): SchedParams {
  domLock(hv, slot);
  try {
    const s = hv.schedDom;
    if (s[sd(slot, SD.GEN)] !== generation(hv, slot)) return DEFAULT_PARAMS;
    return { weight: s[sd(slot, SD.WEIGHT)], cap: s[sd(slot, SD.CAP)] };
  } finally {
    domUnlock(hv, slot);
  }
}

/** Store already-validated parameters and tell the scheduler thread. */
export function storeParams(hv: HvState, slot: number, p: SchedParams): void {
  let gen: number;
  domLock(hv, slot);
  try {
    gen = generation(hv, slot);
    const s = hv.schedDom;
    s[sd(slot, SD.WEIGHT)] = p.weight;
    s[sd(slot, SD.CAP)] = p.cap;
    s[sd(slot, SD.GEN)] = gen;
  } finally {
    domUnlock(hv, slot);
  }
  schedPost(hv, SCHED_EV_PARAMS, slot, gen);
}

function sv(hv: HvState, slot: number, vcpu: number, w: number): number {
  return (slot * hv.cfg.maxVcpus + vcpu) * SV.WORDS + w;
}

function maskToCpus(words: Int32Array, at: number, nrPcpus: number): number[] {
  const out: number[] = [];
  for (let c = 0; c < nrPcpus; c++) if ((words[at + (c >>> 5)] >>> (c & 31)) & 1) out.push(c);
  return out;
}

function cpusToMask(words: Int32Array, at: number, cpus: readonly number[]): void {
  words.fill(0, at, at + SCHED_CPUMASK_WORDS);
  for (const c of cpus) words[at + (c >>> 5)] |= 1 << (c & 31);
}

export interface StoredAffinity {
  /** Hard affinity: the pCPUs the vCPU may run on. */
  readonly hard: readonly number[];
  /** Soft affinity (recorded and reported; the policies do not use it). */
  readonly soft: readonly number[];
}

/** The vCPU's affinity as last stored for its current domain, else every pCPU. */
export function storedAffinity(hv: HvState, slot: number, vcpu: number): StoredAffinity {
  const n = hv.cfg.pcpus;
  domLock(hv, slot);
  try {
    const s = hv.schedVcpu;
    if (s[sv(hv, slot, vcpu, SV.AFF_GEN)] !== generation(hv, slot)) {
      const all = Array.from({ length: n }, (_, i) => i);
      return { hard: all, soft: all };
    }
    return { hard: maskToCpus(s, sv(hv, slot, vcpu, SV.AFF_HARD), n), soft: maskToCpus(s, sv(hv, slot, vcpu, SV.AFF_SOFT), n) };
  } finally {
    domUnlock(hv, slot);
  }
}

/** Store an already-validated affinity (pCPUs of this host only) and tell the scheduler thread. */
export function storeAffinity(hv: HvState, slot: number, vcpu: number, a: StoredAffinity): void {
  let gen: number;
  domLock(hv, slot);
  try {
    gen = generation(hv, slot);
    const s = hv.schedVcpu;
    cpusToMask(s, sv(hv, slot, vcpu, SV.AFF_HARD), a.hard);
    cpusToMask(s, sv(hv, slot, vcpu, SV.AFF_SOFT), a.soft);
    s[sv(hv, slot, vcpu, SV.AFF_GEN)] = gen;
  } finally {
    domUnlock(hv, slot);
  }
  schedPost(hv, SCHED_EV_AFFINITY, slot * hv.cfg.maxVcpus + vcpu, gen);
}
