/**
 * CPULIST strings of xl.cfg's `cpus=` (xl.cfg(5), "CPU Allocation"; xl's
 * parse_cpurange): comma-separated items, each `all`, `N`, `N-M`,
 * `node:N` / `nodes:N-M`, any of them negated with a leading `^`, applied
 * left to right. The host has one NUMA node, node 0, which holds every CPU.
 */

/** Host CPU numbers above this are refused outright (the host checks its own count). */
export const MAX_CPU = 4095;

/**
 * A set of host CPUs as written, normalised: either "all CPUs except these"
 * (the host's count is not known here) or an explicit, sorted, non-empty list.
 */
export type CpuSet =
  | { readonly kind: 'all'; readonly except: readonly number[] }
  | { readonly kind: 'cpus'; readonly cpus: readonly number[] };

/** Parse a CPULIST; returns the set or an error message. */
export function parseCpuList(spec: string): CpuSet | string {
  let all = false;
  const set = new Set<number>();
  const items = spec.split(',').map((s) => s.trim());
  for (const item of items) {
    if (item === '') return `empty item in CPU list "${spec}"`;
    const neg = item.startsWith('^');
    const body = neg ? item.slice(1) : item;
    let range: [number, number] | 'all';
    if (body === 'all') {
      range = 'all';
    } else {
      const node = /^nodes?:(.*)$/.exec(body);
      if (node) {
        const r = parseRange(node[1]);
        if (typeof r === 'string') return `${r} in "${item}"`;
        if (r[0] !== 0 || r[1] !== 0) return `NUMA node ${r[0] !== 0 ? r[0] : r[1]} does not exist in "${item}" (this host has one node, 0)`;
        range = 'all';
      } else {
        const r = parseRange(body);
        if (typeof r === 'string') return `${r} in "${item}"`;
        range = r;
      }
    }
    if (range === 'all') {
      if (neg) { all = false; set.clear(); } else { all = true; set.clear(); }
      continue;
    }
    for (let c = range[0]; c <= range[1]; c++) {
      // With `all`, the set holds exceptions; without, members.
      if (neg === all) set.add(c); else set.delete(c);
    }
  }
  const sorted = [...set].sort((a, b) => a - b);
  if (all) return { kind: 'all', except: sorted };
  if (sorted.length === 0) return `CPU list "${spec}" selects no CPU`;
  return { kind: 'cpus', cpus: sorted };
}

function parseRange(s: string): [number, number] | string {
  const m = /^(\d+)(?:-(\d+))?$/.exec(s);
  if (!m) return `bad CPU range "${s}"`;
  const a = Number(m[1]);
  const b = m[2] === undefined ? a : Number(m[2]);
  if (a > MAX_CPU || b > MAX_CPU) return `CPU ${Math.max(a, b)} is above ${MAX_CPU}`;
  if (b < a) return `CPU range ${a}-${b} runs backwards`;
  return [a, b];
}

/** Sorted CPU numbers as `0-3,5,7-8`. */
export function formatRanges(cpus: readonly number[]): string {
  const out: string[] = [];
  for (let i = 0; i < cpus.length;) {
    let j = i;
    while (j + 1 < cpus.length && cpus[j + 1] === cpus[j] + 1) j++;
    out.push(j > i ? `${cpus[i]}-${cpus[j]}` : `${cpus[i]}`);
    i = j + 1;
  }
  return out.join(',');
}

/** The CPULIST that parses back to `s`. */
export function printCpuList(s: CpuSet): string {
  if (s.kind === 'cpus') return formatRanges(s.cpus);
  return ['all', ...formatRanges(s.except).split(',').filter(Boolean).map((r) => `^${r}`)].join(',');
}

/** The CPUs of `s` on a host with `nrCpus` CPUs. */
export function cpuSetMembers(s: CpuSet, nrCpus: number): number[] {
  if (s.kind === 'cpus') return s.cpus.filter((c) => c < nrCpus);
  const ex = new Set(s.except);
  return Array.from({ length: nrCpus }, (_, c) => c).filter((c) => !ex.has(c));
}
