/**
 * "A consumer never misses a notification", under arbitrary interleavings of
 * ring.h's atomic steps (io/ring.h, "Notification hold-off").
 *
 * Both ends are step machines (generators) that drive the real FrontRing and
 * BackRing methods one shared-memory access at a time (stepped-call.ts): the
 * producer writes entries, then RING_PUSH_*_AND_CHECK_NOTIFY (load prod, store
 * prod, load event, decide); the consumer loads prod, consumes, and before
 * sleeping runs RING_FINAL_CHECK_FOR_* (load prod, store event, re-load prod).
 * It sleeps only when the final check finds nothing and wakes only on a
 * notification (an event channel's pending bit: set by the producer, cleared
 * by the consumer's wake-up). fast-check picks which end takes each step.
 *
 * Checked after every step and at the end:
 *  - no lost wake-up: never is the consumer asleep with published,
 *    unconsumed entries, no notification pending, and the producer between
 *    pushes (so no notification can come);
 *  - no redundant notification: each notification answers an event-index
 *    store made since the previous one (ring.h notifies on "the very next
 *    message", once);
 *  - every entry is delivered once, in order, with its payload, and a fair
 *    run to the end delivers them all.
 */
import { describe, expect, it } from 'vitest';
import fc from 'fast-check';
import { BackRing, FrontRing } from '../../../shared/ring/ring.ts';
import type { RingGeometry, RingMemory } from '../../../shared/ring/ring.ts';
import { SRING_HEADER } from '../../../shared/abi/ring.ts';
import { flatRingAt, indexes, payload, REQ_TAG, RSP_TAG } from '../../helpers/flat-ring-memory.ts';
import { SteppedCall } from './stepped-call.ts';

const ENTRY = 16;
const HDR = SRING_HEADER.fields;

const REQ = REQ_TAG;
const RSP = RSP_TAG;

/** What a step machine yields: a ring method to run access by access, or "sleep until notified". */
type Yielded = SteppedCall<unknown> | 'sleep';
type Machine = Generator<Yielded, void, unknown>;

/** One end's private state, kept between calls; each call builds the real ring end over the memory it is given. */
class End<T extends FrontRing | BackRing> {
  /** The end's private indexes: producer, consumer, and the producer as last published. */
  private pvt: [number, number, number];
  constructor(
    private readonly shared: RingMemory, private readonly g: RingGeometry, start: number,
    private readonly make: (mem: RingMemory, g: RingGeometry) => T,
  ) {
    this.pvt = [start, start, start];
  }
  private get(r: T): [number, number, number] {
    return r instanceof FrontRing ? [r.reqProdPvt, r.rspCons, r.reqPushed] : [(r as BackRing).rspProdPvt, (r as BackRing).reqCons, (r as BackRing).rspPushed];
  }
  private set(r: T, [a, b, c]: [number, number, number]): void {
    if (r instanceof FrontRing) { r.reqProdPvt = a; r.rspCons = b; r.reqPushed = c; } else { (r as BackRing).rspProdPvt = a; (r as BackRing).reqCons = b; (r as BackRing).rspPushed = c; }
  }
  /** The method `f`, to be run a shared access at a time; commits our private state when it returns. */
  call<R>(f: (r: T) => R): SteppedCall<R> {
    return new SteppedCall(this.shared, (mem) => {
      const r = this.make(mem, this.g);
      this.set(r, this.pvt);
      const out = f(r);
      this.pvt = this.get(r);
      return out;
    });
  }
  /** The committed private state, read through a real end. */
  peek<R>(f: (r: T) => R): R {
    const r = this.make(this.shared, this.g);
    this.set(r, this.pvt);
    return f(r);
  }
}

interface Scenario {
  readonly size: number;
  readonly start: number;
  readonly total: number;
  /** Batch sizes the machines draw from, in turn. */
  readonly batches: readonly number[];
  /** Which machine takes each step (0: producer of the direction under test, 1: its consumer). */
  readonly schedule: readonly number[];
}

/** The world both machines see: the ring, the event channel, and what the checks need. */
class World {
  readonly front: End<FrontRing>;
  readonly back: End<BackRing>;
  readonly mem: RingMemory;
  readonly base: number;
  pending = false;
  /** The consumer stored its event index since the last notification (or the ring was initialised). */
  armed = true;
  consumerAsleep = false;
  producerInBatch = false;
  delivered = 0;
  notifications = 0;
  private b = 0;
  constructor(readonly sc: Scenario, eventOffset: number) {
    const { mem, g } = flatRingAt(sc.start, sc.size, ENTRY);
    this.base = g.base;
    // Watch the consumer's event-index stores (and nothing else) on the way to memory.
    this.mem = {
      read: (gpa, len) => mem.read(gpa, len),
      write: (gpa, data) => mem.write(gpa, data),
      atomicLoad32: (gpa) => mem.atomicLoad32(gpa),
      atomicStore32: (gpa, v) => { if (gpa === g.base + eventOffset) this.armed = true; mem.atomicStore32(gpa, v); },
    };
    this.front = new End(this.mem, g, sc.start, (m, gg) => new FrontRing(m, gg));
    this.back = new End(this.mem, g, sc.start, (m, gg) => new BackRing(m, gg));
  }
  batch(max: number): number { return Math.max(1, Math.min(max, this.sc.batches[this.b++ % this.sc.batches.length]!)); }
  notify(): void {
    expect(this.armed, 'a notification nobody asked for since the last one').toBe(true);
    this.armed = false;
    this.pending = true;
    this.notifications++;
  }
}

