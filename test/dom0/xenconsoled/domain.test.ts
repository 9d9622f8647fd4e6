/**
 * xenconsoled's side of one guest console (dom0/xenconsoled/domain.ts), with
 * the guest's side played by the ring functions over a fake page: output to
 * the log, the terminal and attached listeners; input as room allows; the
 * per-call budget; a guest that corrupts its indexes; what reaches the terminal.
 */
import { describe, expect, it } from 'vitest';
import { ConsoleDomain, INPUT_LIMIT } from '../../../dom0/xenconsoled/domain.ts';
import { LineSplitter } from '../../../dom0/xenconsoled/lines.ts';
import { consRingRead, consRingWrite } from '../../../shared/console/ring.ts';
import { XENCONS_INTERFACE } from '../../../shared/abi/console.ts';
import { FakeRingMemory } from '../../helpers/fake-ring-memory.ts';

const enc = new TextEncoder();
const dec = new TextDecoder();

function setup() {
  const m = new FakeRingMemory();
  const logged: Uint8Array[] = [];
  const lines: string[] = [];
  let notified = 0;
  const con = new ConsoleDomain(7, 'seven', m, m.base, () => { notified++; }, {
    log: (b) => logged.push(b.slice()),
    line: (l) => lines.push(l),
  });
  const guestWrite = (s: string | Uint8Array): number => {
    const r = consRingWrite(m, m.base, 'out', typeof s === 'string' ? enc.encode(s) : s);
    if (!r.ok) throw new Error('corrupt');
    return r.written;
  };
  const guestRead = (): string => {
    const r = consRingRead(m, m.base, 'in');
    if (!r.ok) throw new Error('corrupt');
    return dec.decode(r.bytes);
  };
  const log = (): string => dec.decode(Uint8Array.from(logged.flatMap((b) => [...b])));
  return { m, con, lines, log, guestWrite, guestRead, notified: () => notified };
}

describe('xenconsoled: one guest console', () => {
  it('copies output to the log (raw) and the terminal (whole lines), notifies the guest, and listeners see it', () => {
    const t = setup();
    const heard: string[] = [];
    t.con.listeners.add((b) => heard.push(dec.decode(b)));
    t.guestWrite('hello\r\nwor');
    expect(t.con.service()).toBe(10);
    expect(t.notified()).toBe(1);
    expect(t.lines).toEqual(['hello']);
    t.guestWrite('ld\n');
    t.con.service();
    expect(t.lines).toEqual(['hello', 'world']);
    expect(t.log()).toBe('hello\r\nworld\n');
    expect(heard.join('')).toBe('hello\r\nworld\n');
    // Nothing new: nothing moved, no notification.
    expect(t.con.service()).toBe(0);
    expect(t.notified()).toBe(2);
  });

  it('a guest blocked on a full ring gets room: output over several ring-fulls arrives whole', () => {
    const t = setup();
    const big = 'x'.repeat(5000) + '\n';
    let at = 0;
    while (at < big.length) {
      at += t.guestWrite(big.slice(at));
      t.con.service();
    }
    expect(t.log()).toBe(big);
    // A line longer than 1024 characters reaches the terminal in pieces.
    expect(t.lines.join('')).toBe('x'.repeat(5000));
    expect(t.lines.every((l) => l.length <= 1024)).toBe(true);
  });

  it('takes at most `budget` bytes of output per call', () => {
    const t = setup();
    t.guestWrite('a'.repeat(2000));
    expect(t.con.service(500)).toBe(500);
    expect(t.con.service()).toBe(1500);
  });

  it('queues input and writes it as the guest makes room; refuses more than INPUT_LIMIT waiting', () => {
    const t = setup();
    expect(t.con.queueInput(enc.encode('y'.repeat(1500)))).toBe(true);
    t.con.service();
    expect(t.con.pendingInput).toBe(476);
    expect(t.guestRead()).toBe('y'.repeat(1024));
    t.con.service();
    expect(t.guestRead()).toBe('y'.repeat(476));
    expect(t.con.pendingInput).toBe(0);
    expect(t.con.queueInput(new Uint8Array(INPUT_LIMIT))).toBe(true);
    expect(t.con.queueInput(new Uint8Array(1))).toBe(false);
  });

  it('a guest that corrupts its indexes stops its console for good', () => {
    const t = setup();
    t.guestWrite('ok\n');
    t.m.atomicStore32(t.m.base + XENCONS_INTERFACE.fields.out_prod.offset, 0x10000);
    expect(t.con.service()).toBe(0);
    expect(t.con.broken).toBe(true);
    expect(t.con.queueInput(enc.encode('x'))).toBe(false);
    expect(t.lines).toEqual([]);
    expect(t.con.service()).toBe(0);
  });

  it('finish() emits an unfinished last line', () => {
    const t = setup();
    t.guestWrite('no newline');
    t.con.service();
    expect(t.lines).toEqual([]);
    t.con.finish();
    expect(t.lines).toEqual(['no newline']);
  });
});

describe('xenconsoled: lines for the terminal', () => {
  it('drops control characters (escape sequences) but keeps tabs and UTF-8 split across chunks', () => {
    const out: string[] = [];
    const s = new LineSplitter((l) => out.push(l));
    const euro = enc.encode('€');
    s.push(Uint8Array.from([...enc.encode('\x1b[2Jred\ttab '), euro[0]]));
    s.push(Uint8Array.from([...euro.subarray(1), ...enc.encode('\x07\n')]));
    expect(out).toEqual(['[2Jred\ttab €']);
  });
});
