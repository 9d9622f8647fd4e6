/**
 * blkback's allocation-free common path (DirectRwScratch.decode +
 * checkDirectRw, copyRequestId) against the general path (decodeRequest +
 * checkRequest): on any entry they agree. The fast path accepts exactly the
 * entries the general path checks into a direct READ/WRITE `io`, with the
 * same operation, sector, sector count, segments and id; everything else
 * (refusals included) it declines, leaving it to the general path.
 */
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { BLKIF_RESPONSE } from '../../../shared/abi/blkif.ts';
import { copyRequestId, decodeRequest, DirectRwScratch } from '../../../shared/blkif/proto.ts';
import { checkDirectRw, checkRequest, type DiskLimits } from '../../../dom0/blkback/validate.ts';
import { directEntry } from '../../helpers/blkif-arb.ts';

const L: DiskLimits = { sectors: 2048, readonly: false, discard: true, discardSecure: false, maxIndirectSegments: 256 };

/** 112 bytes, biased toward plausible requests: small operations, segment counts, sectors, sector numbers. */
const entry = directEntry({ maxSector: 2100 });

describe('direct READ/WRITE fast path', () => {
  it('agrees with decodeRequest + checkRequest on any entry, read-only or not', () => {
    const scratch = new DirectRwScratch();
    fc.assert(fc.property(entry, fc.boolean(), fc.nat(4096), (bytes, ro, sectors) => {
      const limits: DiskLimits = { ...L, readonly: ro, sectors };
      const dv = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
      const fast = scratch.decode(dv) ? checkDirectRw(scratch, limits) : -1;
      const req = decodeRequest(bytes);
      const c = checkRequest(req, limits);
      const generalAccepts = req.kind === 'rw' && c.kind === 'io' && (c.op === 0 || c.op === 1);
      expect(fast > 0).toBe(generalAccepts);
      if (!generalAccepts || req.kind !== 'rw' || c.kind !== 'io') return;
      expect(scratch.operation).toBe(c.op);
      expect(scratch.nrSegments).toBe(req.nrSegments);
      expect(scratch.handle).toBe(req.handle);
      expect(scratch.sector).toBe(c.sector);
      expect(fast).toBe(c.nrSectors);
      expect(scratch.segs.map((s) => ({ ...s }))).toEqual(c.segs.map((s) => ({ ...s })));
      const rsp = new Uint8Array(BLKIF_RESPONSE.size);
      const rdv = new DataView(rsp.buffer);
      copyRequestId(dv, rdv);
      expect(rdv.getBigUint64(BLKIF_RESPONSE.fields.id.offset, true)).toBe(c.id);
    }), { numRuns: 5000 });
  });

  it('decodes any READ/WRITE entry as decodeRequest does, whatever its checks say', () => {
    const scratch = new DirectRwScratch();
    fc.assert(fc.property(entry, (bytes) => {
      const req = decodeRequest(bytes);
      const took = scratch.decode(new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength));
      expect(took).toBe(req.kind === 'rw' && (req.operation === 0 || req.operation === 1));
      if (!took || req.kind !== 'rw') return;
      expect({ op: scratch.operation, n: scratch.nrSegments, h: scratch.handle, sector: scratch.sector, segs: scratch.segs.map((s) => ({ ...s })) })
        .toEqual({ op: req.operation, n: req.nrSegments, h: req.handle, sector: req.sector, segs: req.segs.map((s) => ({ ...s })) });
    }), { numRuns: 3000 });
  });
});