/** Request direction. Producer: the front end, which reclaims slots by polling responses (not under test here). */
function* frontRequestProducer(w: World): Machine {
  let sent = 0;
  let reclaimed = 0;
  while (sent < w.sc.total) {
    const free = (yield w.front.call((f) => f.freeRequests())) as number;
    if (free === 0) {
      const n = (yield w.front.call((f) => f.unconsumedResponses())) as number;
      expect(n).toBeGreaterThanOrEqual(0);
      for (let i = 0; i < n; i++) {
        expect((yield w.front.call((f) => f.takeResponse(8))) as Uint8Array).toEqual(payload(reclaimed, RSP));
        reclaimed++;
      }
      continue;
    }
    const k = w.batch(Math.min(free, w.sc.total - sent));
    w.producerInBatch = true;
    for (let i = 0; i < k; i++) yield w.front.call((f) => f.putRequest(payload(sent + i, REQ)));
    sent += k;
    const notify = (yield w.front.call((f) => f.pushRequestsAndCheckNotify())) as boolean;
    w.producerInBatch = false;
    if (notify) w.notify();
  }
}

/**
 * A consumer's look at its ring, the protocol under test: unconsumed work,
 * else the final check (event index, then a second look); with nothing there
 * it sleeps until notified and returns 0 (the caller looks again), else how
 * many entries wait. An honest peer never makes either look bogus (-1).
 */
function* consumerLook(w: World, unconsumed: SteppedCall<unknown>, finalCheck: () => SteppedCall<unknown>): Generator<Yielded, number, unknown> {
  let n = (yield unconsumed) as number;
  if (n === 0) n = (yield finalCheck()) as number;
  expect(n, 'an honest peer never looks bogus').toBeGreaterThanOrEqual(0);
  if (n === 0) {
    w.consumerAsleep = true;
    yield 'sleep';
    w.consumerAsleep = false;
  }
  return n;
}

/** Request direction. Consumer: the back end, which answers each request at once (plain push: the front polls). */
function* backRequestConsumer(w: World): Machine {
  for (;;) {
    const n = yield* consumerLook(w, w.back.call((b) => b.unconsumedRequests()), () => w.back.call((b) => b.finalCheckForRequests()));
    if (n === 0) continue;
    const k = w.batch(n);
    for (let i = 0; i < k; i++) {
      const req = (yield w.back.call((b) => b.takeRequest(8))) as Uint8Array;
      expect(req, `request ${w.delivered}`).toEqual(payload(w.delivered, REQ));
      yield w.back.call((b) => b.putResponse(payload(w.delivered, RSP)));
      w.delivered++;
    }
    yield w.back.call((b) => b.pushResponses());
  }
}

/** Response direction. Producer: the back end, which finds requests by polling (not under test here). */
function* backResponseProducer(w: World): Machine {
  let answered = 0;
  while (answered < w.sc.total) {
    const n = (yield w.back.call((b) => b.unconsumedRequests())) as number;
    expect(n).toBeGreaterThanOrEqual(0);
    if (n === 0) continue;
    const k = w.batch(n);
    w.producerInBatch = true;
    for (let i = 0; i < k; i++) {
      expect((yield w.back.call((b) => b.takeRequest(8))) as Uint8Array).toEqual(payload(answered, REQ));
      yield w.back.call((b) => b.putResponse(payload(answered, RSP)));
      answered++;
    }
    const notify = (yield w.back.call((b) => b.pushResponsesAndCheckNotify())) as boolean;
    w.producerInBatch = false;
    if (notify) w.notify();
  }
}

/** Response direction. Consumer: the front end, which submits what it can (plain push) before it looks for responses. */
function* frontResponseConsumer(w: World): Machine {
  let sent = 0;
  for (;;) {
    if (sent < w.sc.total) {
      const free = (yield w.front.call((f) => f.freeRequests())) as number;
      if (free > 0) {
        const k = w.batch(Math.min(free, w.sc.total - sent));
        for (let i = 0; i < k; i++) yield w.front.call((f) => f.putRequest(payload(sent + i, REQ)));
        sent += k;
        yield w.front.call((f) => f.pushRequests());
        continue;
      }
    }
    const n = yield* consumerLook(w, w.front.call((f) => f.unconsumedResponses()), () => w.front.call((f) => f.finalCheckForResponses()));
    if (n === 0) continue;
    const k = w.batch(n);
    for (let i = 0; i < k; i++) {
      expect((yield w.front.call((f) => f.takeResponse(8))) as Uint8Array, `response ${w.delivered}`).toEqual(payload(w.delivered, RSP));
      w.delivered++;
    }
  }
}

