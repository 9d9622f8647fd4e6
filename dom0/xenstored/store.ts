/**
 * xenstored's store: the node tree, connections, watches, transactions and the
 * domain table, as pure code. `handle(conn, msg)` takes one decoded request
 * from a connection and returns every message it causes: the reply to the
 * requester and watch events to any connection. No threads, sockets or timers:
 * transports (connection.ts, socket.ts, the ring) feed it and deliver its output.
 *
 * Follows docs/misc/xenstore.txt and, where that is silent, C xenstored
 * (tools/xenstore): request dispatch (unknown type ENOSYS, privileged-only
 * types EACCES for others, unknown tx_id ENOENT), permissions (perms.ts),
 * transactions (transaction.ts), watches (watch.ts), quotas (quota.ts).
 *
 * Privileged connections: Dom0's ring and every UNIX-socket connection (host
 * tools), as with the C daemon's socket. Domain 0 is introduced from the start.
 */
import { DOMID_FIRST_RESERVED } from '../../shared/types.ts';
import {
  encodeStrings, errorReply, OK_PAYLOAD, replyTo, watchEvent, XENSTORE_PAYLOAD_MAX, XENSTORE_REL_PATH_MAX,
  xsTypeName, type XsErrno, type XsMessage, type XsTypeName,
} from '../../shared/xenstore/wire.ts';
import { control } from './control.ts';
import {
  oneArg, opDirectory, opDirectoryPart, opGetPerms, opMkdir, opRead, opRm, opSetPerms, opWrite, parseDomid,
  removeSubtree, strArgs, type NodeOpContext, type OpResult,
} from './ops.ts';
import { canonicalize, childPath, domainPath, parentOf } from './path.ts';
import { canRead, removeDomid, XS_PERM_NONE, type Accessor, type PermList } from './perms.ts';
import { DEFAULT_QUOTAS, type Quotas } from './quota.ts';
import { Overlay, Tree, type ChangeEvent, type Transaction, type XsNode } from './transaction.ts';
import { eventPathFor, eventPermitted, SPECIAL_WATCHES, watchMatches, type SpecialWatch, type Watch } from './watch.ts';

/** One client connection as the store sees it. */
export class StoreConn implements Accessor {
  readonly watches: Watch[] = [];
  readonly transactions = new Map<number, Transaction>();
  nextTxId = 1;
  closed = false;

  constructor(
    private readonly store: XenStore,
    readonly id: number,
    readonly domid: number,
    readonly privileged: boolean,
    /** /local/domain/<domid> for domain connections; undefined for the socket. */
    readonly home: string | undefined,
  ) {}

  /** The domain this connection's domain acts for (SET_TARGET). */
  get target(): number | undefined {
    return this.home === undefined ? undefined : this.store.domain(this.domid)?.target;
  }
}

export interface Outgoing {
  readonly to: StoreConn;
  readonly kind: 'reply' | 'event';
  readonly msg: XsMessage;
  /**
   * The connection whose request caused this message (its reply, or an event
   * its change fired): the transport charges it to that connection's
   * outstanding requests. Undefined for the initial event of a new watch and
   * for events of host-side happenings (domain shutdown).
   */
  readonly cause?: StoreConn;
}

/** An introduced domain. */
export interface DomainInfo {
  readonly domid: number;
  gfn: number;
  port: number;
  /** @releaseDomain already fired for a shutdown (cleared by RESUME). */
  shutdown: boolean;
  target?: number;
}

/** The transport's side of INTRODUCE and RELEASE. */
export interface DomainHooks {
  /** Map the domain's ring page `gfn` and bind `evtchn`; undefined on success, else the errno for the reply. */
  introduce(domid: number, gfn: number, evtchn: number): XsErrno | undefined;
  /** The domain is gone or released: disconnect its ring. */
  release(domid: number): void;
}

