import { describe, expect, it } from 'vitest';
import { TestMachine } from '../helpers/machine.ts';
import { ESRCH } from '../../shared/errno.ts';

describe('domain lifecycle (in-thread machine)', () => {
  it('builds a DomU through the real builder and destroying it returns every frame', async () => {
    const m = new TestMachine();
    const before = m.freePages();
    const { domid } = await m.domU({ memoryMiB: 1 });
    expect(m.freePages()).toBeLessThan(before - 255);
    expect(m.checkInvariants()).toEqual([]);
    const info = m.ctrl.domainInfo(domid);
    expect(info?.totPages).toBe(256);
    await m.destroy(domid);
    expect(m.ctrl.domainInfo(domid)).toBeNull();
    expect(m.freePages()).toBe(before);
    expect(m.checkInvariants()).toEqual([]);
    expect(m.ctrl.domctlRaw(3, domid).rc).toBe(-ESRCH);
  });
});
