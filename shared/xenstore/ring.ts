/**
 * Byte streams over the xenstore ring page (shared/abi/xs-ring.ts), for both
 * ends: a domain produces into `req` and consumes `rsp`; xenstored the other
 * way round. Ring indexes are free-running u32 and are read and written only
 * with single 32-bit atomic loads and stores; differences are taken modulo 2^32.
 *
 * Ordering (as Linux's xb_write/xb_read and C xenstored's domain_write/read):
 *  - producer: copy the data, then store prod. The atomic store is
 *    sequentially consistent, so the data is visible before the new index.
 *  - consumer: load prod, copy the data, then store cons. The atomic load of
 *    prod orders the data reads after it; the atomic store of cons publishes
 *    that the bytes are free only after they were copied.
 *  - A peer's index that claims more than XENSTORE_RING_SIZE bytes in flight
 *    is impossible: the ring is reported corrupt and nothing is copied.
 */
import type { GuestMemory } from '../guest/api.ts';
import { XENSTORE_DOMAIN_INTERFACE, XENSTORE_RING_SIZE } from '../abi/xs-ring.ts';

/** What the ring code needs of memory: GuestMemory satisfies it (and so does a foreign mapping). */
export type RingMemory = Pick<GuestMemory, 'read' | 'write' | 'atomicLoad32' | 'atomicStore32'>;

export type XsRingName = 'req' | 'rsp';

const F = XENSTORE_DOMAIN_INTERFACE.fields;
const IDX = {
  req: { data: F.req.offset, cons: F.req_cons.offset, prod: F.req_prod.offset },
  rsp: { data: F.rsp.offset, cons: F.rsp_cons.offset, prod: F.rsp_prod.offset },
} as const;
const MASK = XENSTORE_RING_SIZE - 1;

export type RingReadResult = { readonly ok: true; readonly bytes: Uint8Array } | { readonly ok: false; readonly reason: 'ringidx' };
export type RingWriteResult = { readonly ok: true; readonly written: number } | { readonly ok: false; readonly reason: 'ringidx' };

/** Bytes waiting in `ring` (consumer's view); undefined if the indexes are impossible. */
export function xsRingUsed(mem: RingMemory, base: number, ring: XsRingName): number | undefined {
  const r = IDX[ring];
  const used = (mem.atomicLoad32(base + r.prod) - mem.atomicLoad32(base + r.cons)) >>> 0;
  return used > XENSTORE_RING_SIZE ? undefined : used;
}

/** Producer: copy as much of `data` as fits into `ring`, then publish it. */
export function xsRingWrite(mem: RingMemory, base: number, ring: XsRingName, data: Uint8Array): RingWriteResult {
  const r = IDX[ring];
  const prod = mem.atomicLoad32(base + r.prod);
  const cons = mem.atomicLoad32(base + r.cons);
  const used = (prod - cons) >>> 0;
  if (used > XENSTORE_RING_SIZE) return { ok: false, reason: 'ringidx' };
  const n = Math.min(XENSTORE_RING_SIZE - used, data.length);
  let done = 0;
  while (done < n) {
    const at = (prod + done) & MASK;
    const chunk = Math.min(n - done, XENSTORE_RING_SIZE - at);
    mem.write(base + r.data + at, data.subarray(done, done + chunk));
    done += chunk;
  }
  // Data before index: the seq-cst store publishes the copy above.
  if (n > 0) mem.atomicStore32(base + r.prod, (prod + n) >>> 0);
  return { ok: true, written: n };
}

/** Consumer: copy out up to `max` waiting bytes of `ring`, then free them. */
export function xsRingRead(mem: RingMemory, base: number, ring: XsRingName, max = XENSTORE_RING_SIZE): RingReadResult {
  const r = IDX[ring];
  const cons = mem.atomicLoad32(base + r.cons);
  // The prod load orders the data reads below after it.
  const prod = mem.atomicLoad32(base + r.prod);
  const avail = (prod - cons) >>> 0;
  if (avail > XENSTORE_RING_SIZE) return { ok: false, reason: 'ringidx' };
  const n = Math.min(avail, max);
  const out = new Uint8Array(n);
  let done = 0;
  while (done < n) {
    const at = (cons + done) & MASK;
    const chunk = Math.min(n - done, XENSTORE_RING_SIZE - at);
    out.set(mem.read(base + r.data + at, chunk), done);
    done += chunk;
  }
  // Free the bytes only after they were copied.
  if (n > 0) mem.atomicStore32(base + r.cons, (cons + n) >>> 0);
  return { ok: true, bytes: out };
}
