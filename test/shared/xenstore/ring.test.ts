/** The xenstore ring page: layout pinned to xs_wire.h, byte streams across the 2^32 wrap, corrupt indexes. */
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { XENSTORE_DOMAIN_INTERFACE } from '../../../shared/abi/xs-ring.ts';
import { xsRingRead, xsRingUsed, xsRingWrite } from '../../../shared/xenstore/ring.ts';
import { FakeRingMemory } from '../../helpers/fake-ring-memory.ts';

const F = XENSTORE_DOMAIN_INTERFACE.fields;

describe('xenstore ring page', () => {
  it('struct xenstore_domain_interface offsets', () => {
    expect(Object.fromEntries(Object.entries(F).map(([k, f]) => [k, f.offset]))).toEqual({
      req: 0, rsp: 1024, req_cons: 2048, req_prod: 2052, rsp_cons: 2056, rsp_prod: 2060,
      server_features: 2064, connection: 2068, error: 2072,
    });
    expect(XENSTORE_DOMAIN_INTERFACE.size).toBe(2076);
  });

  it('a stream written and read in random pieces arrives intact, across the u32 index wrap', () => {
    fc.assert(fc.property(
      fc.uint8Array({ minLength: 1, maxLength: 5000 }),
      fc.array(fc.integer({ min: 1, max: 1500 }), { minLength: 1, maxLength: 30 }),
      fc.integer({ min: 0, max: 0xffffffff }),
      (data, sizes, start) => {
        const m = new FakeRingMemory();
        m.atomicStore32(m.base + F.req_prod.offset, start);
        m.atomicStore32(m.base + F.req_cons.offset, start);
        const got: number[] = [];
        let sent = 0;
        for (let i = 0; sent < data.length || got.length < data.length; i++) {
          const sz = sizes[i % sizes.length];
          const w = xsRingWrite(m, m.base, 'req', data.subarray(sent, sent + sz));
          if (!w.ok) throw new Error('corrupt');
          sent += w.written;
          expect(xsRingUsed(m, m.base, 'req')).toBeLessThanOrEqual(1024);
          const r = xsRingRead(m, m.base, 'req', sizes[(i + 1) % sizes.length]);
          if (!r.ok) throw new Error('corrupt');
          got.push(...r.bytes);
        }
        expect(new Uint8Array(got)).toEqual(data);
        expect(m.atomicLoad32(m.base + F.req_prod.offset)).toBe((start + data.length) >>> 0);
      },
    ), { numRuns: 200 });
  });

  it('a full ring takes nothing more; an impossible producer index is reported, nothing copied', () => {
    const m = new FakeRingMemory();
    expect(xsRingWrite(m, m.base, 'rsp', new Uint8Array(2000))).toEqual({ ok: true, written: 1024 });
    expect(xsRingWrite(m, m.base, 'rsp', new Uint8Array(1))).toEqual({ ok: true, written: 0 });
    m.atomicStore32(m.base + F.req_prod.offset, 1025);
    expect(xsRingRead(m, m.base, 'req')).toEqual({ ok: false, reason: 'ringidx' });
    expect(m.atomicLoad32(m.base + F.req_cons.offset)).toBe(0);
    m.atomicStore32(m.base + F.rsp_cons.offset, 0xfffffff0);
    expect(xsRingWrite(m, m.base, 'rsp', new Uint8Array(1))).toEqual({ ok: false, reason: 'ringidx' });
    expect(xsRingUsed(m, m.base, 'rsp')).toBeUndefined();
  });
});
