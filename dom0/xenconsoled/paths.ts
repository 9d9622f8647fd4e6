/**
 * Where xenconsoled writes its logs (the role of /var/log/xen/console):
 * `<log dir>/console/guest-<name>.log`, the log dir being $XENTS_LOG_DIR when
 * set, else `xents-<uid>` under the OS temp dir (where xenstored's socket
 * lives too).
 */
import { tmpdir } from 'node:os';
import { join } from 'node:path';

/** The directory holding the guests' console logs. */
export function consoleLogDir(env: NodeJS.ProcessEnv = process.env): string {
  const base = env.XENTS_LOG_DIR;
  if (base !== undefined && base !== '') return join(base, 'console');
  const uid = typeof process.getuid === 'function' ? process.getuid() : 0;
  return join(tmpdir(), `xents-${uid}`, 'console');
}

/**
 * A guest's console log: `guest-<name>.log` (xenconsoled --log=guest). A name
 * that is not a plain file name (xl allows only [A-Za-z0-9_.-] anyway) is
 * replaced by `d<domid>`.
 */
export function guestLogPath(dir: string, name: string, domid: number): string {
  const safe = /^[A-Za-z0-9_][A-Za-z0-9_.-]{0,63}$/.test(name) ? name : `d${domid}`;
  return join(dir, `guest-${safe}.log`);
}
