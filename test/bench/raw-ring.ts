/**
 * Baselines for the block ring benchmark, on plain worker threads with no
 * hypervisor in between:
 *  - `rawRingRate`: a single-producer single-consumer request/response ring in
 *    one SharedArrayBuffer with io/ring.h's layout and protocol (64-byte
 *    header, `size` entries of `entrySize` bytes, free-running indexes,
 *    req_event/rsp_event thresholds), each side sleeping in Atomics.wait on a
 *    doorbell word only after a final check found nothing, optionally spinning
 *    first. The producer keeps up to `size` requests in flight, copies a
 *    request entry in; the consumer copies it out and writes a 16-byte
 *    response in its slot.
 *  - `messagePortRate`: the same request/response exchange over a
 *    MessageChannel between two workers (a 112-byte Uint8Array each way, up to
 *    `depth` in flight).
 * Both return completed requests per second.
 */
import { Worker } from 'node:worker_threads';

/** Shared code of both ring ends (plain JS, evaluated in each worker). */
const RING_COMMON = `
const { workerData, parentPort } = require('node:worker_threads');
const { sab, size, entrySize, total, spinNs } = workerData;
const i32 = new Int32Array(sab);
const u8 = new Uint8Array(sab);
// Header words (io/ring.h): req_prod 0, req_event 1, rsp_prod 2, rsp_event 3; doorbells after the ring.
const REQ_PROD = 0, REQ_EVENT = 1, RSP_PROD = 2, RSP_EVENT = 3;
const ringBytes = 64 + size * entrySize;
const BELL_REQ = (ringBytes + 63 >> 6) * 16, BELL_RSP = BELL_REQ + 16;
const slot = (i) => 64 + (i & (size - 1)) * entrySize;
const diff = (a, b) => (a - b) >>> 0;
const notifyNeeded = (oldp, newp, ev) => diff(newp, ev) < diff(newp, oldp);
function ring(bell) { Atomics.add(i32, bell, 1); Atomics.notify(i32, bell); }
/** Sleep until the bell changes from what it was before the final check; spin first. */
function sleep(bell, seen, ready) {
  if (spinNs > 0) {
    const until = process.hrtime.bigint() + BigInt(spinNs);
    while (process.hrtime.bigint() < until) if (ready()) return;
  }
  Atomics.wait(i32, bell, seen);
}
`;

const RING_PRODUCER = `${RING_COMMON}
const req = new Uint8Array(entrySize);
for (let i = 0; i < entrySize; i++) req[i] = i;
let reqProdPvt = 0, rspCons = 0, done = 0, sent = 0, sum = 0;
const t0 = process.hrtime.bigint();
while (done < total) {
  // Fill the ring.
  const old = Atomics.load(i32, REQ_PROD);
  while (sent < total && diff(reqProdPvt, rspCons) < size) {
    req[8] = sent & 0xff;
    u8.set(req, slot(reqProdPvt));
    reqProdPvt = (reqProdPvt + 1) >>> 0;
    sent++;
  }
  Atomics.store(i32, REQ_PROD, reqProdPvt);
  if (notifyNeeded(old, reqProdPvt, Atomics.load(i32, REQ_EVENT))) ring(BELL_REQ);
  // Take responses (final check before sleeping).
  for (;;) {
    const bell = Atomics.load(i32, BELL_RSP);
    let prod = Atomics.load(i32, RSP_PROD) >>> 0;
    if (prod === rspCons) {
      Atomics.store(i32, RSP_EVENT, rspCons + 1);
      prod = Atomics.load(i32, RSP_PROD) >>> 0;
      if (prod === rspCons) { sleep(BELL_RSP, bell, () => (Atomics.load(i32, RSP_PROD) >>> 0) !== rspCons); continue; }
    }
    while (rspCons !== prod) {
      const rsp = u8.slice(slot(rspCons), slot(rspCons) + 16);
      sum += rsp[10];
      rspCons = (rspCons + 1) >>> 0;
      done++;
    }
    break;
  }
}
parentPort.postMessage({ ns: Number(process.hrtime.bigint() - t0), sum });
`;