export interface StoreOptions {
  readonly quotas?: Partial<Quotas>;
  readonly hooks?: DomainHooks;
  /** Lines for CONTROL print/log and diagnostics. */
  readonly log?: (line: string) => void;
}

interface RequestContext extends NodeOpContext {
  readonly conn: StoreConn;
  readonly msg: XsMessage;
  readonly tx: Transaction | undefined;
  readonly out: Outgoing[];
  /** Messages to queue after the reply (a new watch's first event). */
  readonly after: Outgoing[];
}

interface OpEntry {
  readonly fn: (s: XenStore, c: RequestContext) => OpResult;
  /** Privileged connections only (XS_FLAG_PRIV). */
  readonly priv?: boolean;
  /** tx_id is ignored (XS_FLAG_NOTID). */
  readonly notid?: boolean;
  /** Changes nodes: commit the request's overlay on success. */
  readonly changes?: boolean;
}

const EMPTY = new Uint8Array(0);

const OPS: Partial<Record<XsTypeName, OpEntry>> = {
  XS_CONTROL: { fn: (s, c) => control(s, c.msg.payload), priv: true },
  XS_DIRECTORY: { fn: (_s, c) => opDirectory(c, c.msg.payload) },
  XS_READ: { fn: (_s, c) => opRead(c, c.msg.payload) },
  XS_GET_PERMS: { fn: (_s, c) => opGetPerms(c, c.msg.payload) },
  XS_WATCH: { fn: (s, c) => s.doWatch(c), notid: true },
  XS_UNWATCH: { fn: (s, c) => s.doUnwatch(c), notid: true },
  XS_TRANSACTION_START: { fn: (s, c) => s.doTransactionStart(c) },
  XS_TRANSACTION_END: { fn: (s, c) => s.doTransactionEnd(c) },
  XS_INTRODUCE: { fn: (s, c) => s.doIntroduce(c), priv: true },
  XS_RELEASE: { fn: (s, c) => s.doRelease(c), priv: true },
  XS_GET_DOMAIN_PATH: { fn: (_s, c) => doGetDomainPath(c) },
  XS_WRITE: { fn: (_s, c) => opWrite(c, c.msg.payload), changes: true },
  XS_MKDIR: { fn: (_s, c) => opMkdir(c, c.msg.payload), changes: true },
  XS_RM: { fn: (_s, c) => opRm(c, c.msg.payload), changes: true },
  XS_SET_PERMS: { fn: (_s, c) => opSetPerms(c, c.msg.payload), changes: true },
  XS_IS_DOMAIN_INTRODUCED: { fn: (s, c) => s.doIsDomainIntroduced(c), priv: true },
  XS_RESUME: { fn: (s, c) => s.doResume(c), priv: true },
  XS_SET_TARGET: { fn: (s, c) => s.doSetTarget(c), priv: true },
  XS_RESET_WATCHES: { fn: (s, c) => s.doResetWatches(c) },
  XS_DIRECTORY_PART: { fn: (_s, c) => opDirectoryPart(c, c.msg.payload, XENSTORE_PAYLOAD_MAX) },
};

function doGetDomainPath(c: RequestContext): OpResult {
  const arg = oneArg(c.msg.payload);
  const domid = arg === undefined ? undefined : parseDomid(arg);
  return domid === undefined ? 'EINVAL' : encodeStrings([domainPath(domid)]);
}

export class XenStore {
  readonly tree = new Tree();
  readonly quotas: Quotas;
  /** Who may hear @introduceDomain / @releaseDomain (SET_PERMS on them). Default: Dom0 only. */
  readonly special = new Map<string, PermList>(SPECIAL_WATCHES.map((w) => [w, [{ domid: 0, access: XS_PERM_NONE }]]));
  private readonly conns = new Set<StoreConn>();
  private readonly domains = new Map<number, DomainInfo>();
  private nextConnId = 1;
  private readonly hooks: DomainHooks | undefined;
  readonly log: (line: string) => void;

