/**
 * Benchmark guest (test/bench/toolstack.ts): its first instruction reads the
 * system time (rdtsc: the hypervisor's NOW(), the same clock the host reads)
 * and prints it as `FIRST <ns>`; the host times `create` to that instant.
 * Then it idles for ever, blocked in SCHEDOP_block, until it is destroyed:
 * the idle PV domain of the "how many domains fit" count.
 */
import type { KernelApi } from '../../../shared/guest/api.ts';
import { EventChannels } from '../../../shared/guest/evtchn.ts';
import { Xen } from '../../../shared/guest/xen.ts';

export default function firstInstruction(k: KernelApi): void {
  const t = k.rdtsc();
  const xen = new Xen(k);
  xen.print(`FIRST ${t}\n`);
  const ev = new EventChannels(xen);
  for (;;) ev.wait();
}
