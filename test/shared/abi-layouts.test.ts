/**
 * Pins every shared layout against Xen 4.17's x86_64 offsets and sizes
 * (XEN-ABI-FACTS.md; measured with offsetof/sizeof on the real headers).
 */
import { describe, expect, it } from 'vitest';
import { START_INFO } from '../../shared/abi/start-info.ts';
import { SHARED_INFO, VCPU_INFO, VCPU_TIME_INFO } from '../../shared/abi/shared-info.ts';
import {
  GNTTAB_COPY, GNTTAB_MAP_GRANT_REF, GNTTAB_QUERY_SIZE, GNTTAB_SETUP_TABLE, GNTTAB_TRANSFER, GNTTAB_UNMAP_GRANT_REF,
  GRANT_ENTRY_V1,
} from '../../shared/abi/grant-table.ts';
import { ringSize, SRING_HEADER } from '../../shared/abi/ring.ts';
import {
  XEN_DOMCTL, XEN_DOMCTL_CREATEDOMAIN, XEN_DOMCTL_GETDOMAININFO, XEN_DOMCTL_SCHEDULER_OP, XEN_DOMCTL_VCPUAFFINITY,
  XEN_DOMCTL_VCPUCONTEXT,
} from '../../shared/abi/domctl.ts';
import { XEN_SYSCTL, XEN_SYSCTL_GETDOMAININFOLIST, XEN_SYSCTL_PHYSINFO, XEN_SYSCTL_READCONSOLE } from '../../shared/abi/sysctl.ts';
import { XEN_ADD_TO_PHYSMAP, XEN_ADD_TO_PHYSMAP_BATCH, XEN_MEMORY_RESERVATION, XEN_REMOVE_FROM_PHYSMAP } from '../../shared/abi/memory.ts';
import { SCHED_POLL, SCHED_REMOTE_SHUTDOWN, SCHED_SHUTDOWN } from '../../shared/abi/sched.ts';
import { VCPU_RUNSTATE_INFO, VCPU_SET_SINGLESHOT_TIMER } from '../../shared/abi/vcpu.ts';
import { XENCONS_INTERFACE } from '../../shared/abi/console.ts';
import type { Fields, Layout } from '../../shared/layout.ts';
import { defineLayout, fieldWidth, StructView, u16, u32, u64 } from '../../shared/layout.ts';
import * as blkif from '../../shared/abi/blkif.ts';

/** One past the last byte any field of `l` covers. */
function fieldsEnd<F extends Fields>(l: Layout<F>): number {
  return Math.max(...Object.values(l.fields).map((f) => f.offset + fieldWidth(f)));
}

function offsets<F extends Fields>(l: Layout<F>): Record<string, number> {
  return Object.fromEntries(Object.entries(l.fields).map(([k, f]) => [k, f.offset]));
}

