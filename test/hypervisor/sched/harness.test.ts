/**
 * The simulation harness (hypervisor/sched/sim/harness.ts), checked against
 * cases whose answer is known exactly: under the null scheduler a lone vCPU
 * never waits, so its CPU time follows from its workload alone.
 */
import { describe, expect, it } from 'vitest';
import { Simulation, formatResult, simulate } from '../../../hypervisor/sched/sim/harness.ts';
import { attackerNextAction } from '../../../hypervisor/sched/sim/workload.ts';
import type { Scheduler } from '../../../hypervisor/sched/policy/types.ts';
import { CPU, MS, S, US, attacker, io, make } from './helpers.ts';

describe('simulation harness', () => {
  it('a CPU-bound vCPU alone gets the whole pCPU', () => {
    const r = simulate({ scheduler: 'null', nrPcpus: 1, durationNs: 1 * S, domains: [{ domid: 1, vcpus: [{ workload: CPU }] }] });
    expect(r.vcpus[0]).toMatchObject({ cpuNs: 1 * S, share: 1, firstRunNs: 0, perPcpuNs: [1 * S] });
    expect(r.pcpus[0]).toEqual({ pcpu: 0, busyNs: 1 * S, idleNs: 0, idleWhileRunnableNs: 0 });
    expect(r.domains).toEqual([{ domid: 1, cpuNs: 1 * S, share: 1 }]);
  });

  it('an I/O-bound vCPU alone runs runNs of every runNs + blockNs, and wakes with no latency', () => {
    const r = simulate({ scheduler: 'null', nrPcpus: 1, durationNs: 100 * MS, domains: [{ domid: 1, vcpus: [{ workload: io(1 * MS, 4 * MS) }] }] });
    expect(r.vcpus[0].cpuNs).toBe(20 * MS);
    expect(r.vcpus[0].wakeLatency).toEqual({ count: 19, maxNs: 0, meanNs: 0 });
    expect(r.pcpus[0].idleNs).toBe(80 * MS);
    expect(r.pcpus[0].idleWhileRunnableNs).toBe(0);
  });

  it('firstWakeNs holds an I/O vCPU blocked until then', () => {
    const r = simulate({ scheduler: 'null', nrPcpus: 1, durationNs: 10 * MS, domains: [{ domid: 1, vcpus: [{ workload: io(1 * MS, 4 * MS, 3 * MS) }] }] });
    expect(r.vcpus[0].firstRunNs).toBe(3 * MS);
    expect(r.vcpus[0].cpuNs).toBe(2 * MS); // 3-4 ms and 8-9 ms
  });

  it('the attacker blocks guardNs before each 10 ms boundary and wakes wakeDelayNs after it', () => {
    const r = simulate({ scheduler: 'null', nrPcpus: 1, durationNs: 100 * MS, domains: [{ domid: 1, vcpus: [{ workload: attacker('block') }] }] });
    // 0 - 9.95 ms, then 10.05 - 19.95 ms, ...: 9.95 + 9 * 9.9 ms.
    expect(r.vcpus[0].cpuNs).toBe(9_950_000 + 9 * 9_900_000);
    expect(r.vcpus[0].wakeLatency.count).toBe(9);
  });

  it('attackerNextAction: the next unhandled boundary, acting at once inside the guard window', () => {
    const w = { kind: 'attacker', mode: 'block', guardNs: 50 * US, wakeDelayNs: 50 * US } as const;
    expect(attackerNextAction(w, 0, 0)).toEqual({ boundary: 10 * MS, at: 9_950_000 });
    expect(attackerNextAction(w, 9_970_000, 0)).toEqual({ boundary: 10 * MS, at: 9_970_000 });
    expect(attackerNextAction(w, 9_970_000, 10 * MS)).toEqual({ boundary: 20 * MS, at: 19_950_000 });
    expect(attackerNextAction(w, 10 * MS, 0)).toEqual({ boundary: 20 * MS, at: 19_950_000 });
  });

  it('counts only the window after warmupNs', () => {
    const r = simulate({
      scheduler: 'null', nrPcpus: 1, durationNs: 100 * MS, warmupNs: 40 * MS,
      domains: [{ domid: 1, vcpus: [{ workload: io(1 * MS, 4 * MS) }] }],
    });
    expect(r.windowNs).toBe(60 * MS);
    expect(r.vcpus[0].cpuNs).toBe(12 * MS);
    expect(r.vcpus[0].share).toBeCloseTo(0.2, 10);
    expect(r.vcpus[0].wakeLatency.count).toBe(12); // wakes at 40, 45, ... 95 ms
  });

  it('is deterministic', () => {
    const cfg = {
      scheduler: 'credit', nrPcpus: 2, durationNs: 1 * S,
      domains: [
        { domid: 1, vcpus: [{ workload: io(300 * US, 2 * MS) }, { workload: attacker('block') }] },
        { domid: 2, weight: 512, vcpus: [{ workload: CPU }, { workload: CPU }] },
      ],
    } as const;
    expect(simulate(cfg)).toEqual(simulate(cfg));
  });

  it('counts idle time while a runnable vCPU waits, and only for pCPUs it may use', () => {
    // null: d1 holds pCPU 0 but blocks half the time; d2 (allowed on 0 and 1) waits; pCPU 1 is given to d3.
    const r = simulate({
      scheduler: 'null', nrPcpus: 2, durationNs: 1 * S,
      domains: [
        { domid: 1, vcpus: [{ workload: io(1 * MS, 1 * MS) }] },
        { domid: 3, vcpus: [{ workload: io(1 * MS, 1 * MS) }] },
        { domid: 2, vcpus: [{ workload: CPU }] },
      ],
    });
    expect(r.pcpus[0].idleWhileRunnableNs).toBe(500 * MS);
    expect(r.pcpus[1].idleWhileRunnableNs).toBe(500 * MS);
    const pinned = simulate({
      scheduler: 'null', nrPcpus: 2, durationNs: 1 * S,
      domains: [
        { domid: 1, vcpus: [{ workload: io(1 * MS, 1 * MS) }] },
        { domid: 3, vcpus: [{ workload: io(1 * MS, 1 * MS) }] },
        { domid: 2, vcpus: [{ workload: CPU, affinity: [1] }] },
      ],
    });
    expect(pinned.pcpus[0].idleWhileRunnableNs).toBe(0);
    expect(pinned.pcpus[1].idleWhileRunnableNs).toBe(500 * MS);
  });

  it('rejects a policy whose view of who runs where differs from its decisions', () => {
    const s = make('null', 1);
    const lying: Scheduler = Object.assign(Object.create(Object.getPrototypeOf(s) as object) as Scheduler, s, {
      current: (): null => null,
    });
    expect(() => simulate({ scheduler: lying, nrPcpus: 1, durationNs: 1 * MS, domains: [{ domid: 1, vcpus: [{ workload: CPU }] }] }))
      .toThrow(/harness runs/);
  });

  it('rejects bad configurations', () => {
    expect(() => new Simulation({ scheduler: 'null', nrPcpus: 1, durationNs: 0, domains: [] })).toThrow();
    expect(() => new Simulation({ scheduler: 'bogus' as 'null', nrPcpus: 1, durationNs: 1, domains: [] })).toThrow(/unknown scheduler/);
    expect(() => new Simulation({
      scheduler: 'null', nrPcpus: 1, durationNs: 1 * MS,
      domains: [{ domid: 1, vcpus: [{ workload: { kind: 'attacker', mode: 'block', guardNs: 6 * MS, wakeDelayNs: 5 * MS } }] }],
    })).toThrow(/below the period/);
    expect(() => new Simulation({
      scheduler: 'credit', nrPcpus: 1, durationNs: 1 * MS, domains: [{ domid: 1, cap: 101, vcpus: [{ workload: CPU }] }],
    })).toThrow(/putParams/);
  });

  it('formats a result as a table', () => {
    const r = simulate({ scheduler: 'null', nrPcpus: 1, durationNs: 1 * S, domains: [{ domid: 1, vcpus: [{ workload: CPU }] }] });
    expect(formatResult(r)).toContain('d1v0     100.00%');
  });
});