const RING_CONSUMER = `${RING_COMMON}
let reqCons = 0, rspProdPvt = 0, served = 0;
const rsp = new Uint8Array(16);
while (served < total) {
  const bell = Atomics.load(i32, BELL_REQ);
  let prod = Atomics.load(i32, REQ_PROD) >>> 0;
  if (prod === reqCons) {
    Atomics.store(i32, REQ_EVENT, reqCons + 1);
    prod = Atomics.load(i32, REQ_PROD) >>> 0;
    if (prod === reqCons) { sleep(BELL_REQ, bell, () => (Atomics.load(i32, REQ_PROD) >>> 0) !== reqCons); continue; }
  }
  while (reqCons !== prod) {
    const r = u8.slice(slot(reqCons), slot(reqCons) + entrySize); // copy, then act
    rsp[0] = r[8]; rsp[10] = 0;
    reqCons = (reqCons + 1) >>> 0;
    u8.set(rsp, slot(rspProdPvt));
    rspProdPvt = (rspProdPvt + 1) >>> 0;
    served++;
  }
  const old = Atomics.load(i32, RSP_PROD);
  Atomics.store(i32, RSP_PROD, rspProdPvt);
  if (notifyNeeded(old, rspProdPvt, Atomics.load(i32, RSP_EVENT))) ring(BELL_RSP);
}
`;

export interface RingRate {
  readonly reqPerSec: number;
}

/** Requests per second through a raw SAB ring of `size` entries of `entrySize` bytes. */
export async function rawRingRate(total: number, size = 32, entrySize = 112, spinNs = 0): Promise<RingRate> {
  const bytes = (Math.ceil((64 + size * entrySize) / 64) + 2) * 64;
  const sab = new SharedArrayBuffer(bytes);
  const i32 = new Int32Array(sab);
  Atomics.store(i32, 1, 1); // req_event = 1
  Atomics.store(i32, 3, 1); // rsp_event = 1
  const workerData = { sab, size, entrySize, total, spinNs };
  const consumer = new Worker(RING_CONSUMER, { eval: true, workerData });
  const producer = new Worker(RING_PRODUCER, { eval: true, workerData });
  try {
    const r = await new Promise<{ ns: number }>((res, rej) => { producer.once('message', res); producer.once('error', rej); consumer.once('error', rej); });
    return { reqPerSec: total / (r.ns / 1e9) };
  } finally {
    await Promise.all([producer.terminate(), consumer.terminate()]);
  }
}

const PORT_SERVER = `
const { workerData } = require('node:worker_threads');
const port = workerData.port;
port.on('message', (req) => { const rsp = new Uint8Array(16); rsp[0] = req[8]; port.postMessage(rsp); });
`;

const PORT_CLIENT = `
const { workerData, parentPort } = require('node:worker_threads');
const { port, total, depth, entrySize } = workerData;
let sent = 0, done = 0;
const t0 = process.hrtime.bigint();
const send = () => { const r = new Uint8Array(entrySize); r[8] = sent & 0xff; sent++; port.postMessage(r); };
port.on('message', () => {
  done++;
  if (sent < total) send();
  if (done === total) { parentPort.postMessage({ ns: Number(process.hrtime.bigint() - t0) }); port.close(); }
});
for (let i = 0; i < depth && sent < total; i++) send();
`;

/** Requests per second of request/response over a MessagePort between two workers, `depth` in flight. */
export async function messagePortRate(total: number, depth = 32, entrySize = 112): Promise<RingRate> {
  const { port1, port2 } = new MessageChannel();
  const server = new Worker(PORT_SERVER, { eval: true, workerData: { port: port2 }, transferList: [port2] });
  const client = new Worker(PORT_CLIENT, { eval: true, workerData: { port: port1, total, depth, entrySize }, transferList: [port1] });
  try {
    const r = await new Promise<{ ns: number }>((res, rej) => { client.once('message', res); client.once('error', rej); server.once('error', rej); });
    return { reqPerSec: total / (r.ns / 1e9) };
  } finally {
    await Promise.all([client.terminate(), server.terminate()]);
  }
}
