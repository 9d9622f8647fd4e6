/**
 * The Xen errno values this folder returns (xen/include/public/errno.h), negated
 * at the call site as Xen does (-EINVAL). Kept local so the policy layer has no
 * dependency outside its folder; the numbers equal shared/errno.ts and are to be
 * unified with it. Never renumber.
 */
export const ESRCH = 3;
export const EBUSY = 16;
export const EEXIST = 17;
/** Invalid argument: bad weight or cap, empty or out-of-range affinity. */
export const EINVAL = 22;
