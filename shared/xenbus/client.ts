/**
 * The xenbus client: XenStore requests from a guest kernel (Dom0's and DomUs'
 * alike) or a host tool, over any byte transport - the xenstore ring page with
 * its event channel, or the UNIX socket. Requests are pipelined and matched to
 * replies by req_id (docs/misc/xenstore.txt: replies may come in any order);
 * watch events go to the callback registered for their token.
 *
 * Contracts:
 *  - Every method returns a promise settled by the daemon's reply; an XS_ERROR
 *    reply rejects with `XenbusError` carrying the errno name.
 *  - A request whose payload would exceed 4096 bytes is refused here with
 *    E2BIG and never sent (the daemon would drop the connection), as
 *    libxenstore does.
 *  - `transaction(fn)` runs `fn` in a fresh transaction and commits; when the
 *    commit (or an operation in it) gets EAGAIN it runs `fn` again in a new
 *    transaction, up to `maxAttempts` times.
 *  - A watch callback runs for the first event (sent when the watch is set)
 *    and for every later one; it must not throw (errors go to `onError`).
 */
import {
  concatBytes, decodeUtf8, encodeMessage, encodeStrings, parseErrorPayload, splitStrings, utf8,
  XENSTORE_PAYLOAD_MAX, XS, XsParser, type XsErrno, type XsMessage, type XsTypeName,
} from '../xenstore/wire.ts';

/** Bytes to and from xenstored. */
export interface XenbusTransport {
  /** Queue bytes for xenstored, in order. */
  send(bytes: Uint8Array): void;
  /** The client registers its receiver once; the transport calls it with every chunk from xenstored. */
  onReceive(handler: (bytes: Uint8Array) => void): void;
}

/** A failed request: the daemon's errno name (or a local one: E2BIG, EIO). */
export class XenbusError extends Error {
  constructor(readonly errno: XsErrno | 'unknown', readonly op: XsTypeName | 'unknown', readonly path?: string) {
    super(`xenbus ${op}${path !== undefined ? ` ${path}` : ''}: ${errno}`);
    this.name = 'XenbusError';
  }
}

declare const txBrand: unique symbol;
/** A transaction id from TRANSACTION_START (0: none). */
export type TxId = number & { readonly [txBrand]: 'XsTxId' };
export const NO_TX = 0 as TxId;

/** <perm-as-string>: n none, r read, w write, b both; the first entry names the owner. */
export interface XenbusPerm {
  readonly domid: number;
  readonly access: 'n' | 'r' | 'w' | 'b';
}

export type WatchCallback = (path: string, token: string) => void;

export interface WatchHandle {
  readonly path: string;
  readonly token: string;
  unwatch(): Promise<void>;
}

export interface XenbusClientOptions {
  /** Where exceptions thrown by watch callbacks go; default: dropped. */
  readonly onError?: (e: unknown) => void;
}

interface Pending {
  readonly op: XsTypeName;
  readonly path: string | undefined;
  resolve(m: XsMessage): void;
  reject(e: Error): void;
}

const dec = new TextDecoder();

export class XenbusClient {
  private readonly parser = new XsParser();
  private readonly pending = new Map<number, Pending>();
  private readonly watches = new Map<string, WatchCallback>();
  private nextReqId = 1;
  private nextToken = 1;
  private failed: XenbusError | undefined;

  constructor(private readonly transport: XenbusTransport, private readonly opts: XenbusClientOptions = {}) {
    transport.onReceive((b) => this.receive(b));
  }

  /** Requests sent and not yet answered. */
  get inFlight(): number { return this.pending.size; }

  // ---------------------------------------------------------------------------
  // Transport.

  private receive(bytes: Uint8Array): void {
    this.parser.push(bytes);
    for (;;) {
      const r = this.parser.next();
      if (r.kind === 'incomplete') return;
      if (r.kind === 'fatal') {
        this.fail(new XenbusError('EIO', 'unknown'));
        return;
      }
      this.dispatch(r.msg);
    }
  }

  private dispatch(m: XsMessage): void {
    if (m.type === XS.XS_WATCH_EVENT) {
      const s = splitStrings(m.payload).strings;
      const path = s.length >= 2 ? decodeUtf8(s[0]) : undefined;
      const token = s.length >= 2 ? decodeUtf8(s[1]) : undefined;
      const cb = token === undefined ? undefined : this.watches.get(token);
      if (cb && path !== undefined && token !== undefined) {
        try {
          cb(path, token);
        } catch (e) {
          this.opts.onError?.(e);
        }
      }
      return;
    }
    const p = this.pending.get(m.reqId);
    if (!p) return;
    this.pending.delete(m.reqId);
    if (m.type === XS.XS_ERROR) p.reject(new XenbusError(parseErrorPayload(m.payload), p.op, p.path));
    else p.resolve(m);
  }

