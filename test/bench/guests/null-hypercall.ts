/**
 * Benchmark guest: the cost of a null hypercall (xen_version(XENVER_version))
 * made from guest code on its own vCPU thread, against a plain function call
 * measured in the same thread, same run. Reports one JSON line on the console.
 */
import type { KernelApi } from '../../../shared/guest/api.ts';
import { Xen } from '../../../shared/guest/xen.ts';
import { SHUTDOWN_poweroff, XENVER_version, __HYPERVISOR_xen_version } from '../../../shared/hypercall.ts';

const BATCH = 20_000;
const BATCHES = 40;

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.floor(s.length / 2)];
}

function plain(a: number, b: number): number {
  return (a + b) | 0;
}

export default function bench(k: KernelApi): void {
  const xen = new Xen(k);
  const hc = k.hypercall;
  let sink = 0;
  const hyper: number[] = [];
  const base: number[] = [];
  for (let b = 0; b < BATCHES + 5; b++) {
    let t = performance.now();
    for (let i = 0; i < BATCH; i++) sink = plain(sink, i);
    const tb = (performance.now() - t) * 1000 / BATCH;
    t = performance.now();
    for (let i = 0; i < BATCH; i++) sink ^= hc(__HYPERVISOR_xen_version, XENVER_version, 0);
    const th = (performance.now() - t) * 1000 / BATCH;
    if (b >= 5) { base.push(tb); hyper.push(th); } // first batches warm the JIT
  }
  xen.print(`BENCH ${JSON.stringify({ name: 'null-hypercall', hypercallUs: median(hyper), plainUs: median(base), p90Us: [...hyper].sort((a, c) => a - c)[Math.floor(hyper.length * 0.9)], sink: sink & 1 })}\n`);
  xen.shutdown(SHUTDOWN_poweroff);
}
