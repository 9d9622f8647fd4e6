/**
 * The XenStore wire format (xen/include/public/io/xs_wire.h; docs/misc/xenstore.txt,
 * "Communication with xenstore"): every message in either direction is a 16-byte
 * `struct xsd_sockmsg` header followed by `len` payload bytes, the same on the
 * ring page and on the UNIX socket.
 *
 * Pure: no I/O. Used by xenstored (dom0/xenstored) and by the guest xenbus client
 * (shared/xenbus) alike. Payload strings are NUL-terminated; values are binary
 * (`<value|>` in xenstore.txt) and never decoded here.
 */
import { defineLayout, u32 } from '../layout.ts';

/**
 * struct xsd_sockmsg (io/xs_wire.h):
 *   uint32_t type;    XS_???
 *   uint32_t req_id;  request identifier, echoed in the daemon's response
 *   uint32_t tx_id;   transaction id (0 if not related to a transaction)
 *   uint32_t len;     length of data following this
 */
export const XSD_SOCKMSG = defineLayout({ name: 'struct xsd_sockmsg', header: 'xen/include/public/io/xs_wire.h', size: 16 }, {
  type: u32(0),
  req_id: u32(4),
  tx_id: u32(8),
  len: u32(12),
});
export const XS_HEADER_SIZE = XSD_SOCKMSG.size;

/** "Violating this is very bad": a connection sending a longer payload is dropped. */
export const XENSTORE_PAYLOAD_MAX = 4096;
/** Paths longer than these get EINVAL. */
export const XENSTORE_ABS_PATH_MAX = 3072;
export const XENSTORE_REL_PATH_MAX = 2048;

/**
 * enum xsd_sockmsg_type, with Xen's explicit numbers. Never renumber. 20 was
 * XS_RESTRICT (removed from Xen); it decodes as "unknown" here.
 */
export const XS = {
  XS_CONTROL: 0,
  XS_DIRECTORY: 1,
  XS_READ: 2,
  XS_GET_PERMS: 3,
  XS_WATCH: 4,
  XS_UNWATCH: 5,
  XS_TRANSACTION_START: 6,
  XS_TRANSACTION_END: 7,
  XS_INTRODUCE: 8,
  XS_RELEASE: 9,
  XS_GET_DOMAIN_PATH: 10,
  XS_WRITE: 11,
  XS_MKDIR: 12,
  XS_RM: 13,
  XS_SET_PERMS: 14,
  XS_WATCH_EVENT: 15,
  XS_ERROR: 16,
  XS_IS_DOMAIN_INTRODUCED: 17,
  XS_RESUME: 18,
  XS_SET_TARGET: 19,
  XS_RESET_WATCHES: 21,
  XS_DIRECTORY_PART: 22,
} as const;
export type XsTypeName = keyof typeof XS;
/** XS_DEBUG is the old name of XS_CONTROL. */
export const XS_DEBUG = XS.XS_CONTROL;
/** "Guaranteed to remain an invalid type". */
export const XS_INVALID = 0xffff;

const TYPE_NAMES: ReadonlyMap<number, XsTypeName> = new Map(
  (Object.entries(XS) as Array<[XsTypeName, number]>).map(([k, v]) => [v, k]),
);

/** The XS_* name of a wire type; "unknown" for numbers Xen does not define. */
export function xsTypeName(type: number): XsTypeName | 'unknown' {
  return TYPE_NAMES.get(type) ?? 'unknown';
}

/**
 * The errno names xenstored may send in an XS_ERROR payload (struct xsd_errors
 * in io/xs_wire.h), with Linux's numbers (the socket and ring protocol carry the
 * name, never the number).
 */
export const XSD_ERRORS = {
  EINVAL: 22, EACCES: 13, EEXIST: 17, EISDIR: 21, ENOENT: 2, ENOMEM: 12, ENOSPC: 28, EIO: 5,
  ENOTEMPTY: 39, ENOSYS: 38, EROFS: 30, EBUSY: 16, EAGAIN: 11, EISCONN: 106, E2BIG: 7, EPERM: 1,
} as const;
export type XsErrno = keyof typeof XSD_ERRORS;

export function isXsErrno(s: string): s is XsErrno {
  return Object.prototype.hasOwnProperty.call(XSD_ERRORS, s);
}

