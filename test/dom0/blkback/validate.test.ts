/**
 * blkback's pure request check (dom0/blkback/validate.ts): a table of
 * requests and their verdicts, the pure state table, and properties: any 112
 * bytes decode and check without throwing, to either a checked request whose
 * range lies inside the disk or a refusal with a blkif status.
 */
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import {
  BLKIF_OP_DISCARD, BLKIF_OP_FLUSH_DISKCACHE, BLKIF_OP_INDIRECT, BLKIF_OP_READ, BLKIF_OP_WRITE, BLKIF_OP_WRITE_BARRIER,
  BLKIF_RSP_EOPNOTSUPP, BLKIF_RSP_ERROR,
} from '../../../shared/abi/blkif.ts';
import { decodeRequest, type BlkifRequest, type BlkifSegment } from '../../../shared/blkif/proto.ts';
import { checkRequest, indirectPages, rangeInside, type DiskLimits } from '../../../dom0/blkback/validate.ts';
import { frontendAction } from '../../../dom0/blkback/states.ts';

const L: DiskLimits = { sectors: 2048, readonly: false, discard: true, discardSecure: false, maxIndirectSegments: 256 };
const RO: DiskLimits = { ...L, readonly: true };
const s = (firstSect = 0, lastSect = 7, gref = 8): BlkifSegment => ({ gref, firstSect, lastSect });
const rw = (operation: 0 | 1 | 2 | 3, segs: BlkifSegment[], sector = 0, nrSegments = segs.length): BlkifRequest =>
  ({ kind: 'rw', operation, nrSegments, handle: 0, id: 1n, sector, segs });
const ind = (indirectOp: number, nrSegments: number): BlkifRequest =>
  ({ kind: 'indirect', operation: BLKIF_OP_INDIRECT, indirectOp, nrSegments, handle: 0, id: 1n, sector: 0, indirectGrefs: [9, 0, 0, 0, 0, 0, 0, 0] });
const disc = (sector: number, nrSectors: number, flag = 0): BlkifRequest =>
  ({ kind: 'discard', operation: BLKIF_OP_DISCARD, flag, handle: 0, id: 1n, sector, nrSectors });

const verdict = (req: BlkifRequest, limits = L, segs?: BlkifSegment[]): string => {
  const c = checkRequest(req, limits, segs);
  return c.kind === 'refuse' ? `refuse ${c.status} op ${c.rspOp}` : `${c.kind} ${c.kind === 'io' ? c.nrSectors : c.nrSectors}`;
};

