/**
 * Scheduler benchmarks.
 *  - sched-sim: the policies in the deterministic simulator (hypervisor/sched/
 *    sim/harness.ts): CPU shares against the fair share by weight and cap, and
 *    wake-up latencies, computed in the same run.
 *  - sched-threads: the same policy code on real threads (the timer thread
 *    owns the policy object, one thread per vCPU): CPU shares of CPU-bound
 *    guests against the simulator's prediction for the same set-up, wake-up
 *    latency of a blocked vCPU against a raw Atomics.wait/notify hop measured in
 *    the same run, and the cost of the explicit preemption check.
 */
import os from 'node:os';
import { Worker } from 'node:worker_threads';
import { simulate, type SimDomainSpec } from '../../hypervisor/sched/sim/harness.ts';
import type { SchedName } from '../../hypervisor/config.ts';
import type { SchedGuestSpec } from '../fixtures/dom0/sched-dom0.ts';
import { rawPingPong } from './raw-atomics.ts';
import { machineLine, table, updateBenchSection } from './report.ts';
import { runSchedHost } from './sched-host.ts';

const MS = 1_000_000;
const US = 1_000;
const CPU = { kind: 'cpu' } as const;
const pct = (x: number): string => `${(x * 100).toFixed(1)}`;
const us = (ns: number): string => `${(ns / US).toFixed(0)} µs`;

// ---- simulator ----------------------------------------------------------------------

interface ShareCase {
  readonly what: string;
  readonly nrPcpus: number;
  readonly domains: readonly SimDomainSpec[];
  /** Fair share of each domain, in fractions of one pCPU. */
  readonly fair: readonly number[];
}

const SHARE_CASES: readonly ShareCase[] = [
  {
    what: 'weights 256/512/768, 1 pCPU', nrPcpus: 1, fair: [1 / 6, 2 / 6, 3 / 6],
    domains: [256, 512, 768].map((weight, i) => ({ domid: i + 1, weight, vcpus: [{ workload: CPU }] })),
  },
  {
    what: 'weights 256/512/768/1024, 2 pCPUs', nrPcpus: 2, fair: [0.2, 0.4, 0.6, 0.8],
    domains: [256, 512, 768, 1024].map((weight, i) => ({ domid: i + 1, weight, vcpus: [{ workload: CPU }] })),
  },
  {
    what: 'cap 25 next to an uncapped CPU-bound vCPU, 1 pCPU', nrPcpus: 1, fair: [0.25, 0.75],
    domains: [{ domid: 1, cap: 25, vcpus: [{ workload: CPU }] }, { domid: 2, vcpus: [{ workload: CPU }] }],
  },
  {
    what: 'cap 150, 2 vCPUs on 2 pCPUs (domain total)', nrPcpus: 2, fair: [1.5],
    domains: [{ domid: 1, cap: 150, vcpus: [{ workload: CPU }, { workload: CPU }] }],
  },
  {
    what: 'block-before-tick attacker vs a CPU-bound vCPU, 1 pCPU', nrPcpus: 1, fair: [0.5, 0.5],
    domains: [
      { domid: 1, vcpus: [{ workload: { kind: 'attacker', mode: 'block', guardNs: 50 * US, wakeDelayNs: 50 * US } }] },
      { domid: 2, vcpus: [{ workload: CPU }] },
    ],
  },
  {
    what: 'weights 256/512 pinned to pCPU 1 of 2 (the real-thread set-up)', nrPcpus: 2, fair: [1 / 3, 2 / 3],
    domains: [256, 512].map((weight, i) => ({ domid: i + 1, weight, vcpus: [{ workload: CPU, affinity: [1] }] })),
  },
];

interface LatencyCase {
  readonly what: string;
  readonly runNs: number;
  readonly blockNs: number;
}

