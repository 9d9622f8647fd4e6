/**
 * Permissions (owner rule, n/r/w/b, privileged bypass, ENOENT vs EACCES) and
 * Xen's quotas for unprivileged domains.
 */
import { describe, expect, it } from 'vitest';
import { encodeStrings } from '../../../shared/xenstore/wire.ts';
import { parsePerm, permFor, formatPerm, XS_PERM_OWNER, XS_PERM_READ, XS_PERM_WRITE } from '../../../dom0/xenstored/perms.ts';
import { Harness, type Step } from './harness.ts';

function scenario(name: string, steps: Step[]): void {
  it(name, () => {
    const h = new Harness();
    h.run(steps);
    expect(h.store.check()).toEqual([]);
  });
}

describe('xenstored permissions', () => {
  it('perm strings and perm_for_conn', () => {
    expect(parsePerm('b7')).toEqual({ domid: 7, access: XS_PERM_READ | XS_PERM_WRITE });
    expect(['n0', 'r1', 'w2', 'b65535'].map((s) => formatPerm(parsePerm(s)!))).toEqual(['n0', 'r1', 'w2', 'b65535']);
    for (const bad of ['', 'x1', 'r', 'r-1', 'r65536', 'r1a', 'R1', 'r 1']) expect(parsePerm(bad), bad).toBeUndefined();
    const perms = [{ domid: 1, access: XS_PERM_READ }, { domid: 2, access: XS_PERM_WRITE }, { domid: 2, access: XS_PERM_READ }];
    const all = XS_PERM_READ | XS_PERM_WRITE | XS_PERM_OWNER;
    expect(permFor({ domid: 0, privileged: true }, perms)).toBe(all);
    expect(permFor({ domid: 1, privileged: false }, perms)).toBe(all);
    expect(permFor({ domid: 2, privileged: false }, perms)).toBe(XS_PERM_WRITE); // first matching entry wins
    expect(permFor({ domid: 3, privileged: false }, perms)).toBe(XS_PERM_READ); // the owner entry's access
    expect(permFor({ domid: 3, privileged: false, target: 1 }, perms)).toBe(all); // acting for the owner
    expect(permFor({ domid: 3, privileged: false, target: 2 }, perms)).toBe(XS_PERM_WRITE);
  });

  scenario('domains see only what their permissions allow; Dom0 and the socket see everything', [
    { as: 'domU1', op: 'XS_READ', args: ['/tool'], expect: 'EACCES' },
    { as: 'domU1', op: 'XS_DIRECTORY', args: ['/'], expect: 'EACCES' },
    { as: 'domU1', op: 'XS_WRITE', args: ['/evil'], value: 'x', expect: 'EACCES' },
    { as: 'domU1', op: 'XS_MKDIR', args: ['/tool/evil'], expect: 'EACCES' },
    { as: 'domU1', op: 'XS_RM', args: ['/tool'], expect: 'EACCES' },
    { as: 'domU1', op: 'XS_WRITE', args: ['name'], value: 'one', expect: 'OK' },
    { as: 'domU1', op: 'XS_GET_PERMS', args: ['name'], expect: { strings: ['n1'] } },
    { as: 'domU2', op: 'XS_READ', args: ['/local/domain/1/name'], expect: 'EACCES' },
    { as: 'domU2', op: 'XS_WRITE', args: ['/local/domain/1/name'], value: 'two', expect: 'EACCES' },
    { as: 'domU2', op: 'XS_RM', args: ['/local/domain/1/name'], expect: 'EACCES' },
    { as: 'dom0', op: 'XS_READ', args: ['/local/domain/1/name'], expect: { value: 'one' } },
    { as: 'tools', op: 'XS_WRITE', args: ['/local/domain/1/name'], value: 'tool', expect: 'OK' },
    { as: 'domU1', op: 'XS_READ', args: ['name'], expect: { value: 'tool' } },
  ]);

  scenario('missing nodes answer ENOENT only where the nearest existing ancestor grants the access', [
    { as: 'domU1', op: 'XS_READ', args: ['nothing/here'], expect: 'ENOENT' },
    { as: 'domU2', op: 'XS_READ', args: ['/local/domain/1/nothing'], expect: 'EACCES' },
    { as: 'domU1', op: 'XS_READ', args: ['/nothing'], expect: 'EACCES' },
    { as: 'dom0', op: 'XS_READ', args: ['/nothing'], expect: 'ENOENT' },
    { as: 'domU2', op: 'XS_RM', args: ['/local/domain/1/nothing'], expect: 'EACCES' },
  ]);

  scenario('the owner rule: first entry is owner and default; later entries per domain', [
    { as: 'domU1', op: 'XS_WRITE', args: ['shared'], value: 'v', expect: 'OK' },
    { as: 'domU1', op: 'XS_SET_PERMS', args: ['shared', 'n1', 'r2'], expect: 'OK' },
    { as: 'domU2', op: 'XS_READ', args: ['/local/domain/1/shared'], expect: { value: 'v' } },
    { as: 'domU2', op: 'XS_GET_PERMS', args: ['/local/domain/1/shared'], expect: { strings: ['n1', 'r2'] } },
    { as: 'domU2', op: 'XS_WRITE', args: ['/local/domain/1/shared'], value: 'w', expect: 'EACCES' },
    // Write-only: may write, may not read.
    { as: 'domU1', op: 'XS_SET_PERMS', args: ['shared', 'n1', 'w2'], expect: 'OK' },
    { as: 'domU2', op: 'XS_WRITE', args: ['/local/domain/1/shared'], value: 'w', expect: 'OK' },
    { as: 'domU2', op: 'XS_READ', args: ['/local/domain/1/shared'], expect: 'EACCES' },
    // Default access for everyone not listed: r in the owner entry.
    { as: 'domU1', op: 'XS_SET_PERMS', args: ['shared', 'r1'], expect: 'OK' },
    { as: 'domU2', op: 'XS_READ', args: ['/local/domain/1/shared'], expect: { value: 'w' } },
    // b: both. Children a writer creates belong to the writer, with the parent's other entries.
    { as: 'domU1', op: 'XS_SET_PERMS', args: ['shared', 'n1', 'b2'], expect: 'OK' },
    { as: 'domU2', op: 'XS_WRITE', args: ['/local/domain/1/shared/by2'], value: 'x', expect: 'OK' },
    { as: 'domU2', op: 'XS_GET_PERMS', args: ['/local/domain/1/shared/by2'], expect: { strings: ['n2', 'b2'] } },
    // Only the owner may SET_PERMS; an unprivileged owner may not give the node away.
    { as: 'domU2', op: 'XS_SET_PERMS', args: ['/local/domain/1/shared', 'b2'], expect: 'EACCES' },
    { as: 'domU1', op: 'XS_SET_PERMS', args: ['shared', 'n2'], expect: 'EPERM' },
    { as: 'dom0', op: 'XS_SET_PERMS', args: ['/local/domain/1/shared', 'n2'], expect: 'OK' },
    { as: 'domU1', op: 'XS_READ', args: ['shared'], expect: 'EACCES' },
    { as: 'domU2', op: 'XS_READ', args: ['/local/domain/1/shared'], expect: { value: 'w' } },
  ]);

  scenario('Dom0 writing into a domain\'s home keeps the parent\'s permissions (the domain owns it)', [
    { as: 'dom0', op: 'XS_WRITE', args: ['/local/domain/1/device/vif/0/mac'], value: '00:16:3e', expect: 'OK' },
    { as: 'dom0', op: 'XS_GET_PERMS', args: ['/local/domain/1/device/vif/0/mac'], expect: { strings: ['n1'] } },
    { as: 'domU1', op: 'XS_READ', args: ['device/vif/0/mac'], expect: { value: '00:16:3e' } },
  ]);
});