describe('Xen ABI layouts (x86_64)', () => {
  it('start_info_t', () => {
    expect(START_INFO.size).toBe(1168);
    expect(offsets(START_INFO)).toMatchObject({
      magic: 0, nr_pages: 32, shared_info: 40, flags: 48, store_mfn: 56, store_evtchn: 64, console_domU_mfn: 72,
      console_domU_evtchn: 80, pt_base: 88, nr_pt_frames: 96, mfn_list: 104, mod_start: 112, mod_len: 120,
      cmd_line: 128, first_p2m_pfn: 1152, nr_p2m_frames: 1160,
    });
  });

  it('xencons_interface (io/console.h)', () => {
    expect(XENCONS_INTERFACE.size).toBe(3088);
    expect(offsets(XENCONS_INTERFACE)).toEqual({ in: 0, out: 1024, in_cons: 3072, in_prod: 3076, out_cons: 3080, out_prod: 3084 });
    expect(XENCONS_INTERFACE.fields.in.length).toBe(1024);
    expect(XENCONS_INTERFACE.fields.out.length).toBe(2048);
  });

  it('shared_info, vcpu_info, vcpu_time_info', () => {
    expect(SHARED_INFO.size).toBe(3136);
    expect(offsets(SHARED_INFO)).toMatchObject({ vcpu_info: 0, evtchn_pending: 2048, evtchn_mask: 2560, wc_version: 3072, wc_sec: 3076, wc_nsec: 3080, wc_sec_hi: 3084 });
    expect(VCPU_INFO.size).toBe(64);
    expect(offsets(VCPU_INFO)).toMatchObject({ evtchn_upcall_pending: 0, evtchn_upcall_mask: 1, evtchn_pending_sel: 8, time_version: 32 });
    expect(VCPU_TIME_INFO.size).toBe(32);
    expect(offsets(VCPU_TIME_INFO)).toMatchObject({ version: 0, tsc_timestamp: 8, system_time: 16, tsc_to_system_mul: 24, tsc_shift: 28, flags: 29 });
  });

  it('grant table entries and ops', () => {
    expect(GRANT_ENTRY_V1.size).toBe(8);
    expect(offsets(GRANT_ENTRY_V1)).toEqual({ flags: 0, domid: 2, frame: 4 });
    expect(GNTTAB_MAP_GRANT_REF.size).toBe(32);
    expect(offsets(GNTTAB_MAP_GRANT_REF)).toEqual({ host_addr: 0, flags: 8, ref: 12, dom: 16, status: 18, handle: 20, dev_bus_addr: 24 });
    expect(GNTTAB_UNMAP_GRANT_REF.size).toBe(24);
    expect(GNTTAB_COPY.size).toBe(40);
    expect(offsets(GNTTAB_COPY)).toMatchObject({ source_u: 0, source_domid: 8, source_offset: 10, dest_u: 16, dest_domid: 24, dest_offset: 26, len: 32, flags: 34, status: 36 });
    expect(GNTTAB_TRANSFER.size).toBe(24);
    expect(offsets(GNTTAB_TRANSFER)).toEqual({ mfn: 0, domid: 8, ref: 12, status: 16 });
    expect(GNTTAB_SETUP_TABLE.size).toBe(24);
    expect(GNTTAB_QUERY_SIZE.size).toBe(16);
  });

  it('ring header and sizes', () => {
    expect(SRING_HEADER.size).toBe(64);
    expect(offsets(SRING_HEADER)).toEqual({ req_prod: 0, req_event: 4, rsp_prod: 8, rsp_event: 12 });
    expect(ringSize(4096, 112)).toBe(32); // blkif: 32 entries per page
    expect(ringSize(4096, 12)).toBe(256); // netif tx
    expect(ringSize(4096, 8)).toBe(256); // netif rx
  });

  it('ring header: the indexes then padding to 64, where the entries start (io/ring.h DEFINE_RING_TYPES)', () => {
    expect(fieldsEnd(SRING_HEADER)).toBe(16);
    for (const f of Object.values(SRING_HEADER.fields)) expect(fieldWidth(f)).toBe(4);
    expect([0, 1, 2, 3, 4].map(blkif.blkifRingSize)).toEqual([32, 64, 128, 256, 512]);
  });

  it('blkif_request and blkif_request_segment (io/blkif.h)', () => {
    expect(blkif.BLKIF_REQUEST.size).toBe(112);
    expect(offsets(blkif.BLKIF_REQUEST)).toEqual({ operation: 0, nr_segments: 1, handle: 2, id: 8, sector_number: 16, seg: 24 });
    const w = Object.fromEntries(Object.entries(blkif.BLKIF_REQUEST.fields).map(([k, f]) => [k, fieldWidth(f)]));
    expect(w).toEqual({ operation: 1, nr_segments: 1, handle: 2, id: 8, sector_number: 8, seg: 11 * 8 });
    expect(fieldsEnd(blkif.BLKIF_REQUEST)).toBe(112);
    expect(blkif.BLKIF_REQUEST_SEGMENT.size).toBe(8);
    expect(offsets(blkif.BLKIF_REQUEST_SEGMENT)).toEqual({ gref: 0, first_sect: 4, last_sect: 5 });
    expect(fieldWidth(blkif.BLKIF_REQUEST_SEGMENT.fields.gref)).toBe(4);
    expect(blkif.BLKIF_RING_ENTRY_SIZE).toBe(112); // union of request (112) and response (16)
  });

  it('blkif_request_discard and blkif_request_indirect: the union members behind the same operation byte', () => {
    expect(offsets(blkif.BLKIF_REQUEST_DISCARD)).toEqual({ operation: 0, flag: 1, handle: 2, id: 8, sector_number: 16, nr_sectors: 24 });
    expect(fieldWidth(blkif.BLKIF_REQUEST_DISCARD.fields.nr_sectors)).toBe(8);
    expect(fieldsEnd(blkif.BLKIF_REQUEST_DISCARD)).toBe(32); // sizeof(struct blkif_request_discard) + operation byte: 32
    expect(offsets(blkif.BLKIF_REQUEST_INDIRECT)).toEqual({ operation: 0, indirect_op: 1, nr_segments: 2, id: 8, sector_number: 16, handle: 24, indirect_grefs: 28 });
    expect(fieldWidth(blkif.BLKIF_REQUEST_INDIRECT.fields.nr_segments)).toBe(2);
    expect(fieldWidth(blkif.BLKIF_REQUEST_INDIRECT.fields.handle)).toBe(2);
    expect(blkif.BLKIF_REQUEST_INDIRECT.fields.indirect_grefs).toMatchObject({ kind: 'array', type: 'u32', count: 8 });
    expect(fieldsEnd(blkif.BLKIF_REQUEST_INDIRECT)).toBe(60); // padded to 64 on x86_64
    expect(Math.max(fieldsEnd(blkif.BLKIF_REQUEST_DISCARD), fieldsEnd(blkif.BLKIF_REQUEST_INDIRECT))).toBeLessThanOrEqual(blkif.BLKIF_RING_ENTRY_SIZE);
  });

  it('blkif_response', () => {
    expect(blkif.BLKIF_RESPONSE.size).toBe(16);
    expect(offsets(blkif.BLKIF_RESPONSE)).toEqual({ id: 0, operation: 8, status: 10 });
    expect(blkif.BLKIF_RESPONSE.fields.status).toMatchObject({ kind: 'scalar', type: 'i16' });
  });

  it('blkif constants: operations, statuses, limits, info bits', () => {
    expect([blkif.BLKIF_OP_READ, blkif.BLKIF_OP_WRITE, blkif.BLKIF_OP_WRITE_BARRIER, blkif.BLKIF_OP_FLUSH_DISKCACHE, blkif.BLKIF_OP_RESERVED_1, blkif.BLKIF_OP_DISCARD, blkif.BLKIF_OP_INDIRECT])
      .toEqual([0, 1, 2, 3, 4, 5, 6]);
    expect([blkif.BLKIF_RSP_OKAY, blkif.BLKIF_RSP_ERROR, blkif.BLKIF_RSP_EOPNOTSUPP]).toEqual([0, -1, -2]);
    expect(blkif.BLKIF_MAX_SEGMENTS_PER_REQUEST).toBe(11);
    expect(blkif.BLKIF_MAX_INDIRECT_PAGES_PER_REQUEST).toBe(8);
    expect(blkif.SEGS_PER_INDIRECT_FRAME).toBe(512); // PAGE_SIZE / sizeof(struct blkif_request_segment)
    expect(blkif.BLKIF_SECTOR_SIZE).toBe(512);
    expect(blkif.SECTORS_PER_PAGE).toBe(8);
    expect(blkif.BLKIF_DISCARD_SECURE).toBe(1);
    expect([blkif.VDISK_CDROM, blkif.VDISK_REMOVABLE, blkif.VDISK_READONLY]).toEqual([1, 2, 4]);
    expect(blkif.XEN_IO_PROTO_ABI_X86_64).toBe('x86_64-abi');
  });

  it('domctl and sysctl', () => {
    expect(XEN_DOMCTL.size).toBe(144);
    expect(XEN_DOMCTL.fields.u.offset).toBe(16);
    expect(XEN_DOMCTL_CREATEDOMAIN.size).toBe(64);
    expect(offsets(XEN_DOMCTL_CREATEDOMAIN)).toMatchObject({ ssidref: 0, handle: 4, flags: 20, max_vcpus: 28, max_evtchn_port: 32, max_grant_frames: 36, max_maptrack_frames: 40, grant_opts: 44 });
    expect(XEN_DOMCTL_GETDOMAININFO.size).toBe(112);
    expect(offsets(XEN_DOMCTL_GETDOMAININFO)).toMatchObject({ domain: 0, flags: 4, tot_pages: 8, max_pages: 16, shared_info_frame: 48, cpu_time: 56, nr_online_vcpus: 64, max_vcpu_id: 68, ssidref: 72, handle: 76, cpupool: 92, gpaddr_bits: 96 });
    expect(XEN_DOMCTL_VCPUCONTEXT.size).toBe(16);
    expect(XEN_DOMCTL_VCPUAFFINITY.size).toBe(40);
    expect(XEN_DOMCTL_SCHEDULER_OP.size).toBe(24);
    expect(XEN_SYSCTL.size).toBe(136);
    expect(XEN_SYSCTL_READCONSOLE.size).toBe(24);
    expect(offsets(XEN_SYSCTL_READCONSOLE)).toEqual({ clear: 0, incremental: 1, index: 4, buffer: 8, count: 16 });
    expect(XEN_SYSCTL_PHYSINFO.size).toBe(112);
    expect(offsets(XEN_SYSCTL_PHYSINFO)).toMatchObject({ nr_cpus: 8, cpu_khz: 24, capabilities: 28, total_pages: 40, free_pages: 48, max_mfn: 72, hw_cap: 80 });
    expect(XEN_SYSCTL_GETDOMAININFOLIST.size).toBe(24);
    expect(offsets(XEN_SYSCTL_GETDOMAININFOLIST)).toEqual({ first_domain: 0, max_domains: 4, buffer: 8, num_domains: 16 });
  });

  it('memory_op, sched_op and vcpu_op arguments', () => {
    expect(XEN_MEMORY_RESERVATION.size).toBe(32);
    expect(offsets(XEN_MEMORY_RESERVATION)).toEqual({ extent_start: 0, nr_extents: 8, extent_order: 16, mem_flags: 20, domid: 24 });
    expect(XEN_ADD_TO_PHYSMAP.size).toBe(24);
    expect(offsets(XEN_ADD_TO_PHYSMAP)).toEqual({ domid: 0, size: 2, space: 4, idx: 8, gpfn: 16 });
    expect(XEN_ADD_TO_PHYSMAP_BATCH.size).toBe(32);
    expect(offsets(XEN_ADD_TO_PHYSMAP_BATCH)).toEqual({ domid: 0, space: 2, size: 4, foreign_domid: 6, idxs: 8, gpfns: 16, errs: 24 });
    expect(XEN_REMOVE_FROM_PHYSMAP.size).toBe(16);
    expect(SCHED_SHUTDOWN.size).toBe(4);
    expect(SCHED_POLL.size).toBe(24);
    expect(offsets(SCHED_POLL)).toEqual({ ports: 0, nr_ports: 8, timeout: 16 });
    expect(SCHED_REMOTE_SHUTDOWN.size).toBe(8);
    expect(VCPU_RUNSTATE_INFO.size).toBe(48);
    expect(offsets(VCPU_RUNSTATE_INFO)).toEqual({ state: 0, state_entry_time: 8, time: 16 });
    expect(VCPU_SET_SINGLESHOT_TIMER.size).toBe(16);
  });
});

describe('defineLayout', () => {
  it('rejects fields outside the struct, misaligned, or overlapping', () => {
    expect(() => defineLayout({ name: 't', header: 'x', size: 4 }, { a: u64(0) })).toThrow(/outside/);
    expect(() => defineLayout({ name: 't', header: 'x', size: 8 }, { a: u32(2) })).toThrow(/aligned/);
    expect(() => defineLayout({ name: 't', header: 'x', size: 8 }, { a: u32(0), b: u16(2) })).toThrow(/overlaps/);
    expect(() => defineLayout({ name: 't', header: 'x', size: 8 }, { a: u32(0, 'u'), b: u16(2, 'u') })).not.toThrow();
  });

  it('reads and writes little-endian at the declared offsets', () => {
    const v = StructView.alloc(START_INFO);
    v.set('nr_pages', 0x12345678).set('flags', 3).setString('cmd_line', 'console=hvc0');
    const raw = v.raw();
    expect(new DataView(raw.buffer).getUint32(32, true)).toBe(0x12345678);
    expect(raw[48]).toBe(3);
    expect(new TextDecoder().decode(raw.subarray(128, 140))).toBe('console=hvc0');
    expect(v.getString('cmd_line')).toBe('console=hvc0');
  });
});
