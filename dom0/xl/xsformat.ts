/**
 * The xenstore command-line tools' text forms (tools/xenstore/xenstore_client.c
 * and xenstore_lib.c): values quoted for the terminal (xs_sanitise_value),
 * unquoted from the command line (xs_unsanitise_value), and xenstore-ls's
 * tree lines (do_ls). Pure.
 */

/**
 * xs_sanitise_value: printable ASCII except backslash as is; \t \n \r \\;
 * bytes below 010 as \ooo; every other byte as \xHH.
 */
export function sanitiseValue(v: Uint8Array): string {
  let out = '';
  for (const c of v) {
    if (c >= 0x20 && c <= 0x7e && c !== 0x5c) { out += String.fromCharCode(c); continue; }
    if (c === 0x09) out += '\\t';
    else if (c === 0x0a) out += '\\n';
    else if (c === 0x0d) out += '\\r';
    else if (c === 0x5c) out += '\\\\';
    else if (c < 0o10) out += '\\' + c.toString(8).padStart(3, '0');
    else out += '\\x' + c.toString(16).padStart(2, '0');
  }
  return out;
}

/**
 * xs_unsanitise_value, on the UTF-8 bytes of `s`: \t \n \r \\, \xHH (one or
 * two hex digits), \ooo (one to three octal digits); a backslash before any
 * other character stands for that character.
 */
export function unsanitiseValue(s: string): Uint8Array {
  const inb = new TextEncoder().encode(s);
  const out: number[] = [];
  const isHex = (c: number | undefined): boolean => c !== undefined && /[0-9a-fA-F]/.test(String.fromCharCode(c));
  const isOct = (c: number | undefined): boolean => c !== undefined && c >= 0x30 && c <= 0x37;
  for (let i = 0; i < inb.length; i++) {
    const c = inb[i];
    if (c !== 0x5c) { out.push(c); continue; }
    const n = inb[++i];
    if (n === undefined) break;
    if (n === 0x74) out.push(0x09);
    else if (n === 0x6e) out.push(0x0a);
    else if (n === 0x72) out.push(0x0d);
    else if (n === 0x78) {
      let j = i + 1;
      let v = 0;
      while (j < inb.length && j < i + 3 && isHex(inb[j])) v = v * 16 + parseInt(String.fromCharCode(inb[j++]), 16);
      if (j === i + 1) { out.push(0x78); continue; }
      out.push(v);
      i = j - 1;
    } else if (isOct(n)) {
      let j = i;
      let v = 0;
      while (j < inb.length && j < i + 3 && isOct(inb[j])) v = v * 8 + (inb[j++] - 0x30);
      out.push(v & 0xff);
      i = j - 1;
    } else out.push(n);
  }
  return Uint8Array.from(out);
}

/** `TAG " = \"...\""`: the room do_ls keeps for a value. */
const TAG_LEN = ' = "..."'.length;

export interface LsOptions {
  /** -p: permissions after each value. */
  readonly perms: boolean;
  /** -f: full paths, values never cut. */
  readonly fullPath: boolean;
  /** The terminal's width minus 2, or 80 when stdout is not a terminal (do_ls's max_width). */
  readonly maxWidth: number;
}

/** One node for xenstore-ls. */
export interface LsNode {
  readonly path: string;
  readonly name: string;
  readonly depth: number;
  /** null when the value could not be read. */
  readonly value: Uint8Array | null;
  /** Xen's permission strings (n0, r1, b2 ...); null when they could not be read. */
  readonly perms: readonly string[] | null;
}

/** One line of xenstore-ls (do_ls), with its newline. */
export function formatLsLine(n: LsNode, o: LsOptions): string {
  const maxWidth = o.fullPath ? Math.floor(2147483647 / 2) : o.maxWidth;
  const desiredWidth = o.fullPath ? 0 : 60;
  let out = '';
  let linewid = 0;
  if (o.fullPath) {
    out += n.path;
  } else {
    out += ' '.repeat(n.depth);
    linewid = n.depth;
    const room = maxWidth - TAG_LEN - linewid;
    const name = room >= 0 ? n.name.slice(0, room) : n.name;
    out += name;
    linewid += name.length;
  }
  if (n.value === null) {
    out += ':\n';
  } else {
    const v = sanitiseValue(n.value);
    if (maxWidth < linewid + n.value.length + TAG_LEN) {
      const room = maxWidth - TAG_LEN - linewid;
      out += ` = "${room >= 0 ? v.slice(0, room) : v}\\..."`;
    } else {
      const part = ` = "${v}"`;
      out += part;
      linewid += part.length;
      if (o.perms) {
        out += ' ';
        for (linewid++; linewid < Math.min(desiredWidth, maxWidth); linewid++) out += linewid & 1 ? '.' : ' ';
      }
    }
  }
  if (o.perms) out += n.perms === null ? '' : `  (${n.perms.join(',')})`;
  return out + '\n';
}

/** xenstore-read's line: the sanitised value, prefixed with "path: " under -p. */
export function formatReadLine(path: string, value: Uint8Array, prefix: boolean): string {
  return `${prefix ? `${path}: ` : ''}${sanitiseValue(value)}\n`;
}
