/**
 * Structured logging through pino, with a human-readable form for terminals,
 * and a rate limiter for lines a guest can trigger (a hostile guest must not be
 * able to flood the host's logs).
 *
 * XENTS_LOG=<level> sets the level (default "info"; "silent" for none);
 * XENTS_LOG_FORMAT=json|pretty picks the form (default pretty on a TTY).
 */
import { pino, type Logger, type DestinationStream } from 'pino';

export type { Logger };

const LEVELS: Readonly<Record<number, string>> = { 10: 'TRACE', 20: 'DEBUG', 30: 'INFO', 40: 'WARN', 50: 'ERROR', 60: 'FATAL' };

/** One JSON log line to "HH:MM:SS.mmm LEVEL [component] msg key=value ...". */
export function prettyLine(json: string): string {
  let o: Record<string, unknown>;
  try {
    o = JSON.parse(json) as Record<string, unknown>;
  } catch {
    return json;
  }
  const { level, time, msg, component, pid: _pid, hostname: _h, ...rest } = o;
  const t = typeof time === 'number' ? new Date(time).toISOString().slice(11, 23) : '';
  const lv = LEVELS[typeof level === 'number' ? level : 30] ?? String(level);
  const extra = Object.entries(rest).map(([k, v]) => `${k}=${typeof v === 'string' ? v : JSON.stringify(v)}`).join(' ');
  return `${t} ${lv.padEnd(5)} [${String(component ?? '-')}] ${String(msg ?? '')}${extra ? ' ' + extra : ''}`;
}

function prettyStream(out: NodeJS.WritableStream): DestinationStream {
  return { write: (s: string) => { out.write(prettyLine(s.trimEnd()) + '\n'); } };
}

let root: Logger | undefined;

/** The process-wide logger (one per thread), writing to stderr. */
export function rootLogger(): Logger {
  if (root) return root;
  const level = process.env.XENTS_LOG ?? 'info';
  const format = process.env.XENTS_LOG_FORMAT ?? (process.stderr.isTTY ? 'pretty' : 'json');
  const dest = format === 'json' ? pino.destination({ fd: 2, sync: true }) : prettyStream(process.stderr);
  root = pino({ level, base: undefined }, dest);
  return root;
}

export function logger(component: string): Logger {
  return rootLogger().child({ component });
}

/**
 * Token-bucket rate limiter, one bucket per key (e.g. per domain): at most
 * `burst` lines at once and `perSecond` sustained; suppressed lines are counted
 * and reported with the next line that passes.
 */
export class RateLimiter {
  private readonly buckets = new Map<string, { tokens: number; last: number; dropped: number }>();
  constructor(private readonly perSecond = 10, private readonly burst = 20, private readonly clock: () => number = Date.now) {}

  /** Returns -1 when the line must be dropped, else how many were dropped before it. */
  take(key: string): number {
    const now = this.clock();
    let b = this.buckets.get(key);
    if (!b) {
      if (this.buckets.size > 4096) this.buckets.clear();
      b = { tokens: this.burst, last: now, dropped: 0 };
      this.buckets.set(key, b);
    }
    b.tokens = Math.min(this.burst, b.tokens + ((now - b.last) / 1000) * this.perSecond);
    b.last = now;
    if (b.tokens < 1) {
      b.dropped++;
      return -1;
    }
    b.tokens -= 1;
    const d = b.dropped;
    b.dropped = 0;
    return d;
  }
}

/** Log through `log` unless `key` is over its rate; reports suppressed counts. */
export function limitedWarn(limiter: RateLimiter, log: Logger, key: string, obj: Record<string, unknown>, msg: string): void {
  limitedLog(limiter, log, 'warn', key, obj, msg);
}

/** A line at `level` that a guest can trigger: rate-limited per key, the number dropped noted on the next one. */
export function limitedLog(limiter: RateLimiter, log: Logger, level: 'info' | 'warn', key: string, obj: Record<string, unknown>, msg: string): void {
  const dropped = limiter.take(key);
  if (dropped < 0) return;
  log[level](dropped > 0 ? { ...obj, suppressed: dropped } : obj, msg);
}