const LATENCY_CASES: readonly LatencyCase[] = [
  { what: 'I/O vCPU (200 µs run, 600 µs block) + CPU-bound vCPU, 1 pCPU', runNs: 200 * US, blockNs: 600 * US },
  { what: 'I/O vCPU (20 µs run, 750 µs block) + CPU-bound vCPU, 1 pCPU', runNs: 20 * US, blockNs: 750 * US },
  { what: 'I/O vCPU (20 µs run, 2.25 ms block) + CPU-bound vCPU, 1 pCPU', runNs: 20 * US, blockNs: 2250 * US },
];

const SIM = { durationNs: 10_000 * MS, warmupNs: 200 * MS };

function simShares(c: ShareCase, scheduler: SchedName): number[] {
  const r = simulate({ scheduler, nrPcpus: c.nrPcpus, ...SIM, domains: c.domains });
  return r.domains.map((d) => d.share);
}

function simLatency(c: LatencyCase, scheduler: SchedName): { meanNs: number; maxNs: number; ioShare: number } {
  const r = simulate({
    scheduler, nrPcpus: 1, ...SIM,
    domains: [{ domid: 1, vcpus: [{ workload: { kind: 'io', runNs: c.runNs, blockNs: c.blockNs } }] }, { domid: 2, vcpus: [{ workload: CPU }] }],
  });
  const v = r.vcpus[0];
  return { meanNs: v.wakeLatency.meanNs, maxNs: v.wakeLatency.maxNs, ioShare: v.share };
}

export function benchSchedSim(): string {
  const shareRows = SHARE_CASES.map((c) => {
    const cr = simShares(c, 'credit');
    const c2 = simShares(c, 'credit2');
    const worst = (xs: number[]): number => Math.max(...xs.map((x, i) => Math.abs(x - c.fair[i])));
    return [c.what, c.fair.map(pct).join(' / '), cr.map(pct).join(' / '), c2.map(pct).join(' / '),
      `${pct(worst(cr))} / ${pct(worst(c2))}`];
  });
  const latRows = LATENCY_CASES.map((c) => {
    const cr = simLatency(c, 'credit');
    const c2 = simLatency(c, 'credit2');
    return [c.what, `${us(cr.meanNs)} / ${us(cr.maxNs)}`, `${us(c2.meanNs)} / ${us(c2.maxNs)}`];
  });
  const md = `## Scheduler policies in the simulator

${machineLine()}. \`hypervisor/sched/sim/harness.ts\` runs the policy objects
on a virtual clock (${SIM.durationNs / 1e9} s, the first ${SIM.warmupNs / MS} ms not counted);
the baseline is the fair share by weight and cap, computed for the same
scenario. Shares in % of one pCPU, per domain.

${table(['scenario', 'fair (baseline)', 'credit', 'credit2', 'worst miss, points (credit / credit2)'], shareRows)}

Wake-up latency of the I/O vCPU: from its wake-up to the moment it runs, mean /
max. Both policies keep a vCPU that has run less than the 1 ms rate limit, so a
waker can wait up to 1 ms; past it, a vCPU that still has credit preempts at
once. Target: max at most the 1 ms rate limit.

${table(['scenario', 'credit mean / max', 'credit2 mean / max'], latRows)}`;
  updateBenchSection('sched-sim', md);
  return md;
}

// ---- real threads ----------------------------------------------------------------

/**
 * The baseline for a wake-up after a pause: two plain workers; every ~period
 * (half to one period, as the latency guest) one writes the time and
 * Atomics.notify()s the other, which is asleep in Atomics.wait and records how
 * long it took to run again. Returns µs (median, p90).
 */
