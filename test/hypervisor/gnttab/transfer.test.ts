import { describe, expect, it } from 'vitest';
import {
  GNTST_bad_domain, GNTST_bad_page, GNTST_general_error, GNTST_okay, GNTTAB_TRANSFER, GNTTABOP_transfer,
  GTF_accept_transfer, GTF_permit_access, GTF_transfer_committed, GTF_transfer_completed,
} from '../../../shared/abi/grant-table.ts';
import { StructView } from '../../../shared/layout.ts';
import { DOMID_SELF, PAGE_SIZE } from '../../../shared/types.ts';
import { GuestFault } from '../../../shared/guest/api.ts';
import { TestMachine } from '../../helpers/machine.ts';
import { acct, addDomU, domOf, expectSound, gpaOf, HOLE_GFN_BASE, owner, rawOp, refs, whileRewriting, writeEntry, type Dom } from './helpers.ts';

/** Dom0, a sender and a receiver with room for 256 more pages (maxmem 2 MiB). */
async function setup(): Promise<{ m: TestMachine; dom0: Dom; tx: Dom; rx: Dom }> {
  const m = new TestMachine();
  const dom0 = domOf(m, 0, m.dom0.ctx.slot, m.dom0);
  const tx = await addDomU(m);
  const rx = await addDomU(m, { maxmemMiB: 2 });
  return { m, dom0, tx, rx };
}

/** Everything a lost page leaves: gone from the sender and freed, the receiver unchanged. */
function expectLost(m: TestMachine, tx: Dom, rx: Dom, gfn: number, before: { tx: number; rx: number; free: number }): void {
  expect(tx.mfn(gfn)).toBe(-1);
  expect(() => tx.v.api.mem.readU8(gpaOf(gfn))).toThrow(GuestFault);
  expect(acct(m, tx.slot).tot).toBe(before.tx - 1);
  expect(acct(m, rx.slot).tot).toBe(before.rx);
  expect(m.freePages()).toBe(before.free + 1);
  expectSound(m);
}

const counts = (m: TestMachine, tx: Dom, rx: Dom) => ({ tx: acct(m, tx.slot).tot, rx: acct(m, rx.slot).tot, free: m.freePages() });

