import { describe, expect, it } from 'vitest';
import {
  ACGNT_PER_PAGE, ACT_DOMID, ACT_GFN, ACT_MFN, ACT_PIN, ACTIVE_ENTRY, GNTPIN_hstr_inc, GNTPIN_hstw_inc,
  GNTTAB_UNMAP_AND_REPLACE, GRANT_MAPPING, MAPTRACK_PER_PAGE, MT_FLAGS_DOMID, MT_GFN, MT_MFN, MT_REF, SHA_FLAGS_DOMID,
  SHA_FRAME,
} from '../../../hypervisor/gnttab/layout.ts';
import { ACTIVE_PER_GRANT_FRAME, MAPTRACK_MAX_FRAMES } from '../../../hypervisor/state.ts';
import { GRANT_ENTRIES_PER_FRAME_V1, GRANT_ENTRY_V1 } from '../../../shared/abi/grant-table.ts';

describe('grant table layouts', () => {
  it('gnttab_unmap_and_replace is 24 bytes: host_addr @0, new_addr @8, handle @16, status @20', () => {
    const f = GNTTAB_UNMAP_AND_REPLACE.fields;
    expect(GNTTAB_UNMAP_AND_REPLACE.size).toBe(24);
    expect([f.host_addr.offset, f.new_addr.offset, f.handle.offset, f.status.offset]).toEqual([0, 8, 16, 20]);
  });

  it('grant_entry_v1: flags and domid share word 0 (flags low), frame is word 1', () => {
    expect(GRANT_ENTRY_V1.size).toBe(8);
    expect([SHA_FLAGS_DOMID, SHA_FRAME]).toEqual([0, 1]);
    expect(GRANT_ENTRY_V1.fields.domid.offset).toBe(2);
  });

  it('active entries: 16 bytes, 256 a page, two frames per grant frame; pin counts as Xen\'s GNTPIN', () => {
    expect(ACTIVE_ENTRY.size).toBe(16);
    expect(ACGNT_PER_PAGE).toBe(256);
    expect(ACGNT_PER_PAGE * ACTIVE_PER_GRANT_FRAME).toBe(GRANT_ENTRIES_PER_FRAME_V1);
    expect([ACT_PIN, ACT_DOMID, ACT_MFN, ACT_GFN]).toEqual([0, 1, 2, 3]);
    expect([GNTPIN_hstw_inc, GNTPIN_hstr_inc]).toEqual([1, 256]);
  });

  it('maptrack entries: 16 bytes like Xen\'s struct grant_mapping, 256 a page, 262144 handles at most', () => {
    expect(GRANT_MAPPING.size).toBe(16);
    expect(MAPTRACK_PER_PAGE).toBe(256);
    expect(MAPTRACK_PER_PAGE * MAPTRACK_MAX_FRAMES).toBe(262144);
    expect([MT_REF, MT_FLAGS_DOMID, MT_GFN, MT_MFN]).toEqual([0, 1, 2, 3]);
    expect([GRANT_MAPPING.fields.flags.offset, GRANT_MAPPING.fields.domid.offset]).toEqual([4, 6]);
  });
});