/** One decoded message: a private copy of the header fields and payload. */
export interface XsMessage {
  readonly type: number;
  readonly reqId: number;
  readonly txId: number;
  readonly payload: Uint8Array;
}

export interface XsHeader {
  readonly type: number;
  readonly reqId: number;
  readonly txId: number;
  readonly len: number;
}

/** Decode the 16-byte header at `at` of `buf` (little-endian, as on x86 and Arm). */
export function decodeHeader(buf: Uint8Array, at = 0): XsHeader {
  const dv = new DataView(buf.buffer, buf.byteOffset + at, XS_HEADER_SIZE);
  return {
    type: dv.getUint32(XSD_SOCKMSG.fields.type.offset, true),
    reqId: dv.getUint32(XSD_SOCKMSG.fields.req_id.offset, true),
    txId: dv.getUint32(XSD_SOCKMSG.fields.tx_id.offset, true),
    len: dv.getUint32(XSD_SOCKMSG.fields.len.offset, true),
  };
}

/** Header plus payload as one buffer. Does not enforce the payload limit (see `checkedEncode`). */
export function encodeMessage(m: XsMessage): Uint8Array {
  const out = new Uint8Array(XS_HEADER_SIZE + m.payload.length);
  const dv = new DataView(out.buffer);
  dv.setUint32(XSD_SOCKMSG.fields.type.offset, m.type >>> 0, true);
  dv.setUint32(XSD_SOCKMSG.fields.req_id.offset, m.reqId >>> 0, true);
  dv.setUint32(XSD_SOCKMSG.fields.tx_id.offset, m.txId >>> 0, true);
  dv.setUint32(XSD_SOCKMSG.fields.len.offset, m.payload.length, true);
  out.set(m.payload, XS_HEADER_SIZE);
  return out;
}

// ---------------------------------------------------------------------------
// Incremental parser.

export type ParseResult =
  | { readonly kind: 'message'; readonly msg: XsMessage }
  | { readonly kind: 'incomplete' }
  /** Fatal for the connection (xenstore.txt: "its xenstored connection will be immediately killed"). */
  | { readonly kind: 'fatal'; readonly reason: 'oversized'; readonly len: number };

/**
 * Reassembles messages from a byte stream cut anywhere: `push` any fragments
 * (a byte at a time, or many messages at once), then `next` until it says
 * "incomplete". A header announcing more than `maxPayload` bytes is fatal and
 * sticky: the stream cannot be resynchronised. Buffered bytes never exceed what
 * was pushed and not yet consumed.
 */
export class XsParser {
  private buf = new Uint8Array(256);
  private start = 0;
  private end = 0;
  private fatal: ParseResult | undefined;

  constructor(readonly maxPayload = XENSTORE_PAYLOAD_MAX) {}

  /** Bytes pushed and not yet returned as messages. */
  get buffered(): number { return this.end - this.start; }
  get failed(): boolean { return this.fatal !== undefined; }

  push(chunk: Uint8Array): void {
    if (this.fatal || chunk.length === 0) return;
    if (this.end + chunk.length > this.buf.length) this.makeRoom(chunk.length);
    this.buf.set(chunk, this.end);
    this.end += chunk.length;
  }

  next(): ParseResult {
    if (this.fatal) return this.fatal;
    const avail = this.end - this.start;
    if (avail < XS_HEADER_SIZE) return INCOMPLETE;
    const h = decodeHeader(this.buf, this.start);
    if (h.len > this.maxPayload) {
      this.fatal = { kind: 'fatal', reason: 'oversized', len: h.len };
      this.start = this.end = 0;
      return this.fatal;
    }
    if (avail < XS_HEADER_SIZE + h.len) return INCOMPLETE;
    const at = this.start + XS_HEADER_SIZE;
    const payload = this.buf.slice(at, at + h.len);
    this.start = at + h.len;
    if (this.start === this.end) this.start = this.end = 0;
    return { kind: 'message', msg: { type: h.type, reqId: h.reqId, txId: h.txId, payload } };
  }

  private makeRoom(extra: number): void {
    const live = this.end - this.start;
    const need = live + extra;
    if (need <= this.buf.length) {
      this.buf.copyWithin(0, this.start, this.end);
    } else {
      let cap = this.buf.length;
      while (cap < need) cap *= 2;
      const nb = new Uint8Array(cap);
      nb.set(this.buf.subarray(this.start, this.end));
      this.buf = nb;
    }
    this.start = 0;
    this.end = live;
  }
}
const INCOMPLETE: ParseResult = Object.freeze({ kind: 'incomplete' });

