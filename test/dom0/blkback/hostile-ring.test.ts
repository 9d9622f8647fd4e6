/**
 * A hostile frontend filling the ring with whatever it likes, against the
 * real blkback on a real image file: entries biased toward plausible
 * requests (any operation, segment counts and sectors, grant references of
 * its data pages, its indirect pages, or none of them,
 * discards of any range) and plain random bytes. Every request taken gets
 * exactly one answer, with its id and operation (an INDIRECT one's
 * indirect_op, as Linux answers), and a status blkif knows
 * (OKAY, ERROR, EOPNOTSUPP); well-formed requests alone are all OKAY; Dom0
 * goes on serving; and once the device is unplugged, nothing of it is left
 * mapped in Dom0. And a frontend that has its own ring page read into: the
 * ring halts as impossible, other devices are served, nothing leaks.
 */
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import {
  BLKIF_OP_DISCARD, BLKIF_OP_FLUSH_DISKCACHE, BLKIF_OP_INDIRECT, BLKIF_OP_READ, BLKIF_OP_WRITE, BLKIF_OP_WRITE_BARRIER, BLKIF_REQUEST, BLKIF_RSP_EOPNOTSUPP, BLKIF_RSP_ERROR, BLKIF_RSP_OKAY,
} from '../../../shared/abi/blkif.ts';
import { encodeRequest } from '../../../shared/blkif/proto.ts';
import { BlkTestbed, FakeBlkfront } from '../../helpers/fake-blkfront.ts';
import { directEntry, discardEntry, indirectEntry } from '../../helpers/blkif-arb.ts';
import { tempDisk } from '../../helpers/temp-disk.ts';

const SECTORS = 2048; // a 1 MiB image
const ID = BLKIF_REQUEST.fields.id.offset;

