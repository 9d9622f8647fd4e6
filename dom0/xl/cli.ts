/**
 * `xl`, the toolstack's command line (tools/xl/xl.c), and the xenstore-*
 * tools, as one program: the name it is run under picks which
 * (`xl`, `xenstore-read`, ..., or `xenstore <mode>`).
 *
 *   xl [-v] <subcommand> [args]        xl help [subcommand]
 *
 * Every command talks to the running host over the control socket
 * (protocol.ts). Failures go to stderr as "xl: <what went wrong> (domain
 * <id|name>)" with exit status 1; a command line the command cannot take
 * exits 2, as xl's getopt handling does.
 */
import { CliError, type CliIo, type Ctx, type XlCommand } from './cli-context.ts';
import { ControlClient } from './client.ts';
import { BLOCK_COMMANDS } from './cmd-block.ts';
import { CONSOLE_COMMAND } from './cmd-console.ts';
import { DOMAIN_COMMANDS } from './cmd-domains.ts';
import { HOST_COMMANDS } from './cmd-host.ts';
import { XENSTORE_COMMANDS } from './cmd-xenstore.ts';
import { getopt, has, UsageError } from './getopt.ts';
import { ControlError, controlSocketPath } from './protocol.ts';
import { XlCfgError } from '../toolstack/xlcfg.ts';
import { formatIssue } from '../toolstack/cfgsyntax.ts';

export const XL_COMMANDS: readonly XlCommand[] = [...DOMAIN_COMMANDS, CONSOLE_COMMAND, ...HOST_COMMANDS, ...BLOCK_COMMANDS];
const XL_BY_NAME = new Map([...XL_COMMANDS, ...XENSTORE_COMMANDS].map((c) => [c.name, c]));
const XS_BY_NAME = new Map(XENSTORE_COMMANDS.map((c) => [c.name, c]));

/** The real process as a CliIo. Signal handlers are installed only if a command waits for them. */
export function processIo(): CliIo {
  let interrupted: Promise<void> | undefined;
  return {
    out: (s) => { process.stdout.write(s); },
    err: (s) => { process.stderr.write(s); },
    env: process.env,
    cwd: process.cwd(),
    stdin: process.stdin,
    stdoutIsTTY: process.stdout.isTTY === true,
    columns: process.stdout.columns,
    now: () => new Date(),
    get interrupted(): Promise<void> {
      interrupted ??= new Promise<void>((resolve) => {
        process.once('SIGINT', () => resolve());
        process.once('SIGTERM', () => resolve());
      });
      return interrupted;
    },
  };
}

/** `xl help`: the command list, as xl's help(NULL). */
export function xlHelp(): string {
  return 'Usage xl [-v] <subcommand> [args]\n\nxl full list of subcommands:\n\n'
    + XL_COMMANDS.map((c) => ` ${c.name.padEnd(19)} ${c.summary}\n`).join('')
    + '\nThe xenstore tools run as xenstore-<mode> (ls, read, write, rm, list, exists, watch), or as xl xenstore-<mode>.\n';
}

/** `xl help <command>`: as xl's help(command). */
export function commandHelp(c: XlCommand, progname: string): string {
  const head = progname === 'xl' ? `Usage: xl [-v] ${c.name} ${c.usage}` : `Usage: ${progname} ${c.usage}`;
  return `${head}\n\n${c.summary}.\n${c.optionsHelp ? `\nOptions:\n\n${c.optionsHelp}\n` : ''}`;
}

function whoSuffix(e: ControlError): string {
  if (e.domain !== undefined) return ` (domain ${e.domain})`;
  if (e.domid !== undefined) return ` (domain ${e.domid})`;
  return '';
}

export interface MainOptions {
  /** The name the program was run under (basename of argv[1]). */
  readonly argv0?: string;
  readonly io?: CliIo;
}

/** Run one command line; resolves with the exit status. */
export async function main(argv: readonly string[], o: MainOptions = {}): Promise<number> {
  const io = o.io ?? processIo();
  const argv0 = (o.argv0 ?? 'xl').replace(/\.m?[jt]s$/, '');
  let args = [...argv];
  let command: XlCommand | undefined;
  let progname: string;

  if (argv0.startsWith('xenstore-') || argv0 === 'xenstore') {
    const name = argv0 === 'xenstore' ? `xenstore-${args.shift() ?? ''}` : argv0;
    command = XS_BY_NAME.get(name);
    progname = name;
    if (!command) {
      io.err(argv0 === 'xenstore' ? `${argv0}: unknown mode ${name.slice('xenstore-'.length)}\n` : `${argv0}: unknown tool\n`);
      return 1;
    }
  } else {
    progname = 'xl';
    while (args[0]?.startsWith('-') && args[0] !== '-') {
      const opt = args.shift() as string;
      if (opt === '-h' || opt === '--help') { io.out(xlHelp()); return 0; }
      if (opt !== '-v') { io.err(`xl: option \`${opt.replace(/^-+/, '')}' not supported.\n`); return 2; }
    }
    const sub = args.shift();
    if (sub === undefined) { io.err(xlHelp()); return 1; }
    if (sub === 'help') {
      const c = args[0] !== undefined ? XL_BY_NAME.get(args[0]) : undefined;
      io.out(c ? commandHelp(c, 'xl') : xlHelp());
      return 0;
    }
    command = XL_BY_NAME.get(sub);
    if (!command) {
      io.err(`xl: command not implemented: ${sub}\nRun 'xl help' for the list of commands.\n`);
      return 1;
    }
    if (command.name.startsWith('xenstore-')) progname = command.name;
  }

  const isXs = progname !== 'xl';
  const usageCode = isXs ? 1 : 2;
  let parsed;
  try {
    parsed = getopt(args, command.specs);
  } catch (e) {
    if (!(e instanceof UsageError)) throw e;
    io.err(isXs ? `${progname}: ${e.message}\nUsage: ${progname} ${command.usage}\n` : `${e.message}\n`);
    if (!isXs) io.err(commandHelp(command, progname));
    return usageCode;
  }
  if (has(parsed, 'h')) { io.out(commandHelp(command, progname)); return 0; }
  if (parsed.rest.length < command.minArgs) {
    if (isXs) {
      io.err(`Usage: ${progname} ${command.usage}\n`);
    } else {
      const n = command.minArgs;
      io.err(`'xl ${command.name}' requires at least ${n} argument${n > 1 ? 's' : ''}.\n\n${commandHelp(command, progname)}`);
    }
    return usageCode;
  }

  let client: ControlClient | undefined;
  const ctx: Ctx = {
    io,
    progname,
    client: async () => (client ??= await ControlClient.connect(controlSocketPath(io.env))),
  };
  try {
    return await command.run(ctx, parsed);
  } catch (e) {
    return report(io, progname, e);
  } finally {
    client?.close();
  }
}

function report(io: CliIo, progname: string, e: unknown): number {
  if (e instanceof XlCfgError) {
    for (const i of e.issues) io.err(`${formatIssue(i)}\n`);
    const n = e.issues.length;
    io.err(`${progname}: ${n} error${n > 1 ? 's' : ''} in the configuration; no domain was created\n`);
    return 1;
  }
  if (e instanceof CliError) {
    io.err(`${progname}: ${e.message}\n`);
    return e.code;
  }
  if (e instanceof ControlError) {
    io.err(`${progname}: ${e.message}${whoSuffix(e)}\n`);
    return 1;
  }
  io.err(`${progname}: internal error: ${e instanceof Error ? e.stack ?? e.message : String(e)}\n`);
  return 1;
}
