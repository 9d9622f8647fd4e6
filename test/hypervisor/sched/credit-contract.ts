/**
 * What both credit policies (credit, credit2) must do, measured with the
 * simulation harness over 10 simulated seconds after a 200 ms warm-up:
 * weighted shares, caps, wake-up latency, the yield-before-tick attack,
 * work conservation, parameter and affinity checks.
 */
import { describe, expect, it } from 'vitest';
import { simulate, type SimConfig, type SimResult } from '../../../hypervisor/sched/sim/harness.ts';
import { RUNSTATE_offline } from '../../../hypervisor/sched/policy/runstate.ts';
import {
  CPU, EINVAL, ESRCH, MS, S, US, attacker, expectShares, expectWorkConserving, fairShares, io, make, ref, withDomains,
} from './helpers.ts';

type CreditName = 'credit' | 'credit2';

const WINDOW = { durationNs: 10 * S, warmupNs: 200 * MS };

function run(name: CreditName, cfg: Omit<SimConfig, 'scheduler' | 'durationNs' | 'warmupNs'>): SimResult {
  return simulate({ scheduler: name, ...WINDOW, ...cfg });
}

/** One CPU-bound single-vCPU domain per weight. */
function hogs(weights: readonly number[]): SimConfig['domains'] {
  return weights.map((weight, i) => ({ domid: i + 1, weight, vcpus: [{ workload: CPU }] }));
}

