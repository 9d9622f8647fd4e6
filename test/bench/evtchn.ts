/**
 * Benchmark: event-channel round trip between two DomUs (each on its own vCPU
 * thread), receiver blocking in SCHEDOP_block, and with a bounded spin on the
 * pending bit before blocking; baselines: raw Atomics.wait/notify ping-pong
 * between two plain workers (blocking, and spin-then-block) in the same run.
 */
import { runBenchGuests } from './boot-guest.ts';
import { rawPingPong } from './raw-atomics.ts';
import { machineLine, table, updateBenchSection } from './report.ts';

const ROUNDS = 3000;
const SPIN_US = 50;

async function guests(spinUs: number): Promise<{ medianUs: number; p90Us: number }> {
  const run = await runBenchGuests([
    { name: 'ping', kernel: 'test/bench/guests/evtchn-pingpong.ts', memoryMiB: 1, cmdline: `role=ping peer=2 rounds=${ROUNDS} spin=${spinUs}` },
    { name: 'pong', kernel: 'test/bench/guests/evtchn-pingpong.ts', memoryMiB: 1, cmdline: `role=pong peer=1 rounds=${ROUNDS} spin=${spinUs}` },
  ], { memMiB: 64, pcpus: 2 });
  const r = run.bench.find((b) => b.name === 'evtchn-pingpong');
  if (!r) throw new Error(`ping-pong guests reported nothing:\n${run.log}`);
  return { medianUs: Number(r.medianUs), p90Us: Number(r.p90Us) };
}

export async function benchEvtchn(): Promise<string> {
  const rawBlock = await rawPingPong(ROUNDS);
  const evBlock = await guests(0);
  const rawSpin = await rawPingPong(ROUNDS, SPIN_US * 1000);
  const evSpin = await guests(SPIN_US);
  const ratio = evBlock.medianUs / rawBlock.medianUs;
  const f = (x: number): string => `${x.toFixed(1)} µs`;
  const md = `## Event-channel round trip between two DomUs

${machineLine()}. ${ROUNDS} round trips: DomU 1 sends on an interdomain channel,
DomU 2 (its own vCPU thread) wakes, answers with a send, DomU 1 wakes. Each side
waits in SCHEDOP_block (giving its pCPU back), or first spins up to ${SPIN_US} µs
on its pending bit. Baseline: two plain workers doing the same over one
SharedArrayBuffer word with Atomics.wait/notify, same run. Target: blocking
round trip within 1.2x of the raw one.

${table(['mode', 'event channel median', 'p90', 'raw Atomics median (baseline)', 'p90', 'ratio'], [
    ['block', f(evBlock.medianUs), f(evBlock.p90Us), f(rawBlock.medianUs), f(rawBlock.p90Us), `${ratio.toFixed(2)}x`],
    [`spin ${SPIN_US} µs, then block`, f(evSpin.medianUs), f(evSpin.p90Us), f(rawSpin.medianUs), f(rawSpin.p90Us), `${(evSpin.medianUs / rawSpin.medianUs).toFixed(2)}x`],
  ])}

Target ${ratio <= 1.2 ? 'met' : 'NOT met'} (blocking: ${ratio.toFixed(2)}x).`;
  updateBenchSection('evtchn-pingpong', md);
  return md;
}