export async function rawWakeAfterPause(rounds: number, periodUs: number): Promise<{ medianUs: number; p90Us: number }> {
  const code = `
const { workerData, parentPort } = require('node:worker_threads');
const w = new Int32Array(workerData.sab, 0, 4);
const t = new BigInt64Array(workerData.sab, 16, 1);
if (workerData.role === 'sleeper') {
  const lat = [];
  for (let i = 1; i <= workerData.rounds; i++) {
    while (Atomics.load(w, 0) < i) Atomics.wait(w, 0, i - 1);
    lat.push(Number(process.hrtime.bigint() - t[0]) / 1000);
    Atomics.store(w, 1, i);
  }
  parentPort.postMessage(lat);
} else {
  const nap = new Int32Array(new SharedArrayBuffer(4));
  for (let i = 1; i <= workerData.rounds; i++) {
    while (Atomics.load(w, 1) < i - 1) Atomics.wait(nap, 0, 0, 0.1);
    Atomics.wait(nap, 0, 0, (workerData.periodUs / 2 + Math.random() * workerData.periodUs / 2) / 1000);
    t[0] = process.hrtime.bigint();
    Atomics.store(w, 0, i);
    Atomics.notify(w, 0);
  }
}`;
  const sab = new SharedArrayBuffer(32);
  const sleeper = new Worker(code, { eval: true, workerData: { sab, rounds, periodUs, role: 'sleeper' } });
  const waker = new Worker(code, { eval: true, workerData: { sab, rounds, periodUs, role: 'waker' } });
  const lat = await new Promise<number[]>((res, rej) => { sleeper.once('message', res); sleeper.once('error', rej); });
  await Promise.all([sleeper.terminate(), waker.terminate()]);
  lat.sort((a, b) => a - b);
  return { medianUs: lat[Math.floor(lat.length / 2)], p90Us: lat[Math.floor(lat.length * 0.9)] };
}

const HOG = 'test/fixtures/guests/cpu-hog.ts';
const LAT = 'test/fixtures/guests/sched-latency.ts';
const WINDOW_MS = 3000;

interface ThreadShareCase {
  readonly what: string;
  readonly sched: SchedName;
  readonly pinned: boolean;
}

const THREAD_SHARE_CASES: readonly ThreadShareCase[] = [
  { what: 'credit, 1 pCPU shared with Dom0', sched: 'credit', pinned: false },
  { what: 'credit2, 1 pCPU shared with Dom0', sched: 'credit2', pinned: false },
  { what: 'credit2, both pinned to pCPU 1 of 2, Dom0 on pCPU 0', sched: 'credit2', pinned: true },
  { what: 'credit, both pinned to pCPU 1 of 2, Dom0 on pCPU 0', sched: 'credit', pinned: true },
];

async function threadShares(c: ThreadShareCase): Promise<{ light: number; heavy: number }> {
  const cpus = c.pinned ? [1] : undefined;
  const run = await runSchedHost({
    dom0Cpus: c.pinned ? [0] : undefined, leadMs: 600, windowMs: WINDOW_MS,
    guests: [
      { name: 'w256', kernel: HOG, memoryMiB: 1, weight: 256, cpus },
      { name: 'w512', kernel: HOG, memoryMiB: 1, weight: 512, cpus },
    ],
  }, { pcpus: c.pinned ? 2 : 1, sched: c.sched });
  const by = new Map(run.lines.filter((l) => l.name === 'SCHEDHOG').map((l) => [l.data.tag, Number(l.data.cpuNs) / (WINDOW_MS * MS)]));
  return { light: by.get('w256') ?? NaN, heavy: by.get('w512') ?? NaN };
}

/** The simulator's shares for the same set-up (Dom0 as a vCPU that runs 0.5 ms every 20 ms). */
function predictedShares(c: ThreadShareCase): { light: number; heavy: number } {
  const nr = c.pinned ? 2 : 1;
  const r = simulate({
    scheduler: c.sched, nrPcpus: nr, ...SIM, domains: [
      { domid: 0, vcpus: [{ workload: { kind: 'io', runNs: 500 * US, blockNs: 20 * MS }, affinity: [0] }] },
      { domid: 1, weight: 256, vcpus: [{ workload: CPU, affinity: [nr - 1] }] },
      { domid: 2, weight: 512, vcpus: [{ workload: CPU, affinity: [nr - 1] }] },
    ],
  });
  return { light: r.vcpus[1].share, heavy: r.vcpus[2].share };
}

