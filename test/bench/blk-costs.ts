/**
 * `npm run bench -- blk-costs`: what one request costs each half of the block
 * split driver, on one thread. The real blkfront (a DomU's) and the real
 * blkback (Dom0's, on a null device) run over one TestMachine whose vCPU
 * contexts are all the bench's thread: no cross-thread wake-ups and no cache
 * lines moving between cores, so what is left is each half's own code. Each
 * round the frontend issues a ring's worth of 1-sector zero-copy READs
 * (queuePages, completion callbacks), blkback serves the ring (its poller, as
 * Dom0's spin calls it: no req_event armed, so no notifications), and the
 * frontend takes the responses (kick) and runs the callbacks; each phase is
 * timed. The baseline, in the same run: the same requests and responses
 * moved through a raw ring in a SharedArrayBuffer on this thread (a 32-byte
 * request written into its 112-byte slot and read back, a 16-byte response
 * written and read, indexes by Atomics once a batch): the ring's data
 * movement with nothing checked.
 */
import { BlkTestbed } from '../helpers/fake-blkfront.ts';
import { EventChannels } from '../../shared/guest/evtchn.ts';
import { GrantTable } from '../../shared/guest/gnttab.ts';
import { GuestXenbus } from '../../shared/guest/xenbus.ts';
import { createPvGuest } from '../../dom0/toolstack/domain.ts';
import { diskAdd } from '../../dom0/toolstack/vbd.ts';
import { liveSlot } from '../../hypervisor/domain.ts';
import { BlockFront } from '../../domU/blkfront/blkfront.ts';
import { BLKIF_RING_ENTRY_SIZE } from '../../shared/abi/blkif.ts';
import { machineLine, spread, table, updateBenchSection } from './report.ts';

/** Requests measured per run (after a quarter as many to warm up), and runs per figure (the median is kept). */
const REQUESTS = 1 << 20;
const RUNS = 5;

export interface HalfCosts {
  /** ns a request: blkfront issuing (queuePages through the push), blkback serving, blkfront completing (responses taken, callbacks run). */
  readonly issue: number;
  readonly serve: number;
  readonly complete: number;
}

/** One run of the real halves on one thread, ring order `order` (ring-size requests a round). */
export async function splitDriverCosts(order: number, requests = REQUESTS): Promise<HalfCosts> {
  const pollers: Array<() => number> = [];
  const tb = await BlkTestbed.start({ addPoller: (_port, serve) => { pollers.push(serve); return () => undefined; } });
  const g = await createPvGuest(tb.m.ctrl, tb.xb, { name: 'blk-costs', kernel: 'domU/guests/hello.ts', memoryMiB: 8 });
  tb.m.ctrl.unpauseDomain(g.domid);
  const v = tb.m.vcpu(liveSlot(tb.m.hv, g.domid), 0);
  const gev = new EventChannels(v.xen);
  const gxs = new GuestXenbus(gev);
  const round = async (): Promise<void> => {
    await tb.round();
    gev.dispatch();
    for (let i = 0; i < 16; i++) await undefined;
  };
  await diskAdd(tb.xb, g.domid, { target: '', vdev: 'xvda', format: 'raw', access: 'rw', devtype: 'disk', backendtype: 'null', size: 1 << 30 });
  await round();
  let dev: BlockFront | undefined;
  let failed: unknown;
  BlockFront.connect({ ev: gev, gnttab: new GrantTable(v.xen), xs: gxs.client, devid: 51712, loop: null, options: { ringPageOrder: order, persistent: true, maxIndirectSegments: 0 } })
    .then((d) => { dev = d; }, (e: unknown) => { failed = e; });
  for (let i = 0; i < 500 && !dev && failed === undefined; i++) await round();
  if (!dev) throw new Error(`blk-costs: blkfront did not connect: ${String(failed)}`);
  const serve = pollers[0];
  if (!serve) throw new Error('blk-costs: blkback registered no poller');
  const qd = dev.features.ringSize;
  const bufs = Array.from({ length: qd }, () => dev!.allocBuffer(4096));
  let completed = 0;
  const done = (err: Error | undefined): void => {
    if (err) throw err;
    completed++;
  };
  const rounds = Math.ceil(requests / qd);
  const warm = Math.ceil(rounds / 4);
  let issueNs = 0;
  let serveNs = 0;
  let completeNs = 0;
  for (let r = 0; r < warm + rounds; r++) {
    if (r === warm) issueNs = serveNs = completeNs = 0;
    const t0 = process.hrtime.bigint();
    for (let i = 0; i < qd; i++) {
      const refused = dev.queuePages('read', 0, bufs[i]!, 0, 1, done);
      if (refused) throw refused;
    }
    const t1 = process.hrtime.bigint();
    const served = serve();
    const t2 = process.hrtime.bigint();
    dev.kick();
    // The callbacks run from one microtask (BlkDataPath.runDone).
    await undefined;
    const t3 = process.hrtime.bigint();
    issueNs += Number(t1 - t0);
    serveNs += Number(t2 - t1);
    completeNs += Number(t3 - t2);
    if (served !== qd || completed !== (r + 1) * qd) throw new Error(`blk-costs: round ${r}: ${served} served, ${completed} of ${(r + 1) * qd} completed`);
  }
  // Dom0 removes the device (unmapping the ring and the persistent grants) and stops its daemons.
  await tb.driver.close();
  await tb.xsd.close();
  const n = rounds * qd;
  return { issue: issueNs / n, serve: serveNs / n, complete: completeNs / n };
}