describe('checkRequest', () => {
  it.each([
    ['READ one page', rw(0, [s()]), L, undefined, 'io 8'],
    ['READ 11 segments', rw(0, Array.from({ length: 11 }, () => s())), L, undefined, 'io 88'],
    ['READ 0 segments', rw(0, []), L, undefined, `refuse ${BLKIF_RSP_ERROR} op 0`],
    ['READ 12 segments', rw(0, [s()], 0, 12), L, undefined, `refuse ${BLKIF_RSP_ERROR} op 0`],
    ['FLUSH 0 segments', rw(3, []), L, undefined, 'io 0'],
    ['BARRIER 0 segments', rw(2, []), L, undefined, 'io 0'],
    ['first_sect > last_sect', rw(0, [s(3, 2)]), L, undefined, `refuse ${BLKIF_RSP_ERROR} op 0`],
    ['last_sect 8', rw(0, [s(0, 8)]), L, undefined, `refuse ${BLKIF_RSP_ERROR} op 0`],
    ['last sector of the disk', rw(0, [s(0, 0)], 2047), L, undefined, 'io 1'],
    ['one past the end', rw(0, [s(0, 1)], 2047), L, undefined, `refuse ${BLKIF_RSP_ERROR} op 0`],
    ['sector ~2^64', rw(0, [s()], 2 ** 64 - 8), L, undefined, `refuse ${BLKIF_RSP_ERROR} op 0`],
    ['WRITE read-only', rw(1, [s()]), RO, undefined, `refuse ${BLKIF_RSP_ERROR} op 1`],
    ['FLUSH read-only', rw(3, []), RO, undefined, `refuse ${BLKIF_RSP_ERROR} op 3`],
    ['READ read-only', rw(0, [s()]), RO, undefined, 'io 8'],
    ['indirect READ 256', ind(0, 256), L, Array.from({ length: 256 }, () => s()), 'io 2048'],
    ['indirect 257', ind(0, 257), L, undefined, `refuse ${BLKIF_RSP_ERROR} op 0`],
    ['indirect 0', ind(1, 0), L, undefined, `refuse ${BLKIF_RSP_ERROR} op 1`],
    ['indirect_op BARRIER', ind(BLKIF_OP_WRITE_BARRIER, 1), L, [s()], `refuse ${BLKIF_RSP_ERROR} op 2`],
    ['indirect pages unreadable', ind(0, 1), L, undefined, `refuse ${BLKIF_RSP_ERROR} op 0`],
    ['indirect with indirect off', ind(0, 1), { ...L, maxIndirectSegments: 0 }, [s()], `refuse ${BLKIF_RSP_ERROR} op 0`],
    ['discard', disc(0, 2048), L, undefined, 'discard 2048'],
    ['discard secure', disc(0, 8, 1), L, undefined, `refuse ${BLKIF_RSP_EOPNOTSUPP} op 5`],
    ['discard off', disc(0, 8), { ...L, discard: false }, undefined, `refuse ${BLKIF_RSP_EOPNOTSUPP} op 5`],
    ['discard past end', disc(2000, 49), L, undefined, `refuse ${BLKIF_RSP_ERROR} op 5`],
    ['discard read-only', disc(0, 8), RO, undefined, `refuse ${BLKIF_RSP_ERROR} op 5`],
    ['unknown op 4', { kind: 'unknown', operation: 4, id: 1n } as BlkifRequest, L, undefined, `refuse ${BLKIF_RSP_EOPNOTSUPP} op 4`],
    ['unknown op 200', { kind: 'unknown', operation: 200, id: 1n } as BlkifRequest, L, undefined, `refuse ${BLKIF_RSP_EOPNOTSUPP} op 200`],
  ] as const)('%s', (_what, req, limits, segs, want) => {
    expect(verdict(req, limits, segs as BlkifSegment[] | undefined)).toBe(want);
  });

  it('indirect pages: ceil(n / 512)', () => {
    expect(indirectPages(ind(0, 256) as never, L)).toBe(1);
    expect(indirectPages(ind(0, 1) as never, L)).toBe(1);
  });

  it('rangeInside: no overflow, safe integers only', () => {
    expect(rangeInside(0, 2048, 2048)).toBe(true);
    expect(rangeInside(1, 2048, 2048)).toBe(false);
    expect(rangeInside(2 ** 53, 1, 2 ** 60)).toBe(false);
    expect(rangeInside(2 ** 53 - 1, 1, 2 ** 60)).toBe(false);
  });

  it('any 112 bytes: never throws; a checked request lies inside the disk, a refusal carries a blkif status', () => {
    fc.assert(fc.property(
      fc.uint8Array({ minLength: 112, maxLength: 112 }),
      fc.boolean(), fc.boolean(),
      fc.array(fc.record({ gref: fc.nat(), firstSect: fc.nat(255), lastSect: fc.nat(255) }), { maxLength: 300 }),
      (bytes, ro, giveSegs, segs) => {
        const req = decodeRequest(bytes);
        const limits = ro ? RO : L;
        const n = req.kind === 'indirect' ? req.nrSegments : 0;
        const indirect = giveSegs && req.kind === 'indirect' ? Array.from({ length: n }, (_, i) => segs[i % Math.max(1, segs.length)] ?? s()) : undefined;
        const c = checkRequest(req, limits, indirect);
        if (c.kind === 'refuse') {
          expect([BLKIF_RSP_ERROR, BLKIF_RSP_EOPNOTSUPP]).toContain(c.status);
          expect(c.id).toBe(req.id);
          return;
        }
        expect(rangeInside(c.sector, c.nrSectors, limits.sectors) || c.nrSectors === 0).toBe(true);
        if (c.kind === 'io') {
          expect([BLKIF_OP_READ, BLKIF_OP_WRITE, BLKIF_OP_WRITE_BARRIER, BLKIF_OP_FLUSH_DISKCACHE]).toContain(c.op);
          if (ro) expect(c.op).toBe(BLKIF_OP_READ);
          for (const g of c.segs) expect(g.firstSect <= g.lastSect && g.lastSect <= 7).toBe(true);
          expect(c.segs.length).toBeLessThanOrEqual(256);
        }
      },
    ), { numRuns: 3000 });
  });
});

describe('frontendChanged table', () => {
  it.each([
    ['Initialised', 'InitWait', 'connect'],
    ['Connected', 'InitWait', 'connect'],
    ['Connected', 'Connected', 'ignore'],
    ['Closing', 'Connected', 'closing'],
    ['Closed', 'Closing', 'close'],
    ['Closed', 'Closed', 'ignore'],
    ['Initialising', 'Closed', 'reinit'],
    ['InitWait', 'Closed', 'reinit'],
    ['Initialising', 'Connected', 'ignore'],
    ['Unknown', 'Connected', 'close'],
    ['Reconfiguring', 'Connected', 'fatal'],
    ['unknown', 'InitWait', 'fatal'],
  ] as const)('frontend %s while we are %s: %s', (front, ours, want) => {
    expect(frontendAction(front, ours)).toBe(want);
  });
});
