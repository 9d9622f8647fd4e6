/**
 * Benchmark guest: XenStore operations per second over the guest's ring
 * (GuestXenbus: shared page + event channel to Dom0's xenstored). Writes a
 * small node in its home, then times `ops` READs and `ops` WRITEs one at a
 * time, and `ops` READs pipelined `depth` at a time; reports `BENCH {...}`.
 * Each figure is the median of `reps` repetitions.
 * Command line: `ops=<n> depth=<n> reps=<n>`.
 */
import type { KernelApi } from '../../../shared/guest/api.ts';
import { EventChannels } from '../../../shared/guest/evtchn.ts';
import { GuestXenbus } from '../../../shared/guest/xenbus.ts';
import { Xen } from '../../../shared/guest/xen.ts';
import { SHUTDOWN_poweroff } from '../../../shared/hypercall.ts';

function args(cmdline: string): Map<string, string> {
  return new Map(cmdline.split(/\s+/).filter(Boolean).map((kv) => kv.split('=') as [string, string]));
}

export default async function xsRing(k: KernelApi): Promise<void> {
  const xen = new Xen(k);
  const a = args(xen.cmdline);
  const ops = Number(a.get('ops') ?? 2000);
  const depth = Number(a.get('depth') ?? 16);
  const ev = new EventChannels(xen);
  const xs = new GuestXenbus(ev);
  const c = xs.client;
  const NODE = 'data/bench';
  await xs.wait(c.write(NODE, 'hello'));
  // Warm-up (JIT, ring paths).
  for (let i = 0; i < 200; i++) await xs.wait(c.read(NODE));
  const reps = Number(a.get('reps') ?? 1);
  const perSec = (n: number, ns: bigint): number => n / (Number(ns) / 1e9);
  const median = (xs: number[]): number => [...xs].sort((x, y) => x - y)[Math.floor(xs.length / 2)];
  const rs: number[] = [];
  const ws: number[] = [];
  const rp: number[] = [];
  for (let rep = 0; rep < reps; rep++) {
    let t = k.rdtsc();
    for (let i = 0; i < ops; i++) await xs.wait(c.read(NODE));
    rs.push(perSec(ops, k.rdtsc() - t));
    t = k.rdtsc();
    for (let i = 0; i < ops; i++) await xs.wait(c.write(NODE, `v${i}`));
    ws.push(perSec(ops, k.rdtsc() - t));
    t = k.rdtsc();
    for (let i = 0; i < ops; i += depth) {
      const batch: Array<Promise<string>> = [];
      for (let j = 0; j < depth && i + j < ops; j++) batch.push(c.read(NODE));
      await xs.wait(Promise.all(batch));
    }
    rp.push(perSec(ops, k.rdtsc() - t));
  }
  const readSerial = median(rs);
  const writeSerial = median(ws);
  const readPipelined = median(rp);
  xen.print(`BENCH ${JSON.stringify({ name: 'xs-ring', ops, depth, readSerial, writeSerial, readPipelined })}\n`);
  xen.shutdown(SHUTDOWN_poweroff);
}
