/**
 * The one policy point for privilege (Xen's XSM, dummy policy): every handler
 * that acts for or on another domain asks here, and nowhere else decides.
 *
 *  - XSM_PRIV:   the caller is privileged (Dom0).
 *  - XSM_TARGET: the caller is the target itself, privileged, or the target's
 *                designated device-model / driver domain (its `target`).
 *  - XSM_HOOK:   any domain.
 */
import { EPERM } from '../shared/errno.ts';
import { D, DOMF_privileged, HvState } from './state.ts';

export type XsmAction =
  | 'domctl'
  | 'sysctl'
  | 'readconsole'
  | 'console_io_read'
  | 'console_io_write'
  | 'memory_adjust_reservation'
  | 'memory_stat_reservation'
  | 'add_to_physmap'
  | 'map_gmfn_foreign'
  | 'remote_shutdown'
  | 'xen_version_privileged'
  | 'evtchn_target';

type Level = 'PRIV' | 'TARGET' | 'HOOK';

const POLICY: Readonly<Record<XsmAction, Level>> = {
  domctl: 'PRIV',
  sysctl: 'PRIV',
  readconsole: 'PRIV',
  console_io_read: 'PRIV',
  // Xen debug builds (CONFIG_VERBOSE_DEBUG) let every domain write; so do we.
  console_io_write: 'HOOK',
  memory_adjust_reservation: 'TARGET',
  memory_stat_reservation: 'TARGET',
  add_to_physmap: 'TARGET',
  map_gmfn_foreign: 'TARGET',
  remote_shutdown: 'PRIV',
  xen_version_privileged: 'PRIV',
  evtchn_target: 'TARGET',
};

function privileged(hv: HvState, slot: number): boolean {
  return (Atomics.load(hv.dom, hv.d(slot, D.flags)) & DOMF_privileged) !== 0;
}

/** 0 if the domain in `caller` may do `action` to the domain in `target` (a slot, or -1 for none); else -EPERM. */
export function xsmCheck(hv: HvState, caller: number, action: XsmAction, target = -1): number {
  switch (POLICY[action]) {
    case 'HOOK':
      return 0;
    case 'PRIV':
      return privileged(hv, caller) ? 0 : -EPERM;
    case 'TARGET': {
      if (target === caller || privileged(hv, caller)) return 0;
      // src->target == target: the caller was designated the target's device model / driver domain.
      if (target >= 0 && Atomics.load(hv.dom, hv.d(caller, D.target)) === Atomics.load(hv.dom, hv.d(target, D.domid))) return 0;
      return -EPERM;
    }
  }
}
