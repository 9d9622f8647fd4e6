/**
 * The purge of persistent grants end to end (Linux's purge_persistent_gnt,
 * run from the ring's kthread every LRU_INTERVAL): the fake frontend against
 * the real blkback on a temp file, Dom0's clock driven by the test
 * (BlkbackOptions.now). A frontend that moves on to new pages gets persistent
 * grants again (over the bound's LRU share per interval; under 100 grants,
 * as in Linux, only through the timeout); Dom0's maptrack never holds more
 * than the bound plus one request's mappings; purged grants are unmapped
 * (the frontend can end access to them); grants unused for
 * persistent_grant_unused_seconds go, recently used ones stay, indirect
 * pages included; 0 disables the timeout; and the Dom0 command-line option.
 */
import { writeFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { BLKIF_OP_INDIRECT, BLKIF_OP_READ, BLKIF_RSP_OKAY } from '../../../shared/abi/blkif.ts';
import { encodeIndirectSegments, type BlkifSegment } from '../../../shared/blkif/proto.ts';
import { grantRef, PAGE_SIZE } from '../../../shared/types.ts';
import type { BlockStorage } from '../../../dom0/blkback/storage.ts';
import { encodeDom0Cmdline, parseDom0Cmdline } from '../../../dom0/kernel.ts';
import { LRU_INTERVAL_MS } from '../../../dom0/blkback/purge.ts';
import { BlkTestbed, FakeBlkfront, type FrontPage } from '../../helpers/fake-blkfront.ts';
import { tempDisk } from '../../helpers/temp-disk.ts';

const seg = (gref: number): BlkifSegment => ({ gref, firstSect: 0, lastSect: 7 });
const read = (id: bigint, sector: number, pages: readonly FrontPage[]) =>
  ({ kind: 'rw' as const, operation: BLKIF_OP_READ as typeof BLKIF_OP_READ, nrSegments: pages.length, handle: 0, id, sector, segs: pages.map((p) => seg(p.gref)) });
const S = 1000;

/** Connected, with Dom0's clock at `clock.t` (ms) and the peak of Dom0's maptrack seen during each request's I/O. */
async function connected(o: Parameters<typeof BlkTestbed.start>[0] = {}) {
  const clock = { t: 1_000_000 };
  const seen = { peak: 0 };
  let tb: BlkTestbed | undefined;
  const sample = (): void => { seen.peak = Math.max(seen.peak, tb!.dom0Resources().maptrack); };
  tb = await BlkTestbed.start({
    now: () => clock.t,
    wrapStorage: (s): BlockStorage => ({
      sectors: s.sectors, isNull: s.isNull, discard: s.discard.bind(s), close: s.close.bind(s), flush: s.flush.bind(s),
      read: (r, pos) => { sample(); return s.read(r, pos); },
      write: (r, pos) => { sample(); return s.write(r, pos); },
    }),
    ...o,
  });
  const before = tb.dom0Resources();
  const f = await FakeBlkfront.create(tb);
  const path = tempDisk(1 << 20);
  writeFileSync(path, new Uint8Array(1 << 20));
  await tb.addVbd(f.domid, f.devid, { params: path });
  await f.connect();
  expect(await f.backendState()).toBe('4');
  const dev = tb.driver.device(f.domid, f.devid)!;
  return { tb, f, before, dev, engine: dev.engine!, clock, seen };
}

/** Read through `pages`, `per` segments a request, all on the ring at once; every answer OKAY. */
async function readAll(f: FakeBlkfront, pages: readonly FrontPage[], per: number, id0 = 0n): Promise<void> {
  let k = 0;
  for (let i = 0; i < pages.length; i += per) f.put(read(id0 + BigInt(k++), 8 * i, pages.slice(i, i + per)));
  const r = await f.submit(k);
  expect(r.map((x) => x.status)).toEqual(r.map(() => BLKIF_RSP_OKAY));
}

describe('blkback purges persistent grants (purge_persistent_gnt)', () => {
  it('a frontend moving on to new pages gets persistent grants again, 5% of the bound per interval (max 100)', async () => {
    const max = 100;
    const { tb, f, before, dev, engine, clock, seen } = await connected({ maxPersistentGrants: max });
    const old = Array.from({ length: max }, () => f.page());
    const fresh = Array.from({ length: max }, () => f.page());
    await readAll(f, old, 10);
    expect(dev.persistentGrants).toBe(max);
    expect(engine.stats.mapCalls).toBe(10);
    // The new set: the set is full, so each request maps and unmaps (and overflow is noted).
    clock.t += 10;
    await readAll(f, fresh, 10, 100n);
    expect(engine.stats.mapCalls).toBe(20);
    expect(dev.persistentGrants).toBe(max);
    const bound = before.maptrack + 1 + max + 10; // ring + the bound + one request's segments
    // Each interval the purge (after the batch) removes floor(100/100)*5 = 5, the least recently
    // used: the old set's; the next batch keeps 5 of the new set, and overflows again.
    let rounds = 0;
    while (fresh.some((p) => !isKept(dev, p))) {
      clock.t += LRU_INTERVAL_MS;
      await readAll(f, fresh, 10, 1000n * BigInt(++rounds));
      expect(seen.peak).toBeLessThanOrEqual(bound);
      expect(tb.dom0Resources().maptrack).toBeLessThanOrEqual(before.maptrack + 1 + max);
      if (rounds > 40) throw new Error('the new set never became persistent');
    }
    // The first interval's purge frees 5; each later batch keeps 5 and its purge frees 5 more
    // (the old set's, least recently used): the 21st batch keeps the last 5 of the new set.
    expect(rounds).toBe(21);
    // A request of new pages over a full set: the bound plus its own 10 mappings, exactly.
    expect(seen.peak).toBe(bound);
    expect(dev.persistentGrants).toBe(max);
    // Now all hits: no more map calls, hits grow by the whole set per pass.
    const calls = engine.stats.mapCalls;
    const hits = engine.stats.persistentHits;
    for (let i = 0; i < 3; i++) {
      clock.t += LRU_INTERVAL_MS;
      await readAll(f, fresh, 10, 100_000n + BigInt(10 * i));
    }
    expect(engine.stats.mapCalls).toBe(calls);
    expect(engine.stats.persistentHits).toBe(hits + 3 * max);
    expect(dev.persistentGrants).toBe(max);
    // The old grants are unmapped: the frontend can take them back.
    for (const p of old) expect(f.gt.endAccess(grantRef(p.gref))).toBe(true);
    for (const p of fresh.slice(0, 3)) expect(f.gt.endAccess(grantRef(p.gref))).toBe(false);
    expect(seen.peak).toBeLessThanOrEqual(bound);
    // Disconnect unmaps the rest; nothing leaks.
    await f.setState(5);
    await f.setState(6);
    expect(tb.dom0Resources()).toEqual(before);
    expect(tb.driver.pool.inUse).toBe(0);
  });

  it('max 16: no LRU share under 100 grants (Linux), so the old set goes when it times out; the new one is then kept', async () => {
    const max = 16;
    const { tb, f, before, dev, engine, clock, seen } = await connected({ maxPersistentGrants: max, persistentGrantUnusedSeconds: 10 });
    const old = Array.from({ length: max }, () => f.page());
    const fresh = Array.from({ length: max }, () => f.page());
    await readAll(f, old, 8);
    expect(dev.persistentGrants).toBe(max);
    for (let i = 0; i < 5; i++) {
      clock.t += S;
      await readAll(f, fresh, 8, BigInt(100 + 10 * i));
    }
    // 5 s: full with overflow, but floor(16/100)*5 + 0 = 0: nothing purged yet.
    expect(old.every((p) => isKept(dev, p))).toBe(true);
    expect(engine.stats.mapCalls).toBe(2 + 5 * 2);
    // 10 s after their last use the old ones go at the next purge; the batch after keeps the new ones.
    clock.t += 5 * S;
    await readAll(f, fresh, 8, 200n);
    expect(old.some((p) => isKept(dev, p))).toBe(false);
    for (const p of old) expect(f.gt.endAccess(grantRef(p.gref))).toBe(true);
    const calls0 = engine.stats.mapCalls;
    await readAll(f, fresh, 8, 300n);
    expect(engine.stats.mapCalls).toBe(calls0 + 2);
    expect(fresh.every((p) => isKept(dev, p))).toBe(true);
    const hits = engine.stats.persistentHits;
    clock.t += LRU_INTERVAL_MS;
    await readAll(f, fresh, 8, 400n);
    expect(engine.stats.mapCalls).toBe(calls0 + 2);
    expect(engine.stats.persistentHits).toBe(hits + max);
    expect(seen.peak).toBeLessThanOrEqual(before.maptrack + 1 + max + 8);
    expect(tb.dom0Resources().maptrack).toBe(before.maptrack + 1 + max);
  });

  it('grants unused for persistent_grant_unused_seconds are unmapped at the next purge; recently used ones (and held indirect pages) stay', async () => {
    const { tb, f, before, dev, engine, clock } = await connected({ persistentGrantUnusedSeconds: 60 });
    const a = [f.page(), f.page()];
    const b = [f.page(), f.page()];
    const data = [f.page(), f.page()];
    const ip = f.page(); // an indirect page granted read-write, kept persistently
    f.mem.write(ip.gpa, encodeIndirectSegments(data.map((p) => seg(p.gref)), new Uint8Array(PAGE_SIZE)));
    const indirect = (id: bigint) => ({ kind: 'indirect' as const, operation: BLKIF_OP_INDIRECT as typeof BLKIF_OP_INDIRECT, indirectOp: BLKIF_OP_READ, nrSegments: 2, handle: 0, id, sector: 64, indirectGrefs: [ip.gref] });
    await readAll(f, a, 2, 1n);
    f.put(indirect(2n));
    expect((await f.submit())[0]!.status).toBe(BLKIF_RSP_OKAY);
    expect(dev.persistentGrants).toBe(7 - 2);
    clock.t += 30 * S;
    await readAll(f, b, 2, 3n);
    expect(dev.persistentGrants).toBe(7);
    // 59.9 s after a's and the indirect request's last use: nothing has timed out yet.
    clock.t += 29_900;
    await readAll(f, b, 2, 4n);
    expect(dev.persistentGrants).toBe(7);
    // 60 s: the purge after this batch unmaps a, the indirect page and its data pages; b (just used) stays.
    clock.t += 100;
    await readAll(f, b, 2, 5n);
    expect(dev.persistentGrants).toBe(2);
    expect(b.every((p) => isKept(dev, p))).toBe(true);
    for (const p of [...a, ...data, ip]) expect(f.gt.endAccess(grantRef(p.gref))).toBe(true);
    for (const p of b) expect(f.gt.endAccess(grantRef(p.gref))).toBe(false);
    expect(tb.dom0Resources().maptrack).toBe(before.maptrack + 1 + 2);
    expect(engine.stats.errors).toBe(0);
  });

  it('persistent_grant_unused_seconds=0: grants never time out', async () => {
    const { tb, f, before, dev, clock } = await connected({ persistentGrantUnusedSeconds: 0 });
    const a = [f.page(), f.page(), f.page()];
    const b = [f.page()];
    await readAll(f, a, 3);
    clock.t += 1e9;
    await readAll(f, b, 1, 10n);
    clock.t += 1e9;
    await readAll(f, b, 1, 20n);
    expect(dev.persistentGrants).toBe(4);
    expect(a.every((p) => isKept(dev, p))).toBe(true);
    expect(tb.dom0Resources().maptrack).toBe(before.maptrack + 1 + 4);
  });

  it("the Dom0 option xen_blkback.persistent_grant_unused_seconds parses, round-trips, and a bad value is ignored like the others", () => {
    const c = parseDom0Cmdline('keep=0 xen_blkback.persistent_grant_unused_seconds=5 xen_blkback.max_persistent_grants=64');
    expect(c.blkback).toEqual({ persistentGrantUnusedSeconds: 5, maxPersistentGrants: 64 });
    expect(parseDom0Cmdline(encodeDom0Cmdline(c))).toEqual(c);
    expect(parseDom0Cmdline('keep=0 xen_blkback.persistent_grant_unused_seconds=0').blkback).toEqual({ persistentGrantUnusedSeconds: 0 });
    for (const bad of ['-1', 'x', '1.5', '']) {
      expect(parseDom0Cmdline(`keep=0 xen_blkback.persistent_grant_unused_seconds=${bad}`).blkback).toBeUndefined();
    }
  });

  it('the option reaches the device: BlkbackDriver features', async () => {
    const tb = await BlkTestbed.start({ persistentGrantUnusedSeconds: 7 });
    expect(tb.driver.features.persistentGrantUnusedSeconds).toBe(7);
    const tb2 = await BlkTestbed.start();
    expect(tb2.driver.features.persistentGrantUnusedSeconds).toBe(60);
  });
});

/** Does the device keep a persistent grant of `p`? */
function isKept(dev: NonNullable<ReturnType<BlkTestbed['driver']['device']>>, p: FrontPage): boolean {
  return dev.hasPersistentGrant(p.gref);
}