// ---------------------------------------------------------------------------
// Payload helpers.

const enc = new TextEncoder();
const strictDec = new TextDecoder('utf-8', { fatal: true });

/**
 * Split a payload into its NUL-terminated strings (as C xenstored's
 * get_strings): `strings` are the terminated ones, without their NULs; `rest` is
 * whatever follows the last NUL (empty when the payload ends with a NUL).
 */
export function splitStrings(payload: Uint8Array): { strings: Uint8Array[]; rest: Uint8Array } {
  const strings: Uint8Array[] = [];
  let from = 0;
  for (;;) {
    const nul = payload.indexOf(0, from);
    if (nul < 0) break;
    strings.push(payload.subarray(from, nul));
    from = nul + 1;
  }
  return { strings, rest: payload.subarray(from) };
}

/** UTF-8 decode that refuses malformed input: undefined for bad UTF-8. */
export function decodeUtf8(bytes: Uint8Array): string | undefined {
  try {
    return strictDec.decode(bytes);
  } catch {
    return undefined;
  }
}

/** Strings in `payload`, each decoded with checked UTF-8; undefined if any is malformed. */
export function decodeStrings(payload: Uint8Array): { strings: string[]; rest: Uint8Array } | undefined {
  const { strings, rest } = splitStrings(payload);
  const out: string[] = [];
  for (const s of strings) {
    const d = decodeUtf8(s);
    if (d === undefined) return undefined;
    out.push(d);
  }
  return { strings: out, rest };
}

/** The payload "<a>|<b>|...": each part followed by a NUL. Bytes are copied as they are. */
export function encodeStrings(parts: ReadonlyArray<string | Uint8Array>): Uint8Array {
  const bytes = parts.map((p) => (typeof p === 'string' ? enc.encode(p) : p));
  const out = new Uint8Array(bytes.reduce((n, b) => n + b.length + 1, 0));
  let at = 0;
  for (const b of bytes) {
    out.set(b, at);
    at += b.length + 1;
  }
  return out;
}

/** Concatenate byte arrays without separators (e.g. "<path>|" + "<value|>"). */
export function concatBytes(parts: ReadonlyArray<Uint8Array>): Uint8Array {
  const out = new Uint8Array(parts.reduce((n, b) => n + b.length, 0));
  let at = 0;
  for (const b of parts) {
    out.set(b, at);
    at += b.length;
  }
  return out;
}

export function utf8(s: string): Uint8Array { return enc.encode(s); }

/** "OK\0": the payload of a plain success reply. */
export const OK_PAYLOAD: Uint8Array = encodeStrings(['OK']);

/** XS_ERROR payload: the errno name and a NUL ("ENOENT\0"). */
export function errorPayload(e: XsErrno): Uint8Array {
  return encodeStrings([e]);
}

/** The errno name of an XS_ERROR payload; "unknown" for anything else. */
export function parseErrorPayload(payload: Uint8Array): XsErrno | 'unknown' {
  const { strings } = splitStrings(payload);
  const name = strings.length === 1 && payload[payload.length - 1] === 0 ? decodeUtf8(strings[0]) : undefined;
  return name !== undefined && isXsErrno(name) ? name : 'unknown';
}

/** A reply to `req`: same req_id and tx_id (xenstore.txt: "identical type, req_id and tx_id"). */
export function replyTo(req: Pick<XsMessage, 'reqId' | 'txId'>, type: number, payload: Uint8Array): XsMessage {
  return { type, reqId: req.reqId, txId: req.txId, payload };
}

/** An XS_ERROR reply: only req_id and tx_id are copied from the request. */
export function errorReply(req: Pick<XsMessage, 'reqId' | 'txId'>, e: XsErrno): XsMessage {
  return replyTo(req, XS.XS_ERROR, errorPayload(e));
}

/** WATCH_EVENT "<epath>|<token>|", req_id = tx_id = 0. */
export function watchEvent(path: string, token: Uint8Array | string): XsMessage {
  return { type: XS.XS_WATCH_EVENT, reqId: 0, txId: 0, payload: encodeStrings([path, token]) };
}
