/** Xen's names for things Dom0 prints (xl's wording). */
import { SHUTDOWN_crash, SHUTDOWN_poweroff, SHUTDOWN_reboot, SHUTDOWN_soft_reset, SHUTDOWN_suspend, SHUTDOWN_watchdog } from '../shared/hypercall.ts';

const REASONS: Readonly<Record<number, string>> = {
  [SHUTDOWN_poweroff]: 'poweroff',
  [SHUTDOWN_reboot]: 'reboot',
  [SHUTDOWN_suspend]: 'suspend',
  [SHUTDOWN_crash]: 'crash',
  [SHUTDOWN_watchdog]: 'watchdog',
  [SHUTDOWN_soft_reset]: 'soft_reset',
};

export function shutdownReasonName(r: number): string {
  return REASONS[r] ?? `unknown(${r})`;
}

/**
 * A hypervisor console line, labelled by source: "(d<N>) text" becomes
 * "<name> | text", "(XEN) text" becomes "xen | text", Dom0's unprefixed lines
 * "Domain-0 | text".
 */
export function consoleLinePrefix(line: string, names: ReadonlyMap<number, string>): string {
  const m = /^\(d(\d+)\) (.*)$/s.exec(line);
  if (m) {
    const id = Number(m[1]);
    return `${names.get(id) ?? `d${id}`} | ${m[2]}`;
  }
  if (line.startsWith('(XEN) ')) return `xen | ${line.slice(6)}`;
  return `${names.get(0) ?? 'Domain-0'} | ${line}`;
}
