/**
 * The node operations of the XenStore protocol (docs/misc/xenstore.txt,
 * "Database read, write and permissions operations"), with C xenstored's
 * permission and error rules. Each takes the request's context (its overlay,
 * its connection) and returns the reply payload or an errno name; changes go to
 * the overlay and its pending watch events, never straight to the tree.
 *
 * Errors a caller cannot use to probe unreadable nodes (errno_from_parents in C
 * xenstored): a missing or forbidden node answers ENOENT only if the nearest
 * existing ancestor grants the access asked for, EACCES otherwise.
 */
import {
  concatBytes, decodeUtf8, encodeStrings, OK_PAYLOAD, splitStrings, utf8, type XsErrno,
} from '../../shared/xenstore/wire.ts';
import { baseName, canonicalize, childPath, parentOf } from './path.ts';
import {
  formatPerm, parsePerm, permFor, XS_PERM_OWNER, XS_PERM_READ, XS_PERM_WRITE, type Accessor, type PermList, type XsPerm,
} from './perms.ts';
import { recordSize, type Quotas } from './quota.ts';
import { NO_GENERATION, type ChangeEvent, type Overlay, type XsNode } from './transaction.ts';

/** What a node operation sees of its caller and of the daemon. */
export interface NodeOpContext {
  readonly who: Accessor;
  /** Base of relative paths; undefined for the UNIX socket. */
  readonly home: string | undefined;
  readonly view: Overlay;
  readonly quotas: Quotas;
  /** Permissions of the special nodes (SET_PERMS on @introduceDomain / @releaseDomain). */
  readonly special: Map<string, PermList>;
}

export type OpResult = Uint8Array | XsErrno;

const EMPTY = new Uint8Array(0);

// ---------------------------------------------------------------------------
// Argument decoding (C xenstored's onearg / get_strings).

/** The single argument of "<path>|": exactly one NUL, at the end; checked UTF-8. */
export function oneArg(payload: Uint8Array): string | undefined {
  if (payload.length === 0 || payload.indexOf(0) !== payload.length - 1) return undefined;
  return decodeUtf8(payload.subarray(0, payload.length - 1));
}

/** The NUL-terminated strings of a payload (trailing unterminated bytes ignored); undefined on bad UTF-8. */
export function strArgs(payload: Uint8Array): string[] | undefined {
  const out: string[] = [];
  for (const s of splitStrings(payload).strings) {
    const d = decodeUtf8(s);
    if (d === undefined) return undefined;
    out.push(d);
  }
  return out;
}

/** A decimal domid 0..65535. */
export function parseDomid(s: string): number | undefined {
  if (!/^\d{1,5}$/.test(s)) return undefined;
  const n = Number(s);
  return n <= 0xffff ? n : undefined;
}

// ---------------------------------------------------------------------------
// Lookup with Xen's permission rules.

function errnoFromParents(c: NodeOpContext, path: string, err: XsErrno, need: number): XsErrno {
  for (let p = parentOf(path); p !== undefined; p = parentOf(p)) {
    const n = c.view.get(p);
    if (n) return (permFor(c.who, n.perms) & need) !== 0 ? err : 'EACCES';
  }
  return 'EACCES';
}

/** get_node: the node if `who` has all of `need` on it, else ENOENT/EACCES as above. */
export function getNode(c: NodeOpContext, path: string, need: number): XsNode | XsErrno {
  const n = c.view.get(path);
  if (!n) return errnoFromParents(c, path, 'ENOENT', need);
  if ((permFor(c.who, n.perms) & need) !== need) return errnoFromParents(c, path, 'EACCES', need);
  return n;
}

function resolve(c: NodeOpContext, arg: string | undefined): string | undefined {
  return arg === undefined ? undefined : canonicalize(arg, c.home);
}

function sizeOk(c: NodeOpContext, n: Pick<XsNode, 'perms' | 'value' | 'children'>): boolean {
  return c.who.privileged || recordSize(n.perms.length, n.value.length, n.children) < c.quotas.maxEntrySize;
}

/**
 * Create `path` and any missing parents (WRITE, MKDIR): new nodes inherit their
 * parent's permissions, except that an unprivileged creator becomes the owner
 * ("unprivileged domains own what they create"). Each new node counts against
 * the creator's node quota; each grown parent against the entry size quota.
 */
