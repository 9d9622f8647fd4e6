/**
 * The scheduler core (hypervisor/sched/core.ts) and the vCPU side of the pCPU
 * tokens (pcpu.ts), on one thread with a fake clock: the real policy objects,
 * the real request ring and shared state, vCPU "threads" stepped by hand.
 */
import { describe, expect, it } from 'vitest';
import { storeAffinity, storeParams } from '../../../hypervisor/sched/params.ts';
import { RUNSTATE_running } from '../../../hypervisor/sched/policy/runstate.ts';
import { PCPU_OPEN_ANY, SQ, V } from '../../../hypervisor/state.ts';
import { SCHED_EV_CLAIM, schedPost } from '../../../hypervisor/sched/ring.ts';
import { CoreRig, MS, US } from './core-rig.ts';

const ref = (domid: number, vcpuId = 0) => ({ domid, vcpuId });

describe('scheduler core: pCPU tokens', () => {
  it('opens every idle pCPU at start; a waking vCPU claims one itself and the policy hears of it later', async () => {
    const r = CoreRig.create();
    expect(r.isOpen(0) && r.isOpen(1)).toBe(true);
    const { domid, v } = await r.domU();
    r.now = 1 * MS;
    expect(v.wake()).toBe(true); // fast path: no scheduler round trip
    expect(v.pcpu).toBe(0);
    expect(r.owner(0)).toBe(v.vidx);
    expect(r.core.policy.current(0)).toBeNull(); // the claim is posted lazily
    r.now = 3 * MS;
    r.run();
    expect(r.core.policy.current(0)).toEqual(ref(domid));
    // The policy accounts the run from the claim's time, not from when it heard of it.
    expect(r.core.policy.runstate(ref(domid), 3 * MS)?.time[RUNSTATE_running]).toBe(2 * MS);
    expect(r.core.stats.claims).toBe(1);
    expect(r.core.stats.grants).toBe(0);
  });

  it('blocking with nobody waiting opens the pCPU at once; a block and a wake cost no round trip', async () => {
    const r = CoreRig.create({ pcpus: 1 });
    const { domid, v } = await r.domU();
    v.wake();
    r.run();
    r.now = 2 * MS;
    v.block();
    expect(r.isOpen(0)).toBe(true); // opened by the blocking vCPU itself
    r.now = 2 * MS + 50 * US;
    expect(v.wake()).toBe(true);
    r.now = 5 * MS;
    r.run(); // sees claim, release, claim, in order and at their times
    const rs = r.core.policy.runstate(ref(domid), 5 * MS)!;
    expect(rs.state).toBe(RUNSTATE_running);
    expect(rs.time[RUNSTATE_running]).toBe(2 * MS + 2950 * US);
    expect(r.core.policy.current(0)).toEqual(ref(domid));
  });

  it('with no pCPU open a vCPU asks, and the scheduler grants one', async () => {
    const r = CoreRig.create({ pcpus: 1 });
    const a = await r.domU();
    const b = await r.domU();
    a.v.wake();
    r.run();
    expect(b.v.wake()).toBe(false); // pCPU 0 is held: slow path
    r.run();
    expect(b.v.take()).toBe(false);
    expect(Atomics.load(r.hv.schedRing, SQ.WAITING)).toBe(1);
    r.now = 1 * MS;
    a.v.block(); // b waits: the release is urgent and the pCPU stays closed
    expect(r.isClosed(0)).toBe(true);
    r.run();
    expect(b.v.take()).toBe(true);
    expect(b.v.pcpu).toBe(0);
    expect(r.core.policy.current(0)).toEqual(ref(b.domid));
    expect(Atomics.load(r.hv.schedRing, SQ.WAITING)).toBe(0);
  });

  it('a slice that runs out becomes a preemption request; the switch happens at the holder\'s release', async () => {
    const r = CoreRig.create({ pcpus: 1 });
    const a = await r.domU();
    const b = await r.domU();
    a.v.wake();
    r.run();
    b.v.wake();
    r.run();
    r.now = 31 * MS; // credit's 30 ms slice is over
    r.run();
    expect(a.v.preemptRequested).toBe(true);
    expect(r.core.policy.current(0)).toEqual(ref(a.domid)); // not rescheduled yet
    r.now = 31 * MS + 200 * US;
    expect(a.v.point()).toBe(true);
    r.run();
    expect(b.v.take()).toBe(true);
    expect(r.core.policy.current(0)).toEqual(ref(b.domid));
    // a was charged up to its release, 200 µs past the request.
    expect(r.core.policy.runstate(ref(a.domid), r.now)?.time[RUNSTATE_running]).toBe(31 * MS + 200 * US);
    expect(r.warnings).toEqual([]); // within a tick: not an overrun worth reporting
  });

  it('a holder that overruns by more than a tick is charged for it and reported once', async () => {
    const r = CoreRig.create({ pcpus: 1 });
    const a = await r.domU();
    const b = await r.domU();
    a.v.wake();
    r.run();
    // a's first run is exempt (it loads its kernel): one ordinary block and wake first.
    r.now = 1 * MS;
    a.v.block();
    r.run();
    r.now = 2 * MS;
    expect(a.v.wake()).toBe(true);
    r.run();
    expect(b.v.wake()).toBe(false);
    r.run();
    expect(a.v.preemptRequested).toBe(true); // b is boosted
    for (let i = 0; i < 8; i++) {
      r.now += 10 * MS;
      r.run(); // ticks; a never reaches a preemption point
    }
    expect(r.warnings.map((w) => w.msg)).toEqual([expect.stringContaining('has not reached a preemption point')]);
    expect(r.warnings[0].obj).toMatchObject({ domid: a.domid, vcpu: 0, pcpu: 0 });
    const ranBefore = r.core.policy.runstate(ref(a.domid), r.now)!.time[RUNSTATE_running];
    expect(ranBefore).toBe(r.now - 1 * MS); // charged for all of it
    expect(a.v.point()).toBe(true);
    r.run();
    expect(b.v.take()).toBe(true);
    expect(r.core.stats.overruns).toBe(1);
    expect(r.core.policy.runstate(ref(a.domid), r.now)?.time[RUNSTATE_running]).toBe(ranBefore);
    expect(r.warnings).toHaveLength(1); // reported once per request
  });

  it('a waking vCPU with credit preempts a CPU-bound one at once (BOOST)', async () => {
    const r = CoreRig.create({ pcpus: 1 });
    const hog = await r.domU();
    const io = await r.domU();
    io.v.wake();
    r.run();
    r.now = 1 * MS;
    io.v.block();
    hog.v.wake();
    r.now = 50 * MS;
    r.run();
    expect(r.core.policy.current(0)).toEqual(ref(hog.domid));
    expect(io.v.wake()).toBe(false);
    r.run();
    expect(hog.v.preemptRequested).toBe(true); // asked at once, not at the end of its slice
    r.now += 20 * US;
    hog.v.point();
    r.run();
    expect(io.v.take()).toBe(true);
  });

  it('a thread that ends frees its pCPU for the next vCPU', async () => {
    const r = CoreRig.create({ pcpus: 1 });
    const a = await r.domU();
    const b = await r.domU();
    a.v.wake();
    r.run();
    b.v.wake();
    r.run();
    a.v.exited(); // killed while holding pCPU 0
    r.run();
    expect(b.v.take()).toBe(true);
    expect(r.owner(0)).toBe(b.v.vidx);
  });
});

