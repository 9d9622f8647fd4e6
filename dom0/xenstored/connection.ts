/**
 * xenstored's connections, independent of the transport: each has an input
 * parser and a bounded output queue; `Xenstored` routes requests to the store
 * and its replies and watch events to the right queues. Transports (socket.ts;
 * the ring) push received bytes in with `receive` and pull bytes out with
 * `takeOutput`, as much as they can send. Pure: no sockets, no timers (event
 * expiry takes the time as an argument).
 *
 * Limits, so that a client that never reads cannot make xenstored grow
 * (following C xenstored since XSA-326):
 *  - A payload over 4096 bytes drops the connection (xenstore.txt).
 *  - Outstanding requests: every reply, and every watch event a request of an
 *    unprivileged domain fires, is charged to that domain's connection until the
 *    bytes are taken by the receiving transport. While 20 are outstanding
 *    (quota maxOutstandingRequests) xenstored reads no more of its requests:
 *    back-pressure, the ring fills and the guest waits. Nothing is dropped.
 *  - Any connection (privileged ones too) whose queue holds `maxQueuedBytes` or
 *    more is not read either until it drains.
 *  - Watch events are not requests and cannot wait, so they are dropped instead:
 *    an event identical to one still queued (same path and token; C xenstored
 *    does this too, not for @ events), an event arriving when the queue already
 *    holds `maxQueuedEvents` events or `maxQueuedBytes` bytes, and (on `expire`)
 *    an event left unread for `eventTimeoutMs` (C xenstored: 20 s). Xen allows
 *    spurious watch events and a watcher re-reads the state on each one, so a
 *    dropped duplicate loses nothing; the drop count is kept per connection.
 */
import { encodeMessage, XsParser, type XsErrno } from '../../shared/xenstore/wire.ts';
import { XenStore, type DomainHooks, type Outgoing, type StoreConn, type StoreOptions } from './store.ts';

export interface ConnectionLimits {
  readonly maxQueuedBytes: number;
  readonly maxQueuedEvents: number;
  readonly eventTimeoutMs: number;
}

/** The close reason of a domain's connection after RELEASE or destruction (normal, not an error). */
export const DOMAIN_RELEASED = 'domain released';

export const DEFAULT_LIMITS: ConnectionLimits = Object.freeze({
  maxQueuedBytes: 1 << 20,
  maxQueuedEvents: 1024,
  eventTimeoutMs: 20_000,
});

interface Queued {
  readonly bytes: Uint8Array;
  sent: number;
  readonly kind: 'reply' | 'event';
  /** Connection whose outstanding count this message holds. */
  readonly charge: XsConnection | undefined;
  readonly queuedAt: number;
  /** Duplicate-detection key of a watch event. */
  readonly key: string | undefined;
}

/** What a transport does for one of its connections when the daemon asks. */
export interface ConnectionTransport {
  /** New output is queued: take it (`Xenstored.takeOutput`) as far as the peer can receive. */
  output(): void;
  /** The connection takes requests again after back-pressure: read from the peer again. */
  resume(): void;
  /** The connection was dropped: close the peer. */
  closed(reason: string): void;
}

/** One client of xenstored: a domain's ring or a UNIX-socket client. */
export class XsConnection {
  /** Set by the transport serving this connection. */
  transport: ConnectionTransport | undefined;
  readonly parser = new XsParser();
  private queue: Queued[] = [];
  private head = 0;
  private readonly pendingKeys = new Map<string, number>();
  queuedBytes = 0;
  queuedEvents = 0;
  /** Replies and charged events of this connection's requests not yet taken. */
  outstanding = 0;
  droppedEvents = 0;
  closedReason: string | undefined;

  constructor(readonly daemon: Xenstored, readonly sc: StoreConn) {}

  get domid(): number { return this.sc.domid; }
  get privileged(): boolean { return this.sc.privileged; }
  get closed(): boolean { return this.closedReason !== undefined; }

  /** May xenstored handle another request of this connection now? */
  canProcess(): boolean {
    if (this.closed) return false;
    if (this.queuedBytes >= this.daemon.limits.maxQueuedBytes) return false;
    return this.privileged || this.outstanding < this.daemon.store.quotas.maxOutstandingRequests;
  }

  /** Should the transport read more bytes from the client? False while requests wait (back-pressure). */
  wantsInput(): boolean {
    return this.canProcess();
  }

  hasOutput(): boolean { return this.head < this.queue.length; }

  enqueue(o: Outgoing, now: number): void {
    if (this.closed) return;
    const bytes = encodeMessage(o.msg);
    let key: string | undefined;
    if (o.kind === 'event') {
      const lim = this.daemon.limits;
      if (this.queuedEvents >= lim.maxQueuedEvents || this.queuedBytes + bytes.length > lim.maxQueuedBytes) {
        this.droppedEvents++;
        return;
      }
      key = isSpecialEvent(o.msg.payload) ? undefined : Buffer.from(o.msg.payload).toString('latin1');
      if (key !== undefined && this.pendingKeys.has(key)) {
        this.droppedEvents++;
        return;
      }
      if (key !== undefined) this.pendingKeys.set(key, 1);
      this.queuedEvents++;
    }
    const cause = o.cause ? this.daemon.connectionOf(o.cause) : undefined;
    const charge = cause && !cause.privileged ? cause : undefined;
    if (charge) charge.outstanding++;
    this.queue.push({ bytes, sent: 0, kind: o.kind, charge, queuedAt: now, key });
    this.queuedBytes += bytes.length;
  }