function createNode(c: NodeOpContext, path: string, value: Uint8Array): XsNode | XsErrno {
  const missing: string[] = [];
  let parentPath = path;
  let parent: XsNode | undefined;
  do {
    missing.push(parentPath);
    parentPath = parentOf(parentPath) ?? '/';
    parent = c.view.get(parentPath);
  } while (!parent);
  let node: XsNode | undefined;
  for (let i = missing.length - 1; i >= 0; i--) {
    const np = missing[i];
    if (!c.who.privileged && c.view.ownedCount(c.who.domid) >= c.quotas.maxNodesPerDomain) return 'ENOSPC';
    const [owner, ...rest] = parent.perms;
    const perms: PermList = c.who.privileged ? parent.perms : [{ domid: c.who.domid, access: owner.access }, ...rest];
    const grown: XsNode = { ...parent, children: [...parent.children, baseName(np)] };
    node = { value: i === 0 ? value : EMPTY, perms, children: [], generation: NO_GENERATION };
    if (!sizeOk(c, grown) || !sizeOk(c, node)) return 'ENOSPC';
    c.view.put(parentPath, grown);
    c.view.put(np, node);
    parent = node;
    parentPath = np;
  }
  c.view.events.push({ path, exact: false, perms: (node as XsNode).perms });
  return node as XsNode;
}

// ---------------------------------------------------------------------------
// The operations.

/** READ <path>| -> <value|> */
export function opRead(c: NodeOpContext, payload: Uint8Array): OpResult {
  const path = resolve(c, oneArg(payload));
  if (path === undefined) return 'EINVAL';
  const n = getNode(c, path, XS_PERM_READ);
  return typeof n === 'string' ? n : n.value;
}

/** DIRECTORY <path>| -> <child-leaf-name>|* */
export function opDirectory(c: NodeOpContext, payload: Uint8Array): OpResult {
  const path = resolve(c, oneArg(payload));
  if (path === undefined) return 'EINVAL';
  const n = getNode(c, path, XS_PERM_READ);
  return typeof n === 'string' ? n : encodeStrings(n.children);
}

/**
 * DIRECTORY_PART <path>|<offset>| -> <gencnt>|<child-leaf-name>|* : the child
 * list from byte `offset`, as much as fits in one payload; the list's end is
 * marked by an empty name (a second NUL). Same generation across calls means
 * the node did not change in between.
 */
export function opDirectoryPart(c: NodeOpContext, payload: Uint8Array, maxPayload: number): OpResult {
  const args = strArgs(payload);
  if (!args || args.length !== 2) return 'EINVAL';
  const path = resolve(c, args[0]);
  if (path === undefined) return 'EINVAL';
  const n = getNode(c, path, XS_PERM_READ);
  if (typeof n === 'string') return n;
  const off = /^\d+$/.test(args[1]) ? Number(args[1]) : 0;
  const gen = utf8(String(n.generation));
  const all = encodeStrings(n.children);
  if (off >= all.length) return encodeStrings([gen, EMPTY]);
  const maxLen = maxPayload - (gen.length + 1) - 1;
  let len = 0;
  while (off + len < all.length) {
    const end = all.indexOf(0, off + len);
    const strLen = end - (off + len);
    if (len + strLen >= maxLen) break;
    len += strLen + 1;
  }
  const done = off + len === all.length;
  return concatBytes([gen, new Uint8Array(1), all.subarray(off, off + len), done ? new Uint8Array(1) : EMPTY]);
}

/** GET_PERMS <path>| -> <perm-as-string>|+ */
export function opGetPerms(c: NodeOpContext, payload: Uint8Array): OpResult {
  const path = resolve(c, oneArg(payload));
  if (path === undefined) return 'EINVAL';
  const n = getNode(c, path, XS_PERM_READ);
  return typeof n === 'string' ? n : encodeStrings(n.perms.map(formatPerm));
}

/** WRITE <path>|<value|>: store the value, creating missing parents. */
export function opWrite(c: NodeOpContext, payload: Uint8Array): OpResult {
  const nul = payload.indexOf(0);
  if (nul < 0) return 'EINVAL';
  const path = resolve(c, decodeUtf8(payload.subarray(0, nul)));
  if (path === undefined) return 'EINVAL';
  const value = payload.slice(nul + 1);
  const n = getNode(c, path, XS_PERM_WRITE);
  if (n === 'ENOENT') {
    const made = createNode(c, path, value);
    return typeof made === 'string' ? made : OK_PAYLOAD;
  }
  if (typeof n === 'string') return n;
  const updated: XsNode = { ...n, value };
  if (!sizeOk(c, updated)) return 'ENOSPC';
  c.view.put(path, updated);
  c.view.events.push({ path, exact: false, perms: updated.perms });
  return OK_PAYLOAD;
}

