/**
 * A DomU that spins without ever reaching a preemption point can still be
 * destroyed: its thread is stopped after the kill's grace period, the domain
 * is not reported as crashed, and nothing of it is left.
 */
import { describe, expect, it } from 'vitest';
import { existsSync } from 'node:fs';
import { Platform } from '../../hypervisor/platform/platform.ts';
import { hostConfig } from '../../hypervisor/config.ts';
import { encodeDom0Cmdline } from '../../dom0/kernel.ts';
import { ControlClient } from '../../dom0/xl/client.ts';
import { D, DOMSTATE_FREE } from '../../hypervisor/state.ts';
import { ConsoleTap } from '../helpers/console-tap.ts';
import { frameInvariantViolations } from '../helpers/machine.ts';
import { until } from '../helpers/until.ts';

describe('destroying a guest that never reaches a preemption point', () => {
  it('stops its thread after the grace period and leaves nothing behind', async () => {
    const platform = new Platform(hostConfig({ memMiB: 64, pcpus: 2, maxDomains: 8, p2mEntries: 8192 }));
    const hv = platform.hv;
    const tap = new ConsoleTap(hv);
    platform.boot({ kernel: 'dom0/kernel.ts', memMiB: 4, cmdline: encodeDom0Cmdline({ guests: [], keep: true, guestSpecs: ['spinner=test/fixtures/guests/spins.ts:1'] }) });
    let client: ControlClient | undefined;
    try {
      await until('the spinning guest', () => tap.text.includes('(d1) spinning'));
      await until('the control socket', () => existsSync(process.env.XENTS_CONTROL_PATH!) && tap.text.includes('xl: control socket listening on'));
      client = await ControlClient.connect(process.env.XENTS_CONTROL_PATH!);
      expect(await client.call('destroy', { domain: 'spinner' })).toEqual({ domid: 1 });
      await until('domain 1 to be gone', () => tap.text.includes('Domain 1 destroyed'));
      expect((await client.call('list', {})).map((d) => d.domid)).toEqual([0]);
      expect(platform.liveThreads).toBe(1); // Dom0's vCPU only
      expect(tap.text).not.toMatch(/crashed/);
      for (let s = 0; s < hv.cfg.maxDomains; s++) {
        if (Atomics.load(hv.dom, hv.d(s, D.state)) !== DOMSTATE_FREE) expect(hv.dom[hv.d(s, D.domid)]).toBe(0);
      }
      expect(frameInvariantViolations(hv)).toEqual([]);
    } finally {
      client?.close();
      tap.stop();
      await platform.stop();
    }
  });
});
