/**
 * xenstored as a pure store: table-driven scenarios with Dom0, a host tool on
 * the socket and two DomUs, each step with the reply or errno Xen gives.
 */
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { encodeStrings, XS, XENSTORE_PAYLOAD_MAX } from '../../../shared/xenstore/wire.ts';
import { Harness, type Step } from './harness.ts';

function scenario(name: string, steps: Step[]): void {
  it(name, () => {
    const h = new Harness();
    h.run(steps);
    expect(h.store.check()).toEqual([]);
  });
}

describe('xenstored store: basic operations', () => {
  scenario('write, read, directory, mkdir, rm', [
    { as: 'dom0', op: 'XS_WRITE', args: ['/vm/a/b'], value: 'hello', expect: 'OK' },
    { as: 'dom0', op: 'XS_READ', args: ['/vm/a/b'], expect: { value: 'hello' } },
    { as: 'dom0', op: 'XS_READ', args: ['/vm/a'], expect: { value: '' } },
    { as: 'dom0', op: 'XS_DIRECTORY', args: ['/vm'], expect: { strings: ['a'] } },
    { as: 'dom0', op: 'XS_MKDIR', args: ['/vm/a/c'], expect: 'OK' },
    { as: 'dom0', op: 'XS_MKDIR', args: ['/vm/a/b'], expect: 'OK' },
    { as: 'dom0', op: 'XS_READ', args: ['/vm/a/b'], expect: { value: 'hello' } },
    { as: 'dom0', op: 'XS_DIRECTORY', args: ['/vm/a'], expect: { strings: ['b', 'c'] } },
    { as: 'dom0', op: 'XS_RM', args: ['/vm/a'], expect: 'OK' },
    { as: 'dom0', op: 'XS_READ', args: ['/vm/a/b'], expect: 'ENOENT' },
    { as: 'dom0', op: 'XS_DIRECTORY', args: ['/vm'], expect: { strings: [] } },
    // RM of a missing node is fine if its parent exists, ENOENT otherwise.
    { as: 'dom0', op: 'XS_RM', args: ['/vm/a'], expect: 'OK' },
    { as: 'dom0', op: 'XS_RM', args: ['/vm/a/b'], expect: 'ENOENT' },
    { as: 'dom0', op: 'XS_RM', args: ['/'], expect: 'EINVAL' },
  ]);

  scenario('values are binary and may be empty; the write payload is <path>\\0<value> without a NUL', [
    { as: 'dom0', op: 'XS_WRITE', args: ['/v'], value: '', expect: 'OK' },
    { as: 'dom0', op: 'XS_READ', args: ['/v'], expect: { value: '' } },
    { as: 'dom0', op: 'XS_WRITE', args: ['/v', 'x'], value: 'y', expect: 'OK' },
    { as: 'dom0', op: 'XS_READ', args: ['/v'], expect: { value: 'x\0y' } },
  ]);

  scenario('relative paths resolve under /local/domain/<domid>; the socket has no home', [
    { as: 'domU1', op: 'XS_WRITE', args: ['data/x'], value: '1', expect: 'OK' },
    { as: 'dom0', op: 'XS_READ', args: ['/local/domain/1/data/x'], expect: { value: '1' } },
    { as: 'domU1', op: 'XS_READ', args: ['data/x'], expect: { value: '1' } },
    { as: 'domU1', op: 'XS_DIRECTORY', args: ['data'], expect: { strings: ['x'] } },
    { as: 'dom0', op: 'XS_WRITE', args: ['memory/target'], value: '42', expect: 'OK' },
    { as: 'dom0', op: 'XS_READ', args: ['/local/domain/0/memory/target'], expect: { value: '42' } },
    { as: 'tools', op: 'XS_READ', args: ['memory/target'], expect: 'EINVAL' },
    { as: 'tools', op: 'XS_READ', args: ['/local/domain/0/memory/target'], expect: { value: '42' } },
  ]);

  scenario('path syntax: characters, slashes, emptiness, lengths', [
    { as: 'dom0', op: 'XS_WRITE', args: ['/a-b_c@9/Z'], value: 'ok', expect: 'OK' },
    { as: 'dom0', op: 'XS_WRITE', args: ['/a b'], value: '', expect: 'EINVAL' },
    { as: 'dom0', op: 'XS_WRITE', args: ['/a.b'], value: '', expect: 'EINVAL' },
    { as: 'dom0', op: 'XS_WRITE', args: ['/a//b'], value: '', expect: 'EINVAL' },
    { as: 'dom0', op: 'XS_WRITE', args: ['/a/'], value: '', expect: 'EINVAL' },
    { as: 'dom0', op: 'XS_READ', args: [''], expect: 'EINVAL' },
    { as: 'tools', op: 'XS_READ', args: [''], expect: 'EINVAL' },
    { as: 'dom0', op: 'XS_READ', args: ['/é'], expect: 'EINVAL' },
    { as: 'dom0', op: 'XS_WRITE', args: ['/' + 'x'.repeat(2047)], value: '', expect: 'OK' },
    { as: 'dom0', op: 'XS_WRITE', args: ['/' + 'x'.repeat(2048)], value: '', expect: 'EINVAL' },
    { as: 'dom0', op: 'XS_WRITE', args: ['/local/domain/1/' + 'y'.repeat(2048)], value: '', expect: 'OK' },
    { as: 'domU1', op: 'XS_WRITE', args: ['z'.repeat(2049)], value: '', expect: 'EINVAL' },
    { as: 'dom0', op: 'XS_READ', args: ['/local/domain/1/' + 'y'.repeat(2048)], expect: { value: '' } },
  ]);

  scenario('malformed payloads are EINVAL (one argument means exactly one NUL, at the end)', [
    { as: 'dom0', op: 'XS_READ', args: ['/tool', 'extra'], expect: 'EINVAL' },
    { as: 'dom0', op: 'XS_READ', args: [], expect: 'EINVAL' },
    { as: 'dom0', op: 'XS_WATCH', args: ['/tool'], expect: 'EINVAL' },
    { as: 'dom0', op: 'XS_SET_PERMS', args: ['/tool'], expect: 'EINVAL' },
    { as: 'dom0', op: 'XS_SET_PERMS', args: ['/tool', 'x0'], expect: 'EINVAL' },
    { as: 'dom0', op: 'XS_SET_PERMS', args: ['/tool', 'r70000'], expect: 'EINVAL' },
    { as: 'dom0', op: 'XS_DIRECTORY_PART', args: ['/tool'], expect: 'EINVAL' },
    { as: 'dom0', op: 'XS_TRANSACTION_END', args: ['X'], tx: 0, expect: 'ENOENT' },
    { as: 'dom0', op: 'XS_GET_DOMAIN_PATH', args: ['abc'], expect: 'EINVAL' },
  ]);

  scenario('unknown transaction ids are ENOENT; TRANSACTION_START inside one is EBUSY', [
    { as: 'dom0', op: 'XS_READ', args: ['/tool'], tx: 77, expect: 'ENOENT' },
    { as: 'dom0', op: 'XS_TRANSACTION_START', args: [''], expect: { match: /^\d+\0$/ }, saveTx: 't' },
    { as: 'dom0', op: 'XS_TRANSACTION_START', args: [''], tx: 't', expect: 'EBUSY' },
    { as: 'dom0', op: 'XS_TRANSACTION_END', args: ['X'], tx: 't', expect: 'EINVAL' },
    { as: 'dom0', op: 'XS_TRANSACTION_END', args: ['F'], tx: 't', expect: 'OK' },
    { as: 'dom0', op: 'XS_TRANSACTION_END', args: ['F'], tx: 't', expect: 'ENOENT' },
  ]);

  scenario('domain management: privileged only, T/F, paths, SET_TARGET, RESUME', [
    { as: 'dom0', op: 'XS_GET_DOMAIN_PATH', args: ['7'], expect: { strings: ['/local/domain/7'] } },
    { as: 'domU1', op: 'XS_GET_DOMAIN_PATH', args: ['2'], expect: { strings: ['/local/domain/2'] } },
    { as: 'dom0', op: 'XS_IS_DOMAIN_INTRODUCED', args: ['1'], expect: { strings: ['T'] } },
    { as: 'tools', op: 'XS_IS_DOMAIN_INTRODUCED', args: ['0'], expect: { strings: ['T'] } },
    { as: 'dom0', op: 'XS_IS_DOMAIN_INTRODUCED', args: ['9'], expect: { strings: ['F'] } },
    { as: 'domU1', op: 'XS_IS_DOMAIN_INTRODUCED', args: ['1'], expect: 'EACCES' },
    { as: 'domU1', op: 'XS_INTRODUCE', args: ['3', '1', '1'], expect: 'EACCES' },
    { as: 'domU1', op: 'XS_RELEASE', args: ['2'], expect: 'EACCES' },
    { as: 'domU1', op: 'XS_SET_TARGET', args: ['1', '2'], expect: 'EACCES' },
    { as: 'domU1', op: 'XS_RESUME', args: ['1'], expect: 'EACCES' },
    { as: 'domU1', op: 'XS_CONTROL', args: ['help'], expect: 'EACCES' },
    { as: 'dom0', op: 'XS_INTRODUCE', args: ['0', '1', '1'], expect: 'EINVAL' },
    { as: 'dom0', op: 'XS_INTRODUCE', args: ['32752', '1', '1'], expect: 'EINVAL' },
    { as: 'dom0', op: 'XS_INTRODUCE', args: ['3', '1', '0'], expect: 'EINVAL' },
    { as: 'dom0', op: 'XS_INTRODUCE', args: ['3', '1'], expect: 'EINVAL' },
    { as: 'dom0', op: 'XS_INTRODUCE', args: ['1', '999', '5'], expect: 'EINVAL' },
    { as: 'dom0', op: 'XS_INTRODUCE', args: ['1', '100', '6'], expect: 'OK' },
    { as: 'dom0', op: 'XS_RESUME', args: ['9'], expect: 'ENOENT' },
    { as: 'dom0', op: 'XS_RESUME', args: ['1'], expect: 'OK' },
    { as: 'dom0', op: 'XS_SET_TARGET', args: ['1', '9'], expect: 'ENOENT' },
    { as: 'dom0', op: 'XS_SET_TARGET', args: ['1', '2'], expect: 'OK' },
    // Domain 1 now acts for domain 2: its home is domain 1's own.
    { as: 'domU2', op: 'XS_WRITE', args: ['secret'], value: 's', expect: 'OK' },
    { as: 'domU1', op: 'XS_READ', args: ['/local/domain/2/secret'], expect: { value: 's' } },
    { as: 'domU2', op: 'XS_READ', args: ['/local/domain/1'], expect: 'EACCES' },
    { as: 'dom0', op: 'XS_RELEASE', args: ['9'], expect: 'ENOENT' },
    { as: 'dom0', op: 'XS_RELEASE', args: ['0'], expect: 'EINVAL' },
  ]);

  scenario('unknown and reply-only message types', [
    { as: 'dom0', op: 'XS_WATCH_EVENT', args: ['/x', 't'], expect: 'ENOSYS' },
    { as: 'dom0', op: 'XS_ERROR', args: ['EINVAL'], expect: 'ENOSYS' },
  ]);

  scenario('CONTROL commands', [
    { as: 'dom0', op: 'XS_CONTROL', args: ['help'], expect: { match: /check\n.*quota/s } },
    { as: 'tools', op: 'XS_CONTROL', args: ['check'], expect: 'OK' },
    { as: 'tools', op: 'XS_CONTROL', args: ['log', 'on'], expect: 'OK' },
    { as: 'tools', op: 'XS_CONTROL', args: ['print', 'hi'], expect: 'OK' },
    { as: 'tools', op: 'XS_CONTROL', args: ['quota'], expect: { match: /^nodes 1000\nwatches 128\n/ } },
    { as: 'tools', op: 'XS_CONTROL', args: ['quota', 'nodes', '2000'], expect: 'OK' },
    { as: 'tools', op: 'XS_CONTROL', args: ['quota'], expect: { match: /^nodes 2000\n/ } },
    { as: 'tools', op: 'XS_CONTROL', args: ['quota', 'constructor', '1'], expect: 'EINVAL' },
    { as: 'tools', op: 'XS_CONTROL', args: ['memreport'], expect: { match: /^nodes \d+\n/ } },
    { as: 'tools', op: 'XS_CONTROL', args: ['frobnicate'], expect: 'EINVAL' },
    { as: 'tools', op: 'XS_CONTROL', args: [], expect: 'EINVAL' },
  ]);
});