/** MKDIR <path>|: make sure the node exists; an existing one is left unchanged (and fires nothing). */
export function opMkdir(c: NodeOpContext, payload: Uint8Array): OpResult {
  const path = resolve(c, oneArg(payload));
  if (path === undefined) return 'EINVAL';
  const n = getNode(c, path, XS_PERM_WRITE);
  if (n === 'ENOENT') {
    const made = createNode(c, path, EMPTY);
    return typeof made === 'string' ? made : OK_PAYLOAD;
  }
  return typeof n === 'string' ? n : OK_PAYLOAD;
}

/** Remove `path` (which exists) and its subtree; events as described in watch.ts. */
export function removeSubtree(view: Overlay, path: string, node: XsNode): void {
  view.events.push({ path, exact: false, perms: node.perms });
  const doomed: ChangeEvent[] = [];
  const walk = (p: string, n: XsNode): void => {
    for (const name of n.children) {
      const cp = childPath(p, name);
      const cn = view.get(cp);
      if (cn) walk(cp, cn);
    }
    if (p !== path) doomed.push({ path: p, exact: true, perms: n.perms });
    view.delete(p);
  };
  walk(path, node);
  view.events.push(...doomed);
  const pp = parentOf(path);
  const parent = pp === undefined ? undefined : view.get(pp);
  if (pp !== undefined && parent) {
    const name = baseName(path);
    view.put(pp, { ...parent, children: parent.children.filter((x) => x !== name) });
  }
}

/**
 * RM <path>|: remove the node and its subtree. Not an error if the node does
 * not exist, but ENOENT if its parent does not either; "/" cannot be removed.
 */
export function opRm(c: NodeOpContext, payload: Uint8Array): OpResult {
  const path = resolve(c, oneArg(payload));
  if (path === undefined) return 'EINVAL';
  const n = getNode(c, path, XS_PERM_WRITE);
  if (n === 'ENOENT') {
    const pp = parentOf(path);
    return pp !== undefined && c.view.get(pp) ? OK_PAYLOAD : 'ENOENT';
  }
  if (typeof n === 'string') return n;
  if (path === '/') return 'EINVAL';
  removeSubtree(c.view, path, n);
  return OK_PAYLOAD;
}

/** Parse "<perm-as-string>|+"; undefined if any entry is malformed or there is none. */
export function parsePerms(strs: readonly string[]): XsPerm[] | undefined {
  const perms: XsPerm[] = [];
  for (const s of strs) {
    const p = parsePerm(s);
    if (!p) return undefined;
    perms.push(p);
  }
  return perms.length > 0 ? perms : undefined;
}

/**
 * SET_PERMS <path>|<perm-as-string>|+: only the owner (or a privileged caller)
 * may; an unprivileged owner may not give the node away (EPERM) nor list more
 * than the per-node quota (ENOSPC). On @introduceDomain/@releaseDomain it sets
 * who may hear those events.
 */
export function opSetPerms(c: NodeOpContext, payload: Uint8Array): OpResult {
  const args = strArgs(payload);
  if (!args || args.length < 2) return 'EINVAL';
  if (!c.who.privileged && args.length - 1 > c.quotas.maxPermsPerNode) return 'ENOSPC';
  const perms = parsePerms(args.slice(1));
  if (!perms) return 'EINVAL';
  const special = c.special.get(args[0]);
  if (args[0].startsWith('@')) {
    if (!special) return 'EINVAL';
    const need = XS_PERM_WRITE | XS_PERM_OWNER;
    if ((permFor(c.who, special) & need) !== need) return 'EACCES';
    c.special.set(args[0], perms);
    return OK_PAYLOAD;
  }
  const path = resolve(c, args[0]);
  if (path === undefined) return 'EINVAL';
  const n = getNode(c, path, XS_PERM_WRITE | XS_PERM_OWNER);
  if (typeof n === 'string') return n;
  if (!c.who.privileged && perms[0].domid !== n.perms[0].domid) return 'EPERM';
  const updated: XsNode = { ...n, perms };
  if (!sizeOk(c, updated)) return 'ENOSPC';
  c.view.put(path, updated);
  c.view.events.push({ path, exact: false, perms, oldPerms: n.perms });
  return OK_PAYLOAD;
}
