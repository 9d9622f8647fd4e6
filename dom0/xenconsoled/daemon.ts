/**
 * xenconsoled, as it runs in Dom0's kernel: the back end of every PV guest's
 * console ring (tools/console/daemon/io.c).
 *
 *  - Discovery, as C xenconsoled's enum_domains: on @introduceDomain (and
 *    once at start) it looks at every domain it does not serve yet and reads
 *    `/local/domain/<id>/console/{type,ring-ref,port}` and `name`, written by
 *    the toolstack; a console of type "xenconsoled" is mapped (ring-ref is
 *    the ring page's gfn on our auto-translated guests) and its port bound.
 *  - Service (`pump`, every turn of the kernel's loop): each guest's output
 *    goes to its log file `guest-<name>.log` (paths.ts), to the host's stdout
 *    as `<name> | <line>`, and to attached `xl console` sessions.
 *  - Release (`checkDomains`, driven by VIRQ_DOM_EXC): a dying or vanished
 *    domain's ring is drained one last time, then unmapped and its port
 *    closed. The ring page stays mapped until then, so output written just
 *    before a shutdown is never lost.
 *
 * `attach` and `input` (for `xl console`) may be called from any context:
 * they only register a listener or queue bytes; the loop's `pump` moves them.
 */
import { closeSync, mkdirSync, openSync, writeSync } from 'node:fs';
import type { EventChannels } from '../../shared/guest/evtchn.ts';
import type { XenbusClient } from '../../shared/xenbus/client.ts';
import { limitedWarn, logger, RateLimiter } from '../../shared/log.ts';
import type { DomainInfo, ForeignMapping, XenCtrl } from '../libxc.ts';
import { ConsoleDomain, type ConsoleOutputListener } from './domain.ts';
import { consoleLogDir, guestLogPath } from './paths.ts';

const log = logger('xenconsoled');
/** A guest decides whether its ring is corrupt: rate-limited per domain. */
const warnLimiter = new RateLimiter();

export interface XenconsoledOptions {
  readonly ctrl: XenCtrl;
  /** Dom0's event channels. */
  readonly ev: EventChannels;
  /** Dom0's xenstore connection. */
  readonly xb: XenbusClient;
  /** Directory of the guests' logs; default consoleLogDir(). */
  readonly logDir?: string;
  /** Each complete line of guest output, already prefixed `<name> | `. Default: none. */
  readonly stdout?: (line: string) => void;
  /** xenconsoled's own messages (connect, disconnect). Default: none. */
  readonly print?: (line: string) => void;
}

/** An `xl console` session's hold on a console. */
export interface ConsoleAttachment {
  readonly domid: number;
  /** Stop receiving output. Idempotent. */
  detach(): void;
}

interface Served {
  readonly con: ConsoleDomain;
  readonly mapping: ForeignMapping;
  readonly localPort: number;
  readonly fd: number;
  readonly logPath: string;
  readonly onClose: Set<() => void>;
}

export class Xenconsoled {
  readonly logDir: string;
  private readonly served = new Map<number, Served>();
  private scanWanted = true;
  private scanning = false;

  private constructor(private readonly o: XenconsoledOptions) {
    this.logDir = o.logDir ?? consoleLogDir();
  }

  /** Create the log directory and watch for domains being introduced. */
  static async start(o: XenconsoledOptions): Promise<Xenconsoled> {
    const d = new Xenconsoled(o);
    mkdirSync(d.logDir, { recursive: true, mode: 0o700 });
    await o.xb.watch('@introduceDomain', () => { d.scanWanted = true; });
    return d;
  }

  /** Domains whose console is served now. */
  get domains(): number[] { return [...this.served.keys()]; }

  /** The log file of a served domain. */
  logPath(domid: number): string | undefined { return this.served.get(domid)?.logPath; }

  /**
   * Connect the consoles of domains introduced since the last scan (a no-op
   * unless @introduceDomain fired). A domain whose console nodes are missing
   * or not of type "xenconsoled" is left alone.
   */
  async scan(): Promise<void> {
    if (!this.scanWanted || this.scanning) return;
    this.scanWanted = false;
    this.scanning = true;
    try {
      for (const d of this.o.ctrl.listDomains(1)) {
        if (this.served.has(d.domid) || d.dying) continue;
        await this.connect(d.domid);
      }
    } finally {
      this.scanning = false;
    }
  }

