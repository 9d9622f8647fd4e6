/**
 * The control socket server: `xl` connects here. A UNIX socket (path from
 * controlSocketPath(): $XENTS_CONTROL_PATH or <tmpdir>/xents-<uid>/control.sock,
 * in a directory of mode 0700: whoever can reach it is as privileged as the
 * host's own user). Frames in, requests run concurrently through the command
 * table (commands.ts) against the Dom0 handlers, frames out.
 *
 * A bad frame gets an error reply and the connection goes on; an oversized
 * length ends the connection. A client that stops reading a stream (console,
 * watch) has the stream ended with ENOBUFS rather than buffering without bound.
 * Closing a connection aborts its streams; close() ends every connection and
 * removes the socket file.
 */
import { chmodSync, existsSync, mkdirSync, rmSync } from 'node:fs';
import { connect, createServer, type Server, type Socket } from 'node:net';
import { dirname } from 'node:path';
import { logger } from '../../shared/log.ts';
import { isStreamCommand, runCommand, runStream, toControlError } from './commands.ts';
import type { ConsoleStream, ControlHandlers } from './handlers.ts';
import {
  CANCEL, ControlError, controlSocketPath, encodeFrame, FrameDecoder, FrameError, INPUT, type DecodedFrame,
  type ServerFrame,
} from './protocol.ts';

const log = logger('xl');

/** Bytes queued on a socket beyond which a stream's client counts as not reading. */
const STREAM_HIGH_WATER = 1024 * 1024;

export interface ControlServerOptions {
  /** Socket path; default controlSocketPath(). */
  readonly path?: string;
}

interface OpenStream {
  readonly ac: AbortController;
  readonly inputs: Array<(data: Uint8Array) => void>;
  /** Input that came before the handler listened for it (bounded). */
  queued: Uint8Array[];
  ended: boolean;
}

/** Input bytes held for a stream whose handler has not started listening. */
const MAX_QUEUED_INPUT = 64 * 1024;

class Connection {
  private readonly decoder = new FrameDecoder();
  private readonly streams = new Map<number, OpenStream>();
  private closed = false;

  constructor(private readonly sock: Socket, private readonly handlers: ControlHandlers) {
    sock.on('data', (chunk: Buffer) => this.receive(chunk));
    sock.on('error', () => sock.destroy());
    sock.on('close', () => this.teardown());
  }

  private receive(chunk: Buffer): void {
    let frames: DecodedFrame[];
    try {
      frames = this.decoder.push(chunk);
    } catch (e) {
      const err = e instanceof FrameError ? e : new ControlError('EPROTO', String(e));
      this.send({ id: null, ok: false, error: err.toWire() });
      this.sock.end();
      this.teardown();
      return;
    }
    for (const f of frames) this.frame(f);
  }

  private frame(f: DecodedFrame): void {
    if (!f.ok) {
      this.send({ id: null, ok: false, error: { code: 'EPROTO', message: f.error } });
      return;
    }
    const v = f.value as Record<string, unknown> | null;
    const id = typeof v === 'object' && v !== null && Number.isSafeInteger(v.id) && (v.id as number) > 0 ? (v.id as number) : null;
    if (id === null || typeof v?.cmd !== 'string') {
      this.send({ id, ok: false, error: { code: 'EPROTO', message: 'a request is { id: positive integer, cmd: string, args?: map }' } });
      return;
    }
    const args = v.args === undefined ? {} : v.args;
    if (typeof args !== 'object' || args === null || Array.isArray(args) || args instanceof Uint8Array) {
      this.send({ id, ok: false, error: { code: 'EPROTO', message: 'args must be a map' } });
      return;
    }
    const a = args as Record<string, unknown>;
    if (v.cmd === CANCEL) { this.cancel(id); return; }
    if (v.cmd === INPUT) { this.input(id, a.data); return; }
    if (this.streams.has(id)) {
      this.send({ id, ok: false, error: { code: 'EPROTO', message: `request id ${id} is already in use` } });
      return;
    }
    if (isStreamCommand(v.cmd)) void this.stream(id, v.cmd, a);
    else void this.request(id, v.cmd, a);
  }

  private async request(id: number, cmd: string, args: Record<string, unknown>): Promise<void> {
    try {
      const result = await runCommand(this.handlers, cmd, args);
      this.send({ id, ok: true, result: result ?? null });
    } catch (e) {
      this.send({ id, ok: false, error: toControlError(e).toWire() });
    }
  }

