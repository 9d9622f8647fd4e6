/**
 * Watches: the first event, events at and below the path, RM of ancestors and
 * descendants, relative paths, permission checks, special watches, and domain
 * release (nodes removed, @releaseDomain).
 */
import { describe, expect, it } from 'vitest';
import { Harness, type Step } from './harness.ts';

function scenario(name: string, steps: Step[], check: (h: Harness) => void): void {
  it(name, () => {
    const h = new Harness();
    h.run(steps);
    check(h);
    expect(h.store.check()).toEqual([]);
  });
}

describe('xenstored watches', () => {
  scenario('fires once when set, then on every change at or below the path, not elsewhere', [
    { as: 'dom0', op: 'XS_WATCH', args: ['/vm', 'tok'], expect: 'OK' },
    { as: 'dom0', op: 'XS_WRITE', args: ['/vm'], value: '1', expect: 'OK' },
    { as: 'dom0', op: 'XS_WRITE', args: ['/vm/a/b'], value: '2', expect: 'OK' },
    { as: 'dom0', op: 'XS_MKDIR', args: ['/vm/a'], expect: 'OK' },
    { as: 'dom0', op: 'XS_MKDIR', args: ['/vm/c'], expect: 'OK' },
    { as: 'dom0', op: 'XS_WRITE', args: ['/vmx'], value: 'not below', expect: 'OK' },
    { as: 'dom0', op: 'XS_SET_PERMS', args: ['/vm/c', 'r0'], expect: 'OK' },
    { as: 'dom0', op: 'XS_READ', args: ['/vm'], expect: { value: '1' } },
  ], (h) => {
    // MKDIR of an existing node changes nothing and fires nothing.
    expect(h.events.dom0).toEqual(['/vm tok', '/vm tok', '/vm/a/b tok', '/vm/c tok', '/vm/c tok']);
  });

  scenario('RM fires the removed path for watches at or above it, and each removed node for watches on it', [
    { as: 'dom0', op: 'XS_WRITE', args: ['/a/b/c'], value: '', expect: 'OK' },
    { as: 'dom0', op: 'XS_MKDIR', args: ['/a/b/d'], expect: 'OK' },
    { as: 'dom0', op: 'XS_WATCH', args: ['/a', 'top'], expect: 'OK' },
    { as: 'dom0', op: 'XS_WATCH', args: ['/a/b/c', 'leaf'], expect: 'OK' },
    { as: 'dom0', op: 'XS_WATCH', args: ['/a/b/never', 'missing'], expect: 'OK' },
    { as: 'tools', op: 'XS_WATCH', args: ['/', 'root'], expect: 'OK' },
    { as: 'dom0', op: 'XS_RM', args: ['/a/b'], expect: 'OK' },
  ], (h) => {
    expect(h.events.dom0).toEqual(['/a top', '/a/b/c leaf', '/a/b/never missing', '/a/b top', '/a/b/c leaf']);
    expect(h.events.tools).toEqual(['/ root', '/a/b root']);
  });

  scenario('relative watches report relative paths; duplicates are EEXIST; UNWATCH stops them', [
    { as: 'domU1', op: 'XS_WATCH', args: ['device', 'dev'], expect: 'OK' },
    { as: 'domU1', op: 'XS_WATCH', args: ['device', 'dev'], expect: 'EEXIST' },
    { as: 'domU1', op: 'XS_WATCH', args: ['/local/domain/1/device', 'abs'], expect: 'OK' },
    { as: 'domU1', op: 'XS_WATCH', args: ['', 'home'], expect: 'EINVAL' },
    { as: 'dom0', op: 'XS_WRITE', args: ['/local/domain/1/device/vbd/768/state'], value: '1', expect: 'OK' },
    { as: 'domU1', op: 'XS_UNWATCH', args: ['device', 'dev'], expect: 'OK' },
    { as: 'domU1', op: 'XS_UNWATCH', args: ['device', 'dev'], expect: 'ENOENT' },
    { as: 'dom0', op: 'XS_WRITE', args: ['/local/domain/1/device/vbd/768/state'], value: '2', expect: 'OK' },
  ], (h) => {
    expect(h.events.domU1).toEqual([
      'device dev', '/local/domain/1/device abs',
      'device/vbd/768/state dev', '/local/domain/1/device/vbd/768/state abs',
      '/local/domain/1/device/vbd/768/state abs',
    ]);
  });

  scenario('tokens come back byte for byte; several watches of one connection all fire', [
    { as: 'dom0', op: 'XS_WATCH', args: ['/t', 'tøken ✓'], expect: 'OK' },
    { as: 'dom0', op: 'XS_WATCH', args: ['/t/x', ''], expect: 'OK' },
    { as: 'dom0', op: 'XS_WRITE', args: ['/t/x'], value: '', expect: 'OK' },
  ], (h) => {
    expect(h.events.dom0).toEqual(['/t tøken ✓', '/t/x ', '/t/x tøken ✓', '/t/x ']);
  });

  scenario('only watchers that may read the node (or its parent) hear of changes', [
    { as: 'domU2', op: 'XS_WATCH', args: ['/local/domain/1', 'spy'], expect: 'OK' },
    { as: 'domU1', op: 'XS_WRITE', args: ['private'], value: 'x', expect: 'OK' },
    // Granting read fires (the node is readable now), and later changes reach the watcher.
    { as: 'domU1', op: 'XS_MKDIR', args: ['pub'], expect: 'OK' },
    { as: 'domU1', op: 'XS_SET_PERMS', args: ['pub', 'n1', 'r2'], expect: 'OK' },
    { as: 'domU1', op: 'XS_WRITE', args: ['pub/v'], value: '1', expect: 'OK' },
    // Revoking fires once more (the old permissions allowed reading), then silence.
    { as: 'domU1', op: 'XS_SET_PERMS', args: ['pub/v', 'n1'], expect: 'OK' },
    { as: 'domU1', op: 'XS_SET_PERMS', args: ['pub', 'n1'], expect: 'OK' },
    { as: 'domU1', op: 'XS_WRITE', args: ['pub/v'], value: '2', expect: 'OK' },
  ], (h) => {
    expect(h.events.domU2).toEqual([
      '/local/domain/1 spy', // the first event is unconditional
      '/local/domain/1/pub spy',
      '/local/domain/1/pub/v spy',
      '/local/domain/1/pub/v spy', // pub/v unreadable now, but its parent pub still is
      '/local/domain/1/pub spy',
    ]);
  });

  scenario('@introduceDomain and @releaseDomain reach privileged watchers; others need Dom0\'s SET_PERMS', [
    { as: 'tools', op: 'XS_WATCH', args: ['@introduceDomain', 'intro'], expect: 'OK' },
    { as: 'dom0', op: 'XS_WATCH', args: ['@releaseDomain', 'rel'], expect: 'OK' },
    { as: 'domU1', op: 'XS_WATCH', args: ['@releaseDomain', 'rel1'], expect: 'OK' },
    { as: 'domU2', op: 'XS_WATCH', args: ['@introduceDomain', 'intro2'], expect: 'OK' },
    { as: 'dom0', op: 'XS_INTRODUCE', args: ['3', '77', '9'], expect: 'OK' },
    { as: 'dom0', op: 'XS_RELEASE', args: ['3'], expect: 'OK' },
    { as: 'domU1', op: 'XS_SET_PERMS', args: ['@releaseDomain', 'r1'], expect: 'EACCES' },
    { as: 'dom0', op: 'XS_SET_PERMS', args: ['@releaseDomain', 'n0', 'r1'], expect: 'OK' },
    { as: 'dom0', op: 'XS_SET_PERMS', args: ['@nonsense', 'n0'], expect: 'EINVAL' },
    { as: 'dom0', op: 'XS_INTRODUCE', args: ['4', '78', '9'], expect: 'OK' },
    { as: 'dom0', op: 'XS_RELEASE', args: ['4'], expect: 'OK' },
    { as: 'dom0', op: 'XS_WRITE', args: ['/x'], value: '', expect: 'OK' },
  ], (h) => {
    expect(h.events.tools).toEqual(['@introduceDomain intro', '@introduceDomain intro', '@introduceDomain intro']);
    expect(h.events.dom0).toEqual(['@releaseDomain rel', '@releaseDomain rel', '@releaseDomain rel']);
    expect(h.events.domU1).toEqual(['@releaseDomain rel1', '@releaseDomain rel1']);
    expect(h.events.domU2).toEqual(['@introduceDomain intro2']);
    expect(h.introduced).toEqual([1, 2, 3, 4]);
    expect(h.released).toEqual([3, 4]);
  });

  it('a destroyed domain: its nodes go (watchers hear it), its id leaves every ACL, @releaseDomain fires', () => {
    const h = new Harness();
    h.run([
      { as: 'domU1', op: 'XS_WRITE', args: ['data/x'], value: '1', expect: 'OK' },
      { as: 'dom0', op: 'XS_WRITE', args: ['/vm/shared'], value: 's', expect: 'OK' },
      { as: 'dom0', op: 'XS_SET_PERMS', args: ['/vm/shared', 'n0', 'r1'], expect: 'OK' },
      { as: 'domU1', op: 'XS_WATCH', args: ['data', 'mine'], expect: 'OK' },
      { as: 'dom0', op: 'XS_WATCH', args: ['/local/domain/1/data/x', 'w'], expect: 'OK' },
      { as: 'dom0', op: 'XS_WATCH', args: ['@releaseDomain', 'rel'], expect: 'OK' },
    ]);
    h.clearEvents();
    h.collect(h.store.domainDestroyed(1));
    expect(h.events.dom0).toEqual(['/local/domain/1/data/x w', '@releaseDomain rel']);
    expect(h.events.domU1).toEqual([]); // disconnected
    expect(h.actors.domU1.closed).toBe(true);
    h.run([
      { as: 'dom0', op: 'XS_READ', args: ['/local/domain/1'], expect: 'ENOENT' },
      { as: 'dom0', op: 'XS_GET_PERMS', args: ['/vm/shared'], expect: { strings: ['n0'] } },
      { as: 'dom0', op: 'XS_IS_DOMAIN_INTRODUCED', args: ['1'], expect: { strings: ['F'] } },
    ]);
    expect(h.released).toEqual([1]);
    expect(h.store.check()).toEqual([]);
  });

  it('a shutdown fires @releaseDomain once, until RESUME', () => {
    const h = new Harness();
    h.run([{ as: 'dom0', op: 'XS_WATCH', args: ['@releaseDomain', 'rel'], expect: 'OK' }]);
    h.clearEvents();
    h.collect(h.store.domainShutdown(2));
    h.collect(h.store.domainShutdown(2));
    expect(h.events.dom0).toEqual(['@releaseDomain rel']);
    h.run([{ as: 'dom0', op: 'XS_RESUME', args: ['2'], expect: 'OK' }]);
    h.collect(h.store.domainShutdown(2));
    expect(h.events.dom0).toEqual(['@releaseDomain rel', '@releaseDomain rel']);
  });
});
