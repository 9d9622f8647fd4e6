/**
 * Command-line options the way xl reads them (getopt_long with GNU argument
 * permutation, through xl's SWITCH_FOREACH_OPT): short options clustered
 * (`-cp`), an option's argument attached or next (`-w512`, `-w 512`), long
 * options (`--wait`, `--weight=512`, `--weight 512`), options anywhere among
 * the operands, `--` ending them. Pure.
 */

export interface OptSpec {
  /** The short letter, e.g. 'w'. */
  readonly short: string;
  /** The long name, e.g. 'weight'. */
  readonly long?: string;
  /** Takes an argument. */
  readonly arg?: boolean;
}

export interface ParsedOpts {
  /** By short letter: each occurrence's argument ('' for flags). */
  readonly opts: ReadonlyMap<string, readonly string[]>;
  /** Operands, in order. */
  readonly rest: readonly string[];
}

/** A command line the command cannot take: xl says what, prints the command's help and exits 2. */
export class UsageError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'UsageError';
  }
}

/** Parse `args` against `specs`; `-h`/`--help` is always known (as 'h'). */
export function getopt(args: readonly string[], specs: readonly OptSpec[]): ParsedOpts {
  const all = [...specs, { short: 'h', long: 'help' }];
  const byShort = new Map(all.map((s) => [s.short, s]));
  const byLong = new Map(all.filter((s) => s.long).map((s) => [s.long as string, s]));
  const opts = new Map<string, string[]>();
  const rest: string[] = [];
  const add = (s: OptSpec, v: string): void => { opts.set(s.short, [...(opts.get(s.short) ?? []), v]); };
  for (let i = 0; i < args.length; i++) {
    const a = args[i];
    if (a === '--') { rest.push(...args.slice(i + 1)); break; }
    if (a.startsWith('--')) {
      const eq = a.indexOf('=');
      const name = eq < 0 ? a.slice(2) : a.slice(2, eq);
      const s = byLong.get(name);
      if (!s) throw new UsageError(`option \`${name}' not supported.`);
      if (s.arg) {
        if (eq >= 0) add(s, a.slice(eq + 1));
        else if (i + 1 < args.length) add(s, args[++i]);
        else throw new UsageError(`option \`${name}' requires an argument.`);
      } else {
        if (eq >= 0) throw new UsageError(`option \`${name}' takes no argument.`);
        add(s, '');
      }
      continue;
    }
    if (a.startsWith('-') && a.length > 1) {
      for (let j = 1; j < a.length; j++) {
        const s = byShort.get(a[j]);
        if (!s) throw new UsageError(`option \`${a[j]}' not supported.`);
        if (!s.arg) { add(s, ''); continue; }
        if (j + 1 < a.length) add(s, a.slice(j + 1));
        else if (i + 1 < args.length) add(s, args[++i]);
        else throw new UsageError(`option \`${a[j]}' requires an argument.`);
        break;
      }
      continue;
    }
    rest.push(a);
  }
  return { opts, rest };
}

export const has = (p: ParsedOpts, k: string): boolean => p.opts.has(k);
/** The last value given for option `k`. */
export const val = (p: ParsedOpts, k: string): string | undefined => p.opts.get(k)?.at(-1);