class Proc {
  private cur: Yielded | undefined;
  finished = false;
  constructor(private readonly gen: Machine) { this.advance(undefined); }
  private advance(v: unknown): void {
    const r = this.gen.next(v);
    if (r.done) { this.finished = true; this.cur = undefined; } else this.cur = r.value;
  }
  enabled(w: World): boolean { return !this.finished && (this.cur !== 'sleep' || w.pending); }
  /** One atomic step: one shared access of the current call, or a wake-up. */
  step(w: World): void {
    const c = this.cur;
    if (c === undefined) return;
    if (c === 'sleep') {
      if (!w.pending) return;
      w.pending = false; // the consumer's handler clears the pending bit, then looks at the ring
      this.advance(undefined);
      return;
    }
    if (c.step()) this.advance(c.result);
  }
}

/** Run a scenario: `schedule` first, then a fair round-robin; check the invariants after every step. */
function run(sc: Scenario, direction: 'request' | 'response', afterSchedule?: (w: World) => void): World {
  const w = new World(sc, direction === 'request' ? HDR.req_event.offset : HDR.rsp_event.offset);
  const [producer, consumer] = direction === 'request'
    ? [new Proc(frontRequestProducer(w)), new Proc(backRequestConsumer(w))]
    : [new Proc(backResponseProducer(w)), new Proc(frontResponseConsumer(w))];
  const procs = [producer, consumer];
  const published = (): number => (direction === 'request' ? indexes(w.mem, w.base).reqProd : indexes(w.mem, w.base).rspProd);
  const consumed = (): number => (direction === 'request' ? w.back.peek((b) => b.reqCons) : w.front.peek((f) => f.rspCons));
  const invariant = (): void => {
    if (w.consumerAsleep && !w.pending && !w.producerInBatch) {
      expect(published(), 'lost wake-up: consumer asleep, entries unconsumed, no notification pending or coming').toBe(consumed());
    }
  };
  for (const who of sc.schedule) {
    const p = procs[who]!;
    (p.enabled(w) ? p : procs[1 - who]!).step(w);
    invariant();
  }
  afterSchedule?.(w);
  for (let i = 0; i < 200_000 && !(producer.finished && w.delivered === sc.total && w.consumerAsleep && !w.pending); i++) {
    for (const p of procs) { p.step(w); invariant(); }
  }
  expect(producer.finished).toBe(true);
  expect(w.delivered).toBe(sc.total);
  expect(w.consumerAsleep).toBe(true);
  return w;
}

const scenario: fc.Arbitrary<Scenario> = fc.record({
  size: fc.constantFrom(1, 2, 4, 8),
  start: fc.oneof(fc.integer({ min: 0xffff_ffff - 24, max: 0xffff_ffff }), fc.constant(0), fc.integer({ min: 0, max: 0xffff_ffff })),
  total: fc.integer({ min: 1, max: 30 }),
  batches: fc.array(fc.integer({ min: 1, max: 8 }), { minLength: 1, maxLength: 12, size: 'max' }),
  // Long, dense schedules (fast-check's default size would keep arrays to a handful of steps).
  schedule: fc.array(fc.integer({ min: 0, max: 1 }), { minLength: 50, maxLength: 600, size: 'max' }),
});

describe('notification hold-off: a consumer never misses a notification', () => {
  for (const direction of ['request', 'response'] as const) {
    it(`${direction}s: no lost wake-up and no redundant notification under arbitrary interleavings, at the 2^32 wrap`, () => {
      fc.assert(fc.property(scenario, (sc) => { run(sc, direction); }), { numRuns: 400 });
    });
  }

  it('the interleavings reach the race: a push between the final check\'s event store and its re-check', () => {
    // Back: unconsumedRequests (load prod: nothing); final check: load prod, store req_event.
    // Front: freeRequests, putRequest (write), push (store prod, load req_event: armed, so notify; the
    // old req_prod is the front's own copy, not a shared access).
    // Back: the final check's re-load of req_prod finds the request, so it does not sleep;
    // the notification stays pending (harmless: it wakes the back end once for nothing).
    const sc: Scenario = { size: 4, start: 0xffff_ffff, total: 1, batches: [1], schedule: [1, 1, 1, 0, 0, 0, 0, 1] };
    const w = run(sc, 'request', (at) => {
      expect(at.notifications).toBe(1);
      expect(at.pending).toBe(true);
      expect(at.consumerAsleep).toBe(false);
      expect(at.back.peek((b) => b.reqCons)).toBe(0xffff_ffff);
      expect(indexes(at.mem, at.base)).toMatchObject({ reqProd: 0, reqEvent: 0 });
    });
    expect(w.notifications).toBe(1);
  });
});