export function creditContract(name: CreditName): void {
  describe(`${name}: shares follow weights (within 2% over 10 s)`, () => {
    it('256/512/768 on 1 pCPU', () => {
      const weights = [256, 512, 768];
      const r = run(name, { nrPcpus: 1, domains: hogs(weights) });
      expectShares(r, fairShares(weights, 1), 0.02);
      expectWorkConserving(r);
    });

    it('256/512/768/1024 on 2 pCPUs', () => {
      const weights = [256, 512, 768, 1024];
      const r = run(name, { nrPcpus: 2, domains: hogs(weights) });
      expectShares(r, fairShares(weights, 2), 0.02);
      expectWorkConserving(r);
    });

    it('three equal vCPUs on 2 pCPUs get two thirds each', () => {
      const r = run(name, { nrPcpus: 2, domains: hogs([256, 256, 256]) });
      expectShares(r, [2 / 3, 2 / 3, 2 / 3], 0.02);
    });

    it('a 768-weight vCPU gets at most one pCPU; the rest share the other', () => {
      const r = run(name, { nrPcpus: 2, domains: hogs([256, 768, 256]) });
      expectShares(r, fairShares([256, 768, 256], 2), 0.02);
      expect(fairShares([256, 768, 256], 2)).toEqual([0.5, 1, 0.5]);
    });

    it('weight is per vCPU: a 2-vCPU domain gets twice a 1-vCPU domain of the same weight', () => {
      const r = run(name, {
        nrPcpus: 1,
        domains: [{ domid: 1, vcpus: [{ workload: CPU }, { workload: CPU }] }, { domid: 2, vcpus: [{ workload: CPU }] }],
      });
      expect(Math.abs(r.domains[0].share - 2 / 3)).toBeLessThan(0.02);
    });

    it('a weight changed at run time takes effect (putinfo)', () => {
      const r = simulate({
        scheduler: name, nrPcpus: 1, durationNs: 10 * S, warmupNs: 1200 * MS,
        domains: hogs([256, 256]),
        actions: [{ atNs: 1 * S, kind: 'putParams', domid: 1, weight: 768 }],
      });
      expectShares(r, [0.75, 0.25], 0.02);
    });
  });

  describe(`${name}: caps`, () => {
    it('cap 25 alone on a pCPU gives 25% ±1%, the rest idle (parked, not runnable)', () => {
      const r = run(name, { nrPcpus: 1, domains: [{ domid: 1, cap: 25, vcpus: [{ workload: CPU }] }] });
      expectShares(r, [0.25], 0.01);
      expectWorkConserving(r);
      expect(r.pcpus[0].idleNs).toBeGreaterThan(0.7 * r.windowNs);
    });

    it('a capped domain next to a hog: cap honoured, the hog takes the rest', () => {
      const r = run(name, {
        nrPcpus: 1,
        domains: [{ domid: 1, cap: 25, vcpus: [{ workload: CPU }] }, { domid: 2, vcpus: [{ workload: CPU }] }],
      });
      expectShares(r, [0.25, 0.75], 0.01);
      expectWorkConserving(r);
    });

    it('cap is in % of one pCPU: cap 150 on a 2-vCPU domain over 2 pCPUs', () => {
      const r = run(name, {
        nrPcpus: 2, domains: [{ domid: 1, cap: 150, vcpus: [{ workload: CPU }, { workload: CPU }] }],
      });
      expect(Math.abs(r.domains[0].share - 1.5)).toBeLessThan(0.02);
    });
  });

  describe(`${name}: latency and the yield-before-tick attack`, () => {
    it('a waking I/O-bound vCPU runs within one tick (10 ms) among CPU-bound ones, 1 pCPU', () => {
      const r = run(name, {
        nrPcpus: 1,
        domains: [
          { domid: 1, vcpus: [{ workload: io(200 * US, 5 * MS) }] },
          { domid: 2, vcpus: [{ workload: CPU }] },
          { domid: 3, vcpus: [{ workload: CPU }] },
        ],
      });
      const v = r.vcpus[0];
      expect(v.wakeLatency.count).toBeGreaterThan(1000);
      expect(v.wakeLatency.maxNs).toBeLessThanOrEqual(10 * MS);
      // It got all the CPU it asked for: 200 us per 5.2 ms cycle.
      expect(Math.abs(v.share - 200 / 5200)).toBeLessThan(0.002);
    });

    it('I/O-bound vCPUs run within one tick among CPU-bound ones, 2 pCPUs', () => {
      const r = run(name, {
        nrPcpus: 2,
        domains: [
          { domid: 1, vcpus: [{ workload: io(300 * US, 2 * MS) }, { workload: io(1 * MS, 7 * MS, 1 * MS) }] },
          ...[2, 3, 4, 5].map((domid) => ({ domid, vcpus: [{ workload: CPU }] })),
        ],
      });
      for (const v of r.vcpus.slice(0, 2)) expect(v.wakeLatency.maxNs).toBeLessThanOrEqual(10 * MS);
      expectWorkConserving(r);
    });

    for (const mode of ['block', 'yield'] as const) {
      for (const [nrPcpus, nrHogs] of [[1, 1], [1, 2], [2, 3], [2, 5]] as const) {
        it(`the ${mode} attacker gets no more than its fair share +1% (${nrPcpus} pCPU, ${nrHogs} hogs)`, () => {
          const r = run(name, {
            nrPcpus,
            domains: [
              { domid: 1, vcpus: [{ workload: attacker(mode) }] },
              ...Array.from({ length: nrHogs }, (_, i) => ({ domid: i + 2, vcpus: [{ workload: CPU }] })),
            ],
          });
          const fair = fairShares(new Array<number>(nrHogs + 1).fill(256), nrPcpus)[0];
          expect(r.vcpus[0].share).toBeLessThanOrEqual(fair + 0.01);
        });
      }
    }
  });

  describe(`${name}: work conservation and affinity`, () => {
    it('never idles a pCPU while a vCPU allowed on it is runnable (mixed, pinned)', () => {
      const r = run(name, {
        nrPcpus: 2,
        domains: [
          { domid: 1, vcpus: [{ workload: io(300 * US, 2 * MS) }, { workload: io(1 * MS, 7 * MS, 1 * MS) }] },
          { domid: 2, vcpus: [{ workload: CPU, affinity: [1] }] },
          { domid: 3, weight: 512, vcpus: [{ workload: CPU }] },
          { domid: 4, vcpus: [{ workload: io(5 * MS, 3 * MS) }] },
        ],
      });
      expectWorkConserving(r);
    });

    it('a pinned vCPU runs only on its pCPU', () => {
      const r = run(name, {
        nrPcpus: 2,
        domains: [
          { domid: 1, vcpus: [{ workload: CPU, affinity: [1] }] },
          { domid: 2, vcpus: [{ workload: CPU }] },
          { domid: 3, vcpus: [{ workload: CPU }] },
        ],
      });
      expect(r.vcpus[0].perPcpuNs[0]).toBe(0);
      expect(r.vcpus[0].perPcpuNs[1]).toBeGreaterThan(0);
      expectWorkConserving(r);
    });

    it('an affinity change at run time moves the vCPU', () => {
      const r = simulate({
        scheduler: name, nrPcpus: 2, durationNs: 2 * S, warmupNs: 500 * MS,
        domains: [{ domid: 1, vcpus: [{ workload: CPU, affinity: [0] }] }, { domid: 2, vcpus: [{ workload: CPU, affinity: [0] }] }],
        actions: [{ atNs: 400 * MS, kind: 'setAffinity', domid: 1, vcpuId: 0, pcpus: [1] }],
      });
      expect(r.vcpus[0].perPcpuNs[0]).toBe(0);
      expect(r.vcpus[0].share).toBeCloseTo(1, 5);
      expect(r.vcpus[1].share).toBeCloseTo(1, 5);
    });

    it('moves a running vCPU off a pCPU its new affinity excludes', () => {
      const s = make(name, 2);
      withDomains(s, [1]);
      s.takeTickled();
      const d = s.doSchedule(0, 0);
      expect(d.next).toEqual(ref(1));
      expect(s.setAffinity(ref(1), [1], 1 * MS)).toBe(0);
      expect(s.takeTickled()).toContain(0);
      expect(s.doSchedule(0, 1 * MS).next).toBeNull();
      const tickled = s.takeTickled();
      expect(tickled).toContain(1);
      expect(s.doSchedule(1, 1 * MS).next).toEqual(ref(1));
    });
  });

  describe(`${name}: parameters`, () => {
    it('defaults are weight 256, cap 0', () => {
      const s = make(name, 1);
      withDomains(s, [1]);
      expect(s.getParams(1)).toEqual({ ok: true, params: { weight: 256, cap: 0 } });
    });

    it('rejects weight 0, 65536, non-integers, and changes nothing', () => {
      const s = make(name, 1);
      withDomains(s, [1]);
      for (const weight of [0, 65536, -1, 1.5, Number.NaN]) expect(s.putParams(1, { weight }, 0)).toBe(EINVAL);
      expect(s.putParams(1, { weight: 1, cap: 101 }, 0)).toBe(EINVAL);
      expect(s.getParams(1)).toEqual({ ok: true, params: { weight: 256, cap: 0 } });
      expect(s.putParams(1, { weight: 1 }, 0)).toBe(0);
      expect(s.putParams(1, { weight: 65535 }, 0)).toBe(0);
    });

    it('cap may go up to 100 * nr_vcpus', () => {
      const s = make(name, 2);
      expect(s.insertDomain(1)).toBe(0);
      expect(s.putParams(1, { cap: 1 }, 0)).toBe(EINVAL); // no vCPU yet
      expect(s.insertVcpu(ref(1, 0), 0)).toBe(0);
      expect(s.putParams(1, { cap: 101 }, 0)).toBe(EINVAL);
      expect(s.putParams(1, { cap: 100 }, 0)).toBe(0);
      expect(s.insertVcpu(ref(1, 1), 0)).toBe(0);
      expect(s.putParams(1, { cap: 201 }, 0)).toBe(EINVAL);
      expect(s.putParams(1, { cap: -1 }, 0)).toBe(EINVAL);
      expect(s.putParams(1, { cap: 200 }, 0)).toBe(0);
      expect(s.getParams(1)).toEqual({ ok: true, params: { weight: 256, cap: 200 } });
      expect(s.putParams(1, { cap: 0 }, 0)).toBe(0);
      expect(s.getParams(1)).toEqual({ ok: true, params: { weight: 256, cap: 0 } });
    });

    it('unknown domain: -ESRCH', () => {
      const s = make(name, 1);
      expect(s.putParams(9, { weight: 256 }, 0)).toBe(ESRCH);
      expect(s.getParams(9)).toEqual({ ok: false, rc: ESRCH });
    });

    it('removing a cap unparks the domain', () => {
      const r = simulate({
        scheduler: name, nrPcpus: 1, durationNs: 3 * S, warmupNs: 1100 * MS,
        domains: [{ domid: 1, cap: 10, vcpus: [{ workload: CPU }] }],
        actions: [{ atNs: 1 * S, kind: 'putParams', domid: 1, cap: 0 }],
      });
      expectShares(r, [1], 0.001);
    });

    it('a capped vCPU spends parked time in RUNSTATE_offline', () => {
      const s = make(name, 1);
      const r = simulate({ scheduler: s, nrPcpus: 1, durationNs: 1 * S, domains: [{ domid: 1, cap: 20, vcpus: [{ workload: CPU }] }] });
      const info = s.runstate(ref(1), r.durationNs);
      expect(info).toBeDefined();
      expect(info!.time[RUNSTATE_offline]).toBeGreaterThan(0.7 * S);
    });
  });
}
