/** do_xen_version (Xen: common/kernel.c). */
import { EFAULT, EINVAL, ENOSYS } from '../../shared/errno.ts';
import {
  XENVER_capabilities, XENVER_changeset, XENVER_commandline, XENVER_compile_info, XENVER_extraversion,
  XENVER_get_features, XENVER_guest_handle, XENVER_pagesize, XENVER_platform_parameters, XENVER_version,
  XEN_EXTRAVERSION, XEN_VERSION_MAJOR, XEN_VERSION_MINOR,
} from '../../shared/hypercall.ts';
import { PAGE_SIZE } from '../../shared/types.ts';
import { D_HANDLE_OFFSET, D_WORDS } from '../state.ts';
import type { VcpuCtx } from '../vcpu/context.ts';
import { xsmCheck } from '../xsm.ts';

/** XENFEAT_* bits of submap 0 we advertise (features.h). */
export const XENFEAT_writable_page_tables = 0;
export const XENFEAT_auto_translated_physmap = 2;
export const XENFEAT_supervisor_mode_kernel = 3;
export const XENFEAT_NR_SUBMAPS = 1;
const FEATURES_SUBMAP0 = 1 << XENFEAT_auto_translated_physmap;
/** HYPERVISOR_VIRT_START on x86_64. */
const VIRT_START = 0xffff800000000000n;

function str(s: string, size: number): Uint8Array {
  const b = new Uint8Array(size);
  b.set(new TextEncoder().encode(s).subarray(0, size - 1));
  return b;
}

const put = (ctx: VcpuCtx, gpa: number, data: Uint8Array): number => (ctx.copyTo(gpa, data) ? 0 : -EFAULT);

export function doXenVersion(ctx: VcpuCtx, cmd: number, arg: number): number {
  switch (cmd) {
    case XENVER_version:
      return (XEN_VERSION_MAJOR << 16) | XEN_VERSION_MINOR;
    case XENVER_extraversion:
      return put(ctx, arg, str(XEN_EXTRAVERSION, 16));
    case XENVER_compile_info: {
      const b = new Uint8Array(144);
      b.set(str(`node ${process.version}`, 64), 0);
      b.set(str('xents', 16), 64);
      b.set(str('localdomain', 32), 80);
      b.set(str('2026-11-21', 32), 112);
      return put(ctx, arg, b);
    }
    case XENVER_capabilities:
      return put(ctx, arg, str('xen-3.0-x86_64', 1024));
    case XENVER_changeset:
      return put(ctx, arg, str('unavailable', 64));
    case XENVER_platform_parameters: {
      const b = new Uint8Array(8);
      new DataView(b.buffer).setBigUint64(0, VIRT_START, true);
      return put(ctx, arg, b);
    }
    case XENVER_get_features: {
      const fi = ctx.copyFrom(arg, 8);
      if (!fi) return -EFAULT;
      const dv = new DataView(fi.buffer);
      const idx = dv.getUint32(0, true);
      if (idx >= XENFEAT_NR_SUBMAPS) return -EINVAL;
      dv.setUint32(4, FEATURES_SUBMAP0, true);
      return put(ctx, arg, fi);
    }
    case XENVER_pagesize:
      return arg === 0 ? PAGE_SIZE : -EINVAL;
    case XENVER_guest_handle: {
      const at = ctx.slot * D_WORDS * 4 + D_HANDLE_OFFSET;
      return put(ctx, arg, ctx.hv.domBytes.slice(at, at + 16));
    }
    case XENVER_commandline: {
      // XSM deny is not an error here: Xen copies xen_deny() ("<denied>" and its NUL) and returns 0.
      const deny = xsmCheck(ctx.hv, ctx.slot, 'xen_version_privileged') !== 0;
      return put(ctx, arg, deny ? str('<denied>', 9) : str('', 1024));
    }
    default:
      return -ENOSYS;
  }
}
