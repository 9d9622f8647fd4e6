/**
 * Xen's default xenstored quotas (C xenstored, tools/xenstore; XEN-ABI-FACTS.md
 * "Default quotas"). They bind unprivileged domains only; Dom0 and the UNIX
 * socket are exempt. The error for each is C xenstored's:
 *
 *  | quota                       | default | when exceeded                  |
 *  |-----------------------------|---------|--------------------------------|
 *  | nodes owned by a domain     | 1000    | ENOSPC                         |
 *  | watches of a domain         | 128     | E2BIG (as do_watch in C)       |
 *  | open transactions, per conn | 10      | ENOSPC                         |
 *  | nodes touched by one txn    | 1024    | ENOSPC                         |
 *  | permissions per node        | 5       | ENOSPC                         |
 *  | node record size            | 2048    | ENOSPC                         |
 *  | outstanding requests        | 20      | no error: xenstored stops      |
 *  |                             |         | reading that domain's requests |
 *
 * Node record size is counted as C xenstored counts a TDB record: a 24-byte
 * header, 8 bytes per permission, the value and the NUL-separated child names;
 * a write leaving a record of `maxEntrySize` bytes or more fails.
 */

export interface Quotas {
  readonly maxNodesPerDomain: number;
  readonly maxWatchesPerDomain: number;
  readonly maxTransactionsPerConn: number;
  readonly maxNodesPerTransaction: number;
  readonly maxPermsPerNode: number;
  readonly maxEntrySize: number;
  readonly maxOutstandingRequests: number;
}

export const DEFAULT_QUOTAS: Quotas = Object.freeze({
  maxNodesPerDomain: 1000,
  maxWatchesPerDomain: 128,
  maxTransactionsPerConn: 10,
  maxNodesPerTransaction: 1024,
  maxPermsPerNode: 5,
  maxEntrySize: 2048,
  maxOutstandingRequests: 20,
});

/** CONTROL "quota" names (as C xenstored's -E/-W/-t/-A/-S options name them). */
export const QUOTA_NAMES: Readonly<Record<string, keyof Quotas>> = {
  'nodes': 'maxNodesPerDomain',
  'watches': 'maxWatchesPerDomain',
  'transactions': 'maxTransactionsPerConn',
  'transaction-nodes': 'maxNodesPerTransaction',
  'permissions': 'maxPermsPerNode',
  'entry-size': 'maxEntrySize',
  'outstanding': 'maxOutstandingRequests',
};

const RECORD_HEADER = 24;
const PERM_SIZE = 8;

/** Bytes of a node's record: header, perms, value, and child names each with a NUL. */
export function recordSize(nPerms: number, valueLen: number, children: readonly string[]): number {
  let childLen = 0;
  for (const c of children) childLen += c.length + 1;
  return RECORD_HEADER + PERM_SIZE * nPerms + valueLen + childLen;
}
