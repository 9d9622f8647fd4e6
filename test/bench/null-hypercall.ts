/** Benchmark: null hypercall cost on the calling vCPU thread vs a plain function call. */
import { runBenchGuests } from './boot-guest.ts';
import { machineLine, table, updateBenchSection } from './report.ts';

export async function benchNullHypercall(): Promise<string> {
  const { bench: [r] } = await runBenchGuests([{ name: 'bench', kernel: 'test/bench/guests/null-hypercall.ts', memoryMiB: 1 }], { pcpus: 2 });
  if (!r) throw new Error('null-hypercall guest reported nothing');
  const h = Number(r.hypercallUs);
  const p = Number(r.plainUs);
  const md = `## Null hypercall (xen_version) on the calling vCPU thread

${machineLine()}. A DomU calls \`xen_version(XENVER_version, NULL)\` in batches of
20 000 from its own vCPU thread (entry and exit preemption points included); the
baseline is a plain function call in the same thread, same run. Median of 40 batches.
Target: median at most 0.5 µs.

${table(['what', 'median per call', 'p90', 'ratio to baseline'], [
    ['null hypercall', `${h.toFixed(3)} µs`, `${Number(r.p90Us).toFixed(3)} µs`, `${(h / p).toFixed(0)}x`],
    ['plain function call (baseline)', `${p.toFixed(4)} µs`, '', '1x'],
  ])}

Target ${h <= 0.5 ? 'met' : 'NOT met'}: ${h.toFixed(3)} µs ${h <= 0.5 ? '<=' : '>'} 0.5 µs.`;
  updateBenchSection('null-hypercall', md);
  return md;
}
