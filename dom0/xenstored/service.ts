/**
 * xenstored as it runs in Dom0's kernel: the daemon (connection.ts, store.ts)
 * with its three transports.
 *
 *  - Domains, over their xenstore ring page and event channel. INTRODUCE
 *    (domid, gfn, port) maps the ring page into Dom0 with a foreign mapping
 *    and binds an interdomain port to the domain's; the port's events kick
 *    the ring (ring.ts). RELEASE, or the domain's death (`checkDomains`,
 *    driven by VIRQ_DOM_EXC), disconnects it: its nodes go, @releaseDomain
 *    fires, the port is closed and the page unmapped.
 *  - Dom0 itself, in-process: `xb` is Dom0's privileged connection (domain
 *    0's, home /local/domain/0), a XenbusClient whose bytes go straight to
 *    the daemon and back.
 *  - Host tools, over the UNIX socket (socket.ts; every client privileged).
 *    Its callbacks only queue work (`post`); the kernel's loop runs it.
 *
 * Everything here runs on Dom0's vCPU while it holds its pCPU: from the
 * kernel's loop (event handlers, posted work) and from Dom0's own requests.
 */
import type { EventChannels } from '../../shared/guest/evtchn.ts';
import { XenbusClient, XenbusError, type XenbusTransport } from '../../shared/xenbus/client.ts';
import type { XsErrno } from '../../shared/xenstore/wire.ts';
import { limitedWarn, logger, RateLimiter } from '../../shared/log.ts';
import type { DomainInfo, ForeignMapping, XenCtrl } from '../libxc.ts';
import { Xenstored, type DomainTransport, type XsConnection } from './connection.ts';
import { XsRingBackend } from './ring.ts';
import { startXenstoredSocket, type XenstoredSocketServer } from './socket.ts';

const log = logger('xenstored');
/** INTRODUCE can be asked for any domain by any socket client: failures are rate-limited. */
const introLimiter = new RateLimiter();

export interface XenstoredServiceOptions {
  readonly ctrl: XenCtrl;
  /** Dom0's event channels (its shared_info mapped). */
  readonly ev: EventChannels;
  /** Queue work from a host I/O callback to run in the kernel's loop, in order. */
  readonly post: (work: () => void) => void;
  /** The UNIX socket's path; default xenstoredSocketPath() ($XENSTORED_PATH). null: no socket. */
  readonly socketPath?: string | null;
  /** Where the socket's start-up line goes. */
  readonly print?: (line: string) => void;
}

/** One domain's ring as xenstored serves it. */
interface DomainRing {
  readonly mapping: ForeignMapping;
  localPort: number;
  readonly backend: XsRingBackend;
}

/**
 * Dom0's own connection as a client transport. Replies are handed to the
 * client as soon as the daemon queues them (synchronously); a reply that
 * arrives while the client is still taking an earlier one waits its turn.
 */
class InProcessTransport implements XenbusTransport {
  private handler: (b: Uint8Array) => void = () => {};
  private readonly waiting: Uint8Array[] = [];
  private delivering = false;

  constructor(private readonly daemon: Xenstored, private readonly conn: XsConnection, onClosed: () => void) {
    conn.transport = { output: () => this.pull(), resume: () => {}, closed: onClosed };
  }

  send(bytes: Uint8Array): void { this.daemon.receive(this.conn, bytes); }

  onReceive(handler: (b: Uint8Array) => void): void { this.handler = handler; }

  private pull(): void {
    while (this.conn.hasOutput()) this.waiting.push(this.daemon.takeOutput(this.conn, 1 << 20));
    if (this.delivering) return;
    this.delivering = true;
    try {
      for (let b = this.waiting.shift(); b; b = this.waiting.shift()) this.handler(b);
    } finally {
      this.delivering = false;
    }
  }
}

export class XenstoredService {
  readonly daemon: Xenstored;
  /** Dom0's privileged connection. */
  readonly xb: XenbusClient;
  private readonly rings = new Map<number, DomainRing>();
  /**
   * Domains introduced and not yet seen dead. A ring dropped for corrupt
   * indexes leaves its domain here: the store still knows it until it dies.
   */
  private readonly introduced = new Set<number>();
  private socket: XenstoredSocketServer | undefined;