  /** The transport is gone: every request in flight and every later one fails with EIO. */
  fail(e: XenbusError = new XenbusError('EIO', 'unknown')): void {
    this.failed = e;
    for (const p of this.pending.values()) p.reject(new XenbusError(e.errno, p.op, p.path));
    this.pending.clear();
  }

  /** Send one request; resolves with the reply (never an XS_ERROR). */
  request(op: XsTypeName, payload: Uint8Array, tx: TxId = NO_TX, path?: string): Promise<XsMessage> {
    if (this.failed) return Promise.reject(new XenbusError(this.failed.errno, op, path));
    if (payload.length > XENSTORE_PAYLOAD_MAX) return Promise.reject(new XenbusError('E2BIG', op, path));
    let reqId = this.nextReqId;
    while (reqId === 0 || this.pending.has(reqId)) reqId = (reqId + 1) >>> 0;
    this.nextReqId = (reqId + 1) >>> 0;
    return new Promise<XsMessage>((resolve, reject) => {
      this.pending.set(reqId, { op, path, resolve, reject });
      this.transport.send(encodeMessage({ type: XS[op], reqId, txId: tx, payload }));
    });
  }

  private async strings(op: XsTypeName, args: string[], tx: TxId = NO_TX, path?: string): Promise<string[]> {
    const m = await this.request(op, encodeStrings(args), tx, path);
    return splitStrings(m.payload).strings.map((s) => dec.decode(s));
  }

  private async ack(op: XsTypeName, args: string[], tx: TxId = NO_TX, path?: string): Promise<void> {
    await this.request(op, encodeStrings(args), tx, path);
  }

  // ---------------------------------------------------------------------------
  // Nodes.

  async readBytes(path: string, tx: TxId = NO_TX): Promise<Uint8Array> {
    return (await this.request('XS_READ', encodeStrings([path]), tx, path)).payload;
  }

  /** The value as UTF-8 text (xenstore values should be text). */
  async read(path: string, tx: TxId = NO_TX): Promise<string> {
    return dec.decode(await this.readBytes(path, tx));
  }

  /** `read`, but undefined instead of ENOENT. */
  async tryRead(path: string, tx: TxId = NO_TX): Promise<string | undefined> {
    try {
      return await this.read(path, tx);
    } catch (e) {
      if (e instanceof XenbusError && e.errno === 'ENOENT') return undefined;
      throw e;
    }
  }

  /** WRITE: set the value, creating missing parents. */
  async write(path: string, value: string | Uint8Array, tx: TxId = NO_TX): Promise<void> {
    const v = typeof value === 'string' ? utf8(value) : value;
    await this.request('XS_WRITE', concatBytes([encodeStrings([path]), v]), tx, path);
  }

  mkdir(path: string, tx: TxId = NO_TX): Promise<void> { return this.ack('XS_MKDIR', [path], tx, path); }

  rm(path: string, tx: TxId = NO_TX): Promise<void> { return this.ack('XS_RM', [path], tx, path); }

  /**
   * Child names. A list too long for one reply (E2BIG) is read with
   * DIRECTORY_PART, restarting if the node's generation changes in between.
   */
  async directory(path: string, tx: TxId = NO_TX): Promise<string[]> {
    try {
      return await this.strings('XS_DIRECTORY', [path], tx, path);
    } catch (e) {
      if (!(e instanceof XenbusError) || e.errno !== 'E2BIG') throw e;
    }
    for (let attempt = 0; attempt < 8; attempt++) {
      const names = await this.directoryParts(path, tx);
      if (names) return names;
    }
    throw new XenbusError('EAGAIN', 'XS_DIRECTORY_PART', path);
  }

  private async directoryParts(path: string, tx: TxId): Promise<string[] | undefined> {
    const names: string[] = [];
    let off = 0;
    let gen: string | undefined;
    for (;;) {
      const m = await this.request('XS_DIRECTORY_PART', encodeStrings([path, String(off)]), tx, path);
      const { strings } = splitStrings(m.payload);
      const g = dec.decode(strings[0] ?? new Uint8Array(0));
      if (gen !== undefined && g !== gen) return undefined;
      gen = g;
      let done = false;
      for (const s of strings.slice(1)) {
        if (s.length === 0) {
          done = true;
          break;
        }
        names.push(dec.decode(s));
        off += s.length + 1;
      }
      if (done) return names;
    }
  }