describe('blkback against a hostile ring', () => {
  it('answers every request once with its id, operation and a blkif status; Dom0 goes on; nothing stays mapped after unplug', async () => {
    const tb = await BlkTestbed.start();
    const before = tb.dom0Resources();
    const f = await FakeBlkfront.create(tb, { persistent: true });
    const path = tempDisk(SECTORS * 512, (b) => b.fill(0x5a));
    await tb.addVbd(f.domid, f.devid, { params: path });
    await f.connect();
    const data = Array.from({ length: 6 }, (_, i) => f.page(i === 5)); // the last one read-only
    const writable = data.slice(0, 5);
    const segs = writable.map((p, i) => ({ gref: p.gref, firstSect: i % 8, lastSect: 7 }));
    const indirect = [f.indirectPage(segs), f.indirectPage([...segs].reverse())];
    // (Not its ring's own page: a READ into it overwrites the answers with disk data, the frontend's own doing.)
    const grefs = [...data.map((p) => p.gref), ...indirect.map((p) => p.gref)];
    // Well-formed requests too (most of the others are refused), so that reads, writes, flushes,
    // barriers, indirect requests and discards are served in among the refusals.
    const id = fc.bigInt({ min: 0n, max: (1n << 64n) - 1n });
    const seg = fc.tuple(fc.constantFrom(...writable), fc.nat(7), fc.nat(7))
      .map(([p, x, y]) => ({ gref: p.gref, firstSect: Math.min(x, y), lastSect: Math.max(x, y) }));
    const wellFormed = fc.oneof(
      fc.record({ operation: fc.constantFrom(BLKIF_OP_READ, BLKIF_OP_WRITE), id, sector: fc.nat(SECTORS - 88), segs: fc.array(seg, { minLength: 1, maxLength: 11 }) })
        .map((r) => encodeRequest({ kind: 'rw', handle: 0, nrSegments: r.segs.length, ...r })),
      fc.record({ operation: fc.constantFrom(BLKIF_OP_FLUSH_DISKCACHE, BLKIF_OP_WRITE_BARRIER), id, sector: fc.nat(SECTORS - 88), segs: fc.array(seg, { maxLength: 2 }) })
        .map((r) => encodeRequest({ kind: 'rw', handle: 0, nrSegments: r.segs.length, ...r })),
      fc.record({ indirectOp: fc.constantFrom(BLKIF_OP_READ, BLKIF_OP_WRITE), id, sector: fc.nat(SECTORS - 48), nrSegments: fc.integer({ min: 1, max: segs.length }), page: fc.constantFrom(...indirect) })
        .map(({ page, ...r }) => encodeRequest({ kind: 'indirect', operation: BLKIF_OP_INDIRECT, handle: 0, indirectGrefs: [page.gref], ...r })),
      fc.record({ id, sector: fc.nat(SECTORS - 64), nrSectors: fc.nat(64) })
        .map((r) => encodeRequest({ kind: 'discard', operation: BLKIF_OP_DISCARD, flag: 0, handle: 0, ...r })),
    );
    const entries = fc.array(fc.oneof(
      { arbitrary: wellFormed, weight: 4 },
      { arbitrary: directEntry({ maxSector: SECTORS + 16, grefs }), weight: 4 },
      { arbitrary: indirectEntry({ maxSector: SECTORS + 16, grefs: indirect.map((p) => p.gref) }), weight: 2 },
      { arbitrary: discardEntry({ maxSector: SECTORS + 16 }), weight: 1 },
      { arbitrary: fc.uint8Array({ minLength: 112, maxLength: 112 }), weight: 1 },
    ), { minLength: 1, maxLength: 32 });

    /** Put `batch`, push, collect the answers; each request answered once with its id and operation. */
    const exchange = async (batch: readonly Uint8Array[]): Promise<number[]> => {
      const asked = new Map<bigint, number[]>();
      for (const e of batch) {
        const id = new DataView(e.buffer, e.byteOffset).getBigUint64(ID, true);
        // An INDIRECT request is answered with its indirect_op, as Linux's blkback does (req_operation).
        asked.set(id, [...(asked.get(id) ?? []), e[0] === BLKIF_OP_INDIRECT ? e[1]! : e[0]!]);
        f.put(e);
      }
      const got = await f.submit(batch.length);
      await tb.round();
      got.push(...f.responses());
      expect(got.length).toBe(batch.length);
      for (const r of got) {
        const ops = asked.get(r.id);
        expect(ops, `an answer for id ${r.id} nobody asked for`).toBeDefined();
        const at = ops!.indexOf(r.operation);
        expect(at, `answer to id ${r.id} with operation ${r.operation}, asked ${ops!.join(',')}`).toBeGreaterThanOrEqual(0);
        ops!.splice(at, 1);
      }
      return got.map((r) => r.status);
    };

    await fc.assert(fc.asyncProperty(entries, async (batch) => {
      for (const st of await exchange(batch)) expect([BLKIF_RSP_OKAY, BLKIF_RSP_ERROR, BLKIF_RSP_EOPNOTSUPP]).toContain(st);
    }), { numRuns: 60, endOnFailure: true }); // (one testbed for every run: shrinking would replay on its state)
    // Well-formed requests alone (pages granted writable): every one OKAY.
    await fc.assert(fc.asyncProperty(fc.array(wellFormed, { minLength: 1, maxLength: 32 }), async (batch) => {
      expect(await exchange(batch)).toEqual(batch.map(() => BLKIF_RSP_OKAY));
    }), { numRuns: 30, endOnFailure: true });

    // Dom0 still serves the device: a plain READ of the image's first page.
    f.put({ kind: 'rw', operation: BLKIF_OP_READ, nrSegments: 1, handle: 0, id: 7n, sector: 0, segs: [{ gref: data[0]!.gref, firstSect: 0, lastSect: 7 }] });
    expect(await f.submit()).toEqual([{ id: 7n, operation: BLKIF_OP_READ, status: BLKIF_RSP_OKAY }]);
    await tb.unplug(f.domid, f.devid);
    expect(tb.dom0Resources()).toEqual(before);
    expect(tb.driver.pool.inUse).toBe(0);
  }, 120_000);

  it('a READ into the frontend\'s own ring page: its ring is overwritten, then halted as impossible; Dom0 serves another device; nothing leaks', async () => {
    const tb = await BlkTestbed.start();
    const before = tb.dom0Resources();
    const f = await FakeBlkfront.create(tb, { persistent: true });
    await tb.addVbd(f.domid, f.devid, { params: tempDisk(SECTORS * 512, (b) => b.fill(0x5a)) });
    await f.connect();
    const g = f.sibling({ devid: 51728 });
    await tb.addVbd(g.domid, g.devid, { params: tempDisk(SECTORS * 512) });
    await g.connect();
    // Disk bytes 0x5a... land on the ring's header: req_prod becomes 0x5a5a5a5a.
    f.put({ kind: 'rw', operation: BLKIF_OP_READ, nrSegments: 1, handle: 0, id: 1n, sector: 0, segs: [{ gref: f.ringRefs[0]!, firstSect: 0, lastSect: 7 }] });
    f.push();
    await tb.until(() => tb.driver.device(f.domid, f.devid)!.engine!.halted, 'the ring halted');
    const p = g.page();
    g.put({ kind: 'rw', operation: BLKIF_OP_READ, nrSegments: 1, handle: 0, id: 2n, sector: 0, segs: [{ gref: p.gref, firstSect: 0, lastSect: 7 }] });
    expect(await g.submit()).toEqual([{ id: 2n, operation: BLKIF_OP_READ, status: BLKIF_RSP_OKAY }]);
    await tb.unplug(f.domid, f.devid);
    await tb.unplug(g.domid, g.devid);
    expect(tb.dom0Resources()).toEqual(before);
    expect(tb.driver.pool.inUse).toBe(0);
  });
});
