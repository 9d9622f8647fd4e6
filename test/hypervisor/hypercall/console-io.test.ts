/**
 * __HYPERVISOR_console_io (18): drivers/char/console.c do_console_io.
 * CONSOLEIO_write lands in the hypervisor console ring (read back with
 * sysctl readconsole): a DomU's lines as "(d<N>) " + printable bytes, Dom0's
 * raw. CONSOLEIO_read takes serial input, for Dom0 only.
 */
import { beforeEach, describe, expect, it } from 'vitest';
import { TestMachine, type TestVcpu } from '../../helpers/machine.ts';
import { E2BIG, EFAULT, ENOSYS, EPERM } from '../../../shared/errno.ts';
import { CONSOLEIO_read, CONSOLEIO_write, __HYPERVISOR_console_io } from '../../../shared/hypercall.ts';
import { serialRxPut } from '../../../hypervisor/serial.ts';
import { ARG, BUF, STRADDLE, UNMAPPED } from './helpers.ts';

const CIO = __HYPERVISOR_console_io;
const enc = new TextEncoder();

describe('console_io', () => {
  let m: TestMachine;
  let domU: TestVcpu;
  let domid: number;
  /** Console ring position after setup: each test reads only what it caused. */
  let mark: number;
  const newText = (): string => {
    const r = m.ctrl.readConsole(mark);
    mark = r.index;
    return r.text;
  };

  beforeEach(async () => {
    m = new TestMachine();
    ({ domid, v: domU } = await m.domU());
    mark = m.ctrl.readConsole(0, false).index;
    // Drain whatever setup left (readConsole returns at most one array page at a time).
    while (newText() !== '');
  });

  const write = (v: TestVcpu, bytes: Uint8Array, at = ARG): number => {
    v.api.mem.write(at, bytes);
    return v.call(CIO, CONSOLEIO_write, bytes.length, at);
  };

  describe('CONSOLEIO_write', () => {
    it('puts a DomU line in the ring prefixed "(d<N>) "', () => {
      expect(write(domU, enc.encode('hello, ring\n'))).toBe(0);
      expect(newText()).toBe(`(d${domid}) hello, ring\n`);
    });

    it('drops a DomU\'s non-printable bytes but keeps tab, and ends the line at "\\n"', () => {
      const raw = Uint8Array.from([0x61, 0x01, 0x1b, 0x5b, 0x32, 0x4a, 0x09, 0x62, 0x7f, 0x00, 0x63, 0x0d, 0x0a]);
      expect(write(domU, raw)).toBe(0);
      // a, ESC dropped, "[2J" kept, tab kept, b, DEL/NUL dropped, c, CR dropped.
      expect(newText()).toBe(`(d${domid}) a[2J\tbc\n`);
    });

    it('buffers a DomU\'s partial line until its newline, across calls', () => {
      expect(write(domU, enc.encode('part one, '))).toBe(0);
      expect(newText()).toBe('');
      expect(write(domU, enc.encode('part two\nnext'))).toBe(0);
      expect(newText()).toBe(`(d${domid}) part one, part two\n`);
    });

    it('emits a DomU line that outgrows the per-domain buffer without waiting for its newline, losing nothing', () => {
      expect(write(domU, new Uint8Array(450).fill(0x78))).toBe(0);
      // 450 bytes cannot all wait in a 200-byte buffer: some line comes out before the newline.
      const early = newText();
      expect(early.length).toBeGreaterThan(0);
      expect(write(domU, enc.encode('\n'))).toBe(0);
      const lines = (early + newText()).split('\n').filter(Boolean);
      expect(lines.length).toBeGreaterThanOrEqual(2);
      for (const l of lines) expect(l).toMatch(new RegExp(`^\\(d${domid}\\) x+$`));
      expect(lines.join('').replaceAll(`(d${domid}) `, '').length).toBe(450);
    });

    it('writes more than one 127-byte chunk in one call, all of it', () => {
      const text = Array.from({ length: 5 }, (_, i) => `line ${i} ${'='.repeat(60)}\n`).join('');
      expect(text.length).toBeGreaterThan(127 * 2);
      expect(write(domU, enc.encode(text))).toBe(0);
      expect(newText()).toBe(text.split('\n').filter(Boolean).map((l) => `(d${domid}) ${l}\n`).join(''));
    });

    it('takes Dom0\'s (the hardware domain\'s) bytes as they are, with no prefix', () => {
      expect(write(m.dom0, enc.encode('dom0 says hi\n'))).toBe(0);
      expect(newText()).toBe('dom0 says hi\n');
    });

    it('a zero-length write succeeds and adds nothing', () => {
      expect(domU.call(CIO, CONSOLEIO_write, 0, UNMAPPED)).toBe(0);
      expect(newText()).toBe('');
    });

    it('an unmapped buffer gets -EFAULT and adds nothing', () => {
      expect(domU.call(CIO, CONSOLEIO_write, 10, UNMAPPED)).toBe(-EFAULT);
      // A buffer that runs off the end of RAM faults too (before any of its chunk is used).
      domU.api.mem.write(STRADDLE, enc.encode('abcd'));
      expect(domU.call(CIO, CONSOLEIO_write, 10, STRADDLE)).toBe(-EFAULT);
      expect(write(domU, enc.encode('\n'))).toBe(0);
      expect(newText()).toBe(`(d${domid}) \n`);
    });
  });

  describe('CONSOLEIO_read', () => {
    it('gives Dom0 the pending serial input, up to count, and returns the number of bytes', () => {
      expect(serialRxPut(m.hv, enc.encode('typed'))).toBe(5);
      m.dom0.api.mem.fill(BUF, 8, 0xee);
      expect(m.dom0.call(CIO, CONSOLEIO_read, 3, BUF)).toBe(3);
      expect(new TextDecoder().decode(m.dom0.api.mem.read(BUF, 3))).toBe('typ');
      expect(m.dom0.api.mem.readU8(BUF + 3)).toBe(0xee);
      expect(m.dom0.call(CIO, CONSOLEIO_read, 100, BUF)).toBe(2);
      expect(new TextDecoder().decode(m.dom0.api.mem.read(BUF, 2))).toBe('ed');
      // Nothing pending: 0.
      expect(m.dom0.call(CIO, CONSOLEIO_read, 100, BUF)).toBe(0);
    });

    it('is -EPERM for a DomU, and the input stays for Dom0', () => {
      serialRxPut(m.hv, enc.encode('secret'));
      expect(domU.call(CIO, CONSOLEIO_read, 100, ARG)).toBe(-EPERM);
      expect(m.dom0.call(CIO, CONSOLEIO_read, 100, BUF)).toBe(6);
      expect(new TextDecoder().decode(m.dom0.api.mem.read(BUF, 6))).toBe('secret');
    });

    it('a count above INT_MAX gets -E2BIG', () => {
      expect(m.dom0.call(CIO, CONSOLEIO_read, 0x80000000, BUF)).toBe(-E2BIG);
      expect(m.dom0.call(CIO, CONSOLEIO_read, 0xffffffff, BUF)).toBe(-E2BIG);
    });

    it('an unmapped buffer gets -EFAULT and loses no input', () => {
      serialRxPut(m.hv, enc.encode('keep me'));
      expect(m.dom0.call(CIO, CONSOLEIO_read, 100, UNMAPPED)).toBe(-EFAULT);
      expect(m.dom0.call(CIO, CONSOLEIO_read, 100, BUF)).toBe(7);
      expect(new TextDecoder().decode(m.dom0.api.mem.read(BUF, 7))).toBe('keep me');
    });
  });

  it('an unknown command gets -ENOSYS from Dom0 and, as Xen checks privilege first, -EPERM from a DomU', () => {
    expect(m.dom0.call(CIO, 2, 0, 0)).toBe(-ENOSYS);
    expect(m.dom0.call(CIO, 0xffffffff, 0, 0)).toBe(-ENOSYS);
    expect(domU.call(CIO, 2, 0, 0)).toBe(-EPERM);
  });
});