  constructor(opts: StoreOptions = {}) {
    this.quotas = { ...DEFAULT_QUOTAS, ...opts.quotas };
    this.hooks = opts.hooks;
    this.log = opts.log ?? (() => {});
    // C xenstored's setup_structure: /, /tool, /tool/xenstored, owned by Dom0, no access for others.
    const perms: PermList = [{ domid: 0, access: XS_PERM_NONE }];
    const mk = (children: string[]): XsNode => ({ value: EMPTY, perms, children, generation: ++this.tree.generation });
    this.tree.setRaw('/', mk(['tool']));
    this.tree.setRaw('/tool', mk(['xenstored']));
    this.tree.setRaw('/tool/xenstored', mk([]));
    this.domains.set(0, { domid: 0, gfn: 0, port: 0, shutdown: false });
  }

  /** Change a quota (CONTROL quota). */
  setQuota(name: keyof Quotas, value: number): void {
    (this.quotas as { -readonly [K in keyof Quotas]: number })[name] = value;
  }

  // -------------------------------------------------------------------------
  // Connections and domains.

  /** A privileged host-tool connection (the UNIX socket): no home, so no relative paths. */
  connectSocket(): StoreConn {
    return this.addConn(new StoreConn(this, this.nextConnId++, 0, true, undefined));
  }

  /** The ring connection of an introduced domain. Domain 0 is privileged. */
  connectDomain(domid: number): StoreConn {
    return this.addConn(new StoreConn(this, this.nextConnId++, domid, domid === 0, domainPath(domid)));
  }

  private addConn(c: StoreConn): StoreConn {
    this.conns.add(c);
    return c;
  }

  /** Forget a connection: its watches and open transactions go with it. */
  disconnect(conn: StoreConn): void {
    conn.closed = true;
    conn.watches.length = 0;
    conn.transactions.clear();
    this.conns.delete(conn);
  }

  domain(domid: number): DomainInfo | undefined {
    return this.domains.get(domid);
  }

  connections(): Iterable<StoreConn> {
    return this.conns;
  }

  /** Watches of all connections of `domid` (the per-domain watch quota). */
  private watchCount(domid: number): number {
    let n = 0;
    for (const c of this.conns) if (c.domid === domid && c.home !== undefined) n += c.watches.length;
    return n;
  }

  /**
   * The domain shut down or crashed (VIRQ_DOM_EXC): fire @releaseDomain once,
   * until RESUME re-arms it. Returns the events.
   */
  domainShutdown(domid: number): Outgoing[] {
    const d = this.domains.get(domid);
    if (!d || d.shutdown) return [];
    d.shutdown = true;
    return this.fire([specialEvent('@releaseDomain')], undefined);
  }

  /**
   * The domain is destroyed (or RELEASEd): disconnect it, remove the nodes it
   * owns (C xenstored's domain_tree_remove), drop it from every remaining
   * node's permissions (an owner entry passes to Dom0) so that a later domain
   * reusing the id inherits nothing, and fire @releaseDomain.
   */
  domainDestroyed(domid: number): Outgoing[] {
    if (domid === 0) return [];
    const wasKnown = this.domains.delete(domid);
    for (const c of [...this.conns]) if (c.domid === domid && c.home !== undefined) this.disconnect(c);
    for (const d of this.domains.values()) if (d.target === domid) d.target = undefined;
    if (wasKnown) this.hooks?.release(domid);
    const view = new Overlay(this.tree);
    const visit = (path: string): void => {
      const n = view.get(path);
      if (!n) return;
      if (n.perms[0].domid === domid && path !== '/') {
        removeSubtree(view, path, n);
        return;
      }
      for (const name of [...n.children]) visit(childPath(path, name));
    };
    visit('/');
    this.tree.apply(view);
    for (const [path, n] of this.tree.nodes) {
      const perms = removeDomid(n.perms, domid, 0);
      if (perms !== n.perms) this.tree.setRaw(path, { ...n, perms });
    }
    for (const [name, perms] of this.special) this.special.set(name, removeDomid(perms, domid, 0));
    return this.fire([...view.events, specialEvent('@releaseDomain')], undefined);
  }