  /** Up to `max` bytes of queued output (whole or partial messages), consumed. */
  takeOutput(max: number): Uint8Array {
    const parts: Uint8Array[] = [];
    let n = 0;
    while (n < max && this.head < this.queue.length) {
      const q = this.queue[this.head];
      if (q.sent === 0 && q.key !== undefined) this.pendingKeys.delete(q.key);
      const take = Math.min(max - n, q.bytes.length - q.sent);
      parts.push(q.bytes.subarray(q.sent, q.sent + take));
      q.sent += take;
      n += take;
      this.queuedBytes -= take;
      if (q.sent === q.bytes.length) {
        this.finish(q);
        this.head++;
      }
    }
    this.compact();
    if (parts.length === 1) return parts[0];
    const out = new Uint8Array(n);
    let at = 0;
    for (const p of parts) {
      out.set(p, at);
      at += p.length;
    }
    return out;
  }

  /** Drop watch events queued before `now - eventTimeoutMs` and not yet begun. Returns how many. */
  expire(now: number): number {
    const limit = now - this.daemon.limits.eventTimeoutMs;
    let dropped = 0;
    const kept: Queued[] = [];
    for (let i = this.head; i < this.queue.length; i++) {
      const q = this.queue[i];
      if (q.kind === 'event' && q.sent === 0 && q.queuedAt <= limit) {
        if (q.key !== undefined) this.pendingKeys.delete(q.key);
        this.queuedBytes -= q.bytes.length;
        this.finish(q);
        dropped++;
      } else {
        kept.push(q);
      }
    }
    this.queue = kept;
    this.head = 0;
    this.droppedEvents += dropped;
    return dropped;
  }

  /** Forget all queued output (the connection is closing). */
  discardOutput(): void {
    for (let i = this.head; i < this.queue.length; i++) {
      const q = this.queue[i];
      if (q.sent !== q.bytes.length) this.finish(q);
    }
    this.queue = [];
    this.head = 0;
    this.queuedBytes = 0;
    this.pendingKeys.clear();
  }

  private finish(q: Queued): void {
    if (q.kind === 'event') this.queuedEvents--;
    if (q.charge) q.charge.outstanding--;
  }

  private compact(): void {
    if (this.head === this.queue.length) {
      this.queue = [];
      this.head = 0;
    } else if (this.head > 64 && this.head * 2 > this.queue.length) {
      this.queue = this.queue.slice(this.head);
      this.head = 0;
    }
  }
}

/** WATCH_EVENT payloads of special watches start with '@'. */
function isSpecialEvent(payload: Uint8Array): boolean {
  return payload[0] === 0x40;
}

/** The transport's side of INTRODUCE/RELEASE for domain connections (the ring). */
export interface DomainTransport {
  /** Map the ring page at `gfn` and bind `evtchn` for `conn`; undefined on success, else the errno to reply. */
  introduce(conn: XsConnection, gfn: number, evtchn: number): XsErrno | undefined;
  /** Stop serving the domain's ring. */
  release(conn: XsConnection): void;
}

export interface XenstoredOptions {
  readonly storeOptions?: Omit<StoreOptions, 'hooks'>;
  readonly limits?: Partial<ConnectionLimits>;
  readonly domains?: DomainTransport;
  /** Clock for event expiry (ms); default a clock that stands still at 0. */
  readonly now?: () => number;
  /** A connection has new output to send. */
  readonly onOutput?: (c: XsConnection) => void;
  /** A connection may take input again after back-pressure. */
  readonly onResume?: (c: XsConnection) => void;
  /** A connection was dropped (oversized payload, release, close). */
  readonly onClose?: (c: XsConnection, reason: string) => void;
}

/** xenstored without its transports: the store plus connections. */
export class Xenstored {
  readonly store: XenStore;
  readonly limits: ConnectionLimits;
  private readonly conns = new Map<StoreConn, XsConnection>();
  /** Connections that stopped taking requests (back-pressure), to resume when output drains. */
  private readonly blocked = new Set<XsConnection>();
  private readonly now: () => number;
  private resuming = false;
  private resumeAgain = false;

  constructor(private readonly opts: XenstoredOptions = {}) {
    this.limits = { ...DEFAULT_LIMITS, ...opts.limits };
    this.now = opts.now ?? (() => 0);
    const hooks: DomainHooks = {
      introduce: (domid, gfn, evtchn) => this.introduce(domid, gfn, evtchn),
      // Called from inside store.handle (RELEASE) or domainDestroyed: no processing here.
      release: (domid) => {
        for (const c of [...this.conns.values()]) {
          if (c.domid === domid && c.sc.home !== undefined) this.closeQuietly(c, DOMAIN_RELEASED);
        }
      },
    };
    this.store = new XenStore({ ...opts.storeOptions, hooks });
  }

