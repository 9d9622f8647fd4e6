import { describe, expect, it } from 'vitest';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { dom0Guests, dom0LoopOptions, encodeDom0Cmdline, parseDom0Cmdline, POLL_US_MAX } from '../../dom0/kernel.ts';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');

describe("Dom0's command line", () => {
  it('builds the guests of an xl.cfg directory and of guest= specs', () => {
    const c = parseDom0Cmdline('configs=domU/configs guest=a=domU/guests/hello.ts:2 keep=1');
    expect(c.keep).toBe(true);
    const g = dom0Guests(c, ROOT);
    expect(g.map((x) => x.name)).toEqual(['blkdemo', 'hello', 'a']);
    expect(g[0]).toMatchObject({ memoryMiB: 8, disks: [{ vdev: 'xvda', access: 'rw', size: 16 << 20, target: path.join(ROOT, 'domU/images/blkdemo.img') }] });
    expect(g[1]).toMatchObject({ memoryMiB: 4, maxmemMiB: 8, cmdline: 'console=hvc0' });
    expect(g[2]).toMatchObject({ kernel: 'domU/guests/hello.ts', memoryMiB: 2, maxmemMiB: 4 });
  });

  it('round-trips what tests and benchmarks encode', () => {
    const c = { guests: [{ name: 'g', kernel: 'k.ts', memoryMiB: 1 }], keep: false, shutdownTimeoutS: 5, guestSpecs: ['b=x.ts'] };
    expect(parseDom0Cmdline(encodeDom0Cmdline(c))).toEqual(c);
  });

  it("reads blkback's switches (Linux's xen_blkback parameters) and round-trips them; malformed ones are ignored", () => {
    const c = parseDom0Cmdline('keep=0 xen_blkback.feature_persistent=0 xen_blkback.max_ring_page_order=0 xen_blkback.feature_indirect=1 xen_blkback.max_persistent_grants=64');
    expect(c.blkback).toEqual({ persistent: false, multiPageRing: false, indirect: true, maxPersistentGrants: 64 });
    expect(parseDom0Cmdline(encodeDom0Cmdline(c))).toEqual(c);
    expect(parseDom0Cmdline('keep=0 xen_blkback.feature_persistent=no xen_blkback.max_ring_page_order=-1').blkback).toBeUndefined();
    expect(parseDom0Cmdline('keep=0').blkback).toBeUndefined();
  });

  it("reads poll_us (Dom0's spin on its rings) and round-trips it; a negative, non-numeric or too large one is ignored", () => {
    expect(parseDom0Cmdline('keep=0 poll_us=0').pollUs).toBe(0);
    expect(parseDom0Cmdline(`keep=0 poll_us=${POLL_US_MAX}`).pollUs).toBe(POLL_US_MAX);
    const c = { guests: [], keep: true, pollUs: 250 };
    expect(parseDom0Cmdline(encodeDom0Cmdline(c))).toEqual(c);
    for (const bad of ['-1', 'abc', '1.5', '', `${POLL_US_MAX + 1}`, '1e3']) {
      expect(parseDom0Cmdline(`keep=0 poll_us=${bad}`)).toEqual({ guests: [], keep: false });
    }
    expect(parseDom0Cmdline('keep=0').pollUs).toBeUndefined();
    // What Dom0's loop is built with: poll_us as its spin bound, else its defaults (SPIN_US).
    expect(dom0LoopOptions(parseDom0Cmdline('keep=0 poll_us=0'))).toEqual({ spinUs: 0 });
    expect(dom0LoopOptions(parseDom0Cmdline('keep=0 poll_us=250'))).toEqual({ spinUs: 250 });
    expect(dom0LoopOptions(parseDom0Cmdline('keep=0 poll_us=abc'))).toEqual({});
  });

  it('refuses a bad config file or spec, naming it (nothing is built)', () => {
    expect(() => dom0Guests(parseDom0Cmdline('configs=test/fixtures/configs-bad'), ROOT)).toThrow(/bad\.cfg:4.*bogus_key/);
    expect(() => dom0Guests(parseDom0Cmdline('guest=no-kernel'), ROOT)).toThrow(/guest no-kernel: expected name=/);
  });
});
