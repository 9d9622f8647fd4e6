/**
 * Hypercall and sub-op numbers (xen/include/public/xen.h and the per-op headers,
 * Xen 4.17). Explicit numbers, never renumbered (STYLE.md rule 8).
 */
export const __HYPERVISOR_set_trap_table = 0;
export const __HYPERVISOR_mmu_update = 1;
export const __HYPERVISOR_memory_op = 12;
export const __HYPERVISOR_multicall = 13;
export const __HYPERVISOR_set_timer_op = 15;
export const __HYPERVISOR_xen_version = 17;
export const __HYPERVISOR_console_io = 18;
export const __HYPERVISOR_grant_table_op = 20;
export const __HYPERVISOR_vm_assist = 21;
export const __HYPERVISOR_vcpu_op = 24;
export const __HYPERVISOR_mmuext_op = 26;
export const __HYPERVISOR_xsm_op = 27;
export const __HYPERVISOR_sched_op = 29;
export const __HYPERVISOR_callback_op = 30;
export const __HYPERVISOR_event_channel_op = 32;
export const __HYPERVISOR_physdev_op = 33;
export const __HYPERVISOR_hvm_op = 34;
export const __HYPERVISOR_sysctl = 35;
export const __HYPERVISOR_domctl = 36;
export const __HYPERVISOR_dm_op = 41;
/** Hypercall numbers are below this (xen.h: NR_hypercalls is 64 on x86). */
export const NR_hypercalls = 64;

/** console_io (xen.h). */
export const CONSOLEIO_write = 0;
export const CONSOLEIO_read = 1;

/** xen_version (version.h). */
export const XENVER_version = 0;
export const XENVER_extraversion = 1;
export const XENVER_compile_info = 2;
export const XENVER_capabilities = 3;
export const XENVER_changeset = 4;
export const XENVER_platform_parameters = 5;
export const XENVER_get_features = 6;
export const XENVER_pagesize = 7;
export const XENVER_guest_handle = 8;
export const XENVER_commandline = 9;
export const XENVER_build_id = 10;

/** memory_op (memory.h). */
export const XENMEM_increase_reservation = 0;
export const XENMEM_decrease_reservation = 1;
export const XENMEM_maximum_ram_page = 2;
export const XENMEM_current_reservation = 3;
export const XENMEM_maximum_reservation = 4;
export const XENMEM_populate_physmap = 6;
export const XENMEM_add_to_physmap = 7;
export const XENMEM_exchange = 11;
export const XENMEM_remove_from_physmap = 15;
export const XENMEM_add_to_physmap_batch = 23;
/** memory_op cmd: the low bits; the rest is a continuation start extent. */
export const MEMOP_CMD_MASK = 0x3f;
export const MEMOP_EXTENT_SHIFT = 6;

/** XENMAPSPACE_* (memory.h). */
export const XENMAPSPACE_shared_info = 0;
export const XENMAPSPACE_grant_table = 1;
export const XENMAPSPACE_gmfn = 2;
export const XENMAPSPACE_gmfn_range = 3;
export const XENMAPSPACE_gmfn_foreign = 4;
export const XENMAPSPACE_dev_mmio = 5;

/** sched_op (sched.h). */
export const SCHEDOP_yield = 0;
export const SCHEDOP_block = 1;
export const SCHEDOP_shutdown = 2;
export const SCHEDOP_poll = 3;
export const SCHEDOP_remote_shutdown = 4;
export const SCHEDOP_shutdown_code = 5;
export const SCHEDOP_watchdog = 6;
export const SHUTDOWN_poweroff = 0;
export const SHUTDOWN_reboot = 1;
export const SHUTDOWN_suspend = 2;
export const SHUTDOWN_crash = 3;
export const SHUTDOWN_watchdog = 4;
export const SHUTDOWN_soft_reset = 5;
export const SHUTDOWN_MAX = 5;

/** vcpu_op (vcpu.h). */
export const VCPUOP_initialise = 0;
export const VCPUOP_up = 1;
export const VCPUOP_down = 2;
export const VCPUOP_is_up = 3;
export const VCPUOP_get_runstate_info = 4;
export const VCPUOP_register_runstate_memory_area = 5;
export const VCPUOP_set_periodic_timer = 6;
export const VCPUOP_stop_periodic_timer = 7;
export const VCPUOP_set_singleshot_timer = 8;
export const VCPUOP_stop_singleshot_timer = 9;
export const VCPUOP_register_vcpu_info = 10;
export const RUNSTATE_running = 0;
export const RUNSTATE_runnable = 1;
export const RUNSTATE_blocked = 2;
export const RUNSTATE_offline = 3;

/** domctl (domctl.h). */
export const XEN_DOMCTL_createdomain = 1;
export const XEN_DOMCTL_destroydomain = 2;
export const XEN_DOMCTL_pausedomain = 3;
export const XEN_DOMCTL_unpausedomain = 4;
export const XEN_DOMCTL_getdomaininfo = 5;
export const XEN_DOMCTL_setvcpuaffinity = 9;
export const XEN_DOMCTL_shadow_op = 10;
export const XEN_DOMCTL_max_mem = 11;
export const XEN_DOMCTL_setvcpucontext = 12;
export const XEN_DOMCTL_getvcpucontext = 13;
export const XEN_DOMCTL_getvcpuinfo = 14;
export const XEN_DOMCTL_max_vcpus = 15;
export const XEN_DOMCTL_scheduler_op = 16;
export const XEN_DOMCTL_setdomainhandle = 17;

/** sysctl (sysctl.h). */
export const XEN_SYSCTL_readconsole = 1;
export const XEN_SYSCTL_tbuf_op = 2;
export const XEN_SYSCTL_physinfo = 3;
export const XEN_SYSCTL_sched_id = 4;
export const XEN_SYSCTL_perfc_op = 5;
export const XEN_SYSCTL_getdomaininfolist = 6;

/** Scheduler ids reported by XEN_SYSCTL_sched_id (domctl.h). */
export const XEN_SCHEDULER_CREDIT = 5;
export const XEN_SCHEDULER_CREDIT2 = 6;
export const XEN_SCHEDULER_ARINC653 = 7;
export const XEN_SCHEDULER_RTDS = 8;
export const XEN_SCHEDULER_NULL = 9;

/** The version this framework reports through XENVER_version: 4.17. */
export const XEN_VERSION_MAJOR = 4;
export const XEN_VERSION_MINOR = 17;
export const XEN_EXTRAVERSION = '.0-ts';