  connectionOf(sc: StoreConn): XsConnection | undefined {
    return this.conns.get(sc);
  }

  connections(): IterableIterator<XsConnection> {
    return this.conns.values();
  }

  /** A UNIX-socket client: privileged (Dom0 tools), absolute paths only. */
  connectSocket(): XsConnection {
    return this.add(this.store.connectSocket());
  }

  /** A domain's ring connection (Dom0's own, or after INTRODUCE). */
  connectDomain(domid: number): XsConnection {
    return this.add(this.store.connectDomain(domid));
  }

  private add(sc: StoreConn): XsConnection {
    const c = new XsConnection(this, sc);
    this.conns.set(sc, c);
    return c;
  }

  private introduce(domid: number, gfn: number, evtchn: number): XsErrno | undefined {
    const t = this.opts.domains;
    const existing = [...this.conns.values()].find((c) => c.domid === domid && c.sc.home !== undefined);
    if (existing) return t?.introduce(existing, gfn, evtchn);
    const c = this.connectDomain(domid);
    const err = t?.introduce(c, gfn, evtchn);
    if (err) this.forget(c);
    return err;
  }

  /** Bytes from the client: parse and handle as many requests as the limits allow. */
  receive(c: XsConnection, bytes: Uint8Array): void {
    if (c.closed) return;
    c.parser.push(bytes);
    this.process(c);
    this.resumeBlocked();
  }

  /** Handle buffered requests of `c` while it may be processed; remember it if it must wait. */
  private process(c: XsConnection): void {
    while (!c.closed) {
      if (!c.canProcess()) {
        this.blocked.add(c);
        return;
      }
      const r = c.parser.next();
      if (r.kind === 'incomplete') return;
      if (r.kind === 'fatal') {
        this.closeQuietly(c, `payload of ${r.len} bytes exceeds 4096`);
        return;
      }
      this.deliver(this.store.handle(c.sc, r.msg));
    }
  }

  /** Queue messages from the store and tell the transports. */
  deliver(out: readonly Outgoing[]): void {
    const now = this.now();
    const touched = new Set<XsConnection>();
    for (const o of out) {
      const c = this.conns.get(o.to);
      if (!c || c.closed) continue;
      c.enqueue(o, now);
      touched.add(c);
    }
    for (const c of touched) {
      if (!c.hasOutput()) continue;
      c.transport?.output();
      this.opts.onOutput?.(c);
    }
  }

  /** Take up to `max` bytes of `c`'s output, then resume connections this unblocked. */
  takeOutput(c: XsConnection, max: number): Uint8Array {
    const bytes = c.takeOutput(max);
    if (bytes.length > 0) this.resumeBlocked();
    return bytes;
  }

  /** Expire old watch events everywhere (call periodically with the time). */
  expire(now: number = this.now()): number {
    let n = 0;
    for (const c of this.conns.values()) n += c.expire(now);
    if (n > 0) this.resumeBlocked();
    return n;
  }

  /**
   * Process connections whose wait is over (their output drained). Runs from
   * the public entry points only, never inside store.handle; a nested call
   * (a transport taking output from onOutput) makes the running one loop again.
   */
  private resumeBlocked(): void {
    if (this.resuming) {
      this.resumeAgain = true;
      return;
    }
    this.resuming = true;
    try {
      do {
        this.resumeAgain = false;
        for (const c of [...this.blocked]) {
          if (c.closed) {
            this.blocked.delete(c);
          } else if (c.canProcess()) {
            this.blocked.delete(c);
            this.process(c);
            if (c.wantsInput()) {
              c.transport?.resume();
              this.opts.onResume?.(c);
            }
          }
        }
      } while (this.resumeAgain);
    } finally {
      this.resuming = false;
    }
  }

  /** Host-side: a domain shut down (@releaseDomain once). */
  domainShutdown(domid: number): void {
    this.deliver(this.store.domainShutdown(domid));
    this.resumeBlocked();
  }

  /** Host-side: a domain was destroyed (its nodes go, @releaseDomain fires). */
  domainDestroyed(domid: number): void {
    this.deliver(this.store.domainDestroyed(domid));
    this.resumeBlocked();
  }

  /** Drop a connection (the client went away): its watches and transactions go, its queued output too. */
  close(c: XsConnection, reason: string): void {
    this.closeQuietly(c, reason);
    this.resumeBlocked();
  }

  private closeQuietly(c: XsConnection, reason: string): void {
    if (c.closed) return;
    c.closedReason = reason;
    const isDomain = c.sc.home !== undefined;
    this.forget(c);
    if (isDomain) this.opts.domains?.release(c);
    c.transport?.closed(reason);
    this.opts.onClose?.(c, reason);
  }

  private forget(c: XsConnection): void {
    c.closedReason ??= 'forgotten';
    this.store.disconnect(c.sc);
    c.discardOutput();
    this.conns.delete(c.sc);
    this.blocked.delete(c);
  }
}
