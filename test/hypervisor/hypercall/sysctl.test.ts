/**
 * __HYPERVISOR_sysctl (35): common/sysctl.c do_sysctl, sysctl.h (4.17).
 * Copy in (-EFAULT), interface_version (-EACCES), privilege (-EPERM for any
 * DomU), then the command; the struct is copied back on success.
 */
import { beforeEach, describe, expect, it } from 'vitest';
import { TestMachine, type TestVcpu } from '../../helpers/machine.ts';
import { EACCES, EFAULT, ENOSYS, EPERM } from '../../../shared/errno.ts';
import {
  CONSOLEIO_write, XEN_SYSCTL_getdomaininfolist, XEN_SYSCTL_physinfo, XEN_SYSCTL_readconsole, XEN_SYSCTL_sched_id,
  __HYPERVISOR_console_io, __HYPERVISOR_sysctl,
} from '../../../shared/hypercall.ts';
import {
  SYSCTL_U, XEN_SYSCTL, XEN_SYSCTL_GETDOMAININFOLIST, XEN_SYSCTL_INTERFACE_VERSION, XEN_SYSCTL_READCONSOLE,
} from '../../../shared/abi/sysctl.ts';
import { StructView } from '../../../shared/layout.ts';
import { PAGE_SIZE } from '../../../shared/types.ts';
import { ARG, BUF, RAM_PAGES, STRADDLE, UNMAPPED, ctrlOf, put } from './helpers.ts';

const SIZEOF_DOMAININFO = 112;
const XEN_SYSCTL_PHYSCAP_hvm = 1 << 0;
const XEN_SYSCTL_PHYSCAP_pv = 1 << 1;
const XEN_SCHEDULER_CREDIT = 5;
const XEN_SCHEDULER_CREDIT2 = 6;
const XEN_SCHEDULER_NULL = 9;

const enc = new TextEncoder();
const dec = new TextDecoder();

