/**
 * xenstored's end of a domain's xenstore ring: requests are read from `req`
 * only while the connection takes them (back-pressure leaves them in the
 * guest's ring), replies and events are written into `rsp` as space allows.
 * `notify` signals the domain's event channel; the caller runs `kick` when the
 * channel fires. Impossible ring indexes set XENSTORE_ERROR_RINGIDX in the
 * page's error field and drop the connection (the domain cannot recover it,
 * as with C xenstored).
 */
import { XENSTORE_DOMAIN_INTERFACE, XENSTORE_ERROR_RINGIDX, XENSTORE_RING_SIZE, XENSTORE_SERVER_FEATURE_ERROR } from '../../shared/abi/xs-ring.ts';
import { xsRingRead, xsRingUsed, xsRingWrite, type RingMemory } from '../../shared/xenstore/ring.ts';
import { limitedWarn, logger, RateLimiter } from '../../shared/log.ts';
import { DOMAIN_RELEASED, type Xenstored, type XsConnection } from './connection.ts';

const log = logger('xenstored');
/** A guest can make its ring fail at will: rate-limited per domain. */
const dropLimiter = new RateLimiter();

const F = XENSTORE_DOMAIN_INTERFACE.fields;

export class XsRingBackend {
  private busy = false;
  private again = false;

  constructor(
    private readonly daemon: Xenstored,
    readonly conn: XsConnection,
    private readonly mem: RingMemory,
    private readonly base: number,
    private readonly notify: () => void,
  ) {
    mem.atomicStore32(base + F.server_features.offset, XENSTORE_SERVER_FEATURE_ERROR);
    conn.transport = {
      output: () => this.kick(),
      resume: () => this.kick(),
      closed: (reason) => {
        if (reason !== DOMAIN_RELEASED) limitedWarn(dropLimiter, log, `dom${conn.domid}`, { domid: conn.domid, reason }, 'dropped domain connection');
      },
    };
  }

  /** Move bytes both ways until nothing moves; notify the domain if anything did. */
  kick(): void {
    if (this.busy) {
      this.again = true;
      return;
    }
    this.busy = true;
    let moved = false;
    try {
      do {
        this.again = false;
        while (!this.conn.closed && this.conn.wantsInput()) {
          const r = xsRingRead(this.mem, this.base, 'req');
          if (!r.ok) return this.corrupt();
          if (r.bytes.length === 0) break;
          moved = true;
          this.daemon.receive(this.conn, r.bytes);
        }
        while (!this.conn.closed && this.conn.hasOutput()) {
          const used = xsRingUsed(this.mem, this.base, 'rsp');
          if (used === undefined) return this.corrupt();
          if (used === XENSTORE_RING_SIZE) break;
          const w = xsRingWrite(this.mem, this.base, 'rsp', this.daemon.takeOutput(this.conn, XENSTORE_RING_SIZE - used));
          if (!w.ok) return this.corrupt();
          moved = true;
        }
      } while (this.again);
    } finally {
      this.busy = false;
      if (moved) this.notify();
    }
  }

  private corrupt(): void {
    this.mem.atomicStore32(this.base + F.error.offset, XENSTORE_ERROR_RINGIDX);
    this.daemon.close(this.conn, 'xenstore ring indexes corrupt');
  }
}
