/**
 * Event channels on real threads: two DomUs ping-pong over an interdomain
 * channel, each blocking in SCHEDOP_block (so every round wakes a blocked vCPU
 * thread); the same with the example kernel docs/event-channels.md shows, taken
 * from the page itself so that the page cannot drift from what works; and an
 * event that arrives before its port has a handler, while the receiver
 * dispatches, is still there for the handler set afterwards.
 */
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { runBenchGuests } from '../bench/boot-guest.ts';
import { PROJECT_ROOT } from '../../hypervisor/vcpu/runtime.ts';

/** A run still going after this long has hung: stopped, with the hypervisor's state in the error (vitest gives up at 30 s). */
const HANG_MS = 20_000;

/** The first ```ts block after `heading` in a docs page. */
function docExample(page: string, heading: string): string {
  const text = readFileSync(join(PROJECT_ROOT, 'docs', page), 'utf8');
  const at = text.indexOf(heading);
  if (at < 0) throw new Error(`${page}: no heading ${heading}`);
  const m = /```ts\n([\s\S]*?)```/.exec(text.slice(at));
  if (!m) throw new Error(`${page}: no example after ${heading}`);
  return m[1]!;
}

describe('event channels across vCPU threads', () => {
  it('two DomUs complete a blocking ping-pong; the blocked side wakes on every event', async () => {
    const rounds = 200;
    const out = await runBenchGuests([
      { name: 'ping', kernel: 'test/bench/guests/evtchn-pingpong.ts', memoryMiB: 1, cmdline: `role=ping peer=2 rounds=${rounds}` },
      { name: 'pong', kernel: 'test/bench/guests/evtchn-pingpong.ts', memoryMiB: 1, cmdline: `role=pong peer=1 rounds=${rounds}` },
    ], { memMiB: 64, pcpus: 2 }, { timeoutMs: HANG_MS });
    const r = out.bench.find((b) => b.name === 'evtchn-pingpong');
    expect(r).toBeDefined();
    expect(r!.rounds).toBe(rounds);
    expect(out.log).toContain('(d2) pong done after 200 rounds');
    expect(out.log).not.toMatch(/crashed/);
  });

  it('the ping-pong kernel of docs/event-channels.md runs as shown', async () => {
    // The page's imports are relative to a kernel in the project's top folder.
    const code = docExample('event-channels.md', '### Example: ping-pong between two domains')
      .replaceAll("from '../", `from '${PROJECT_ROOT}/`);
    const dir = mkdtempSync(join(tmpdir(), 'xents-doc-'));
    try {
      // .mts: an ES module outside the project's package.json too.
      const kernel = join(dir, 'pingpong.mts');
      writeFileSync(kernel, code);
      const out = await runBenchGuests([
        { name: 'ping', kernel, memoryMiB: 1, cmdline: 'role=ping peer=2' },
        { name: 'pong', kernel, memoryMiB: 1, cmdline: 'role=pong peer=1' },
      ], { memMiB: 64, pcpus: 2 }, { timeoutMs: HANG_MS });
      expect(out.log).toContain('(d1) ping: 100 round trips');
      expect(out.log).toMatch(/Domain 2 shutdown: reason 0/);
      expect(out.log).not.toMatch(/crashed/);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('an event that comes before its port has a handler, while the receiver dispatches, reaches the handler set later', async () => {
    // Deterministic: the receiver sets its handler only after reading a node
    // the sender writes after its event, through reads that dispatch. The
    // library's dispatch() used to clear it (and a ping-pong hung in CI).
    const kernel = 'test/fixtures/guests/late-handler.ts';
    const out = await runBenchGuests([
      { name: 'recv', kernel, memoryMiB: 1, cmdline: 'role=recv peer=2' },
      { name: 'send', kernel, memoryMiB: 1, cmdline: 'role=send peer=1' },
    ], { memMiB: 64, pcpus: 2 }, { timeoutMs: HANG_MS });
    expect(out.log).toContain('(d2) late-handler: sent');
    expect(out.log).toContain('(d1) late-handler: kept');
    expect(out.log).toMatch(/Domain 1 shutdown: reason 0/);
    expect(out.log).not.toMatch(/crashed|late-handler: lost/);
  });
});
