/**
 * CONTROL <command>|[<parameters>|] (docs/misc/xenstore.txt, "Miscellaneous"):
 * implementation-specific daemon commands, privileged connections only.
 *
 *   help                      the supported commands, one per line
 *   check                     check the store's invariants: "OK", or EIO
 *   log|on, log|off           accepted (our log level is set by XENTS_LOG)
 *   print|<string>            write <string> to the daemon's log
 *   memreport                 counts of nodes, connections and domains
 *   quota                     the quotas, "<name> <value>" per line
 *   quota|<name>|<value>      set one quota (quota.ts QUOTA_NAMES)
 *
 * An unknown command or malformed parameters: EINVAL.
 */
import { encodeStrings, OK_PAYLOAD } from '../../shared/xenstore/wire.ts';
import { strArgs, type OpResult } from './ops.ts';
import { QUOTA_NAMES } from './quota.ts';
import type { XenStore } from './store.ts';

const COMMANDS = ['check', 'help', 'log', 'memreport', 'print', 'quota'] as const;

function text(s: string): Uint8Array {
  return encodeStrings([s]);
}

export function control(store: XenStore, payload: Uint8Array): OpResult {
  const args = strArgs(payload);
  if (!args || args.length === 0) return 'EINVAL';
  const [cmd, ...params] = args;
  switch (cmd) {
    case 'help':
      return text(COMMANDS.join('\n') + '\n');
    case 'check': {
      const problems = store.check();
      for (const p of problems) store.log(`xenstored check: ${p}`);
      return problems.length === 0 ? OK_PAYLOAD : 'EIO';
    }
    case 'log':
      return params.length === 1 && (params[0] === 'on' || params[0] === 'off') ? OK_PAYLOAD : 'EINVAL';
    case 'print':
      if (params.length !== 1) return 'EINVAL';
      store.log(params[0]);
      return OK_PAYLOAD;
    case 'memreport': {
      let conns = 0;
      for (const _ of store.connections()) conns++;
      return text(`nodes ${store.tree.nodes.size}\nconnections ${conns}\ngeneration ${store.tree.generation}\n`);
    }
    case 'quota': {
      if (params.length === 0) {
        return text(Object.entries(QUOTA_NAMES).map(([n, k]) => `${n} ${store.quotas[k]}`).join('\n') + '\n');
      }
      const key = params.length === 2 && Object.hasOwn(QUOTA_NAMES, params[0]) ? QUOTA_NAMES[params[0]] : undefined;
      if (key === undefined || !/^\d{1,9}$/.test(params[1])) return 'EINVAL';
      store.setQuota(key, Number(params[1]));
      return OK_PAYLOAD;
    }
    default:
      return 'EINVAL';
  }
}