describe('GNTTABOP_transfer (page flipping)', () => {
  it('moves the page: same frame, new owner, new gfn, accounting moved, entry committed and completed', async () => {
    const { m, tx, rx } = await setup();
    const page = tx.page(0);
    tx.v.api.mem.write(gpaOf(page), Uint8Array.from({ length: PAGE_SIZE }, (_, i) => i & 0xff));
    const mfn = tx.mfn(page);
    const land = HOLE_GFN_BASE;
    const ref = rx.gt.grantTransfer(tx.domid, land);
    expect(rx.gt.entry(ref)).toEqual({ flags: GTF_accept_transfer, domid: tx.domid, frame: land });
    const before = counts(m, tx, rx);
    expect(tx.gt.transfer([{ gfn: page, domid: rx.domid, ref }])).toEqual([GNTST_okay]);
    // No byte copied: the receiver's gfn is backed by the very frame the sender had.
    expect(rx.mfn(land)).toBe(mfn);
    expect(owner(m, mfn)).toBe(rx.domid);
    expect(refs(m, mfn)).toBe(1);
    expect(m.hv.ftGfn[mfn]).toBe(land);
    expect(tx.mfn(page)).toBe(-1);
    expect(() => tx.v.api.mem.readU8(gpaOf(page))).toThrow(GuestFault);
    expect(counts(m, tx, rx)).toEqual({ tx: before.tx - 1, rx: before.rx + 1, free: before.free });
    expect(rx.gt.entry(ref)).toEqual({ flags: GTF_accept_transfer | GTF_transfer_committed | GTF_transfer_completed, domid: tx.domid, frame: land });
    expect(rx.gt.transferCompleted(ref)).toBe(true);
    expect(rx.gt.endTransfer(ref)).toBe(land);
    expect(rx.read(land, 0, 8)).toEqual(Uint8Array.from([0, 1, 2, 3, 4, 5, 6, 7]));
    rx.v.api.mem.writeU8(gpaOf(land), 0xff); // the receiver's own RAM now
    expectSound(m);
  });

  it('without an accept_transfer entry the transfer fails (GNTST_general_error) and the page is lost', async () => {
    const { m, tx, rx } = await setup();
    for (const prep of [
      (ref: number) => writeEntry(rx, ref, GTF_permit_access, tx.domid, HOLE_GFN_BASE), // a grant, not an accept
      (ref: number) => writeEntry(rx, ref, 0, tx.domid, HOLE_GFN_BASE), // invalid
      (ref: number) => writeEntry(rx, ref, GTF_accept_transfer, 0, HOLE_GFN_BASE), // for another domain
      (ref: number) => writeEntry(rx, ref, GTF_accept_transfer | GTF_transfer_committed, tx.domid, HOLE_GFN_BASE), // taken
    ]) {
      const ref = rx.gt.grantTransfer(tx.domid, HOLE_GFN_BASE);
      prep(ref);
      const flags = rx.gt.entry(ref).flags;
      const page = tx.page();
      const before = counts(m, tx, rx);
      expect(tx.gt.transfer([{ gfn: page, domid: rx.domid, ref }])).toEqual([GNTST_general_error]);
      expectLost(m, tx, rx, page, before);
      expect(rx.gt.entry(ref).flags).toBe(flags);
      expect(rx.mfn(HOLE_GFN_BASE)).toBe(-1);
    }
    // A ref past the table.
    const page = tx.page();
    const before = counts(m, tx, rx);
    expect(tx.gt.transfer([{ gfn: page, domid: rx.domid, ref: 100_000 }])).toEqual([GNTST_general_error]);
    expectLost(m, tx, rx, page, before);
  });

  it('a completed entry cannot take a second page', async () => {
    const { m, tx, rx } = await setup();
    const ref = rx.gt.grantTransfer(tx.domid, HOLE_GFN_BASE);
    expect(tx.gt.transfer([{ gfn: tx.page(), domid: rx.domid, ref }])).toEqual([GNTST_okay]);
    const page = tx.page();
    const before = counts(m, tx, rx);
    expect(tx.gt.transfer([{ gfn: page, domid: rx.domid, ref }])).toEqual([GNTST_general_error]);
    expectLost(m, tx, rx, page, before);
  });

  it('a receiver without headroom (tot_pages == max_pages) refuses it: GNTST_general_error, page lost, entry not committed', async () => {
    const m = new TestMachine();
    const tx = await addDomU(m);
    const full = await addDomU(m); // maxmem == memory
    expect(acct(m, full.slot).tot).toBe(256);
    const ref = full.gt.grantTransfer(tx.domid, HOLE_GFN_BASE);
    const page = tx.page();
    const before = counts(m, tx, full);
    expect(tx.gt.transfer([{ gfn: page, domid: full.domid, ref }])).toEqual([GNTST_general_error]);
    expectLost(m, tx, full, page, before);
    expect(full.gt.entry(ref).flags).toBe(GTF_accept_transfer);
    // Ballooning one page out makes room: the next transfer lands.
    expect(full.v.xen.decreaseReservation([full.page()])).toBe(1);
    const page2 = tx.page();
    expect(tx.gt.transfer([{ gfn: page2, domid: full.domid, ref }])).toEqual([GNTST_okay]);
    expect(acct(m, full.slot).tot).toBe(256);
    expectSound(m);
  });

  it('no such domain: GNTST_bad_domain, and the page is lost', async () => {
    const { m, tx, rx } = await setup();
    for (const domid of [99, DOMID_SELF, 0x7ff2]) {
      const page = tx.page();
      const before = counts(m, tx, rx);
      expect(tx.gt.transfer([{ gfn: page, domid, ref: 8 }])).toEqual([GNTST_bad_domain]);
      expectLost(m, tx, rx, page, before);
    }
  });

  it('GNTST_bad_page when the gfn is not the sender\'s plain RAM or someone else holds the page; nothing is lost', async () => {
    const { m, dom0, tx, rx } = await setup();
    const ref = rx.gt.grantTransfer(tx.domid, HOLE_GFN_BASE);
    const mapped = tx.page(0x61);
    const grant = tx.gt.grantAccess(0, mapped);
    const mp = dom0.gt.map(tx.domid, grant);
    const other = dom0.page(1);
    const inbound = tx.gt.map(0, dom0.gt.grantAccess(tx.domid, other));
    const before = counts(m, tx, rx);
    expect(tx.gt.transfer([
      { gfn: HOLE_GFN_BASE + 100, domid: rx.domid, ref }, // nothing there
      { gfn: 1 << 40, domid: rx.domid, ref }, // outside the physmap
      { gfn: mapped, domid: rx.domid, ref }, // mapped by Dom0: steal_page fails
      { gfn: inbound.gfn, domid: rx.domid, ref }, // a grant mapping, not our page
      { gfn: tx.gt.frameGfn, domid: rx.domid, ref }, // our grant table frame
    ])).toEqual([GNTST_bad_page, GNTST_bad_page, GNTST_bad_page, GNTST_bad_page, GNTST_bad_page]);
    expect(counts(m, tx, rx)).toEqual(before);
    expect(tx.read(mapped, 0, 1)[0]).toBe(0x61);
    expect(rx.gt.entry(ref).flags).toBe(GTF_accept_transfer);
    expect(dom0.gt.unmap(mp)).toBe(GNTST_okay);
    expect(tx.gt.unmap(inbound)).toBe(GNTST_okay);
    expectSound(m);
  });

  it('the entry\'s frame must be a free gfn of the receiver: otherwise GNTST_general_error before committing', async () => {
    const { m, tx, rx } = await setup();
    const busy = rx.page(0x17);
    for (const land of [busy, m.hv.cfg.p2mEntries]) {
      const ref = rx.gt.grantTransfer(tx.domid, land);
      const page = tx.page();
      const before = counts(m, tx, rx);
      expect(tx.gt.transfer([{ gfn: page, domid: rx.domid, ref }])).toEqual([GNTST_general_error]);
      expectLost(m, tx, rx, page, before);
      expect(rx.gt.entry(ref).flags).toBe(GTF_accept_transfer);
      expect(rx.gt.endTransfer(ref)).toBeNull();
    }
    expect(rx.read(busy, 0, 1)[0]).toBe(0x17);
  });

  it('an entry the receiver rewrites under the swap is not committed: GNTST_general_error, page lost', async () => {
    const { m, tx, rx } = await setup();
    const ref = rx.gt.grantTransfer(tx.domid, HOLE_GFN_BASE);
    const page = tx.page();
    const before = counts(m, tx, rx);
    const { result, tries } = whileRewriting(rx, ref, () => tx.gt.transfer([{ gfn: page, domid: rx.domid, ref }]));
    expect(result).toEqual([GNTST_general_error]);
    // Any change leaves flags other than exactly GTF_accept_transfer for the caller: no retry can pass.
    expect(tries).toBe(1);
    expect(rx.gt.entry(ref).flags & (GTF_transfer_committed | GTF_transfer_completed)).toBe(0);
    expectLost(m, tx, rx, page, before);
  });

  it('endTransfer on an entry nobody used revokes it and returns null', async () => {
    const { m, tx, rx } = await setup();
    const ref = rx.gt.grantTransfer(tx.domid, HOLE_GFN_BASE);
    expect(rx.gt.transferCompleted(ref)).toBe(false);
    expect(rx.gt.endTransfer(ref)).toBeNull();
    expect(rx.gt.entry(ref).flags).toBe(0);
    const page = tx.page();
    const before = counts(m, tx, rx);
    expect(tx.gt.transfer([{ gfn: page, domid: rx.domid, ref }])).toEqual([GNTST_general_error]);
    expectLost(m, tx, rx, page, before);
  });

  it('a domain can flip a page to itself through its own accept_transfer entry', async () => {
    const { m, rx } = await setup();
    const page = rx.page(0x3c);
    const mfn = rx.mfn(page);
    const ref = rx.gt.grantTransfer(rx.domid, HOLE_GFN_BASE);
    const tot = acct(m, rx.slot).tot;
    expect(rx.gt.transfer([{ gfn: page, domid: rx.domid, ref }])).toEqual([GNTST_okay]);
    expect(rx.mfn(page)).toBe(-1);
    expect(rx.mfn(HOLE_GFN_BASE)).toBe(mfn);
    expect(acct(m, rx.slot).tot).toBe(tot);
    expect(rx.gt.endTransfer(ref)).toBe(HOLE_GFN_BASE);
    expect(rx.read(HOLE_GFN_BASE, 0, 1)[0]).toBe(0x3c);
    expectSound(m);
  });

  it('a batch flips many pages, each to its own entry and gfn', async () => {
    const { m, tx, rx } = await setup();
    const n = 40;
    const refs_ = Array.from({ length: n }, (_, i) => rx.gt.grantTransfer(tx.domid, HOLE_GFN_BASE + i));
    const pages = Array.from({ length: n }, (_, i) => tx.page(i));
    const before = counts(m, tx, rx);
    expect(tx.gt.transfer(pages.map((gfn, i) => ({ gfn, domid: rx.domid, ref: refs_[i]! })))).toEqual(new Array(n).fill(GNTST_okay));
    expect(counts(m, tx, rx)).toEqual({ tx: before.tx - n, rx: before.rx + n, free: before.free });
    refs_.forEach((r, i) => {
      expect(rx.gt.endTransfer(r)).toBe(HOLE_GFN_BASE + i);
      expect(rx.read(HOLE_GFN_BASE + i, 0, 1)[0]).toBe(i);
    });
    expectSound(m);
  });

  it('writes back only the status field of each entry', async () => {
    const { tx, rx } = await setup();
    const ref = rx.gt.grantTransfer(tx.domid, HOLE_GFN_BASE);
    const page = tx.page();
    const op = StructView.alloc(GNTTAB_TRANSFER).set('mfn', page).set('domid', rx.domid).set('ref', ref).set('status', 77);
    const { rc, out } = rawOp(tx, GNTTABOP_transfer, GNTTAB_TRANSFER, [op]);
    expect(rc).toBe(0);
    expect([out[0]!.get('status'), out[0]!.get('mfn'), out[0]!.get('domid'), out[0]!.get('ref')]).toEqual([GNTST_okay, page, rx.domid, ref]);
  });
});
