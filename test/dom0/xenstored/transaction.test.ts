/**
 * Transactions: isolation until commit, EAGAIN on a conflicting commit (per
 * touched node), nothing applied on abort or conflict, and a property test
 * against a serial model.
 */
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { encodeStrings, splitStrings, XS } from '../../../shared/xenstore/wire.ts';
import { Harness, type Step } from './harness.ts';

function scenario(name: string, steps: Step[], check?: (h: Harness) => void): void {
  it(name, () => {
    const h = new Harness();
    h.run(steps);
    check?.(h);
    expect(h.store.check()).toEqual([]);
  });
}

describe('xenstored transactions', () => {
  scenario('changes are private until commit, then visible; abort discards', [
    { as: 'domU1', op: 'XS_TRANSACTION_START', args: [''], expect: 'any', saveTx: 't' },
    { as: 'domU1', op: 'XS_WRITE', args: ['x'], value: '1', tx: 't', expect: 'OK' },
    { as: 'domU1', op: 'XS_READ', args: ['x'], tx: 't', expect: { value: '1' } },
    { as: 'domU1', op: 'XS_READ', args: ['x'], expect: 'ENOENT' },
    { as: 'dom0', op: 'XS_READ', args: ['/local/domain/1/x'], expect: 'ENOENT' },
    { as: 'domU1', op: 'XS_TRANSACTION_END', args: ['T'], tx: 't', expect: 'OK' },
    { as: 'dom0', op: 'XS_READ', args: ['/local/domain/1/x'], expect: { value: '1' } },
    { as: 'domU1', op: 'XS_TRANSACTION_START', args: [''], expect: 'any', saveTx: 'u' },
    { as: 'domU1', op: 'XS_RM', args: ['x'], tx: 'u', expect: 'OK' },
    { as: 'domU1', op: 'XS_READ', args: ['x'], tx: 'u', expect: 'ENOENT' },
    { as: 'domU1', op: 'XS_TRANSACTION_END', args: ['F'], tx: 'u', expect: 'OK' },
    { as: 'domU1', op: 'XS_READ', args: ['x'], expect: { value: '1' } },
  ]);

  scenario('a conflicting commit gets EAGAIN and applies nothing', [
    { as: 'domU1', op: 'XS_WRITE', args: ['state'], value: '1', expect: 'OK' },
    { as: 'domU1', op: 'XS_TRANSACTION_START', args: [''], expect: 'any', saveTx: 't' },
    { as: 'domU1', op: 'XS_READ', args: ['state'], tx: 't', expect: { value: '1' } },
    { as: 'domU1', op: 'XS_WRITE', args: ['other'], value: 'from-tx', tx: 't', expect: 'OK' },
    { as: 'dom0', op: 'XS_WRITE', args: ['/local/domain/1/state'], value: '2', expect: 'OK' },
    { as: 'domU1', op: 'XS_TRANSACTION_END', args: ['T'], tx: 't', expect: 'EAGAIN' },
    { as: 'domU1', op: 'XS_READ', args: ['other'], expect: 'ENOENT' },
    { as: 'domU1', op: 'XS_READ', args: ['state'], expect: { value: '2' } },
    // The id is gone after END, committed or not.
    { as: 'domU1', op: 'XS_READ', args: ['state'], tx: 't', expect: 'ENOENT' },
  ]);

  scenario('changes to nodes the transaction never touched do not conflict', [
    { as: 'domU1', op: 'XS_MKDIR', args: ['a'], expect: 'OK' },
    { as: 'domU1', op: 'XS_MKDIR', args: ['b'], expect: 'OK' },
    { as: 'domU1', op: 'XS_TRANSACTION_START', args: [''], expect: 'any', saveTx: 't' },
    { as: 'domU1', op: 'XS_WRITE', args: ['a'], value: 'tx', tx: 't', expect: 'OK' },
    { as: 'domU2', op: 'XS_WRITE', args: ['elsewhere'], value: 'x', expect: 'OK' },
    { as: 'domU1', op: 'XS_WRITE', args: ['b'], value: 'direct', expect: 'OK' },
    { as: 'domU1', op: 'XS_TRANSACTION_END', args: ['T'], tx: 't', expect: 'OK' },
    { as: 'domU1', op: 'XS_READ', args: ['a'], expect: { value: 'tx' } },
    { as: 'domU1', op: 'XS_READ', args: ['b'], expect: { value: 'direct' } },
  ]);

  scenario('creating a node the transaction found missing conflicts; so does removing one it read', [
    { as: 'domU1', op: 'XS_TRANSACTION_START', args: [''], expect: 'any', saveTx: 't' },
    { as: 'domU1', op: 'XS_READ', args: ['lock'], tx: 't', expect: 'ENOENT' },
    { as: 'domU1', op: 'XS_WRITE', args: ['lock'], value: 'mine', tx: 't', expect: 'OK' },
    { as: 'domU1', op: 'XS_WRITE', args: ['lock'], value: 'theirs', expect: 'OK' },
    { as: 'domU1', op: 'XS_TRANSACTION_END', args: ['T'], tx: 't', expect: 'EAGAIN' },
    { as: 'domU1', op: 'XS_READ', args: ['lock'], expect: { value: 'theirs' } },
    { as: 'domU1', op: 'XS_TRANSACTION_START', args: [''], expect: 'any', saveTx: 'u' },
    { as: 'domU1', op: 'XS_READ', args: ['lock'], tx: 'u', expect: { value: 'theirs' } },
    { as: 'dom0', op: 'XS_RM', args: ['/local/domain/1/lock'], expect: 'OK' },
    { as: 'domU1', op: 'XS_TRANSACTION_END', args: ['T'], tx: 'u', expect: 'EAGAIN' },
  ]);

  scenario('two transactions adding children of one directory: the second to commit retries', [
    { as: 'domU1', op: 'XS_MKDIR', args: ['dir'], expect: 'OK' },
    { as: 'domU1', op: 'XS_TRANSACTION_START', args: [''], expect: 'any', saveTx: 'a' },
    { as: 'domU1', op: 'XS_TRANSACTION_START', args: [''], expect: 'any', saveTx: 'b' },
    { as: 'domU1', op: 'XS_WRITE', args: ['dir/a'], value: '', tx: 'a', expect: 'OK' },
    { as: 'domU1', op: 'XS_WRITE', args: ['dir/b'], value: '', tx: 'b', expect: 'OK' },
    { as: 'domU1', op: 'XS_TRANSACTION_END', args: ['T'], tx: 'a', expect: 'OK' },
    { as: 'domU1', op: 'XS_TRANSACTION_END', args: ['T'], tx: 'b', expect: 'EAGAIN' },
    { as: 'domU1', op: 'XS_DIRECTORY', args: ['dir'], expect: { strings: ['a'] } },
  ]);

  scenario('transaction ids belong to their connection; RESET_WATCHES drops them', [
    { as: 'domU1', op: 'XS_TRANSACTION_START', args: [''], expect: 'any', saveTx: 't' },
    { as: 'domU2', op: 'XS_READ', args: ['x'], tx: 't', expect: 'ENOENT' },
    { as: 'domU2', op: 'XS_TRANSACTION_END', args: ['T'], tx: 't', expect: 'ENOENT' },
    { as: 'domU1', op: 'XS_RESET_WATCHES', args: [], expect: 'OK' },
    { as: 'domU1', op: 'XS_TRANSACTION_END', args: ['T'], tx: 't', expect: 'ENOENT' },
  ]);

  scenario('watch events of a transaction fire at commit, not on abort or conflict', [
    { as: 'domU2', op: 'XS_WATCH', args: ['/local/domain/2/w', 'tok'], expect: 'OK' },
    { as: 'domU2', op: 'XS_TRANSACTION_START', args: [''], expect: 'any', saveTx: 't' },
    { as: 'domU2', op: 'XS_WRITE', args: ['w/a'], value: '', tx: 't', expect: 'OK' },
    { as: 'domU2', op: 'XS_TRANSACTION_END', args: ['F'], tx: 't', expect: 'OK' },
    { as: 'domU2', op: 'XS_TRANSACTION_START', args: [''], expect: 'any', saveTx: 'u' },
    { as: 'domU2', op: 'XS_WRITE', args: ['w/b'], value: '', tx: 'u', expect: 'OK' },
    { as: 'domU2', op: 'XS_WRITE', args: ['w/c'], value: '', tx: 'u', expect: 'OK' },
    { as: 'domU2', op: 'XS_TRANSACTION_END', args: ['T'], tx: 'u', expect: 'OK' },
  ], (h) => {
    expect(h.events.domU2).toEqual([
      '/local/domain/2/w tok', '/local/domain/2/w/b tok', '/local/domain/2/w/c tok',
    ]);
  });

  it('concurrent transactions are serializable: each commits as if alone, or gets EAGAIN (property)', () => {
    type Op = { kind: 'read' | 'write' | 'rm'; key: number; value: number };
    const op = fc.record({ kind: fc.constantFrom('read' as const, 'write' as const, 'rm' as const), key: fc.integer({ min: 0, max: 3 }), value: fc.integer({ min: 0, max: 9 }) });
    // The model replays a transaction's changes only if it committed.
    fc.assert(fc.property(fc.array(op, { maxLength: 6 }), fc.array(op, { maxLength: 6 }), fc.array(op, { maxLength: 3 }), (txa, txb, direct) => {
      const h = new Harness();
      const conn = h.actors.dom0;
      const dec = new TextDecoder();
      const send = (type: Parameters<Harness['send']>[1], payload: Uint8Array, tx = 0) => h.send(conn, type, payload, tx).msg;
      const model = new Map<number, string>();
      const run = (tx: number, o: Op, m: Map<number, string> | undefined): void => {
        const path = `/k/${o.key}`;
        if (o.kind === 'write') {
          const p = encodeStrings([path, String(o.value)]);
          send('XS_WRITE', p.subarray(0, p.length - 1), tx);
          m?.set(o.key, String(o.value));
        } else if (o.kind === 'rm') {
          send('XS_RM', encodeStrings([path]), tx);
          m?.delete(o.key);
        } else {
          send('XS_READ', encodeStrings([path]), tx);
        }
      };
      send('XS_MKDIR', encodeStrings(['/k']));
      const start = (): number => Number(dec.decode(splitStrings(send('XS_TRANSACTION_START', encodeStrings([''])).payload).strings[0]));
      const a = start();
      const b = start();
      txa.forEach((o) => run(a, o, undefined));
      txb.forEach((o) => run(b, o, undefined));
      direct.forEach((o) => run(0, o, model));
      const okA = send('XS_TRANSACTION_END', encodeStrings(['T']), a).type !== XS.XS_ERROR;
      if (okA) txa.forEach((o) => { if (o.kind !== 'read') (o.kind === 'write' ? model.set(o.key, String(o.value)) : model.delete(o.key)); });
      const okB = send('XS_TRANSACTION_END', encodeStrings(['T']), b).type !== XS.XS_ERROR;
      if (okB) txb.forEach((o) => { if (o.kind !== 'read') (o.kind === 'write' ? model.set(o.key, String(o.value)) : model.delete(o.key)); });
      // With no intervening direct change, the first to commit always succeeds.
      if (direct.length === 0) expect(okA).toBe(true);
      for (let k = 0; k < 4; k++) {
        const r = send('XS_READ', encodeStrings([`/k/${k}`]));
        const got = r.type === XS.XS_ERROR ? undefined : dec.decode(r.payload);
        expect(got, `key ${k}`).toBe(model.get(k));
      }
      expect(h.store.check()).toEqual([]);
    }), { numRuns: 150 });
  });
});
