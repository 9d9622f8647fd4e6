/**
 * Xen's errno values (xen/include/public/errno.h). Hypercalls return them negated
 * (-EPERM ...). Numbered explicitly; never renumber.
 */
export const EPERM = 1;
export const ENOENT = 2;
export const ESRCH = 3;
export const EINTR = 4;
export const EIO = 5;
export const ENXIO = 6;
export const E2BIG = 7;
export const ENOEXEC = 8;
export const EBADF = 9;
export const ECHILD = 10;
export const EAGAIN = 11;
export const ENOMEM = 12;
export const EACCES = 13;
export const EFAULT = 14;
export const EBUSY = 16;
export const EEXIST = 17;
export const EXDEV = 18;
export const ENODEV = 19;
export const EISDIR = 21;
export const EINVAL = 22;
export const ENFILE = 23;
export const EMFILE = 24;
export const ENOSPC = 28;
export const EROFS = 30;
export const EMLINK = 31;
export const EDOM = 33;
export const ERANGE = 34;
export const EDEADLK = 35;
export const ENAMETOOLONG = 36;
export const ENOLCK = 37;
export const ENOSYS = 38;
export const ENOTEMPTY = 39;
export const ENODATA = 61;
export const ETIME = 62;
export const EBADMSG = 74;
export const EOVERFLOW = 75;
export const EILSEQ = 84;
export const ERESTART = 85;
export const ENOTSOCK = 88;
export const EOPNOTSUPP = 95;
export const EADDRINUSE = 98;
export const EADDRNOTAVAIL = 99;
export const ENOBUFS = 105;
export const EISCONN = 106;
export const ENOTCONN = 107;
export const ETIMEDOUT = 110;
export const ECONNREFUSED = 111;
export const EALREADY = 114;
export const EINPROGRESS = 115;

const NAMES: Readonly<Record<number, string>> = {
  [EPERM]: 'EPERM', [ENOENT]: 'ENOENT', [ESRCH]: 'ESRCH', [EINTR]: 'EINTR', [EIO]: 'EIO',
  [ENXIO]: 'ENXIO', [E2BIG]: 'E2BIG', [ENOEXEC]: 'ENOEXEC', [EBADF]: 'EBADF',
  [ECHILD]: 'ECHILD', [EAGAIN]: 'EAGAIN', [ENOMEM]: 'ENOMEM', [EACCES]: 'EACCES',
  [EFAULT]: 'EFAULT', [EBUSY]: 'EBUSY', [EEXIST]: 'EEXIST', [EXDEV]: 'EXDEV',
  [ENODEV]: 'ENODEV', [EISDIR]: 'EISDIR', [EINVAL]: 'EINVAL', [ENFILE]: 'ENFILE',
  [EMFILE]: 'EMFILE', [ENOSPC]: 'ENOSPC', [EROFS]: 'EROFS', [EMLINK]: 'EMLINK',
  [EDOM]: 'EDOM', [ERANGE]: 'ERANGE', [EDEADLK]: 'EDEADLK', [ENAMETOOLONG]: 'ENAMETOOLONG',
  [ENOLCK]: 'ENOLCK', [ENOSYS]: 'ENOSYS', [ENOTEMPTY]: 'ENOTEMPTY', [ENODATA]: 'ENODATA',
  [ETIME]: 'ETIME', [EBADMSG]: 'EBADMSG', [EOVERFLOW]: 'EOVERFLOW', [EILSEQ]: 'EILSEQ',
  [ERESTART]: 'ERESTART', [ENOTSOCK]: 'ENOTSOCK', [EOPNOTSUPP]: 'EOPNOTSUPP',
  [EADDRINUSE]: 'EADDRINUSE', [EADDRNOTAVAIL]: 'EADDRNOTAVAIL', [ENOBUFS]: 'ENOBUFS',
  [EISCONN]: 'EISCONN', [ENOTCONN]: 'ENOTCONN', [ETIMEDOUT]: 'ETIMEDOUT',
  [ECONNREFUSED]: 'ECONNREFUSED', [EALREADY]: 'EALREADY', [EINPROGRESS]: 'EINPROGRESS',
};

/** "EPERM" for 1 or -1; "E?<n>" for values Xen does not define. */
export function errnoName(rc: number): string {
  const n = Math.abs(rc);
  return NAMES[n] ?? `E?${n}`;
}