describe('scheduler core: policy decisions', () => {
  for (const [sched, id] of [['credit', 5], ['credit2', 6]] as const) {
    it(`two CPU-bound vCPUs of weights 256 and 512 on one pCPU share it 1:2 (${sched})`, async () => {
      const r = CoreRig.create({ pcpus: 1, sched });
      const a = await r.domU();
      const b = await r.domU();
      r.m.ctrl.schedSetParams(b.domid, id, { weight: 512, cap: 0 });
      a.v.wake();
      b.v.wake();
      r.run();
      r.spin([a.v, b.v], 200 * MS);
      a.v.ran = 0;
      b.v.ran = 0;
      r.spin([a.v, b.v], 3000 * MS);
      expect(b.v.ran / a.v.ran).toBeGreaterThan(1.8);
      expect(b.v.ran / a.v.ran).toBeLessThan(2.2);
      expect(a.v.ran + b.v.ran).toBe(3000 * MS);
    });
  }

  it('parameters stored before a domain first runs are applied when it joins', async () => {
    const r = CoreRig.create();
    const a = await r.domU(2);
    storeParams(r.hv, a.slot, { weight: 1000, cap: 150 });
    r.run();
    expect(r.core.policy.getParams(a.domid)).toEqual({ ok: false, rc: -3 }); // not in the policy yet
    a.v.wake();
    r.run();
    expect(r.core.policy.getParams(a.domid)).toEqual({ ok: true, params: { weight: 1000, cap: 150 } });
    storeParams(r.hv, a.slot, { weight: 7, cap: 0 });
    r.run();
    expect(r.core.policy.getParams(a.domid)).toEqual({ ok: true, params: { weight: 7, cap: 0 } });
  });

  it('a pinned vCPU claims only a pCPU in its affinity; re-pinned to a free pCPU it moves there at once (the label), to a held one it is asked to give its pCPU back', async () => {
    const r = CoreRig.create({ pcpus: 2 });
    const a = await r.domU();
    storeAffinity(r.hv, a.slot, 0, { hard: [1], soft: [0, 1] });
    r.run();
    expect(a.v.wake()).toBe(true);
    expect(a.v.pcpu).toBe(1);
    r.run();
    expect(r.core.policy.current(1)).toEqual(ref(a.domid));
    // pCPU 0 is free: the policy runs a there now and only the label moves (its thread keeps running).
    storeAffinity(r.hv, a.slot, 0, { hard: [0], soft: [0, 1] });
    r.run();
    expect(a.v.preemptRequested).toBe(false);
    expect(a.v.pcpu).toBe(0);
    expect(r.core.holder(0)).toBe(a.v.vidx);
    expect(r.core.policy.current(0)).toEqual(ref(a.domid));
    expect(r.core.stats.relabels).toBe(1);
    // pCPU 1 is held by b: a must stop running, and gets pCPU 1 once b gives it back.
    const b = await r.domU();
    storeAffinity(r.hv, b.slot, 0, { hard: [1], soft: [1] });
    r.run();
    expect(b.v.wake()).toBe(true);
    expect(b.v.pcpu).toBe(1);
    r.run();
    storeAffinity(r.hv, a.slot, 0, { hard: [1], soft: [1] });
    r.run();
    expect(a.v.preemptRequested).toBe(true);
    r.now += 100 * US;
    expect(a.v.point()).toBe(true);
    r.run();
    expect(r.owner(0)).toBeLessThan(0); // nobody holds pCPU 0 now (idle: open or closed)
    r.now = 31 * MS; // b's slice is over and a waits: b is asked to give pCPU 1 back
    r.run();
    expect(b.v.preemptRequested).toBe(true);
    expect(b.v.point()).toBe(true);
    r.run();
    expect(a.v.take()).toBe(true);
    expect(a.v.pcpu).toBe(1);
  });

  it('a slice that runs out while nobody waits continues its holder: no preemption request, a new slice, charged to the end (Xen continue_running)', async () => {
    const r = CoreRig.create({ pcpus: 1 });
    const a = await r.domU();
    a.v.wake();
    r.run();
    const schedules = r.core.stats.schedules;
    for (const t of [31, 62, 93]) {
      r.now = t * MS;
      r.run();
      expect(a.v.preemptRequested).toBe(false);
      expect(r.core.holder(0)).toBe(a.v.vidx);
    }
    expect(r.core.stats.schedules).toBeGreaterThanOrEqual(schedules + 3); // rescheduled at each slice end
    expect(r.core.stats.preemptRequests).toBe(0);
    expect(r.core.policy.runstate(ref(a.domid), r.now)?.time[RUNSTATE_running]).toBe(93 * MS);
    // Someone wakes: now the slice's end is a preemption request again.
    const b = await r.domU();
    expect(b.v.wake()).toBe(false);
    r.run();
    r.now = 124 * MS;
    r.run();
    expect(a.v.preemptRequested).toBe(true);
  });

  it('a holder that its cap parks while nobody waits is asked to give its pCPU back', async () => {
    const r = CoreRig.create({ pcpus: 1 });
    const a = await r.domU();
    storeParams(r.hv, a.slot, { weight: 256, cap: 10 });
    r.run();
    a.v.wake();
    r.run();
    let asked = false;
    for (let i = 0; i < 40 && !asked; i++) {
      r.now += 10 * MS;
      r.run();
      asked = a.v.preemptRequested;
    }
    expect(asked).toBe(true);
    expect(a.v.point()).toBe(true);
    r.run();
    expect(r.core.holder(0)).not.toBe(a.v.vidx);
    expect(a.v.take()).toBe(false); // parked: no pCPU until its credit comes back
  });

  it('a claim the policy places on another free pCPU moves the label, not the thread', async () => {
    const r = CoreRig.create({ pcpus: 2 });
    const a = await r.domU();
    // A claim of pCPU 0 racing with a re-pin to pCPU 1 (the vCPU read its old mask).
    storeAffinity(r.hv, a.slot, 0, { hard: [1], soft: [] });
    expect(Atomics.compareExchange(r.hv.pcpuOwner, 0, PCPU_OPEN_ANY, a.v.vidx)).toBe(PCPU_OPEN_ANY);
    Atomics.store(r.hv.vcpu, r.hv.v(a.slot, 0, V.pcpu), 0);
    schedPost(r.hv, SCHED_EV_CLAIM, a.v.vidx, 0, false);
    r.run();
    expect(r.core.policy.current(1)).toEqual(ref(a.domid));
    expect(r.core.holder(1)).toBe(a.v.vidx);
    expect(a.v.pcpu).toBe(1);
    expect(a.v.preemptRequested).toBe(false); // it keeps running: only the label moved
    expect(r.isOpen(0)).toBe(true);
    expect(r.core.stats.relabels).toBe(1);
  });

  it('null: a blocked vCPU keeps its pCPU; only it may claim it back', async () => {
    const r = CoreRig.create({ pcpus: 1, sched: 'null' });
    expect(r.isClosed(0)).toBe(true); // nobody is assigned yet
    const a = await r.domU();
    const b = await r.domU();
    expect(a.v.wake()).toBe(false);
    r.run();
    expect(a.v.take()).toBe(true);
    a.v.block();
    expect(r.isOpenFor(0, a.v)).toBe(true);
    expect(b.v.wake()).toBe(false); // not b's pCPU
    r.run();
    expect(b.v.take()).toBe(false);
    expect(a.v.wake()).toBe(true);
    r.run();
    expect(r.core.policy.current(0)).toEqual(ref(a.domid));
  });
});
