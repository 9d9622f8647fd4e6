/**
 * What every `xl` command gets: the process's I/O (replaceable in tests), a
 * lazily opened control connection, and the error types the dispatcher turns
 * into messages and exit codes.
 */
import type { ControlClient } from './client.ts';
import type { OptSpec, ParsedOpts } from './getopt.ts';

/** The process seen by a command. */
export interface CliIo {
  out(s: string | Uint8Array): void;
  err(s: string): void;
  readonly env: NodeJS.ProcessEnv;
  readonly cwd: string;
  readonly stdin: NodeJS.ReadStream;
  readonly stdoutIsTTY: boolean;
  /** The terminal's width, when stdout is one. */
  readonly columns: number | undefined;
  now(): Date;
  /** Resolves on SIGINT/SIGTERM (to end loops such as top and watch). */
  readonly interrupted: Promise<void>;
}

export interface Ctx {
  readonly io: CliIo;
  /** The program name used in messages: "xl", "xenstore-read", ... */
  readonly progname: string;
  /** The connection to the host, opened on first use (ControlError ENOTCONN when none runs). */
  client(): Promise<ControlClient>;
}

/** A failure the command has already worded: printed as "<progname>: <message>", exit `code`. */
export class CliError extends Error {
  constructor(message: string, readonly code = 1) {
    super(message);
    this.name = 'CliError';
  }
}

export interface XlCommand {
  readonly name: string;
  /** One line, for `xl help`. */
  readonly summary: string;
  /** What follows the command name in its usage line. */
  readonly usage: string;
  /** Option lines for `xl help <command>`. */
  readonly optionsHelp?: string;
  readonly specs: readonly OptSpec[];
  /** Operands the command needs at least (Xen's SWITCH_FOREACH_OPT reqargs). */
  readonly minArgs: number;
  run(ctx: Ctx, p: ParsedOpts): Promise<number>;
}

/** xl's parse_mem_size_kb: an integer with an optional b/k/m/g/t suffix; MiB without one. Null if malformed. */
export function parseMemSizeKb(s: string): number | null {
  const m = /^(\d+)([bBkKmMgGtT]?)$/.exec(s);
  if (!m) return null;
  const n = Number(m[1]);
  const unit = m[2].toLowerCase();
  const kb = unit === 'b' ? Math.floor(n / 1024) : unit === 'k' ? n : unit === '' || unit === 'm' ? n * 1024 : unit === 'g' ? n * 1024 ** 2 : n * 1024 ** 3;
  return Number.isSafeInteger(kb) ? kb : null;
}
