/**
 * The few cpumask operations the policies need (xen/include/xen/cpumask.h),
 * on sorted arrays of pCPU numbers.
 */

/**
 * cpumask_cycle(n, mask): the first pCPU of `mask` after `n`, wrapping around;
 * -1 if `mask` is empty. `mask` must be sorted ascending.
 */
export function cpumaskCycle(n: number, mask: readonly number[]): number {
  if (mask.length === 0) return -1;
  for (const c of mask) if (c > n) return c;
  return mask[0];
}

/** cpumask_test_or_cycle(n, mask): `n` itself if in `mask`, else cpumaskCycle. */
export function cpumaskTestOrCycle(n: number, mask: readonly number[]): number {
  return mask.includes(n) ? n : cpumaskCycle(n, mask);
}

/** The pCPUs 0..n-1. */
export function allCpus(n: number): number[] {
  return Array.from({ length: n }, (_, i) => i);
}

/**
 * A hard-affinity request, checked (Xen: vcpu_set_hard_affinity() refuses a mask
 * with no online pCPU with -EINVAL). Returns the sorted, de-duplicated pCPUs,
 * or null if the list is empty or holds anything but pCPU numbers 0..nrPcpus-1.
 */
export function parseAffinity(pcpus: readonly number[], nrPcpus: number): number[] | null {
  if (pcpus.length === 0) return null;
  for (const c of pcpus) if (!Number.isInteger(c) || c < 0 || c >= nrPcpus) return null;
  return [...new Set(pcpus)].sort((a, b) => a - b);
}

/** Xen's "%*pbl" bitmap list format: "0-3,5". */
export function formatCpuList(cpus: Iterable<number>): string {
  const sorted = [...new Set(cpus)].sort((a, b) => a - b);
  const parts: string[] = [];
  for (let i = 0; i < sorted.length; ) {
    let j = i;
    while (j + 1 < sorted.length && sorted[j + 1] === sorted[j] + 1) j++;
    parts.push(i === j ? `${sorted[i]}` : `${sorted[i]}-${sorted[j]}`);
    i = j + 1;
  }
  return parts.join(',');
}
