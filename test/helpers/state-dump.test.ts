/**
 * The picture a timed-out real-thread test prints (hostStateDump), and
 * runBenchGuests' time limit that prints it: a hang on CI must say where
 * every vCPU and event was, and must not leave the host's threads running.
 */
import { describe, expect, it } from 'vitest';
import { EventChannels } from '../../shared/guest/evtchn.ts';
import { runBenchGuests } from '../bench/boot-guest.ts';
import { TestMachine } from './machine.ts';
import { hostStateDump } from './state-dump.ts';

describe('hostStateDump', () => {
  it('shows each vCPU\'s state and flags, and each port in use with its pending and mask bits', () => {
    const m = new TestMachine();
    const ev = new EventChannels(m.dom0.xen);
    const sent = ev.bindIpi();
    const quiet = ev.bindIpi();
    const masked = ev.bindIpi();
    ev.mask(masked);
    ev.send(sent);
    ev.send(masked);
    const dump = hostStateDump(m.hv);
    expect(dump).toMatch(/^domain 0 \(slot 0\): state 1, pause_count 0, shared_info mfn \d+$/m);
    expect(dump).toMatch(/^ {2}vcpu0: \w+, flags [a-z|]*initialised[a-z|]*, pcpu -?\d+, .* upcall_pending 1 upcall_mask 0 pending_sel 0{15}1$/m);
    expect(dump).toContain(`  port ${sent}: ipi, vcpu 0, PENDING\n`);
    expect(dump).toContain(`  port ${quiet}: ipi, vcpu 0, not pending\n`);
    expect(dump).toMatch(new RegExp(`^ {2}port ${masked}: ipi, vcpu 0, PENDING, masked$`, 'm'));
    // Ports never allocated are left out.
    expect(dump).not.toMatch(new RegExp(`port ${masked + 1}:`));
  });
});

describe('runBenchGuests with a time limit', () => {
  it('stops a host that does not halt and rejects with its console and state', async () => {
    // pong waits for a peer that never publishes its port: it polls for ever.
    const run = runBenchGuests(
      [{ name: 'lonely', kernel: 'test/bench/guests/evtchn-pingpong.ts', memoryMiB: 1, cmdline: 'role=pong peer=9 rounds=1' }],
      { memMiB: 64, pcpus: 2 },
      { timeoutMs: 4000 }, // room for Dom0 to build the guest on a loaded machine
    );
    const err = await run.then(() => null, (e: unknown) => e);
    expect(err).toBeInstanceOf(Error);
    const msg = (err as Error).message;
    expect(msg).toMatch(/^the host did not halt within 4000 ms; console \(end\):\n/);
    expect(msg).toContain('created lonely as domain 1');
    expect(msg).toMatch(/\nhypervisor state:\npCPU owners: /);
    expect(msg).toMatch(/^domain 1 \(slot \d+\): state 1, /m);
    // Its xenstore and console channels, bound to Dom0.
    expect(msg).toMatch(/^ {2}port 1: interdomain, vcpu 0, /m);
    expect(msg).toMatch(/^ {2}port 2: interdomain, vcpu 0, /m);
  });
});