  // -------------------------------------------------------------------------
  // Requests.

  /** Process one request from `conn`: returns the reply and every watch event it fires, in queue order. */
  handle(conn: StoreConn, msg: XsMessage): Outgoing[] {
    const out: Outgoing[] = [];
    if (conn.closed) return out;
    const name = xsTypeName(msg.type);
    const entry = name === 'unknown' ? undefined : OPS[name];
    const fail = (e: XsErrno): Outgoing[] => {
      out.push({ to: conn, kind: 'reply', msg: errorReply(msg, e), cause: conn });
      return out;
    };
    if (!entry) return fail('ENOSYS');
    if (entry.priv && !conn.privileged) return fail('EACCES');
    let tx: Transaction | undefined;
    if (!entry.notid && msg.txId !== 0) {
      tx = conn.transactions.get(msg.txId);
      if (!tx) return fail('ENOENT');
    }
    const view = new Overlay(tx ? tx.overlay : this.tree);
    const ctx: RequestContext = {
      who: conn, home: conn.home, view, quotas: this.quotas, special: this.special, conn, msg, tx, out, after: [],
    };
    const r = entry.fn(this, ctx);
    if (typeof r === 'string') return fail(r);
    if (entry.changes) {
      if (tx) {
        if (!conn.privileged && tx.overlay.touchedWith(view) > this.quotas.maxNodesPerTransaction) return fail('ENOSPC');
        tx.overlay.merge(view);
      } else {
        this.tree.apply(view);
        out.push(...this.fire(view.events, conn));
      }
    }
    if (tx && name !== 'XS_TRANSACTION_END' && !conn.privileged && tx.overlay.touched > this.quotas.maxNodesPerTransaction) {
      return fail('ENOSPC');
    }
    if (r.length > XENSTORE_PAYLOAD_MAX) return fail('E2BIG');
    out.push({ to: conn, kind: 'reply', msg: replyTo(msg, msg.type, r), cause: conn }, ...ctx.after);
    return out;
  }

  /** Watch events for committed changes, to every connection with a matching watch that may hear them. */
  private fire(events: readonly ChangeEvent[], cause: StoreConn | undefined): Outgoing[] {
    const out: Outgoing[] = [];
    for (const ev of events) {
      const special = ev.path.startsWith('@');
      const pp = special ? undefined : parentOf(ev.path);
      const parentPerms = pp === undefined ? undefined : this.tree.get(pp)?.perms;
      for (const c of this.conns) {
        let permitted: boolean | undefined;
        for (const w of c.watches) {
          if (special ? w.path !== ev.path : !watchMatches(w, ev.path, ev.exact)) continue;
          permitted ??= special ? canRead(c, this.special.get(ev.path) ?? []) : eventPermitted(c, ev, parentPerms);
          if (!permitted) break;
          const msg = watchEvent(eventPathFor(w, ev.path, c.home), w.token);
          if (msg.payload.length <= XENSTORE_PAYLOAD_MAX) out.push({ to: c, kind: 'event', msg, cause });
        }
      }
    }
    return out;
  }

  // -------------------------------------------------------------------------
  // Watches.

