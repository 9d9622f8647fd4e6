/**
 * XenStore paths (docs/misc/xenstore.txt, "Paths are /-separated ..." and
 * "<path>"): validation, relative-path resolution and the child relation.
 *
 * - Allowed characters: ASCII alphanumerics and - / _ @.
 * - Must start with /; no doubled or trailing slash (except "/"); not empty.
 * - At most XENSTORE_ABS_PATH_MAX (3072) bytes. As C xenstored does (its
 *   quota_max_path_len), the part after a "/local/domain/<domid>/" prefix may be
 *   at most XENSTORE_REL_PATH_MAX (2048) bytes, so whatever a domain can create
 *   with a relative path Dom0 can still name absolutely.
 * - A path not starting with / is relative to the connection's home,
 *   /local/domain/<domid>; connections without a home (the UNIX socket) may not
 *   use relative paths (EINVAL, as the C daemon).
 * - Special watch paths start with @ and are only valid where watches are.
 */
import { XENSTORE_ABS_PATH_MAX, XENSTORE_REL_PATH_MAX } from '../../shared/xenstore/wire.ts';

const VALID = /^[A-Za-z0-9\-/_@]*$/;
const LOCAL_DOMAIN = /^\/local\/domain\/\d{1,5}\//;

/** /local/domain/<domid>: a domain's home, base of its relative paths. */
export function domainPath(domid: number): string {
  return `/local/domain/${domid}`;
}

/** Is `p` a valid absolute node name (xenstore.txt rules plus the length limits)? */
export function isValidNodePath(p: string): boolean {
  if (!p.startsWith('/')) return false;
  if (p.length > 1 && p.endsWith('/')) return false;
  if (p.includes('//')) return false;
  if (p.length > XENSTORE_ABS_PATH_MAX) return false;
  const m = LOCAL_DOMAIN.exec(p);
  const local = m ? m[0].length : 0;
  if (p.length - local > XENSTORE_REL_PATH_MAX) return false;
  return VALID.test(p);
}

/** A special watch name (@introduceDomain, @releaseDomain, or any @<wspecial>). */
export function isSpecialPath(p: string): boolean {
  return p.startsWith('@');
}

/**
 * Resolve `p` for a connection whose home is `home` (undefined: none).
 * Returns the absolute path, or undefined if the result is not a valid node path.
 */
export function canonicalize(p: string, home: string | undefined): string | undefined {
  let abs = p;
  if (!p.startsWith('/')) {
    if (home === undefined) return undefined;
    abs = `${home}/${p}`;
  }
  return isValidNodePath(abs) ? abs : undefined;
}

/** Parent of an absolute path ("/" for top-level nodes); undefined for "/". */
export function parentOf(p: string): string | undefined {
  if (p === '/') return undefined;
  const i = p.lastIndexOf('/');
  return i === 0 ? '/' : p.slice(0, i);
}

/** Last component of an absolute path other than "/". */
export function baseName(p: string): string {
  return p.slice(p.lastIndexOf('/') + 1);
}

/** `parent` joined with a child name. */
export function childPath(parent: string, name: string): string {
  return parent === '/' ? `/${name}` : `${parent}/${name}`;
}

/**
 * xenstore.txt: "<child> and <parent> ... if they're identical, or if <parent>
 * is /, or if <parent>/ is an initial substring of <child>".
 */
export function isChildOf(child: string, parent: string): boolean {
  if (parent === '/') return child.startsWith('/');
  if (!child.startsWith(parent)) return false;
  return child.length === parent.length || child.charCodeAt(parent.length) === 0x2f;
}

/**
 * The path as a watcher registered relative to `home` sees it: relative when
 * the watch was relative (xenstore.txt, WATCH_EVENT: "Iff <wpath> was specified
 * as a relative pathname, the <epath> path will also be relative").
 */
export function relativeTo(p: string, home: string): string {
  if (p === home) return '';
  if (p.startsWith(home + '/')) return p.slice(home.length + 1);
  return p;
}
