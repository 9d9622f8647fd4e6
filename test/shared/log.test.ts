/**
 * Guest-triggerable log lines are rate-limited (RateLimiter, limitedLog): a
 * burst passes, the rest is dropped until tokens come back, and the next line
 * that passes says how many were dropped. Keys are independent.
 */
import { describe, expect, it } from 'vitest';
import type { Logger } from 'pino';
import { limitedLog, limitedWarn, RateLimiter } from '../../shared/log.ts';

/** A Logger that records what reaches it (only the two levels limitedLog uses). */
function recorder(): { log: Logger; lines: Array<{ level: string; obj: Record<string, unknown>; msg: string }> } {
  const lines: Array<{ level: string; obj: Record<string, unknown>; msg: string }> = [];
  const at = (level: string) => (obj: Record<string, unknown>, msg: string): void => { lines.push({ level, obj, msg }); };
  return { log: { info: at('info'), warn: at('warn') } as unknown as Logger, lines };
}

describe('rate-limited log lines', () => {
  it('lets a burst through, drops the rest, and reports the count when tokens come back', () => {
    let now = 1_000;
    const lim = new RateLimiter(2, 5, () => now);
    const { log, lines } = recorder();
    for (let i = 0; i < 50; i++) limitedLog(lim, log, 'info', 'd1', { i }, 'connected');
    expect(lines.map((l) => l.obj.i)).toEqual([0, 1, 2, 3, 4]);
    now += 499; // under one token at 2 per second
    limitedLog(lim, log, 'info', 'd1', { i: 50 }, 'connected');
    expect(lines).toHaveLength(5);
    now += 1; // one token
    limitedLog(lim, log, 'info', 'd1', { i: 51 }, 'connected');
    expect(lines[5]).toEqual({ level: 'info', obj: { i: 51, suppressed: 46 }, msg: 'connected' });
    // Another key has its own bucket; warn goes through the same limiter.
    limitedWarn(lim, log, 'd2', { dev: 'd2' }, 'bad request');
    expect(lines[6]).toEqual({ level: 'warn', obj: { dev: 'd2' }, msg: 'bad request' });
  });

  it('never lets more than burst + rate x time through, whatever the call pattern', () => {
    let now = 0;
    const lim = new RateLimiter(10, 20, () => now);
    let passed = 0;
    for (let step = 0; step < 10_000; step++) {
      now += (step * 7919) % 13; // 0..12 ms between lines, 10 000 lines over ~60 s
      if (lim.take('k') >= 0) passed++;
    }
    expect(passed).toBeLessThanOrEqual(20 + Math.ceil((now / 1000) * 10));
    expect(passed).toBeGreaterThan(Math.floor((now / 1000) * 10));
  });
});