  private async stream(id: number, cmd: string, args: Record<string, unknown>): Promise<void> {
    const st: OpenStream = { ac: new AbortController(), inputs: [], queued: [], ended: false };
    this.streams.set(id, st);
    const s: ConsoleStream = {
      signal: st.ac.signal,
      emit: (event) => {
        if (st.ended || this.closed) return;
        if (this.sock.writableLength > STREAM_HIGH_WATER) {
          this.endStream(id, st, { id, ok: false, error: { code: 'ENOBUFS', message: 'the client is not reading; stream ended' } });
          return;
        }
        this.send({ id, event });
      },
      onInput: (listener) => {
        st.inputs.push(listener);
        if (st.inputs.length > 1) return;
        // Held input goes out after the current turn, to every listener the
        // handler registers in it.
        queueMicrotask(() => {
          const q = st.queued;
          st.queued = [];
          for (const data of q) this.deliver(st, data);
        });
      },
    };
    try {
      await runStream(this.handlers, cmd, args, s);
      this.endStream(id, st, { id, ok: true, result: null });
    } catch (e) {
      this.endStream(id, st, { id, ok: false, error: toControlError(e).toWire() });
    }
  }

  private endStream(id: number, st: OpenStream, reply: ServerFrame): void {
    if (st.ended) return;
    st.ended = true;
    st.ac.abort();
    if (this.streams.get(id) === st) this.streams.delete(id);
    this.send(reply);
  }

  private cancel(id: number): void {
    const st = this.streams.get(id);
    if (st) this.endStream(id, st, { id, ok: true, result: null });
  }

  private input(id: number, data: unknown): void {
    const st = this.streams.get(id);
    if (!st || !(data instanceof Uint8Array)) return;
    const copy = new Uint8Array(data);
    if (st.inputs.length > 0 && st.queued.length === 0) { this.deliver(st, copy); return; }
    if (st.queued.reduce((n, q) => n + q.length, 0) + copy.length <= MAX_QUEUED_INPUT) st.queued.push(copy);
  }

  private deliver(st: OpenStream, data: Uint8Array): void {
    for (const l of st.inputs) {
      try { l(data); } catch (e) { log.debug({ err: String(e) }, 'console input listener failed'); }
    }
  }

  private send(frame: ServerFrame): void {
    if (this.closed || this.sock.destroyed) return;
    let buf: Buffer;
    try {
      buf = encodeFrame(frame);
    } catch (e) {
      if ('ok' in frame && frame.id !== null) {
        buf = encodeFrame({ id: frame.id, ok: false, error: toControlError(e).toWire() });
      } else {
        return;
      }
    }
    this.sock.write(buf);
  }

  teardown(): void {
    if (this.closed) return;
    this.closed = true;
    for (const st of this.streams.values()) {
      st.ended = true;
      st.ac.abort();
    }
    this.streams.clear();
  }

  destroy(): void {
    this.teardown();
    this.sock.destroy();
  }
}

/** Is something already answering on `path`? */
function answering(path: string): Promise<boolean> {
  return new Promise((resolve) => {
    const s = connect(path);
    s.once('connect', () => { s.destroy(); resolve(true); });
    s.once('error', () => resolve(false));
  });
}

export class ControlServer {
  private readonly conns = new Set<Connection>();

  private constructor(readonly path: string, private readonly server: Server) {}

  /** Connected clients. */
  get connections(): number { return this.conns.size; }

  /**
   * Listen on the control socket. A stale socket file (nobody answering) is
   * replaced; a live one means another host runs: that is an error.
   */
  static async listen(handlers: ControlHandlers, opts: ControlServerOptions = {}): Promise<ControlServer> {
    const path = opts.path ?? controlSocketPath();
    mkdirSync(dirname(path), { recursive: true, mode: 0o700 });
    // Our own directory (the default) is ours alone, whatever made it first.
    if (opts.path === undefined) chmodSync(dirname(path), 0o700);
    if (existsSync(path)) {
      if (await answering(path)) throw new Error(`another host is already listening on the control socket ${path}`);
      rmSync(path, { force: true });
    }
    let self: ControlServer | undefined;
    const server = createServer((sock) => {
      const c = new Connection(sock, handlers);
      self?.conns.add(c);
      sock.on('close', () => self?.conns.delete(c));
    });
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(path, () => { server.off('error', reject); resolve(); });
    });
    chmodSync(path, 0o600);
    self = new ControlServer(path, server);
    log.debug({ path }, 'control socket listening');
    return self;
  }

  /** Stop listening, end every connection (aborting its streams), remove the socket file. */
  async close(): Promise<void> {
    for (const c of this.conns) c.destroy();
    this.conns.clear();
    await new Promise<void>((resolve) => this.server.close(() => resolve()));
    rmSync(this.path, { force: true });
  }
}