  /** WATCH <wpath>|<token>|? : add, reply OK, then fire once with <epath> = <wpath>. */
  doWatch(c: RequestContext): OpResult {
    const args = strArgs(c.msg.payload);
    if (!args || args.length < 2) return 'EINVAL';
    const [wpath, token] = args;
    let path: string | undefined;
    if (wpath.startsWith('@')) {
      path = wpath.length <= XENSTORE_REL_PATH_MAX ? wpath : undefined;
    } else {
      path = canonicalize(wpath, c.conn.home);
    }
    if (path === undefined) return 'EINVAL';
    if (c.conn.watches.some((w) => w.path === path && w.token === token)) return 'EEXIST';
    if (!c.conn.privileged && this.watchCount(c.conn.domid) >= this.quotas.maxWatchesPerDomain) return 'E2BIG';
    const w: Watch = { path, token, relative: !wpath.startsWith('/') && !wpath.startsWith('@') };
    c.conn.watches.push(w);
    c.after.push({ to: c.conn, kind: 'event', msg: watchEvent(eventPathFor(w, path, c.conn.home), token) });
    return OK_PAYLOAD;
  }

  /** UNWATCH <wpath>|<token>|? : ENOENT if no such watch on this connection. */
  doUnwatch(c: RequestContext): OpResult {
    const args = strArgs(c.msg.payload);
    if (!args || args.length < 2) return 'EINVAL';
    const [wpath, token] = args;
    const path = wpath.startsWith('@') ? wpath : canonicalize(wpath, c.conn.home);
    const i = c.conn.watches.findIndex((w) => w.path === path && w.token === token);
    if (i < 0) return 'ENOENT';
    c.conn.watches.splice(i, 1);
    return OK_PAYLOAD;
  }

  /** RESET_WATCHES |: drop every watch and transaction of the caller. */
  doResetWatches(c: RequestContext): OpResult {
    c.conn.watches.length = 0;
    c.conn.transactions.clear();
    return OK_PAYLOAD;
  }

  // -------------------------------------------------------------------------
  // Transactions.

  /** TRANSACTION_START | -> <transid>| ; a non-zero tx_id in the request is EBUSY. */
  doTransactionStart(c: RequestContext): OpResult {
    if (c.tx) return 'EBUSY';
    if (!c.conn.privileged && c.conn.transactions.size >= this.quotas.maxTransactionsPerConn) return 'ENOSPC';
    let id = c.conn.nextTxId;
    while (id === 0 || c.conn.transactions.has(id)) id = (id + 1) >>> 0;
    c.conn.nextTxId = (id + 1) >>> 0;
    c.conn.transactions.set(id, { id, overlay: new Overlay(this.tree, true) });
    return encodeStrings([String(id)]);
  }

  /** TRANSACTION_END T| commits (EAGAIN on conflict), F| aborts; the tx_id is gone either way. */
  doTransactionEnd(c: RequestContext): OpResult {
    if (!c.tx) return 'ENOENT';
    const arg = oneArg(c.msg.payload);
    if (arg !== 'T' && arg !== 'F') return 'EINVAL';
    c.conn.transactions.delete(c.tx.id);
    if (arg === 'F') return OK_PAYLOAD;
    const o = c.tx.overlay;
    if (o.conflicts(this.tree)) return 'EAGAIN';
    if (!c.conn.privileged && o.ownedCount(c.conn.domid) > this.quotas.maxNodesPerDomain) return 'ENOSPC';
    this.tree.apply(o);
    c.out.push(...this.fire(o.events, c.conn));
    return OK_PAYLOAD;
  }

  // -------------------------------------------------------------------------
  // Domain management (privileged).

  private domidArg(c: RequestContext): number | undefined {
    const a = oneArg(c.msg.payload);
    return a === undefined ? undefined : parseDomid(a);
  }