/** ns a request through a raw SAB ring of `size` BLKIF_RING_ENTRY_SIZE-byte slots on this thread (see the top of this file). */
export function rawRingCost(size: number, requests = REQUESTS): number {
  const es = BLKIF_RING_ENTRY_SIZE;
  const i32 = new Int32Array(new SharedArrayBuffer(64 + size * es));
  const req = new Int32Array(8);
  const got = new Int32Array(8);
  const rsp = new Int32Array(4);
  const back = new Int32Array(4);
  let sum = 0;
  let want = 0;
  const rounds = Math.ceil(requests / size);
  let t = 0n;
  for (let r = 0; r < rounds + (rounds >> 2); r++) {
    if (r === rounds >> 2) {
      t = process.hrtime.bigint();
      sum = want = 0;
    }
    const base = r * size;
    for (let i = 0; i < size; i++) {
      req[2] = base + i;
      const w = (64 + i * es) >> 2;
      for (let k = 0; k < 8; k++) i32[w + k] = req[k]!;
    }
    Atomics.store(i32, 0, base + size);
    const prod = Atomics.load(i32, 0);
    for (let i = 0; i < size; i++) {
      const w = (64 + i * es) >> 2;
      for (let k = 0; k < 8; k++) got[k] = i32[w + k]!;
      rsp[0] = got[2]!;
      for (let k = 0; k < 4; k++) i32[w + k] = rsp[k]!;
    }
    Atomics.store(i32, 2, prod);
    Atomics.load(i32, 2);
    for (let i = 0; i < size; i++) {
      const w = (64 + i * es) >> 2;
      for (let k = 0; k < 4; k++) back[k] = i32[w + k]!;
      sum += back[0]!;
      want += base + i;
    }
  }
  const ns = Number(process.hrtime.bigint() - t);
  // Each response carries its request's number: the ring moved what it should (and nothing was optimised away).
  if (sum !== want) throw new Error(`blk-costs: the raw ring answered ${sum}, not ${want}`);
  return ns / (rounds * size);
}

const ns = (x: number): string => `${x.toFixed(0)} ns`;
const nsRange = (xs: readonly number[]): string => {
  const r = spread(xs);
  return `${ns(r.median)} (${r.lo.toFixed(0)} .. ${r.hi.toFixed(0)})`;
};

export async function benchBlkCosts(): Promise<string> {
  const rows: string[][] = [];
  for (const order of [0, 2]) {
    const size = 32 << order;
    const runs: HalfCosts[] = [];
    const raws: number[] = [];
    for (let i = 0; i < RUNS; i++) {
      raws.push(rawRingCost(size));
      runs.push(await splitDriverCosts(order));
    }
    const totals = runs.map((r) => r.issue + r.serve + r.complete);
    const total = spread(totals).median;
    const raw = spread(raws).median;
    rows.push([
      `${order} (${size} slots), QD ${size}`, ns(spread(runs.map((r) => r.issue)).median), ns(spread(runs.map((r) => r.serve)).median),
      ns(spread(runs.map((r) => r.complete)).median), nsRange(totals), nsRange(raws), `${(total / raw).toFixed(1)}x`,
    ]);
  }
  const md = `## Block split driver, each half's cost a request (\`blk-costs\`)

${machineLine()}. One thread: the real blkfront and the real blkback (null
device, persistent grants, 1-sector zero-copy READs with completion callbacks),
a ring's worth a round, blkback served by its poller (as Dom0's spin serves it:
no notifications); median of ${RUNS} runs of ${REQUESTS} requests each, the
totals' range in brackets (single runs scatter by ~25% on a shared host). The baseline: the same requests and
responses through a raw SharedArrayBuffer ring on the same thread, nothing
checked (test/bench/blk-costs.ts). What the two threads of the pipeline add to
these (cache lines moving between cores, polling, the kernel loops) is in the
block benchmark's figures above.

${table(['ring order', 'blkfront issue', 'blkback serve', 'blkfront complete', 'total', 'raw ring', 'total / raw'], rows)}
`;
  updateBenchSection('blk-costs', md);
  return md;
}
