/**
 * `xl console`: attach the terminal to a domain's console through the host
 * (xenconsole's role). Output goes to stdout as it comes; keystrokes go to
 * the guest (the terminal in raw mode when it is one); Ctrl-] detaches, as
 * with xenconsole. The session also ends when the domain goes away.
 */
import { CliError, type Ctx, type XlCommand } from './cli-context.ts';
import { val } from './getopt.ts';

/** xenconsole's escape character: Ctrl-]. */
export const CONSOLE_ESCAPE = 0x1d;

/**
 * Attach to `domain`'s console until it ends. `started`, if given, runs once
 * the console request is on its way (xl create -c unpauses the new domain
 * there, so that its first output is not missed).
 */
export async function attachConsole(ctx: Ctx, domain: string, started?: () => Promise<void>): Promise<number> {
  const c = await ctx.client();
  const stdin = ctx.io.stdin;
  const raw = stdin.isTTY === true && typeof stdin.setRawMode === 'function';
  const s = c.stream('console', { domain }, (bytes) => ctx.io.out(bytes));
  if (started) {
    try {
      await started();
    } catch (e) {
      s.cancel();
      await s.done.catch(() => undefined);
      throw e;
    }
  }
  const onData = (buf: Buffer): void => {
    const i = buf.indexOf(CONSOLE_ESCAPE);
    if (i < 0) { s.input(buf); return; }
    if (i > 0) s.input(buf.subarray(0, i));
    s.cancel();
  };
  if (raw) stdin.setRawMode(true);
  stdin.on('data', onData);
  stdin.resume();
  void ctx.io.interrupted.then(() => s.cancel());
  try {
    await s.done;
  } finally {
    stdin.off('data', onData);
    if (raw) stdin.setRawMode(false);
    stdin.pause();
  }
  return 0;
}

export const CONSOLE_COMMAND: XlCommand = {
  name: 'console',
  summary: 'Attach to domain\'s console',
  usage: '[options] <Domain>\n-t <type>       console type, pv , serial or vuart\n-n <number>     console number',
  specs: [{ short: 't', arg: true }, { short: 'n', arg: true }],
  minArgs: 1,
  async run(ctx, p) {
    const type = val(p, 't');
    if (type !== undefined && type !== 'pv' && type !== 'serial') throw new CliError(`console type "${type}" is not supported (pv or serial)`);
    const num = val(p, 'n');
    if (num !== undefined && num !== '0') throw new CliError(`console ${num} does not exist: a domain has one console, 0`);
    return attachConsole(ctx, p.rest[0]);
  },
};
