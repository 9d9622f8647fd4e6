import { GNTMAP_host_map } from '../../../shared/abi/grant-table.ts';
import { PAGE_SIZE } from '../../../shared/types.ts';
import { GrantTable } from '../../../shared/guest/gnttab.ts';
import { TestMachine } from '../../helpers/machine.ts';
import { mapGrantRef, unmapGrantRef } from '../../../hypervisor/gnttab/map.ts';
const m = new TestMachine({ memMiB: 64, p2mEntries: 8192 }, 4);
const a = await m.domU({ memoryMiB: 4 });
const gtA = new GrantTable(a.v.xen); new GrantTable(m.dom0.xen);
const ref = gtA.grantAccess(0, a.v.xen.allocGfn());
const hole = 5000; const N = 50000;
for (let k = 0; k < 5; k++) {
  const t = process.hrtime.bigint();
  for (let i = 0; i < N; i++) {
    const r = mapGrantRef(m.hv, 0, { hostAddr: hole * PAGE_SIZE, flags: GNTMAP_host_map, ref, dom: a.domid });
    if (r.status) throw new Error('x' + r.status);
    if (unmapGrantRef(m.hv, 0, hole * PAGE_SIZE, 0, r.handle)) throw new Error('y');
  }
  console.log('core pair', Number(process.hrtime.bigint() - t) / N, 'ns');
}
