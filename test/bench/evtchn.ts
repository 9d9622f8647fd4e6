/**
 * Benchmark: event-channel round trip between two DomUs (each on its own vCPU
 * thread), receiver blocking in SCHEDOP_block, and with a bounded spin on the
 * pending bit before blocking, under credit and credit2; baselines: raw
 * Atomics.wait/notify ping-pong between two plain workers (blocking, and
 * spin-then-block) measured just before each, in the same run.
 */
import type { SchedName } from '../../hypervisor/config.ts';
import { runBenchGuests } from './boot-guest.ts';
import { rawPingPong } from './raw-atomics.ts';
import { machineLine, table, updateBenchSection } from './report.ts';

const ROUNDS = 3000;
const SPIN_US = 50;

interface Rtt { readonly medianUs: number; readonly p90Us: number }

async function guests(spinUs: number, sched: SchedName): Promise<Rtt> {
  const run = await runBenchGuests([
    { name: 'ping', kernel: 'test/bench/guests/evtchn-pingpong.ts', memoryMiB: 1, cmdline: `role=ping peer=2 rounds=${ROUNDS} spin=${spinUs}` },
    { name: 'pong', kernel: 'test/bench/guests/evtchn-pingpong.ts', memoryMiB: 1, cmdline: `role=pong peer=1 rounds=${ROUNDS} spin=${spinUs}` },
  ], { memMiB: 64, pcpus: 2, sched });
  const r = run.bench.find((b) => b.name === 'evtchn-pingpong');
  if (!r) throw new Error(`ping-pong guests reported nothing:\n${run.log}`);
  return { medianUs: Number(r.medianUs), p90Us: Number(r.p90Us) };
}

export async function benchEvtchn(): Promise<string> {
  const f = (x: number): string => `${x.toFixed(1)} µs`;
  const rows: Array<Array<string>> = [];
  const ratios: Record<string, number> = {};
  for (const sched of ['credit', 'credit2'] as const) {
    for (const spin of [0, SPIN_US]) {
      const raw = await rawPingPong(ROUNDS, spin * 1000);
      const ev = await guests(spin, sched);
      const ratio = ev.medianUs / raw.medianUs;
      ratios[`${sched}/${spin}`] = ratio;
      rows.push([sched, spin === 0 ? 'block' : `spin ${spin} µs, then block`, f(ev.medianUs), f(ev.p90Us), f(raw.medianUs), f(raw.p90Us), `${ratio.toFixed(2)}x`]);
    }
  }
  const block = ratios['credit/0'];
  const md = `## Event-channel round trip between two DomUs

${machineLine()}. ${ROUNDS} round trips: DomU 1 sends on an interdomain channel,
DomU 2 (its own vCPU thread) wakes, answers with a send, DomU 1 wakes. Each side
waits in SCHEDOP_block (giving its pCPU back), or first spins up to ${SPIN_US} µs
on its pending bit; host with 2 pCPUs, under the credit (default) and credit2
schedulers. Baseline: two plain workers doing the same over one
SharedArrayBuffer word with Atomics.wait/notify (blocking, or spinning the same
bound first), measured just before each row, same run. Target: blocking round
trip within 1.2x of the raw one.

${table(['scheduler', 'mode', 'event channel median', 'p90', 'raw Atomics median (baseline)', 'p90', 'ratio'], rows)}

Target ${block <= 1.2 ? 'met' : 'NOT met'} (credit, blocking: ${block.toFixed(2)}x). Under credit, the
spinning side rarely sees the answer within its window: the idle-pCPU claims and
credit's placement of the two vCPUs on one run queue disagree, so one side is
asked to give its pCPU back and both fall back to blocking; credit2 does not do
this (see docs/scheduling.md).`;
  updateBenchSection('evtchn-pingpong', md);
  return md;
}
