/**
 * The control socket client, used by `xl`: typed requests, streams (console,
 * xenstore watches) with cancel and input. Every failure is a ControlError:
 * the host's (code and domain as it sent them), ENOTCONN when no host is
 * listening, ECONNRESET when the connection drops mid-request.
 */
import { connect, type Socket } from 'node:net';
import {
  CANCEL, ControlError, controlSocketPath, encodeFrame, FrameDecoder, INPUT, type ControlApi, type ControlStreams,
  type DecodedFrame,
} from './protocol.ts';

interface Pending {
  resolve(v: unknown): void;
  reject(e: ControlError): void;
  onEvent?: (e: unknown) => void;
}

export interface ClientStream<R> {
  /** Settles with the final reply: the stream's result, or its error. */
  readonly done: Promise<R>;
  /** Ask the host to end the stream; `done` then resolves. */
  cancel(): void;
  /** Send input (console keystrokes). */
  input(data: Uint8Array): void;
}

export class ControlClient {
  private nextId = 1;
  private readonly pending = new Map<number, Pending>();
  private readonly decoder = new FrameDecoder();
  private closedError: ControlError | null = null;

  private constructor(private readonly sock: Socket) {
    sock.on('data', (chunk: Buffer) => this.receive(chunk));
    sock.on('error', () => { /* 'close' follows */ });
    sock.on('close', () => this.fail(new ControlError('ECONNRESET', 'the host closed the control connection')));
  }

  /**
   * Connect to the host's control socket. Rejects with ENOTCONN, saying so
   * plainly, when no host is running there.
   */
  static connect(path: string = controlSocketPath()): Promise<ControlClient> {
    return new Promise((resolve, reject) => {
      const sock = connect(path);
      sock.once('connect', () => {
        sock.removeAllListeners('error');
        resolve(new ControlClient(sock));
      });
      sock.once('error', (e: NodeJS.ErrnoException) => {
        const why = e.code === 'ENOENT' || e.code === 'ECONNREFUSED'
          ? `no host is running (nothing listens on the control socket ${path}); start one with \`npm start\``
          : `cannot connect to the control socket ${path}: ${e.message}`;
        reject(new ControlError('ENOTCONN', why));
      });
    });
  }

  /** One request, one reply. */
  call<K extends keyof ControlApi>(cmd: K, args: ControlApi[K]['args']): Promise<ControlApi[K]['result']> {
    return new Promise((resolve, reject) => {
      const id = this.send(cmd, args, { resolve: resolve as (v: unknown) => void, reject });
      if (id === null) reject(this.closedError as ControlError);
    });
  }

  /** A streaming request: `onEvent` for each event until the final reply. */
  stream<K extends keyof ControlStreams>(
    cmd: K, args: ControlStreams[K]['args'], onEvent: (e: ControlStreams[K]['event']) => void,
  ): ClientStream<ControlStreams[K]['result']> {
    let id: number | null = null;
    const done = new Promise<ControlStreams[K]['result']>((resolve, reject) => {
      id = this.send(cmd, args, { resolve: resolve as (v: unknown) => void, reject, onEvent: onEvent as (e: unknown) => void });
      if (id === null) reject(this.closedError as ControlError);
    });
    return {
      done,
      cancel: () => { if (id !== null && this.pending.has(id)) this.write({ id, cmd: CANCEL }); },
      input: (data) => { if (id !== null && this.pending.has(id)) this.write({ id, cmd: INPUT, args: { data } }); },
    };
  }

  close(): void {
    this.sock.end();
    this.sock.destroy();
  }

  private send(cmd: string, args: unknown, p: Pending): number | null {
    if (this.closedError) return null;
    const id = this.nextId++;
    this.pending.set(id, p);
    try {
      this.write({ id, cmd, args });
    } catch (e) {
      this.pending.delete(id);
      p.reject(e instanceof ControlError ? e : new ControlError('EPROTO', String(e)));
    }
    return id;
  }

  private write(frame: unknown): void {
    this.sock.write(encodeFrame(frame));
  }

  private receive(chunk: Buffer): void {
    let frames: DecodedFrame[];
    try {
      frames = this.decoder.push(chunk);
    } catch (e) {
      this.fail(e instanceof ControlError ? e : new ControlError('EPROTO', String(e)));
      this.sock.destroy();
      return;
    }
    for (const f of frames) {
      if (!f.ok) { this.fail(new ControlError('EPROTO', `bad reply from the host: ${f.error}`)); this.sock.destroy(); return; }
      this.dispatch(f.value as Record<string, unknown>);
    }
  }

  private dispatch(m: Record<string, unknown>): void {
    if (typeof m !== 'object' || m === null) return;
    if (m.id === null && m.ok === false) {
      // The host could not read one of our frames: we cannot tell which.
      this.fail(ControlError.fromWire(m.error));
      this.sock.destroy();
      return;
    }
    const p = typeof m.id === 'number' ? this.pending.get(m.id) : undefined;
    if (!p) return;
    if ('event' in m) { p.onEvent?.(m.event); return; }
    this.pending.delete(m.id as number);
    if (m.ok === true) p.resolve(m.result);
    else p.reject(ControlError.fromWire(m.error));
  }

  private fail(e: ControlError): void {
    if (!this.closedError) this.closedError = e;
    const all = [...this.pending.values()];
    this.pending.clear();
    for (const p of all) p.reject(e);
  }
}
