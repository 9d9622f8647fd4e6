/**
 * The control socket protocol between `xl` and the running host: pure
 * framing and message shapes, no I/O.
 *
 * Wire: a stream of frames, each a 4-byte big-endian length N (at most
 * MAX_FRAME_BYTES) then N bytes of MessagePack (msgpackr, plain maps: no
 * records, no extensions).
 *
 *   client -> server   { id, cmd, args }                   a request
 *                      { id, cmd: '$cancel' }              end stream `id`
 *                      { id, cmd: '$input', args: {data} } input for stream `id` (console)
 *   server -> client   { id, ok: true, result }            the final reply to request `id`
 *                      { id, ok: false, error }            ... or its failure
 *                      { id, event }                       one event of stream `id`, before its reply
 *
 * `id` is the client's (a positive safe integer, unique per connection). A
 * frame the server cannot decode gets `{ id: null, ok: false, error }` and the
 * connection goes on; a length above the limit closes the connection, as the
 * stream cannot be resynchronised.
 */
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Packr, Unpackr } from 'msgpackr';
import type { DiskSpec } from '../toolstack/disk.ts';
import type { DomainConfig } from '../toolstack/xlcfg.ts';
import type { ListLongEntry } from './format.ts';
import type {
  DomainStats, DomainSummary, DomainVcpus, HostInfo, SchedParams, SchedPoolParams, TopSample, VbdInfo, WatchEvent,
} from './types.ts';

export const PROTOCOL_VERSION = 1;
export const FRAME_HEADER_BYTES = 4;
/** The largest frame either side sends or accepts. */
export const MAX_FRAME_BYTES = 4 * 1024 * 1024;

// ---------------------------------------------------------------- errors

/**
 * A failure as it crosses the socket: what went wrong, a code (a Xen errno
 * name such as ESRCH, EINVAL, EEXIST, EPERM, or EPROTO / ENOTCONN / ECONNRESET
 * for the connection itself), and the domain it concerns, if any.
 */
export interface WireError {
  readonly message: string;
  readonly code: string;
  readonly domid?: number;
  /** The domain as the user named it (id or name). */
  readonly domain?: string;
}

/** The one error type of the control protocol, on both sides. */
export class ControlError extends Error {
  readonly code: string;
  readonly domid?: number;
  readonly domain?: string;
  constructor(code: string, message: string, who: { domid?: number; domain?: string } = {}) {
    super(message);
    this.name = 'ControlError';
    this.code = code;
    if (who.domid !== undefined) this.domid = who.domid;
    if (who.domain !== undefined) this.domain = who.domain;
  }

  toWire(): WireError {
    return {
      message: this.message, code: this.code,
      ...(this.domid !== undefined ? { domid: this.domid } : {}),
      ...(this.domain !== undefined ? { domain: this.domain } : {}),
    };
  }

  static fromWire(w: unknown): ControlError {
    const o = (typeof w === 'object' && w !== null ? w : {}) as Record<string, unknown>;
    return new ControlError(
      typeof o.code === 'string' ? o.code : 'EPROTO',
      typeof o.message === 'string' ? o.message : 'malformed error reply',
      {
        ...(Number.isSafeInteger(o.domid) ? { domid: o.domid as number } : {}),
        ...(typeof o.domain === 'string' ? { domain: o.domain } : {}),
      },
    );
  }
}

// ---------------------------------------------------------------- messages

export interface RequestFrame {
  readonly id: number;
  readonly cmd: string;
  readonly args?: Readonly<Record<string, unknown>>;
}

export type ReplyFrame =
  | { readonly id: number; readonly ok: true; readonly result: unknown }
  | { readonly id: number | null; readonly ok: false; readonly error: WireError };

export interface EventFrame {
  readonly id: number;
  readonly event: unknown;
}

export type ServerFrame = ReplyFrame | EventFrame;

/** A domain as the user wrote it on the command line: a domid or a name. */
export type DomainRef = string;

/** Request/reply commands: arguments and result of each. */
export interface ControlApi {
  hello: { args: Record<string, never>; result: { protocol: number } };
  list: { args: { domain?: DomainRef }; result: DomainSummary[] };
  'list-long': { args: { domain?: DomainRef }; result: { nrCpus: number; entries: ListLongEntry[] } };
  info: { args: Record<string, never>; result: HostInfo };
  create: { args: { config: DomainConfig; paused: boolean }; result: { domid: number; name: string } };
  destroy: { args: { domain: DomainRef }; result: { domid: number } };
  shutdown: { args: { domain: DomainRef }; result: { domid: number } };
  reboot: { args: { domain: DomainRef }; result: { domid: number } };
  pause: { args: { domain: DomainRef }; result: { domid: number } };
  unpause: { args: { domain: DomainRef }; result: { domid: number } };
  dmesg: { args: { clear: boolean }; result: { text: string } };
  'vcpu-list': { args: { domains: DomainRef[] }; result: { nrCpus: number; domains: DomainVcpus[] } };
  'mem-set': { args: { domain: DomainRef; memKiB: number }; result: { domid: number } };
  'mem-max': { args: { domain: DomainRef; memKiB: number }; result: { domid: number } };
  rename: { args: { domain: DomainRef; name: string }; result: { domid: number } };
  'sched-get': { args: { domain?: DomainRef }; result: { pool: SchedPoolParams; domains: Array<{ domid: number; name: string; params: SchedParams }> } };
  'sched-set': { args: { domain: DomainRef; weight?: number; cap?: number }; result: { domid: number } };
  top: { args: { vcpus: boolean }; result: TopSample };
  stats: { args: Record<string, never>; result: DomainStats[] };
  /** libxl_device_disk_add; the spec as xl parsed it, its target absolute. */
  'block-attach': { args: { domain: DomainRef; spec: DiskSpec }; result: { domid: number; devid: number } };
  /** `devid`: a vdev name (xvdb) or its number, as xl block-detach takes it. */
  'block-detach': { args: { domain: DomainRef; devid: string; force: boolean }; result: { domid: number; devid: number } };
  'block-list': { args: { domain: DomainRef }; result: { domid: number; devices: VbdInfo[] } };
  'xs-directory': { args: { path: string }; result: string[] };
  'xs-read': { args: { path: string }; result: Uint8Array };
  'xs-write': { args: { path: string; value: Uint8Array }; result: null };
  'xs-rm': { args: { path: string }; result: null };
  'xs-get-perms': { args: { path: string }; result: string[] };
}

