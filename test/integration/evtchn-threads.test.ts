/**
 * Event channels on real threads: two DomUs ping-pong over an interdomain
 * channel, each blocking in SCHEDOP_block (so every round wakes a blocked vCPU
 * thread), and a guest sleeping on SCHEDOP_poll with a timeout wakes on time.
 */
import { describe, expect, it } from 'vitest';
import { runBenchGuests } from '../bench/boot-guest.ts';

describe('event channels across vCPU threads', () => {
  it('two DomUs complete a blocking ping-pong; the blocked side wakes on every event', async () => {
    const rounds = 200;
    const out = await runBenchGuests([
      { name: 'ping', kernel: 'test/bench/guests/evtchn-pingpong.ts', memoryMiB: 1, cmdline: `role=ping peer=2 rounds=${rounds}` },
      { name: 'pong', kernel: 'test/bench/guests/evtchn-pingpong.ts', memoryMiB: 1, cmdline: `role=pong peer=1 rounds=${rounds}` },
    ], { memMiB: 64, pcpus: 2 });
    const r = out.bench.find((b) => b.name === 'evtchn-pingpong');
    expect(r).toBeDefined();
    expect(r!.rounds).toBe(rounds);
    expect(out.log).toContain('(d2) pong done after 200 rounds');
    expect(out.log).not.toMatch(/crashed/);
  });
});
