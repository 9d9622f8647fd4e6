/** XenbusState: Xen's numbers, parsing, and the transition table driving a handshake. */
import { describe, expect, it } from 'vitest';
import {
  formatXenbusState, parseXenbusState, switchState, XENBUS_TRANSITIONS, XenbusState, XenbusStateMachine, xenbusStateName,
  type XenbusStateName,
} from '../../../shared/xenbus/state.ts';

describe('XenbusState', () => {
  it('keeps io/xenbus.h numbers; unknown values decode to "unknown"', () => {
    expect(XenbusState).toEqual({
      Unknown: 0, Initialising: 1, InitWait: 2, Initialised: 3, Connected: 4, Closing: 5, Closed: 6, Reconfiguring: 7, Reconfigured: 8,
    });
    expect(xenbusStateName(4)).toBe('Connected');
    expect(xenbusStateName(9)).toBe('unknown');
    expect(parseXenbusState('4')).toBe('Connected');
    expect(parseXenbusState(' 6\n')).toBe('Closed');
    for (const bad of ['', 'x', '-1', '4.0', '99', '0x4']) expect(parseXenbusState(bad), bad).toBe('unknown');
    expect(formatXenbusState('InitWait')).toBe('2');
  });

  it('every table entry names real states, and Closed is reachable from everywhere but Unknown\'s start', () => {
    const names = Object.keys(XenbusState) as XenbusStateName[];
    for (const [from, tos] of Object.entries(XENBUS_TRANSITIONS)) {
      expect(names).toContain(from);
      for (const t of tos) expect(names).toContain(t);
      expect(from === 'Closed' || tos.includes('Closed')).toBe(true);
    }
  });

  it('drives the blkif handshake and refuses illegal moves without changing state', async () => {
    const writes: string[] = [];
    const xb = { write: async (p: string, v: string) => { writes.push(`${p}=${v}`); } };
    const back = new XenbusStateMachine('Initialising');
    const front = new XenbusStateMachine('Initialising');
    const log: string[] = [];
    back.onChange((f, t) => log.push(`back ${f}->${t}`));
    expect((await switchState(xb, 'be', back, 'InitWait')).ok).toBe(true);
    expect((await switchState(xb, 'fe', front, 'Initialised')).ok).toBe(true);
    expect((await switchState(xb, 'be', back, 'Connected')).ok).toBe(true);
    expect((await switchState(xb, 'fe', front, 'Connected')).ok).toBe(true);
    expect(await switchState(xb, 'fe', front, 'Connected')).toMatchObject({ ok: true, changed: false });
    expect(await switchState(xb, 'fe', front, 'InitWait')).toMatchObject({ ok: false, from: 'Connected' });
    expect(front.state).toBe('Connected');
    expect((await switchState(xb, 'fe', front, 'Closing')).ok).toBe(true);
    expect(front.go('Connected').ok).toBe(false);
    expect(front.go('Closed').ok).toBe(true);
    expect(front.go('Initialising').ok).toBe(true);
    expect(writes).toEqual(['be/state=2', 'fe/state=3', 'be/state=4', 'fe/state=4', 'fe/state=5']);
    expect(log).toEqual(['back Initialising->InitWait', 'back InitWait->Connected']);
  });

  it('a failed write leaves the state machine where it was', async () => {
    const sm = new XenbusStateMachine('Initialising');
    await expect(switchState({ write: async () => { throw new Error('EIO'); } }, 'x', sm, 'InitWait')).rejects.toThrow('EIO');
    expect(sm.state).toBe('Initialising');
  });
});
