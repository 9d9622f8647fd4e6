/**
 * The real machine on real threads: platform, timer thread, Dom0's vCPU thread
 * running dom0/kernel.ts, and DomU vCPU threads. One DomU runs the example
 * kernel to completion while two others fail (a kernel that throws, one that
 * ends its own thread); the host carries on, Dom0 destroys all three, powers
 * off, and no frame, domain or thread is left behind.
 */
import { describe, expect, it } from 'vitest';
import { Platform } from '../../hypervisor/platform/platform.ts';
import { hostConfig } from '../../hypervisor/config.ts';
import { encodeDom0Cmdline } from '../../dom0/kernel.ts';
import { conringRead } from '../../hypervisor/console.ts';
import { SHUTDOWN_poweroff } from '../../shared/hypercall.ts';
import { D, G, DOMSTATE_FREE } from '../../hypervisor/state.ts';
import { frameInvariantViolations } from '../helpers/machine.ts';
import { hostStateDump } from '../helpers/state-dump.ts';

describe('booting the machine with threads', () => {
  it('runs Dom0 and three DomUs; the failing ones crash alone and nothing leaks', async () => {
    const platform = new Platform(hostConfig({ memMiB: 64, pcpus: 2, maxDomains: 16, p2mEntries: 8192 }));
    const guests = [
      { name: 'good', kernel: 'domU/guests/hello.ts', memoryMiB: 2, maxmemMiB: 4 },
      { name: 'bad', kernel: 'test/fixtures/guests/throws.ts', memoryMiB: 1 },
      { name: 'dies', kernel: 'test/fixtures/guests/exits.ts', memoryMiB: 1 },
    ];
    platform.boot({ kernel: 'dom0/kernel.ts', memMiB: 4, cmdline: encodeDom0Cmdline({ guests, keep: false }) });
    const reason = await Promise.race([
      platform.halted,
      new Promise<number>((_, rej) => setTimeout(() => rej(new Error(`host did not halt within 20 s; hypervisor state:\n${hostStateDump(platform.hv)}`)), 20_000)),
    ]);
    const hv = platform.hv;
    const log = new TextDecoder().decode(conringRead(hv, hv.cfg.conringSize, false, 0, false).data);

    expect(reason).toBe(SHUTDOWN_poweroff);
    // The good guest ran to its end, in its own domain.
    expect(log).toMatch(/\(d1\) balloon: \d+ -> \d+ -> \d+ pages .* ok/);
    expect(log).toContain('(d1) Goodbye: SCHEDOP_shutdown(poweroff)');
    expect(log).toMatch(/Domain 1 shutdown: reason 0/);
    // The failing ones crashed, each for its own reason.
    expect(log).toMatch(/Domain 2 crashed: guest kernel threw: Error: deliberate guest bug/);
    expect(log).toMatch(/Domain 3 crashed: vcpu0 thread died: exit code 7/);
    expect(log).toMatch(/domain 2 \(bad\) has shut down, reason crash/);
    for (const d of [1, 2, 3]) expect(log).toContain(`Domain ${d} destroyed`);

    // Nothing left: no DomU slot, no thread, every frame free except Dom0's own.
    for (let s = 0; s < hv.cfg.maxDomains; s++) {
      const st = Atomics.load(hv.dom, hv.d(s, D.state));
      if (st !== DOMSTATE_FREE) expect(hv.dom[hv.d(s, D.domid)]).toBe(0);
    }
    expect(platform.liveThreads).toBe(0);
    expect(frameInvariantViolations(hv)).toEqual([]);
    const dom0Pages = hv.dom[hv.d(hv.domidMap[0], D.tot_pages)];
    expect(Atomics.load(hv.g, G.FREE_PAGES)).toBe(hv.nrFrames - dom0Pages - Atomics.load(hv.g, G.XENHEAP_PAGES));
    expect(Atomics.load(hv.g, G.XENHEAP_PAGES)).toBe(1); // Dom0's shared_info only
  });
});
