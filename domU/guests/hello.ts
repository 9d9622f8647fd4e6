/**
 * The example PV guest: says hello through console_io, reads its start_info,
 * maps its shared_info, balloons up and down with memory_op (checking the pages
 * it gets are usable and zeroed), reads its name and domid from XenStore over
 * its xenstore ring, greets on its console ring, reports its runstate, and
 * powers off.
 */
import type { KernelApi } from '../../shared/guest/api.ts';
import { Xen } from '../../shared/guest/xen.ts';
import { EventChannels } from '../../shared/guest/evtchn.ts';
import { GuestXenbus } from '../../shared/guest/xenbus.ts';
import { XenConsole } from '../../shared/guest/console.ts';
import { SHUTDOWN_poweroff } from '../../shared/hypercall.ts';
import { PAGE_SIZE } from '../../shared/types.ts';

export default async function hello(k: KernelApi): Promise<void> {
  const xen = new Xen(k);
  const v = xen.version();
  xen.print(`Hello from a PV guest on Xen ${v.major}.${v.minor}${xen.extraversion()}\n`);
  xen.print(`start_info: ${xen.nrPages} pages, cmdline "${xen.cmdline}", xenstore gfn ${xen.storeGfn} port ${xen.storeEvtchn}, console gfn ${xen.consoleGfn} port ${xen.consoleEvtchn}\n`);

  // shared_info goes just above our RAM, where Linux's PVH code would put it;
  // EventChannels maps it there and handles our event channels.
  const siGfn = xen.nrPages;
  const ev = new EventChannels(xen, siGfn);
  xen.print(`mapped shared_info at gfn ${siGfn}\n`);

  // Balloon up by 16 pages above shared_info, use them, give them back.
  const before = xen.currentReservation();
  const gfns = Array.from({ length: 16 }, (_, i) => siGfn + 1 + i);
  const got = xen.populatePhysmap(gfns);
  let ok = got === gfns.length;
  for (const g of gfns.slice(0, Math.max(0, got))) {
    if (k.mem.readU32(g * PAGE_SIZE) !== 0) ok = false;
    k.mem.writeU32(g * PAGE_SIZE, 0xc0ffee00 + g);
    if (k.mem.readU32(g * PAGE_SIZE) !== 0xc0ffee00 + g) ok = false;
  }
  const during = xen.currentReservation();
  const freed = xen.decreaseReservation(gfns.slice(0, Math.max(0, got)));
  const after = xen.currentReservation();
  xen.print(`balloon: ${before} -> ${during} -> ${after} pages (got ${got}, freed ${freed}, max ${xen.maximumReservation()}) ${ok ? 'ok' : 'FAILED'}\n`);

  // XenStore over our ring: relative paths are under our home, /local/domain/<domid>.
  const xs = new GuestXenbus(ev);
  const name = await xs.wait(xs.client.read('name'));
  const domid = await xs.wait(xs.client.read('domid'));
  xen.print(`xenstore: I am domain ${domid}, named "${name}"\n`);

  // The console ring: xenconsoled logs it and shows it.
  const con = new XenConsole(ev);
  con.write(`Hello from ${name} (domain ${domid}) on its console ring\n`);

  const rs = xen.runstate(k.vcpuId);
  xen.print(`vcpu${k.vcpuId} runstate ${rs.state}, running ${Number(rs.time[0]) / 1e6} ms so far\n`);
  xen.print('Goodbye: SCHEDOP_shutdown(poweroff)\n');
  xen.shutdown(SHUTDOWN_poweroff);
}
