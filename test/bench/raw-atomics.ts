/**
 * Baselines on raw threads: two workers ping-pong over one SharedArrayBuffer
 * word with Atomics.wait/notify (both block) or by spinning then blocking.
 * Returns round-trip times in µs (median, p90).
 */
import { Worker } from 'node:worker_threads';

const PONG = `
const { workerData } = require('node:worker_threads');
const w = new Int32Array(workerData.sab);
const spin = workerData.spinNs;
for (let i = 0; i < workerData.rounds; i++) {
  // wait for ping (value odd), answer with value+1
  const want = 2 * i + 1;
  if (spin > 0) { const t = process.hrtime.bigint() + BigInt(spin); while (Atomics.load(w, 0) !== want && process.hrtime.bigint() < t) {} }
  while (Atomics.load(w, 0) !== want) Atomics.wait(w, 0, want - 1);
  Atomics.store(w, 0, want + 1);
  Atomics.notify(w, 0);
}`;

export async function rawPingPong(rounds: number, spinNs = 0): Promise<{ medianUs: number; p90Us: number }> {
  const sab = new SharedArrayBuffer(8);
  const w = new Int32Array(sab);
  const pong = new Worker(PONG, { eval: true, workerData: { sab, rounds, spinNs } });
  const PING = `
const { workerData, parentPort } = require('node:worker_threads');
const w = new Int32Array(workerData.sab);
const spin = workerData.spinNs;
const rtt = [];
for (let i = 0; i < workerData.rounds; i++) {
  const t0 = process.hrtime.bigint();
  Atomics.store(w, 0, 2 * i + 1);
  Atomics.notify(w, 0);
  const want = 2 * i + 2;
  if (spin > 0) { const t = process.hrtime.bigint() + BigInt(spin); while (Atomics.load(w, 0) !== want && process.hrtime.bigint() < t) {} }
  while (Atomics.load(w, 0) !== want) Atomics.wait(w, 0, want - 1);
  rtt.push(Number(process.hrtime.bigint() - t0) / 1000);
}
parentPort.postMessage(rtt);`;
  const ping = new Worker(PING, { eval: true, workerData: { sab, rounds, spinNs } });
  const rtt = await new Promise<number[]>((res, rej) => { ping.once('message', res); ping.once('error', rej); });
  await Promise.all([ping.terminate(), pong.terminate()]);
  void w;
  rtt.sort((a, b) => a - b);
  return { medianUs: rtt[Math.floor(rtt.length / 2)], p90Us: rtt[Math.floor(rtt.length * 0.9)] };
}