describe('sysctl', () => {
  let m: TestMachine;
  let domU: TestVcpu;
  let domUid: number;
  beforeEach(async () => {
    m = new TestMachine();
    ({ domid: domUid, v: domU } = await m.domU());
  });

  /** A sysctl built at ARG by `v`; returns rc and the struct as the hypervisor left it. */
  const sysctl = (v: TestVcpu, cmd: number, fill?: (u: Uint8Array) => void, version = XEN_SYSCTL_INTERFACE_VERSION) => {
    const op = StructView.alloc(XEN_SYSCTL).set('cmd', cmd).set('interface_version', version);
    fill?.(op.raw().subarray(SYSCTL_U));
    const rc = v.call(__HYPERVISOR_sysctl, put(v, ARG, op));
    return { rc, u: v.api.mem.read(ARG + SYSCTL_U, 128) };
  };

  describe('the common path', () => {
    it('an interface_version other than 0x15 is -EACCES, checked before privilege', () => {
      for (const version of [0, 0x14, 0x16]) {
        expect(sysctl(m.dom0, XEN_SYSCTL_physinfo, undefined, version).rc).toBe(-EACCES);
        expect(sysctl(domU, XEN_SYSCTL_physinfo, undefined, version).rc).toBe(-EACCES);
      }
    });

    it.each([
      ['physinfo', XEN_SYSCTL_physinfo],
      ['sched_id', XEN_SYSCTL_sched_id],
      ['getdomaininfolist', XEN_SYSCTL_getdomaininfolist],
      ['readconsole', XEN_SYSCTL_readconsole],
      ['an unknown command', 999],
    ])('%s is -EPERM for a DomU, and its struct is not written', (_n, cmd) => {
      const { rc, u } = sysctl(domU, cmd, (b) => b.fill(0x5a, 0, 24));
      expect(rc).toBe(-EPERM);
      expect([...u.subarray(0, 24)]).toEqual(new Array(24).fill(0x5a));
    });

    it('an unreadable struct is -EFAULT; an unknown command -ENOSYS for Dom0', () => {
      expect(m.dom0.call(__HYPERVISOR_sysctl, UNMAPPED)).toBe(-EFAULT);
      expect(m.dom0.call(__HYPERVISOR_sysctl, STRADDLE)).toBe(-EFAULT);
      expect(sysctl(m.dom0, 999).rc).toBe(-ENOSYS);
    });
  });

  it('physinfo describes the host at Xen\'s offsets: CPUs, total, free and max mfn, PV capability', () => {
    const { rc, u } = sysctl(m.dom0, XEN_SYSCTL_physinfo, (b) => b.fill(0xff));
    expect(rc).toBe(0);
    const dv = new DataView(u.buffer, u.byteOffset);
    expect(dv.getUint32(8, true)).toBe(m.hv.cfg.pcpus); // nr_cpus
    expect(dv.getUint32(12, true)).toBe(m.hv.cfg.pcpus - 1); // max_cpu_id
    expect(dv.getBigUint64(40, true)).toBe(BigInt(m.hv.nrFrames)); // total_pages: 16 MiB
    expect(dv.getBigUint64(40, true)).toBe(16n * 256n);
    expect(dv.getBigUint64(48, true)).toBe(BigInt(m.freePages())); // free_pages
    expect(dv.getBigUint64(72, true)).toBe(BigInt(m.hv.nrFrames - 1)); // max_mfn
    const caps = dv.getUint32(28, true);
    expect(caps & XEN_SYSCTL_PHYSCAP_pv).not.toBe(0);
    expect(caps & XEN_SYSCTL_PHYSCAP_hvm).toBe(0);
  });

  it('physinfo free_pages follows allocation', () => {
    const free = (): bigint => new DataView(sysctl(m.dom0, XEN_SYSCTL_physinfo).u.buffer).getBigUint64(48, true);
    const before = free();
    m.ctrl.maxMem(domUid, 2048);
    expect(domU.xen.populatePhysmap([300, 301, 302])).toBe(3);
    expect(free()).toBe(before - 3n);
  });

  it.each([
    ['credit', XEN_SCHEDULER_CREDIT],
    ['credit2', XEN_SCHEDULER_CREDIT2],
    ['null', XEN_SCHEDULER_NULL],
  ] as const)('sched_id names the host\'s scheduler (%s = %i)', (sched, id) => {
    const host = new TestMachine({ sched });
    const { rc, u } = sysctl(host.dom0, XEN_SYSCTL_sched_id);
    expect(rc).toBe(0);
    expect(new DataView(u.buffer, u.byteOffset).getUint32(0, true)).toBe(id);
  });

  describe('getdomaininfolist', () => {
    const list = (first: number, max: number, buffer = BUF) => {
      const r = sysctl(m.dom0, XEN_SYSCTL_getdomaininfolist, (b) => {
        new StructView(XEN_SYSCTL_GETDOMAININFOLIST, b).set('first_domain', first).set('max_domains', max).set('buffer', buffer);
      });
      const n = new StructView(XEN_SYSCTL_GETDOMAININFOLIST, r.u).get('num_domains');
      const raw = r.rc === 0 ? m.dom0.api.mem.read(buffer, n * SIZEOF_DOMAININFO) : new Uint8Array(0);
      const dv = new DataView(raw.buffer);
      // domain @0, tot_pages @8 of each 112-byte xen_domctl_getdomaininfo.
      return { rc: r.rc, n, doms: Array.from({ length: n }, (_, i) => [dv.getUint16(i * SIZEOF_DOMAININFO, true), Number(dv.getBigUint64(i * SIZEOF_DOMAININFO + 8, true))]) };
    };

    it('lists domains in ascending domid order from first_domain, at most max_domains, 112 bytes each', () => {
      const c = m.ctrl.createDomain({ domid: 7 });
      expect(list(0, 10)).toEqual({ rc: 0, n: 3, doms: [[0, RAM_PAGES], [domUid, RAM_PAGES], [c, 0]] });
      expect(list(domUid, 10).doms.map((d) => d[0])).toEqual([domUid, c]);
      expect(list(domUid + 1, 10).doms.map((d) => d[0])).toEqual([c]);
      expect(list(0, 2).doms.map((d) => d[0])).toEqual([0, domUid]);
      expect(list(8, 10)).toEqual({ rc: 0, n: 0, doms: [] });
      expect(list(0, 0).n).toBe(0);
    });

    it('a buffer that cannot hold every entry is -EFAULT', () => {
      expect(list(0, 10, UNMAPPED).rc).toBe(-EFAULT);
      // Room for one entry before the end of RAM, and there are two domains.
      expect(list(0, 10, RAM_PAGES * PAGE_SIZE - SIZEOF_DOMAININFO).rc).toBe(-EFAULT);
      expect(list(0, 1, RAM_PAGES * PAGE_SIZE - SIZEOF_DOMAININFO).rc).toBe(0);
    });
  });

  describe('readconsole', () => {
    interface Rc { clear?: boolean; incremental?: boolean; index?: number; count?: number; buffer?: number }
    const read = (o: Rc = {}) => {
      const r = sysctl(m.dom0, XEN_SYSCTL_readconsole, (b) => {
        new StructView(XEN_SYSCTL_READCONSOLE, b).set('clear', o.clear ? 1 : 0).set('incremental', o.incremental ? 1 : 0)
          .set('index', o.index ?? 0).set('buffer', o.buffer ?? BUF).set('count', o.count ?? 3000);
      });
      const v = new StructView(XEN_SYSCTL_READCONSOLE, r.u);
      const count = v.get('count');
      return { rc: r.rc, count, index: v.get('index'), text: r.rc === 0 ? dec.decode(m.dom0.api.mem.read(o.buffer ?? BUF, count)) : '' };
    };
    const print = (v: TestVcpu, s: string): void => {
      const b = enc.encode(s);
      v.api.mem.write(ARG + 1024, b);
      expect(v.call(__HYPERVISOR_console_io, CONSOLEIO_write, b.length, ARG + 1024)).toBe(0);
    };
    /** Everything in the ring now, and the index after it. */
    const all = () => {
      let text = '';
      let index = 0;
      let first = true;
      for (;;) {
        const r = read(first ? {} : { incremental: true, index });
        first = false;
        text += r.text;
        index = r.index;
        if (r.count === 0) return { text, index };
      }
    };

    it('returns the ring from its oldest byte, and the index after the last byte copied', () => {
      const start = all();
      expect(start.text).toContain('(XEN) ');
      print(domU, 'first\n');
      const r = all();
      expect(r.text).toBe(start.text + `(d${domUid}) first\n`);
      expect(r.index - start.index).toBe(`(d${domUid}) first\n`.length);
    });

    it('incremental from a returned index gives only what was written since; again, nothing', () => {
      const { index } = all();
      print(domU, 'one\n');
      print(m.dom0, 'two\n');
      const r = read({ incremental: true, index });
      expect(r.rc).toBe(0);
      expect(r.text).toBe(`(d${domUid}) one\ntwo\n`);
      expect(r.index).toBe(index + r.count);
      const again = read({ incremental: true, index: r.index });
      expect(again).toMatchObject({ rc: 0, count: 0, index: r.index });
    });

    it('count limits the copy; the returned index lets the caller continue where it stopped', () => {
      const { index } = all();
      print(domU, 'abcdefghij\n');
      const a = read({ incremental: true, index, count: 8 });
      expect(a.count).toBe(8);
      expect(a.text).toBe(`(d${domUid}) abcdefghij\n`.slice(0, 8));
      const b = read({ incremental: true, index: a.index });
      expect(a.text + b.text).toBe(`(d${domUid}) abcdefghij\n`);
    });

    it('an incremental index outside the live window starts from the oldest byte', () => {
      const whole = all();
      for (const index of [whole.index + 100, (whole.index - 5000) >>> 0]) {
        const r = read({ incremental: true, index });
        expect(r.rc).toBe(0);
        expect(whole.text.startsWith(r.text)).toBe(true);
        expect(r.count).toBe(Math.min(3000, whole.text.length));
      }
    });

    it('when writers lap a reader, it gets the newest conring_size bytes, ending at the producer', () => {
      const size = m.hv.cfg.conringSize;
      const { index } = all();
      const lines = Array.from({ length: 120 }, (_, i) => `line ${String(i).padStart(3, '0')} ${'.'.repeat(40)}\n`);
      for (const l of lines) print(domU, l);
      const written = lines.map((l) => `(d${domUid}) ${l}`).join('');
      expect(written.length).toBeGreaterThan(size);
      let text = '';
      let at = index;
      for (let r = read({ incremental: true, index: at }); r.count > 0; r = read({ incremental: true, index: at })) {
        text += r.text;
        at = r.index;
      }
      expect(text.length).toBe(size);
      expect(written.endsWith(text)).toBe(true);
      expect(at).toBe((index + written.length) >>> 0);
    });

    it('clear empties the ring after the read: a later full read sees only newer lines', () => {
      all();
      const r = read({ clear: true, count: 100000 });
      expect(r.rc).toBe(0);
      expect(read().count).toBe(0);
      print(domU, 'after clear\n');
      expect(read().text).toBe(`(d${domUid}) after clear\n`);
    });

    it('an unwritable buffer is -EFAULT, and a clear that failed clears nothing', () => {
      const before = all();
      expect(read({ buffer: UNMAPPED }).rc).toBe(-EFAULT);
      expect(read({ buffer: UNMAPPED, clear: true }).rc).toBe(-EFAULT);
      expect(read({ buffer: STRADDLE, count: 100, clear: true }).rc).toBe(-EFAULT);
      expect(all().text).toBe(before.text);
    });

    it('a DomU\'s line is "(d<N>) " and its printable bytes; control characters never reach the ring', () => {
      const { index } = all();
      print(domU, 'x\x07y\x1b]0;owned\x07z\r\n');
      expect(read({ incremental: true, index }).text).toBe(`(d${domUid}) xy]0;ownedz\n`);
    });

    it('is -EPERM for a DomU', () => {
      expect(ctrlOf(domU).sysctlRaw(XEN_SYSCTL_readconsole).rc).toBe(-EPERM);
    });
  });
});