describe('xenstored store: wire-level rules', () => {
  it('a type number Xen does not define (20, the old XS_RESTRICT, and 0xffff) is ENOSYS', () => {
    const h = new Harness();
    for (const t of [20, 23, 0xffff]) {
      const r = h.send(h.actors.dom0, t, encodeStrings(['/']));
      expect(r.msg.type).toBe(XS.XS_ERROR);
      expect(new TextDecoder().decode(r.msg.payload)).toBe('ENOSYS\0');
    }
  });

  it('a reply that would exceed 4096 bytes is E2BIG; DIRECTORY_PART pages through it', () => {
    const h = new Harness();
    const names: string[] = [];
    for (let i = 0; i < 300; i++) {
      const n = `child-with-a-long-name-${String(i).padStart(4, '0')}`;
      names.push(n);
      h.expectOk(h.send(h.actors.dom0, 'XS_MKDIR', encodeStrings([`/big/${n}`])));
    }
    const dir = h.send(h.actors.dom0, 'XS_DIRECTORY', encodeStrings(['/big']));
    expect(new TextDecoder().decode(dir.msg.payload)).toBe('E2BIG\0');
    const got: string[] = [];
    let off = 0;
    let gen: string | undefined;
    for (let rounds = 0; rounds < 10; rounds++) {
      const r = h.send(h.actors.dom0, 'XS_DIRECTORY_PART', encodeStrings(['/big', String(off)]));
      expect(r.msg.type).toBe(XS.XS_DIRECTORY_PART);
      expect(r.msg.payload.length).toBeLessThanOrEqual(XENSTORE_PAYLOAD_MAX);
      const parts = new TextDecoder().decode(r.msg.payload).split('\0');
      gen ??= parts[0];
      expect(parts[0]).toBe(gen);
      const body = parts.slice(1);
      // The list ends with an empty name: "...last\0\0".
      const done = body.length >= 2 && body[body.length - 1] === '' && body[body.length - 2] === '';
      const children = body.filter((s) => s !== '');
      got.push(...children);
      off += children.reduce((n, c) => n + c.length + 1, 0);
      if (done) break;
    }
    expect(got).toEqual(names);
    // Past the end: the generation and an empty list.
    const end = h.send(h.actors.dom0, 'XS_DIRECTORY_PART', encodeStrings(['/big', '99999']));
    expect(new TextDecoder().decode(end.msg.payload)).toBe(`${gen}\0\0`);
    // A change to the node changes its generation.
    h.expectOk(h.send(h.actors.dom0, 'XS_MKDIR', encodeStrings(['/big/new'])));
    const after = h.send(h.actors.dom0, 'XS_DIRECTORY_PART', encodeStrings(['/big', '99999']));
    expect(new TextDecoder().decode(after.msg.payload)).not.toBe(`${gen}\0\0`);
  });

  it('bad UTF-8 in a path or token is EINVAL, never a crash', () => {
    const h = new Harness();
    const bad = new Uint8Array([0x2f, 0xc3, 0x28, 0]);
    for (const op of ['XS_READ', 'XS_WRITE', 'XS_MKDIR', 'XS_RM', 'XS_DIRECTORY', 'XS_GET_PERMS'] as const) {
      const r = h.send(h.actors.domU1, op, bad);
      expect(new TextDecoder().decode(r.msg.payload), op).toBe('EINVAL\0');
    }
    const watch = h.send(h.actors.domU1, 'XS_WATCH', new Uint8Array([0x2f, 0, 0xff, 0xfe, 0]));
    expect(new TextDecoder().decode(watch.msg.payload)).toBe('EINVAL\0');
  });
});