  private async connect(domid: number): Promise<void> {
    const xb = this.o.xb;
    const home = `/local/domain/${domid}`;
    const [type, ref, port, name] = await Promise.all([
      xb.tryRead(`${home}/console/type`), xb.tryRead(`${home}/console/ring-ref`),
      xb.tryRead(`${home}/console/port`), xb.tryRead(`${home}/name`),
    ]).catch(() => [undefined, undefined, undefined, undefined]);
    if (type !== 'xenconsoled' || ref === undefined || port === undefined) return;
    const gfn = /^\d+$/.test(ref) ? Number(ref) : NaN;
    const remotePort = /^\d+$/.test(port) ? Number(port) : NaN;
    if (!Number.isSafeInteger(gfn) || !Number.isSafeInteger(remotePort) || remotePort === 0) return;
    if (this.served.has(domid)) return;
    const { ctrl, ev } = this.o;
    let mapping: ForeignMapping;
    try {
      mapping = ctrl.mapForeignPage(domid, gfn);
    } catch (e) {
      limitedWarn(warnLimiter, log, `d${domid}`, { domid, gfn, err: String(e) }, 'cannot map the console ring page');
      return;
    }
    let localPort: number;
    try {
      localPort = ev.bindInterdomain(domid, remotePort);
    } catch (e) {
      mapping.unmap();
      limitedWarn(warnLimiter, log, `d${domid}`, { domid, port: remotePort, err: String(e) }, 'cannot bind the console event channel');
      return;
    }
    const label = name ?? `d${domid}`;
    const logPath = guestLogPath(this.logDir, label, domid);
    let fd: number;
    try {
      fd = openSync(logPath, 'a', 0o600);
    } catch (e) {
      ev.close(localPort);
      mapping.unmap();
      log.warn({ domid, logPath, err: String(e) }, 'cannot open the console log');
      return;
    }
    const stdout = this.o.stdout;
    const con = new ConsoleDomain(domid, label, ctrl.xen.k.mem, mapping.gpa, () => ev.send(localPort), {
      log: (b) => { writeSync(fd, b); },
      line: (l) => stdout?.(`${label} | ${l}`),
    });
    // Events only say "look": pump() looks at every console each turn.
    ev.on(localPort, () => {});
    this.served.set(domid, { con, mapping, localPort, fd, logPath, onClose: new Set() });
    this.o.print?.(`xenconsoled: domain ${domid} (${label}) console connected, log ${logPath}`);
  }

  /** Move every console's bytes (output out, input in). Returns the bytes moved. */
  pump(): number {
    let moved = 0;
    for (const s of this.served.values()) {
      const wasBroken = s.con.broken;
      moved += s.con.service();
      if (s.con.broken && !wasBroken) {
        limitedWarn(warnLimiter, log, `d${s.con.domid}`, { domid: s.con.domid }, 'console ring indexes corrupt: console stopped');
      }
    }
    return moved;
  }

  /** VIRQ_DOM_EXC: release the consoles of domains that are dying or gone (`infos`: the domain list). */
  checkDomains(infos: readonly DomainInfo[]): void {
    const byId = new Map(infos.map((d) => [d.domid, d]));
    for (const domid of [...this.served.keys()]) {
      const d = byId.get(domid);
      if (!d || d.dying) this.release(domid);
    }
  }

  /** Drain a console one last time and let it go: log closed, port closed, page unmapped. */
  release(domid: number): void {
    const s = this.served.get(domid);
    if (!s) return;
    s.con.service(Number.MAX_SAFE_INTEGER);
    s.con.finish();
    this.served.delete(domid);
    try {
      this.o.ev.close(s.localPort);
    } catch {
      // Already closed.
    }
    s.mapping.unmap();
    closeSync(s.fd);
    for (const f of s.onClose) f();
    this.o.print?.(`xenconsoled: domain ${domid} (${s.con.name}) console closed`);
  }

  /**
   * `xl console`: `onOutput` receives the guest's output from now on (called
   * from the kernel's loop); `onClose`, once, when the console goes away.
   * Undefined if the domain's console is not served.
   */
  attach(domid: number, onOutput: ConsoleOutputListener, onClose?: () => void): ConsoleAttachment | undefined {
    const s = this.served.get(domid);
    if (!s) return undefined;
    s.con.listeners.add(onOutput);
    if (onClose) s.onClose.add(onClose);
    return {
      domid,
      detach: () => {
        s.con.listeners.delete(onOutput);
        if (onClose) s.onClose.delete(onClose);
      },
    };
  }

  /**
   * `xl console` input: queue `bytes` for the guest's console (written into
   * its ring by the loop as room allows). False if the console is not served,
   * is broken, or has too much input waiting.
   */
  input(domid: number, bytes: Uint8Array): boolean {
    return this.served.get(domid)?.con.queueInput(bytes) ?? false;
  }

  /** Release every console. */
  close(): void {
    for (const domid of [...this.served.keys()]) this.release(domid);
  }
}