  private constructor(private readonly o: XenstoredServiceOptions) {
    const domains: DomainTransport = {
      introduce: (conn, gfn, evtchn) => this.introduce(conn, gfn, evtchn),
      release: (conn) => this.release(conn.domid),
    };
    this.daemon = new Xenstored({ now: Date.now, domains });
    const conn = this.daemon.connectDomain(0);
    this.xb = new XenbusClient(new InProcessTransport(this.daemon, conn, () => this.xb.fail()));
  }

  /** Start xenstored: the daemon, Dom0's connection and (unless socketPath is null) the socket. */
  static async start(o: XenstoredServiceOptions): Promise<XenstoredService> {
    const s = new XenstoredService(o);
    if (o.socketPath !== null) {
      s.socket = await startXenstoredSocket({
        path: o.socketPath, daemon: s.daemon, schedule: o.post, print: o.print,
      });
    }
    return s;
  }

  /** The socket's path, if it listens. */
  get socketPath(): string | undefined { return this.socket?.path; }
  /** Host tools connected now. */
  get socketClients(): number { return this.socket?.clients ?? 0; }
  /** Domains whose ring xenstored serves now. */
  get domains(): number[] { return [...this.rings.keys()]; }

  /**
   * INTRODUCE's transport side: map the domain's ring page, bind our end of
   * its event channel and serve the ring. Re-introducing a served domain (same
   * page) rebinds the channel, as C xenstored does. Returns the errno for the
   * reply on failure, having undone what it did.
   */
  private introduce(conn: XsConnection, gfn: number, evtchn: number): XsErrno | undefined {
    const { ctrl, ev } = this.o;
    const domid = conn.domid;
    const existing = this.rings.get(domid);
    let mapping: ForeignMapping | undefined;
    try {
      mapping = existing ? existing.mapping : ctrl.mapForeignPage(domid, gfn);
    } catch (e) {
      limitedWarn(introLimiter, log, 'introduce', { domid, gfn, err: String(e) }, 'cannot map the xenstore ring page');
      return 'EINVAL';
    }
    let localPort: number;
    try {
      localPort = ev.bindInterdomain(domid, evtchn);
    } catch (e) {
      if (!existing) mapping.unmap();
      limitedWarn(introLimiter, log, 'introduce', { domid, evtchn, err: String(e) }, 'cannot bind the xenstore event channel');
      return 'EINVAL';
    }
    if (existing) {
      this.closePort(existing.localPort);
      existing.localPort = localPort;
      ev.on(localPort, () => existing.backend.kick());
      return undefined;
    }
    this.introduced.add(domid);
    const ring: DomainRing = {
      mapping, localPort,
      backend: new XsRingBackend(this.daemon, conn, ctrl.xen.k.mem, mapping.gpa, () => ev.send(ring.localPort)),
    };
    this.rings.set(domid, ring);
    // bind_interdomain left our new port pending: the loop's next dispatch kicks the ring.
    ev.on(localPort, () => ring.backend.kick());
    return undefined;
  }

  /** Stop serving a domain's ring: close our port, unmap the page. */
  private release(domid: number): void {
    const r = this.rings.get(domid);
    if (!r) return;
    this.rings.delete(domid);
    this.closePort(r.localPort);
    r.mapping.unmap();
  }

  private closePort(port: number): void {
    try {
      this.o.ev.close(port);
    } catch {
      // Already closed: nothing to release.
    }
  }

  /**
   * VIRQ_DOM_EXC (C xenstored's domain_cleanup): a domain that shut down gets
   * @releaseDomain once; one that is dying or gone is disconnected, its nodes
   * removed, @releaseDomain fired, its ring released. `infos` is the current
   * domain list.
   */
  checkDomains(infos: readonly DomainInfo[]): void {
    const byId = new Map(infos.map((d) => [d.domid, d]));
    for (const domid of [...this.introduced]) {
      const d = byId.get(domid);
      if (!d || d.dying) {
        this.introduced.delete(domid);
        this.daemon.domainDestroyed(domid);
        this.release(domid);
      } else if (d.shutdown) {
        this.daemon.domainShutdown(domid);
      }
    }
  }

  /**
   * Stop: every domain's ring is released (its page unmapped) at once, then
   * the socket closes; resolves when it has. Only the socket's closing is
   * left to wait for when the promise is returned, so the caller may wait for
   * it without its pCPU (host.wait).
   */
  close(): Promise<void> {
    for (const domid of [...this.rings.keys()]) this.release(domid);
    this.xb.fail(new XenbusError('EIO', 'unknown'));
    const socket = this.socket;
    this.socket = undefined;
    return socket ? socket.close() : Promise.resolve();
  }
}