interface LatCase {
  readonly what: string;
  readonly sched: SchedName;
  readonly hog: boolean;
  readonly periodUs: number;
}

const LAT_CASES: readonly LatCase[] = [
  { what: 'credit, idle pCPU', sched: 'credit', hog: false, periodUs: 1000 },
  { what: 'credit2, idle pCPU', sched: 'credit2', hog: false, periodUs: 1000 },
  { what: 'null, idle pCPU', sched: 'null', hog: false, periodUs: 1000 },
  { what: 'credit, CPU-bound vCPU on the pCPU, woken every 3 ms', sched: 'credit', hog: true, periodUs: 3000 },
  { what: 'credit2, CPU-bound vCPU on the pCPU, woken every 3 ms', sched: 'credit2', hog: true, periodUs: 3000 },
  { what: 'credit, CPU-bound vCPU on the pCPU, woken every ~1 ms', sched: 'credit', hog: true, periodUs: 1000 },
  { what: 'credit2, CPU-bound vCPU on the pCPU, woken every ~1 ms', sched: 'credit2', hog: true, periodUs: 1000 },
];

const LAT_ROUNDS = 800;

interface LatResult {
  readonly medianUs: number;
  readonly sendUs: number;
  readonly p90Us: number;
  readonly p99Us: number;
  readonly preemptNs: number;
  readonly plainNs: number;
  readonly claims: number;
  readonly grants: number;
}

async function latency(c: LatCase): Promise<LatResult> {
  // The sender (vCPU 0) and Dom0 on pCPU 0; the woken vCPU (vCPU 1), and the hog if any, on pCPU 1.
  // null gives each vCPU a pCPU for good: three pCPUs, no pinning.
  const nul = c.sched === 'null';
  const guests: SchedGuestSpec[] = [{
    name: 'lat', kernel: LAT, memoryMiB: 1, vcpus: 2, cmdline: `rounds=${LAT_ROUNDS} periodUs=${c.periodUs}`,
    cpus: nul ? undefined : [0], moreCpus: nul ? undefined : [[1]],
  }];
  if (c.hog) guests.push({ name: 'hog', kernel: HOG, memoryMiB: 1, cpus: [1] });
  const run = await runSchedHost({ dom0Cpus: nul ? undefined : [0], leadMs: 300, windowMs: (LAT_ROUNDS * c.periodUs) / 1000 + 2000, guests },
    { pcpus: nul ? 3 : 2, sched: c.sched }, 120_000);
  const l = run.lines.find((x) => x.name === 'SCHEDLAT');
  if (!l) throw new Error(`latency guest reported nothing:\n${run.log}`);
  return {
    medianUs: Number(l.data.medianUs), sendUs: Number(l.data.sendUs), p90Us: Number(l.data.p90Us), p99Us: Number(l.data.p99Us),
    preemptNs: Number(l.data.preemptNs), plainNs: Number(l.data.plainNs), claims: run.stats.claims, grants: run.stats.grants,
  };
}