describe('xenstored quotas (unprivileged domains only)', () => {
  it('nodes per domain: ENOSPC at the quota, nothing half-created, Dom0 exempt', () => {
    const h = new Harness();
    h.run([{ as: 'dom0', op: 'XS_CONTROL', args: ['quota', 'nodes', '5'], expect: 'OK' }]);
    // Domain 1 owns its home (1 node): four more fit.
    h.run([
      { as: 'domU1', op: 'XS_WRITE', args: ['a/b'], value: '', expect: 'OK' },
      { as: 'domU1', op: 'XS_WRITE', args: ['c/d/e'], value: '', expect: 'ENOSPC' },
      { as: 'domU1', op: 'XS_READ', args: ['c'], expect: 'ENOENT' },
      { as: 'domU1', op: 'XS_MKDIR', args: ['c/d'], expect: 'OK' },
      { as: 'domU1', op: 'XS_MKDIR', args: ['x'], expect: 'ENOSPC' },
      { as: 'domU1', op: 'XS_WRITE', args: ['a/b'], value: 'overwrite is fine', expect: 'OK' },
      // Dom0 is exempt, but what it creates in the home inherits the home's owner and counts against it.
      { as: 'dom0', op: 'XS_MKDIR', args: ['/local/domain/1/x/y/z'], expect: 'OK' },
      { as: 'domU1', op: 'XS_RM', args: ['c'], expect: 'OK' },
      { as: 'domU1', op: 'XS_MKDIR', args: ['q'], expect: 'ENOSPC' },
      { as: 'domU1', op: 'XS_RM', args: ['x'], expect: 'OK' },
      { as: 'domU1', op: 'XS_MKDIR', args: ['q'], expect: 'OK' },
    ]);
    expect(h.store.check()).toEqual([]);
  });

  it('nodes per domain: the default is 1000', () => {
    const h = new Harness();
    // Spread over 40 directories: one directory's child list is bound by the entry size quota.
    let i = 0;
    for (; i < 2000; i++) {
      const r = h.send(h.actors.domU1, 'XS_MKDIR', encodeStrings([`d${i % 40}/n${i}`]));
      if (new TextDecoder().decode(r.msg.payload) !== 'OK\0') break;
    }
    expect(h.store.tree.ownedCount(1)).toBe(1000);
    h.step({ as: 'domU1', op: 'XS_MKDIR', args: [`d${i % 40}/n${i}`], expect: 'ENOSPC' });
    h.step({ as: 'domU2', op: 'XS_MKDIR', args: ['other-domain-is-fine'], expect: 'OK' });
  });

  scenario('node size: a record of 2048 bytes or more is ENOSPC (24-byte header + 8 per perm + value + children)', [
    { as: 'domU1', op: 'XS_WRITE', args: ['v'], value: 'x'.repeat(2015), expect: 'OK' },
    { as: 'domU1', op: 'XS_WRITE', args: ['v'], value: 'x'.repeat(2016), expect: 'ENOSPC' },
    { as: 'domU1', op: 'XS_READ', args: ['v'], expect: { value: 'x'.repeat(2015) } },
    { as: 'domU1', op: 'XS_WRITE', args: ['w'], value: 'x'.repeat(3000), expect: 'ENOSPC' },
    { as: 'domU1', op: 'XS_READ', args: ['w'], expect: 'ENOENT' },
    { as: 'dom0', op: 'XS_WRITE', args: ['/local/domain/1/big'], value: 'x'.repeat(4000), expect: 'OK' },
  ]);

  scenario('permissions per node: 5', [
    { as: 'domU1', op: 'XS_MKDIR', args: ['p'], expect: 'OK' },
    { as: 'domU1', op: 'XS_SET_PERMS', args: ['p', 'n1', 'r2', 'r3', 'r4', 'r5'], expect: 'OK' },
    { as: 'domU1', op: 'XS_SET_PERMS', args: ['p', 'n1', 'r2', 'r3', 'r4', 'r5', 'r6'], expect: 'ENOSPC' },
    { as: 'dom0', op: 'XS_SET_PERMS', args: ['/local/domain/1/p', 'n1', 'r2', 'r3', 'r4', 'r5', 'r6', 'r7'], expect: 'OK' },
  ]);

  it('watches per domain: 128, then E2BIG (as C xenstored\'s do_watch)', () => {
    const h = new Harness();
    for (let i = 0; i < 128; i++) h.step({ as: 'domU1', op: 'XS_WATCH', args: ['w', `t${i}`], expect: 'OK' });
    h.step({ as: 'domU1', op: 'XS_WATCH', args: ['w', 'one-more'], expect: 'E2BIG' });
    h.step({ as: 'domU1', op: 'XS_UNWATCH', args: ['w', 't0'], expect: 'OK' });
    h.step({ as: 'domU1', op: 'XS_WATCH', args: ['w', 'one-more'], expect: 'OK' });
    for (let i = 0; i < 200; i++) h.step({ as: 'dom0', op: 'XS_WATCH', args: ['/w', `t${i}`], expect: 'OK' });
  });

  it('transactions per connection: 10, then ENOSPC', () => {
    const h = new Harness();
    for (let i = 0; i < 10; i++) h.step({ as: 'domU1', op: 'XS_TRANSACTION_START', args: [''], expect: 'any', saveTx: `t${i}` });
    h.step({ as: 'domU1', op: 'XS_TRANSACTION_START', args: [''], expect: 'ENOSPC' });
    h.step({ as: 'domU1', op: 'XS_TRANSACTION_END', args: ['F'], tx: 't3', expect: 'OK' });
    h.step({ as: 'domU1', op: 'XS_TRANSACTION_START', args: [''], expect: 'any', saveTx: 'again' });
    expect(new Set([...h.txs.values()]).size).toBe(11);
    for (let i = 0; i < 20; i++) h.step({ as: 'dom0', op: 'XS_TRANSACTION_START', args: [''], expect: 'any' });
  });

  it('nodes touched by one transaction: ENOSPC beyond the quota', () => {
    const h = new Harness();
    h.run([
      { as: 'dom0', op: 'XS_CONTROL', args: ['quota', 'transaction-nodes', '6'], expect: 'OK' },
      { as: 'domU1', op: 'XS_TRANSACTION_START', args: [''], expect: 'any', saveTx: 't' },
      // Reading a/b/c touches a/b/c and its ancestors while looking for the ENOENT answer.
      { as: 'domU1', op: 'XS_WRITE', args: ['a'], value: '', tx: 't', expect: 'OK' },
      { as: 'domU1', op: 'XS_WRITE', args: ['b'], value: '', tx: 't', expect: 'OK' },
      { as: 'domU1', op: 'XS_WRITE', args: ['c'], value: '', tx: 't', expect: 'OK' },
      { as: 'domU1', op: 'XS_WRITE', args: ['d'], value: '', tx: 't', expect: 'OK' },
      { as: 'domU1', op: 'XS_WRITE', args: ['e'], value: '', tx: 't', expect: 'OK' },
      { as: 'domU1', op: 'XS_WRITE', args: ['f'], value: '', tx: 't', expect: 'ENOSPC' },
      { as: 'domU1', op: 'XS_TRANSACTION_END', args: ['T'], tx: 't', expect: 'OK' },
      { as: 'domU1', op: 'XS_DIRECTORY', args: [''.concat('/local/domain/1')], expect: { strings: ['a', 'b', 'c', 'd', 'e'] } },
    ]);
  });

  it('quota changes need a privileged CONTROL', () => {
    const h = new Harness();
    const r = h.send(h.actors.domU1, 'XS_CONTROL', encodeStrings(['quota', 'nodes', '100000']));
    expect(new TextDecoder().decode(r.msg.payload)).toBe('EACCES\0');
  });
});
