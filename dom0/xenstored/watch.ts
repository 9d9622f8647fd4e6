/**
 * Watches (docs/misc/xenstore.txt, "Watches"; C xenstored's xenstored_watch.c).
 *
 * - A watch is (path, token) on one connection; the same pair twice is EEXIST.
 * - It fires once when set, with <epath> = <wpath> (no permission check).
 * - A change at or below <wpath> fires it: WRITE, MKDIR creating a node,
 *   SET_PERMS, RM (the removed path, reaching watches at or above it, and each
 *   removed descendant, reaching watches exactly on it). Changes in a
 *   transaction fire when, and only if, it commits.
 * - A watcher hears of a node change only if it may read the node, its
 *   permissions before a SET_PERMS, or the node's parent (watch_permitted in C
 *   xenstored: a watcher may learn that a readable directory lost a child).
 * - Special watches (@introduceDomain, @releaseDomain) may be set by anyone, but
 *   events reach only connections that may read the special node's permissions,
 *   which grant nothing to unprivileged domains until Dom0 SET_PERMS them.
 * - A watch given as a relative path reports relative event paths.
 */
import { isChildOf, relativeTo } from './path.ts';
import { canRead, type Accessor, type PermList } from './perms.ts';
import type { ChangeEvent } from './transaction.ts';

export interface Watch {
  /** Absolute path, or a special name starting with @. */
  readonly path: string;
  readonly token: string;
  /** Registered relative to the connection's home: report relative paths. */
  readonly relative: boolean;
}

export const SPECIAL_WATCHES = ['@introduceDomain', '@releaseDomain'] as const;
export type SpecialWatch = typeof SPECIAL_WATCHES[number];

export function isSpecialWatch(p: string): p is SpecialWatch {
  return (SPECIAL_WATCHES as readonly string[]).includes(p);
}

/** Does a change at `ev` (a node event) fire watch `w`? */
export function watchMatches(w: Watch, path: string, exact: boolean): boolean {
  return exact ? w.path === path : isChildOf(path, w.path);
}

/** The <epath> a watcher sees for an event at `path`. */
export function eventPathFor(w: Watch, path: string, home: string | undefined): string {
  return w.relative && home !== undefined ? relativeTo(path, home) : path;
}

/** watch_permitted: may `who` hear of `ev`? `parentPerms` are the parent's current perms, if it exists. */
export function eventPermitted(who: Accessor, ev: ChangeEvent, parentPerms: PermList | undefined): boolean {
  if (ev.oldPerms && canRead(who, ev.oldPerms)) return true;
  if (canRead(who, ev.perms)) return true;
  return parentPerms !== undefined && canRead(who, parentPerms);
}