export async function benchSchedThreads(): Promise<string> {
  const load = os.loadavg()[0];
  const raw = await rawPingPong(3000);
  const rawPause = await rawWakeAfterPause(LAT_ROUNDS, 1000);
  const shareRows: string[][] = [];
  for (const c of THREAD_SHARE_CASES) {
    const got = await threadShares(c);
    const want = predictedShares(c);
    shareRows.push([c.what, `${pct(want.light)} / ${pct(want.heavy)}`, `${(want.heavy / want.light).toFixed(2)}`,
      `${pct(got.light)} / ${pct(got.heavy)}`, `${(got.heavy / got.light).toFixed(2)}`]);
  }
  const latRows: string[][] = [];
  let preempt = { ns: 0, plain: 0 };
  for (const c of LAT_CASES) {
    const r = await latency(c);
    if (!c.hog && c.sched === 'credit') preempt = { ns: r.preemptNs, plain: r.plainNs };
    // The sender waits 0.5 to 1 period between sends: model the mean gap.
    const sim = c.hog ? simLatency({ what: '', runNs: 20 * US, blockNs: 0.75 * c.periodUs * US }, c.sched) : null;
    latRows.push([c.what, `${r.medianUs.toFixed(1)} µs`, `${r.sendUs.toFixed(1)} µs`, `${r.p90Us.toFixed(1)} µs`, `${r.p99Us.toFixed(0)} µs`,
      sim ? `${us(sim.meanNs)} / ${us(sim.maxNs)}` : '0 / 0', `${r.claims} / ${r.grants}`]);
  }
  const hop = raw.medianUs / 2;
  const md = `## Scheduler on real threads

${machineLine()}, load average ${load.toFixed(1)} at the start (real
threads share the machine's cores with whatever else runs: the figures below
move with the load). The policy objects run on the timer thread; each vCPU is
a thread that runs only while it holds a pCPU token.

**CPU shares.** Two CPU-bound guests (\`test/fixtures/guests/cpu-hog.ts\`,
a preemption check every few µs), weights 256 and 512, share one pCPU for
${WINDOW_MS / 1000} s; each measures its own CPU time with
VCPUOP_get_runstate_info. Baseline: the simulator's shares for the same set-up
(same policy code, Dom0 modelled as 0.5 ms of work every 20 ms), same run. In %
of one pCPU, w256 / w512.

${table(['set-up', 'simulator (baseline)', 'ratio', 'real threads', 'ratio'], shareRows)}

credit shares credit out over the whole host: with both guests pinned to one
pCPU while the other is nearly idle, both have credit to spare and take turns,
in the simulator as on threads (and in Xen). Use credit2 for weights among
pinned vCPUs.

**Wake-up latency.** A two-vCPU guest (\`test/fixtures/guests/sched-latency.ts\`):
vCPU 0 sends an event-channel IPI to vCPU 1, which waits in SCHEDOP_block on
its own pCPU, ${LAT_ROUNDS} times (the first 10 not counted: vCPU 1 is starting);
latency is from the send to vCPU 1 running guest code again. Baselines, same run, two plain workers: a raw cross-thread
wake-up after a pause like the guest's (one sleeps in Atomics.wait, the other
notifies it every 0.5 to 1 ms), **${rawPause.medianUs.toFixed(1)} µs** median (p90
${rawPause.p90Us.toFixed(1)} µs); and half a back-to-back Atomics.wait/notify
round trip (threads kept hot), ${hop.toFixed(1)} µs (round trip median
${raw.medianUs.toFixed(1)} µs). "Simulator" is the policy's own delay for the same
pattern (an I/O vCPU with 20 µs of work per wake-up next to a CPU-bound one),
mean / max. "claims / grants": wake-ups that took an idle pCPU themselves (no
scheduler round trip) / pCPUs handed out by the scheduler thread.

${table(['case', 'median', 'of which the send hypercall (median)', 'p90', 'p99', 'simulator mean / max', 'claims / grants'], latRows)}

On an idle pCPU a wake-up costs the sender's hypercall (the event is set
pending and vCPU 1's thread kicked inside it; after the sender's own sleep its
code and caches are cold), one cross-thread wake-up, and the woken thread's
way back to guest code; the scheduler's part, claiming the pCPU and updating
the runstate, measured at about 6 µs of it. Next to a CPU-bound vCPU it takes the scheduler thread: the waker's
WAKE, a preemption request the CPU-bound vCPU honours at its next preemption
point, its RELEASE, the grant; and the policy's 1 ms rate limit (woken every
~1 ms, the CPU-bound vCPU has usually run less than that since it got the
pCPU back, so the waker waits for the rest, as the simulator says).

**The explicit preemption check.** \`KernelApi.preempt()\` with nothing
pending: **${preempt.ns.toFixed(0)} ns** a call, against ${preempt.plain.toFixed(0)} ns
for a plain function call in the same loop (baseline).`;
  updateBenchSection('sched-threads', md);
  return md;
}