  /**
   * INTRODUCE <domid>|<gfn>|<evtchn>|? : start talking to a domain over its
   * ring page and event channel (through the hooks), then fire
   * @introduceDomain. Re-introducing with the same page rebinds the channel.
   */
  doIntroduce(c: RequestContext): OpResult {
    const args = strArgs(c.msg.payload);
    if (!args || args.length < 3) return 'EINVAL';
    const domid = parseDomid(args[0]);
    const gfn = /^-?\d+$/.test(args[1]) ? Number(args[1]) : NaN;
    const port = /^\d+$/.test(args[2]) ? Number(args[2]) : NaN;
    if (domid === undefined || domid === 0 || domid >= DOMID_FIRST_RESERVED) return 'EINVAL';
    if (!Number.isSafeInteger(gfn) || !Number.isSafeInteger(port) || port <= 0) return 'EINVAL';
    const existing = this.domains.get(domid);
    if (existing && existing.gfn !== gfn) return 'EINVAL';
    const err = this.hooks?.introduce(domid, gfn, port);
    if (err) return err;
    if (existing) {
      existing.port = port;
      return OK_PAYLOAD;
    }
    this.domains.set(domid, { domid, gfn, port, shutdown: false });
    c.out.push(...this.fire([specialEvent('@introduceDomain')], c.conn));
    return OK_PAYLOAD;
  }

  /** RELEASE <domid>| : as domain destruction (domainDestroyed); ENOENT if not introduced. */
  doRelease(c: RequestContext): OpResult {
    const domid = this.domidArg(c);
    if (domid === undefined || domid === 0) return 'EINVAL';
    if (!this.domains.has(domid)) return 'ENOENT';
    c.after.push(...this.domainDestroyed(domid));
    return OK_PAYLOAD;
  }

  /** IS_DOMAIN_INTRODUCED <domid>| -> T| or F| */
  doIsDomainIntroduced(c: RequestContext): OpResult {
    const domid = this.domidArg(c);
    if (domid === undefined) return 'EINVAL';
    return encodeStrings([this.domains.has(domid) ? 'T' : 'F']);
  }

  /** RESUME <domid>| : re-arm @releaseDomain for a domain that was shut down. */
  doResume(c: RequestContext): OpResult {
    const domid = this.domidArg(c);
    if (domid === undefined) return 'EINVAL';
    const d = this.domains.get(domid);
    if (!d) return 'ENOENT';
    d.shutdown = false;
    return OK_PAYLOAD;
  }

  /** SET_TARGET <domid>|<tdomid>| : <domid> acts with <tdomid>'s permissions (a device model). */
  doSetTarget(c: RequestContext): OpResult {
    const args = strArgs(c.msg.payload);
    if (!args || args.length !== 2) return 'EINVAL';
    const domid = parseDomid(args[0]);
    const target = parseDomid(args[1]);
    if (domid === undefined || target === undefined) return 'EINVAL';
    const d = this.domains.get(domid);
    if (!d || !this.domains.has(target)) return 'ENOENT';
    d.target = target;
    return OK_PAYLOAD;
  }

  // -------------------------------------------------------------------------
  // Diagnostics.

  /**
   * Check the tree's invariants (CONTROL check): every listed child exists,
   * every node but / is listed by its parent, owner counts match. Returns the
   * problems found (none: []).
   */
  check(): string[] {
    const problems: string[] = [];
    const owned = new Map<number, number>();
    for (const [path, n] of this.tree.nodes) {
      owned.set(n.perms[0].domid, (owned.get(n.perms[0].domid) ?? 0) + 1);
      for (const name of n.children) if (!this.tree.get(childPath(path, name))) problems.push(`${path}: missing child ${name}`);
      if (new Set(n.children).size !== n.children.length) problems.push(`${path}: duplicate children`);
      const pp = parentOf(path);
      if (pp !== undefined && !this.tree.get(pp)?.children.includes(path.slice(path.lastIndexOf('/') + 1))) {
        problems.push(`${path}: not listed by its parent`);
      }
    }
    for (const [domid, count] of owned) {
      if (this.tree.ownedCount(domid) !== count) problems.push(`domain ${domid}: owns ${count}, counted ${this.tree.ownedCount(domid)}`);
    }
    return problems;
  }
}

function specialEvent(name: SpecialWatch): ChangeEvent {
  return { path: name, exact: true, perms: [] };
}
