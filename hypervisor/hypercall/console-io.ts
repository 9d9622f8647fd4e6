/** do_console_io (Xen: drivers/char/console.c). */
import { E2BIG, EFAULT, ENOSYS } from '../../shared/errno.ts';
import { CONSOLEIO_read, CONSOLEIO_write } from '../../shared/hypercall.ts';
import { serialRxRead } from '../serial.ts';
import type { VcpuCtx } from '../vcpu/context.ts';
import { xsmCheck } from '../xsm.ts';

/** guest_console_write() copies in chunks of this many bytes (kbuf[128]). */
const CHUNK = 127;

export function doConsoleIo(ctx: VcpuCtx, cmd: number, count: number, buffer: number): number {
  switch (cmd) {
    case CONSOLEIO_write: {
      const rc = xsmCheck(ctx.hv, ctx.slot, 'console_io_write');
      if (rc !== 0) return rc;
      if (count < 0 || count > 0x7fffffff) return -E2BIG;
      for (let done = 0; done < count; done += CHUNK) {
        const chunk = ctx.copyFrom(buffer + done, Math.min(CHUNK, count - done));
        if (!chunk) return -EFAULT;
        ctx.console.write(chunk);
      }
      return 0;
    }
    case CONSOLEIO_read: {
      const rc = xsmCheck(ctx.hv, ctx.slot, 'console_io_read');
      if (rc !== 0) return rc;
      if (count < 0 || count > 0x7fffffff) return -E2BIG;
      const data = serialRxRead(ctx.hv, count, (d) => ctx.copyTo(buffer, d));
      return data ? data.length : -EFAULT;
    }
    default: {
      // Xen asks XSM before looking at cmd: anything but write needs privilege.
      const rc = xsmCheck(ctx.hv, ctx.slot, 'console_io_read');
      return rc !== 0 ? rc : -ENOSYS;
    }
  }
}
