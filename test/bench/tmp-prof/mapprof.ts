import { GNTMAP_host_map, GNTTAB_MAP_GRANT_REF, GNTTAB_UNMAP_GRANT_REF, GNTTABOP_map_grant_ref, GNTTABOP_unmap_grant_ref } from '../../../shared/abi/grant-table.ts';
import { StructView } from '../../../shared/layout.ts';
import { PAGE_SIZE } from '../../../shared/types.ts';
import { GrantTable } from '../../../shared/guest/gnttab.ts';
import { TestMachine } from '../../helpers/machine.ts';
const m = new TestMachine({ memMiB: 64, p2mEntries: 8192 }, 4);
const a = await m.domU({ memoryMiB: 4 });
const gtA = new GrantTable(a.v.xen); const gt0 = new GrantTable(m.dom0.xen);
const ref = gtA.grantAccess(0, a.v.xen.allocGfn());
const arg = m.dom0.xen.allocGfn() * PAGE_SIZE; const hole = 5000;
const mapOp = StructView.alloc(GNTTAB_MAP_GRANT_REF).set('host_addr', hole * PAGE_SIZE).set('flags', GNTMAP_host_map).set('ref', ref).set('dom', a.domid).raw();
const N = 20000;
for (let k = 0; k < 3; k++) {
  let t = process.hrtime.bigint();
  for (let i = 0; i < N; i++) {
    m.dom0.api.mem.write(arg, mapOp);
    m.dom0.call(20, GNTTABOP_map_grant_ref, arg, 1);
    const h = m.dom0.api.mem.readU32(arg + 20);
    m.dom0.api.mem.write(arg + 64, StructView.alloc(GNTTAB_UNMAP_GRANT_REF).set('host_addr', hole * PAGE_SIZE).set('handle', h).raw());
    m.dom0.call(20, GNTTABOP_unmap_grant_ref, arg + 64, 1);
  }
  console.log('raw pair', Number(process.hrtime.bigint() - t) / N, 'ns');
  t = process.hrtime.bigint();
  for (let i = 0; i < N; i++) { const mp = gt0.map(a.domid, ref); gt0.unmap(mp); }
  console.log('lib pair', Number(process.hrtime.bigint() - t) / N, 'ns');
}
