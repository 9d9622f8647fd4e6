/**
 * Node permissions (docs/misc/xenstore.txt, GET_PERMS/SET_PERMS; the rules of C
 * xenstored's perm_for_conn).
 *
 * A node carries a list of (domid, access) entries. The first entry names the
 * node's owner and the access of every domain not listed later; each later entry
 * gives one domain its access. Access strings: n<domid> none, r<domid> read,
 * w<domid> write, b<domid> both.
 *
 * Who gets what (perm_for_conn):
 *  - a privileged connection (Dom0, the UNIX socket) gets read, write and owner;
 *  - the owner gets read, write and owner, and so does a domain whose target
 *    (SET_TARGET) is the owner;
 *  - otherwise the first later entry naming the domain (or its target) decides;
 *  - otherwise the first entry's access applies.
 */

export const XS_PERM_NONE = 0;
export const XS_PERM_READ = 1;
export const XS_PERM_WRITE = 2;
/** Not on the wire: what the owner has beyond read and write (SET_PERMS). */
export const XS_PERM_OWNER = 8;

export interface XsPerm {
  readonly domid: number;
  /** XS_PERM_READ | XS_PERM_WRITE bits. */
  readonly access: number;
}

export type PermList = readonly XsPerm[];

/** Who is asking: a connection's identity as the permission rules see it. */
export interface Accessor {
  readonly domid: number;
  readonly privileged: boolean;
  /** The domain this one acts for (SET_TARGET), if any. */
  readonly target?: number;
}

const CHAR_TO_ACCESS: Readonly<Record<string, number>> = {
  n: XS_PERM_NONE, r: XS_PERM_READ, w: XS_PERM_WRITE, b: XS_PERM_READ | XS_PERM_WRITE,
};
const ACCESS_TO_CHAR = ['n', 'r', 'w', 'b'] as const;

/** "r5" -> {domid 5, read}; undefined if malformed (bad letter, not a decimal domid 0..65535). */
export function parsePerm(s: string): XsPerm | undefined {
  const access = CHAR_TO_ACCESS[s.charAt(0)];
  const num = s.slice(1);
  if (access === undefined || !/^\d{1,5}$/.test(num)) return undefined;
  const domid = Number(num);
  return domid <= 0xffff ? { domid, access } : undefined;
}

export function formatPerm(p: XsPerm): string {
  return `${ACCESS_TO_CHAR[p.access & 3]}${p.domid}`;
}

/** Access bits (READ | WRITE | OWNER) `who` has on a node with `perms`. */
export function permFor(who: Accessor, perms: PermList): number {
  const all = XS_PERM_READ | XS_PERM_WRITE | XS_PERM_OWNER;
  const owner = perms[0];
  if (who.privileged || owner === undefined) return who.privileged ? all : XS_PERM_NONE;
  if (owner.domid === who.domid || (who.target !== undefined && owner.domid === who.target)) return all;
  for (let i = 1; i < perms.length; i++) {
    const p = perms[i];
    if (p.domid === who.domid || (who.target !== undefined && p.domid === who.target)) return p.access;
  }
  return owner.access;
}

export function canRead(who: Accessor, perms: PermList): boolean {
  return (permFor(who, perms) & XS_PERM_READ) !== 0;
}

/**
 * Perms without `domid` (a destroyed domain: C xenstored's
 * remove_domid_from_perm): an owner entry passes to `newOwner`, later entries
 * naming it are dropped. Returns the same list when nothing changes.
 */
export function removeDomid(perms: PermList, domid: number, newOwner: number): PermList {
  if (!perms.some((p) => p.domid === domid)) return perms;
  const [owner, ...rest] = perms;
  return [owner.domid === domid ? { domid: newOwner, access: owner.access } : owner, ...rest.filter((p) => p.domid !== domid)];
}
