/**
 * Actors for table-driven xenstored scenarios: `dom0` (Dom0's ring connection,
 * privileged), `tools` (a UNIX-socket client, privileged, no home), `domU1` and
 * `domU2` (introduced domains 1 and 2). Each request goes through the pure
 * store's `handle`; replies are checked, watch events collected per actor.
 */
import { expect } from 'vitest';
import { XenStore, type Outgoing, type StoreConn, type StoreOptions } from '../../../dom0/xenstored/store.ts';
import {
  encodeStrings, parseErrorPayload, splitStrings, XS, type XsErrno, type XsTypeName,
} from '../../../shared/xenstore/wire.ts';

export type ActorName = 'dom0' | 'tools' | 'domU1' | 'domU2';

/** What a step expects back: "OK", an errno name, a READ value, or the reply's strings. */
export type Expect = 'OK' | XsErrno | { value: string } | { strings: string[] } | { match: RegExp } | 'any';

export interface Step {
  readonly as: ActorName;
  readonly op: XsTypeName;
  /** Payload strings, each NUL-terminated (WRITE's value: use `value`). */
  readonly args?: readonly string[];
  /** WRITE value, sent after "<path>\0" without a NUL. */
  readonly value?: string;
  /** A transaction id, or the name of one started earlier with `saveTx`. */
  readonly tx?: number | string;
  readonly saveTx?: string;
  readonly expect: Expect;
}

const dec = new TextDecoder();

export class Harness {
  readonly store: XenStore;
  readonly actors: Record<ActorName, StoreConn>;
  /** "epath token" per actor, in arrival order. */
  readonly events: Record<ActorName, string[]> = { dom0: [], tools: [], domU1: [], domU2: [] };
  readonly txs = new Map<string, number>();
  private reqId = 1;
  readonly introduced: number[] = [];
  readonly released: number[] = [];

  constructor(opts: StoreOptions = {}) {
    this.store = new XenStore({
      ...opts,
      hooks: {
        introduce: (domid) => {
          this.introduced.push(domid);
          return undefined;
        },
        release: (domid) => { this.released.push(domid); },
      },
    });
    const dom0 = this.store.connectDomain(0);
    const tools = this.store.connectSocket();
    this.actors = { dom0, tools, domU1: dom0, domU2: dom0 };
    for (const [name, domid] of [['domU1', 1], ['domU2', 2]] as const) {
      this.expectOk(this.send(dom0, 'XS_INTRODUCE', encodeStrings([String(domid), '100', '5'])));
      this.actors[name] = this.store.connectDomain(domid);
    }
    // Each domain's home, as the toolstack makes it: created by Dom0, then given to the domain
    // (SET_PERMS n<d>: owned by <d>, no access for others).
    for (const d of [1, 2]) {
      this.expectOk(this.send(dom0, 'XS_MKDIR', encodeStrings([`/local/domain/${d}`])));
      this.expectOk(this.send(dom0, 'XS_SET_PERMS', encodeStrings([`/local/domain/${d}`, `n${d}`])));
    }
    this.clearEvents();
  }

  clearEvents(): void {
    for (const k of Object.keys(this.events) as ActorName[]) this.events[k].length = 0;
  }

  private nameOf(c: StoreConn): ActorName | undefined {
    return (Object.keys(this.actors) as ActorName[]).find((k) => this.actors[k] === c);
  }

  /** Send one request; collect events; return the requester's reply. */
  send(conn: StoreConn, op: XsTypeName | number, payload: Uint8Array, txId = 0): Outgoing {
    const type = typeof op === 'number' ? op : XS[op];
    const reqId = this.reqId++;
    const out = this.store.handle(conn, { type, reqId, txId, payload });
    const replies = out.filter((o) => o.kind === 'reply');
    expect(replies).toHaveLength(1);
    expect(replies[0].to).toBe(conn);
    expect(replies[0].msg.reqId).toBe(reqId);
    expect(replies[0].msg.txId).toBe(txId);
    this.collect(out);
    return replies[0];
  }

  collect(out: readonly Outgoing[]): void {
    for (const o of out) {
      if (o.kind !== 'event') continue;
      expect(o.msg.type).toBe(XS.XS_WATCH_EVENT);
      expect(o.msg.reqId).toBe(0);
      expect(o.msg.txId).toBe(0);
      const name = this.nameOf(o.to);
      if (name) this.events[name].push(splitStrings(o.msg.payload).strings.map((s) => dec.decode(s)).join(' '));
    }
  }

  expectOk(r: Outgoing): void {
    expect(r.msg.type, dec.decode(r.msg.payload)).not.toBe(XS.XS_ERROR);
  }

  /** Run a scenario; each failure names its step. */
  run(steps: readonly Step[]): void {
    steps.forEach((s, i) => this.step(s, `step ${i}: ${s.as} ${s.op} ${(s.args ?? []).join(' ')}`));
  }

  step(s: Step, label = `${s.as} ${s.op}`): Outgoing {
    const args = s.args ?? [];
    let payload = encodeStrings(args);
    if (s.value !== undefined) {
      const v = new TextEncoder().encode(s.value);
      const p = new Uint8Array(payload.length + v.length);
      p.set(payload);
      p.set(v, payload.length);
      payload = p;
    }
    const tx = typeof s.tx === 'string' ? this.txs.get(s.tx) ?? -1 : s.tx ?? 0;
    const r = this.send(this.actors[s.as], s.op, payload, tx);
    const isErr = r.msg.type === XS.XS_ERROR;
    const got = isErr ? parseErrorPayload(r.msg.payload) : dec.decode(r.msg.payload);
    const e = s.expect;
    if (s.saveTx && !isErr) this.txs.set(s.saveTx, Number(dec.decode(splitStrings(r.msg.payload).strings[0])));
    if (e === 'any') return r;
    if (typeof e === 'string' && e !== 'OK') {
      expect(isErr ? got : `reply ${JSON.stringify(got)}`, label).toBe(e);
      return r;
    }
    expect(isErr ? `error ${got}` : 'reply', label).toBe('reply');
    expect(r.msg.type, label).toBe(XS[s.op]);
    if (e === 'OK') expect(got, label).toBe('OK\0');
    else if ('value' in e) expect(got, label).toBe(e.value);
    else if ('match' in e) expect(got, label).toMatch(e.match);
    else expect(splitStrings(r.msg.payload).strings.map((b) => dec.decode(b)), label).toEqual(e.strings);
    return r;
  }
}
