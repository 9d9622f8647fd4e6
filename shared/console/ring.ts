/**
 * Byte streams over the console ring page (shared/abi/console.ts), for both
 * ends: the guest produces into `out` and consumes `in`; xenconsoled the other
 * way round. As for the xenstore ring (shared/xenstore/ring.ts), indexes are
 * free-running u32, touched only by single 32-bit atomic loads and stores, and
 * differences are taken modulo 2^32.
 *
 * Ordering (as Linux's hvc_xen and C xenconsoled):
 *  - producer: copy the data, then store prod. The atomic store is
 *    sequentially consistent, so the data is visible before the new index.
 *  - consumer: load prod, copy the data, then store cons. The atomic load of
 *    prod orders the data reads after it; the atomic store of cons publishes
 *    that the bytes are free only after they were copied.
 *  - A peer's index that claims more bytes in flight than the ring holds is
 *    impossible: the ring is reported corrupt and nothing is copied.
 */
import type { GuestMemory } from '../guest/api.ts';
import { XENCONS_IN_SIZE, XENCONS_INTERFACE, XENCONS_OUT_SIZE } from '../abi/console.ts';

/** What the ring code needs of memory: GuestMemory satisfies it (and so does a foreign mapping). */
export type ConsRingMemory = Pick<GuestMemory, 'read' | 'write' | 'atomicLoad32' | 'atomicStore32'>;

export type ConsRingName = 'in' | 'out';

const F = XENCONS_INTERFACE.fields;
const RING = {
  in: { data: F.in.offset, size: XENCONS_IN_SIZE, cons: F.in_cons.offset, prod: F.in_prod.offset },
  out: { data: F.out.offset, size: XENCONS_OUT_SIZE, cons: F.out_cons.offset, prod: F.out_prod.offset },
} as const;

export type ConsReadResult = { readonly ok: true; readonly bytes: Uint8Array } | { readonly ok: false; readonly reason: 'ringidx' };
export type ConsWriteResult = { readonly ok: true; readonly written: number } | { readonly ok: false; readonly reason: 'ringidx' };

/** Size of `ring` in bytes. */
export function consRingSize(ring: ConsRingName): number {
  return RING[ring].size;
}

/** Bytes waiting in `ring`; undefined if the indexes are impossible. */
export function consRingUsed(mem: ConsRingMemory, base: number, ring: ConsRingName): number | undefined {
  const r = RING[ring];
  const used = (mem.atomicLoad32(base + r.prod) - mem.atomicLoad32(base + r.cons)) >>> 0;
  return used > r.size ? undefined : used;
}

/** Producer: copy as much of `data` as fits into `ring`, then publish it. */
export function consRingWrite(mem: ConsRingMemory, base: number, ring: ConsRingName, data: Uint8Array): ConsWriteResult {
  const r = RING[ring];
  const prod = mem.atomicLoad32(base + r.prod);
  const cons = mem.atomicLoad32(base + r.cons);
  const used = (prod - cons) >>> 0;
  if (used > r.size) return { ok: false, reason: 'ringidx' };
  const n = Math.min(r.size - used, data.length);
  let done = 0;
  while (done < n) {
    const at = (prod + done) & (r.size - 1);
    const chunk = Math.min(n - done, r.size - at);
    mem.write(base + r.data + at, data.subarray(done, done + chunk));
    done += chunk;
  }
  // Data before index: the seq-cst store publishes the copy above.
  if (n > 0) mem.atomicStore32(base + r.prod, (prod + n) >>> 0);
  return { ok: true, written: n };
}

/** Consumer: copy out up to `max` waiting bytes of `ring`, then free them. */
export function consRingRead(mem: ConsRingMemory, base: number, ring: ConsRingName, max: number = RING[ring].size): ConsReadResult {
  const r = RING[ring];
  const cons = mem.atomicLoad32(base + r.cons);
  // The prod load orders the data reads below after it.
  const prod = mem.atomicLoad32(base + r.prod);
  const avail = (prod - cons) >>> 0;
  if (avail > r.size) return { ok: false, reason: 'ringidx' };
  const n = Math.min(avail, max);
  const out = new Uint8Array(n);
  let done = 0;
  while (done < n) {
    const at = (cons + done) & (r.size - 1);
    const chunk = Math.min(n - done, r.size - at);
    out.set(mem.read(base + r.data + at, chunk), done);
    done += chunk;
  }
  // Free the bytes only after they were copied.
  if (n > 0) mem.atomicStore32(base + r.cons, (cons + n) >>> 0);
  return { ok: true, bytes: out };
}
