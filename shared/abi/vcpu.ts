import { array, defineLayout, i32, u32, u64 } from '../layout.ts';

/** struct vcpu_runstate_info (xen/include/public/vcpu.h), 48 bytes. */
export const VCPU_RUNSTATE_INFO = defineLayout({ name: 'vcpu_runstate_info', header: 'xen/include/public/vcpu.h', size: 48 }, {
  state: i32(0),
  state_entry_time: u64(8),
  time: array('u64', 16, 4),
});

/** struct vcpu_set_periodic_timer: uint64_t period_ns. */
export const VCPU_SET_PERIODIC_TIMER = defineLayout({ name: 'vcpu_set_periodic_timer', header: 'xen/include/public/vcpu.h', size: 8 }, {
  period_ns: u64(0),
});

/** struct vcpu_set_singleshot_timer, 16 bytes: uint64_t timeout_abs_ns; uint32_t flags. */
export const VCPU_SET_SINGLESHOT_TIMER = defineLayout({ name: 'vcpu_set_singleshot_timer', header: 'xen/include/public/vcpu.h', size: 16 }, {
  timeout_abs_ns: u64(0),
  flags: u32(8),
});
export const VCPU_SSHOTTMR_future = 1 << 0;
