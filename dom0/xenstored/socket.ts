/**
 * xenstored's UNIX socket, for host tools (Dom0 processes). Every client of the
 * socket is privileged, as with the C daemon's socket (the ring is how domains
 * talk to xenstored). The wire format is the ring's (shared/xenstore/wire.ts).
 *
 * The path is $XENSTORED_PATH when set, else `xenstored/socket` in a directory
 * under the OS temp dir; the server prints it when it starts listening, and
 * clients honour $XENSTORED_PATH to find it (as libxenstore does).
 *
 * Back-pressure: the server stops reading a client while the daemon will not
 * take its requests (connection.ts), and hands the socket no more than
 * `HIGH_WATER` bytes beyond what the kernel took, so a client that never reads
 * costs a bounded amount of memory.
 *
 * Inside Dom0's kernel the daemon may only run while Dom0 holds its pCPU (a
 * request can make xenstored map a domain's ring or notify it): the `schedule`
 * option hands every piece of work a socket callback would do to the kernel's
 * loop instead of doing it in the callback. By default it runs at once.
 */
import { chmodSync, mkdirSync, rmSync } from 'node:fs';
import { createServer, type Server, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { limitedWarn, logger, RateLimiter } from '../../shared/log.ts';
import { Xenstored, type XenstoredOptions, type XsConnection } from './connection.ts';

const log = logger('xenstored');
/** Clients can trigger drop messages at will: rate-limited. */
const dropLimiter = new RateLimiter();

const HIGH_WATER = 256 * 1024;
const CLIENT_CLOSED = 'client closed';
const CHUNK = 64 * 1024;

/** Where xenstored listens and clients connect: $XENSTORED_PATH, or the default under the temp dir. */
export function xenstoredSocketPath(env: NodeJS.ProcessEnv = process.env): string {
  const p = env.XENSTORED_PATH;
  if (p !== undefined && p !== '') return p;
  const uid = typeof process.getuid === 'function' ? process.getuid() : 0;
  return join(tmpdir(), `xents-${uid}`, 'xenstored', 'socket');
}

export interface SocketServerOptions {
  /** Socket path; default `xenstoredSocketPath()`. */
  readonly path?: string;
  /** Serve an existing daemon (shared with the ring transport); default a new one. */
  readonly daemon?: Xenstored;
  readonly daemonOptions?: XenstoredOptions;
  /** Where the start-up line goes; default stdout. */
  readonly print?: (line: string) => void;
  /** How often unread watch events are expired; default 5 s. */
  readonly expireEveryMs?: number;
  /**
   * Where daemon work from socket callbacks runs: called with each piece, in
   * order; it must run them in that order. Default: at once.
   */
  readonly schedule?: (work: () => void) => void;
}

export interface XenstoredSocketServer {
  readonly path: string;
  readonly daemon: Xenstored;
  /** Connected socket clients. */
  readonly clients: number;
  close(): Promise<void>;
}

/** Serve `c` over `sock` until either side closes; daemon work goes through `run`. */
function serveClient(daemon: Xenstored, sock: Socket, c: XsConnection, clients: Set<Socket>, run: (work: () => void) => void): void {
  const flush = (): void => {
    while (c.hasOutput() && sock.writable && sock.writableLength < HIGH_WATER) {
      sock.write(daemon.takeOutput(c, CHUNK));
    }
  };
  c.transport = {
    output: flush,
    resume: () => sock.resume(),
    closed: (reason) => {
      if (reason !== CLIENT_CLOSED) limitedWarn(dropLimiter, log, 'socket', { reason }, 'dropped socket client');
      sock.destroy();
    },
  };
  sock.on('data', (buf: Buffer) => {
    // Our copy: the work may run after Node reuses the buffer.
    const bytes = new Uint8Array(buf);
    run(() => {
      daemon.receive(c, bytes);
      if (!c.closed && !c.wantsInput()) sock.pause();
    });
  });
  sock.on('drain', () => run(flush));
  sock.on('error', () => sock.destroy());
  sock.on('close', () => {
    clients.delete(sock);
    run(() => daemon.close(c, CLIENT_CLOSED));
  });
}

/** Listen on the UNIX socket; resolves once listening (after printing the path). */
export async function startXenstoredSocket(opts: SocketServerOptions = {}): Promise<XenstoredSocketServer> {
  const path = opts.path ?? xenstoredSocketPath();
  const daemon = opts.daemon ?? new Xenstored({ now: Date.now, ...opts.daemonOptions });
  const run = opts.schedule ?? ((work: () => void) => work());
  const clients = new Set<Socket>();
  mkdirSync(dirname(path), { recursive: true, mode: 0o700 });
  rmSync(path, { force: true });
  const server: Server = createServer((sock) => {
    clients.add(sock);
    serveClient(daemon, sock, daemon.connectSocket(), clients, run);
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(path, () => {
      server.off('error', reject);
      resolve();
    });
  });
  chmodSync(path, 0o600);
  const timer = setInterval(() => run(() => daemon.expire()), opts.expireEveryMs ?? 5000);
  timer.unref();
  (opts.print ?? ((l: string) => process.stdout.write(l + '\n')))(`xenstored: listening on ${path}`);
  return {
    path,
    daemon,
    get clients() { return clients.size; },
    close: () => new Promise<void>((resolve) => {
      clearInterval(timer);
      for (const s of clients) s.destroy();
      server.close(() => {
        rmSync(path, { force: true });
        resolve();
      });
    }),
  };
}