/** Streaming commands: events arrive until the final reply (or the client cancels). */
export interface ControlStreams {
  'xs-watch': { args: { path: string; token: string }; event: WatchEvent; result: null };
  /** Console output bytes; input goes up with `$input`. Ends when the domain is gone. */
  console: { args: { domain: DomainRef }; event: Uint8Array; result: null };
}

export const CANCEL = '$cancel';
export const INPUT = '$input';

// ---------------------------------------------------------------- framing

const packr = new Packr({ useRecords: false, moreTypes: false, bundleStrings: false });
const unpackr = new Unpackr({ useRecords: false, moreTypes: false, bundleStrings: false, mapsAsObjects: true });

/** One frame: length prefix and MessagePack body. Throws ControlError(E2BIG) above the limit. */
export function encodeFrame(msg: unknown): Buffer {
  const body = packr.pack(msg);
  if (body.length > MAX_FRAME_BYTES) throw new ControlError('E2BIG', `message of ${body.length} bytes is above the ${MAX_FRAME_BYTES}-byte frame limit`);
  const out = Buffer.allocUnsafe(FRAME_HEADER_BYTES + body.length);
  out.writeUInt32BE(body.length, 0);
  body.copy(out, FRAME_HEADER_BYTES);
  return out;
}

/** A decoded frame, or a frame whose body was not valid MessagePack. */
export type DecodedFrame = { readonly ok: true; readonly value: unknown } | { readonly ok: false; readonly error: string };

/** Thrown by FrameDecoder when the stream cannot go on (a length above the limit). */
export class FrameError extends ControlError {
  constructor(message: string) {
    super('EPROTO', message);
    this.name = 'FrameError';
  }
}

/**
 * Reassembles frames from a byte stream delivered in arbitrary pieces. Keeps
 * at most one frame's bytes; rejects a length above `max` before buffering it.
 */
export class FrameDecoder {
  private chunks: Buffer[] = [];
  private buffered = 0;
  private need = -1;

  constructor(private readonly max = MAX_FRAME_BYTES) {}

  /** Bytes held for an incomplete frame. */
  get pending(): number { return this.buffered; }

  /** Feed bytes; returns every frame they complete. Throws FrameError on an oversized length. */
  push(chunk: Uint8Array): DecodedFrame[] {
    if (chunk.length > 0) {
      this.chunks.push(Buffer.from(chunk.buffer, chunk.byteOffset, chunk.byteLength));
      this.buffered += chunk.length;
    }
    const out: DecodedFrame[] = [];
    for (;;) {
      if (this.need < 0) {
        if (this.buffered < FRAME_HEADER_BYTES) return out;
        const len = this.take(FRAME_HEADER_BYTES).readUInt32BE(0);
        if (len > this.max) throw new FrameError(`frame of ${len} bytes is above the ${this.max}-byte limit`);
        this.need = len;
      }
      if (this.buffered < this.need) return out;
      const body = this.take(this.need);
      this.need = -1;
      out.push(decodeBody(body));
    }
  }

  private take(n: number): Buffer {
    const all = this.chunks.length === 1 ? this.chunks[0] : Buffer.concat(this.chunks, this.buffered);
    const head = Buffer.from(all.subarray(0, n));
    const rest = all.subarray(n);
    this.chunks = rest.length > 0 ? [rest] : [];
    this.buffered = rest.length;
    return head;
  }
}

function decodeBody(body: Buffer): DecodedFrame {
  if (body.length === 0) return { ok: false, error: 'empty frame' };
  try {
    return { ok: true, value: unpackr.unpack(body) };
  } catch (e) {
    return { ok: false, error: `bad MessagePack: ${e instanceof Error ? e.message : String(e)}` };
  }
}

// ---------------------------------------------------------------- where

/**
 * The control socket: $XENTS_CONTROL_PATH when set, else
 * `<tmpdir>/xents-<uid>/control.sock` (the directory the host creates, mode 0700).
 */
export function controlSocketPath(env: NodeJS.ProcessEnv = process.env): string {
  const p = env.XENTS_CONTROL_PATH;
  if (p !== undefined && p !== '') return p;
  const uid = typeof process.getuid === 'function' ? process.getuid() : 0;
  return join(tmpdir(), `xents-${uid}`, 'control.sock');
}