describe('xenstored store: hostile input', () => {
  it('any message from any actor gets exactly one reply with its req_id and tx_id, never an exception', () => {
    const actor = fc.constantFrom('dom0' as const, 'tools' as const, 'domU1' as const, 'domU2' as const);
    const pathish = fc.constantFrom('', '/', 'a', '/a/b', 'data/x', '/local/domain/1', '@releaseDomain', '/tool', '//', 'é');
    const payload = fc.oneof(
      fc.uint8Array({ maxLength: 40 }),
      fc.array(fc.oneof(pathish, fc.string({ maxLength: 6 }), fc.constantFrom('T', 'F', 'r1', 'n0', 'b2', '1', '0', '100')), { maxLength: 4 })
        .map((parts) => encodeStrings(parts)),
    );
    const msg = fc.record({ as: actor, type: fc.integer({ min: 0, max: 24 }), tx: fc.constantFrom(0, 0, 0, 1, 2, 99), payload });
    fc.assert(fc.property(fc.array(msg, { maxLength: 25 }), (msgs) => {
      const h = new Harness();
      // A RELEASEd domain's connection is gone: the store answers nothing on it.
      for (const m of msgs) if (!h.actors[m.as].closed) h.send(h.actors[m.as], m.type, m.payload, m.tx);
      expect(h.store.check()).toEqual([]);
    }), { numRuns: 150 });
  });
});