  async getPerms(path: string, tx: TxId = NO_TX): Promise<XenbusPerm[]> {
    const strs = await this.strings('XS_GET_PERMS', [path], tx, path);
    return strs.map((s) => {
      const a = s.charAt(0);
      return { domid: Number(s.slice(1)), access: (a === 'r' || a === 'w' || a === 'b' ? a : 'n') };
    });
  }

  setPerms(path: string, perms: readonly XenbusPerm[], tx: TxId = NO_TX): Promise<void> {
    return this.ack('XS_SET_PERMS', [path, ...perms.map((p) => `${p.access}${p.domid}`)], tx, path);
  }

  // ---------------------------------------------------------------------------
  // Watches.

  /**
   * Watch `path` (or @introduceDomain / @releaseDomain): `cb` runs with the
   * event path for the first event and for every change at or below `path`.
   */
  async watch(path: string, cb: WatchCallback, token?: string): Promise<WatchHandle> {
    const tok = token ?? `xb${this.nextToken++}`;
    if (this.watches.has(tok)) throw new XenbusError('EEXIST', 'XS_WATCH', path);
    this.watches.set(tok, cb);
    try {
      await this.ack('XS_WATCH', [path, tok], NO_TX, path);
    } catch (e) {
      this.watches.delete(tok);
      throw e;
    }
    return {
      path,
      token: tok,
      unwatch: async () => {
        this.watches.delete(tok);
        await this.ack('XS_UNWATCH', [path, tok], NO_TX, path);
      },
    };
  }

  /** RESET_WATCHES: the daemon forgets all our watches and transactions. */
  async resetWatches(): Promise<void> {
    this.watches.clear();
    await this.request('XS_RESET_WATCHES', new Uint8Array(0));
  }

  // ---------------------------------------------------------------------------
  // Transactions.

  async transactionStart(): Promise<TxId> {
    const [id] = await this.strings('XS_TRANSACTION_START', ['']);
    return Number(id) as TxId;
  }

  /** End a transaction: true if committed (or aborted as asked), false on EAGAIN (a conflict). */
  async transactionEnd(tx: TxId, commit: boolean): Promise<boolean> {
    try {
      await this.request('XS_TRANSACTION_END', encodeStrings([commit ? 'T' : 'F']), tx);
      return true;
    } catch (e) {
      if (e instanceof XenbusError && e.errno === 'EAGAIN') return false;
      throw e;
    }
  }

  /** Run `fn` in a transaction and commit, retrying the whole of it on EAGAIN. */
  async transaction<T>(fn: (tx: TxId) => Promise<T>, opts: { maxAttempts?: number } = {}): Promise<T> {
    const max = opts.maxAttempts ?? 16;
    for (let attempt = 1; attempt <= max; attempt++) {
      const tx = await this.transactionStart();
      let result: T;
      try {
        result = await fn(tx);
      } catch (e) {
        await this.transactionEnd(tx, false).catch(() => undefined);
        if (e instanceof XenbusError && e.errno === 'EAGAIN') continue;
        throw e;
      }
      if (await this.transactionEnd(tx, true)) return result;
    }
    throw new XenbusError('EAGAIN', 'XS_TRANSACTION_END');
  }

  // ---------------------------------------------------------------------------
  // Domains and the daemon (most are Dom0-only: EACCES for others).

  async getDomainPath(domid: number): Promise<string> {
    return (await this.strings('XS_GET_DOMAIN_PATH', [String(domid)]))[0];
  }

  introduce(domid: number, gfn: number, evtchn: number): Promise<void> {
    return this.ack('XS_INTRODUCE', [String(domid), String(gfn), String(evtchn)]);
  }

  release(domid: number): Promise<void> { return this.ack('XS_RELEASE', [String(domid)]); }

  async isDomainIntroduced(domid: number): Promise<boolean> {
    return (await this.strings('XS_IS_DOMAIN_INTRODUCED', [String(domid)]))[0] === 'T';
  }

  resume(domid: number): Promise<void> { return this.ack('XS_RESUME', [String(domid)]); }

  setTarget(domid: number, target: number): Promise<void> {
    return this.ack('XS_SET_TARGET', [String(domid), String(target)]);
  }

  /** CONTROL <command>|<args>|: the daemon's reply text. */
  async control(command: string, ...args: string[]): Promise<string> {
    return (await this.strings('XS_CONTROL', [command, ...args])).join('\n');
  }
}

