/**
 * The xl.cfg file syntax (libxlutil's libxlu_cfg_l.l and libxlu_cfg_y.y; the
 * xl.cfg(5) "SYNTAX" section): a series of `KEY = VALUE` settings separated by
 * newlines or `;`, where a VALUE is a quoted string, a number, or a list
 * `[ VALUE, VALUE, ... ]` (possibly nested, spanning lines, with a trailing
 * comma); `#` starts a comment that runs to the end of the line; `KEY += VALUE`
 * appends to an earlier setting of the same key.
 *
 * This module knows nothing about what keys mean (xlcfg.ts does). It is pure:
 * text in, settings out, every problem reported with its line and column.
 */

/** Where something is in a config source: 1-based line and column. */
export interface CfgPos {
  readonly line: number;
  readonly column: number;
}

/** One problem found in a config source. */
export interface CfgIssue extends CfgPos {
  readonly file: string;
  readonly message: string;
}

/** `file:line:column: message`, the form compilers use (Xen prints `file:line: ...`). */
export function formatIssue(i: CfgIssue): string {
  return `${i.file}:${i.line}:${i.column}: ${i.message}`;
}

/**
 * The one error type of the config parser: every issue found in the source,
 * in order. `line` and `file` are the first issue's.
 */
export class XlCfgError extends Error {
  readonly issues: readonly CfgIssue[];
  constructor(issues: readonly CfgIssue[]) {
    if (issues.length === 0) throw new Error('XlCfgError needs at least one issue');
    super(issues.map(formatIssue).join('\n'));
    this.name = 'XlCfgError';
    this.issues = issues;
  }
  get file(): string { return this.issues[0].file; }
  get line(): number { return this.issues[0].line; }
  get column(): number { return this.issues[0].column; }
}

/**
 * A value as written. Strings and numbers are both "atoms" as in libxlutil:
 * a number keeps its source text; which kind a key wants is the key's business.
 */
export type CfgValue =
  | { readonly kind: 'string'; readonly value: string; readonly pos: CfgPos }
  | { readonly kind: 'number'; readonly text: string; readonly pos: CfgPos }
  | { readonly kind: 'list'; readonly items: readonly CfgValue[]; readonly pos: CfgPos };

/** A key's final value, after every `=` and `+=` of it has been applied. */
export interface CfgSetting {
  readonly key: string;
  /** Where the key was last assigned with `=` (or first with `+=`). */
  readonly pos: CfgPos;
  readonly value: CfgValue;
}

// ---------------------------------------------------------------- lexer

type Tok =
  | { readonly t: 'ident'; readonly s: string; readonly pos: CfgPos }
  | { readonly t: 'number'; readonly s: string; readonly pos: CfgPos }
  | { readonly t: 'string'; readonly s: string; readonly pos: CfgPos }
  | { readonly t: '=' | '+=' | ',' | '[' | ']' | ';' | 'nl' | 'eof'; readonly pos: CfgPos };

/** The characters that made libxlutil guess the file was written as Python. */
const PYTHONISH = new Set(['+', '-', '.', '(', ')', ':']);

const SIMPLE_ESCAPES: Readonly<Record<string, string>> = {
  '"': '"', "'": "'", '\\': '\\', a: '\x07', b: '\b', f: '\f', n: '\n', r: '\r', t: '\t', v: '\v',
};

class Lexer {
  private i = 0;
  private line = 1;
  private lineStart = 0;

  constructor(private readonly src: string, private readonly report: (pos: CfgPos, msg: string) => void) {}

  private pos(at = this.i): CfgPos {
    return { line: this.line, column: at - this.lineStart + 1 };
  }

  private newline(): void {
    this.line++;
    this.lineStart = this.i;
  }

  next(): Tok {
    const s = this.src;
    for (;;) {
      if (this.i >= s.length) return { t: 'eof', pos: this.pos() };
      const c = s[this.i];
      if (c === ' ' || c === '\t') { this.i++; continue; }
      if (c === '#') {
        while (this.i < s.length && s[this.i] !== '\n') this.i++;
        continue;
      }
      if (c === '\r' && s[this.i + 1] === '\n') { this.i++; continue; }
      const pos = this.pos();
      if (c === '\n') {
        this.i++;
        this.newline();
        return { t: 'nl', pos };
      }
      if (/[A-Za-z_]/.test(c)) {
        let end = this.i + 1;
        while (end < s.length && /[A-Za-z0-9_]/.test(s[end])) end++;
        const id = s.slice(this.i, end);
        this.i = end;
        return { t: 'ident', s: id, pos };
      }
      if (/[0-9]/.test(c)) {
        // libxlutil: [0-9][0-9a-fx]*; we take any alphanumerics so that "12M"
        // is one bad number rather than a number and a stray identifier.
        let end = this.i + 1;
        while (end < s.length && /[0-9A-Za-z]/.test(s[end])) end++;
        const text = s.slice(this.i, end);
        this.i = end;
        return { t: 'number', s: text, pos };
      }
      if (c === '"' || c === "'") return this.string(c, pos);
      if (c === '+' && s[this.i + 1] === '=') { this.i += 2; return { t: '+=', pos }; }
      if (c === '=' || c === ',' || c === '[' || c === ']' || c === ';') {
        this.i++;
        return { t: c, pos };
      }
      // Anything else: report it, skip to the next blank or newline, go on.
      let end = this.i + 1;
      while (end < s.length && !/[ \t\r\n]/.test(s[end])) end++;
      const bad = s.slice(this.i, end);
      const hint = PYTHONISH.has(c) ? ' (xl.cfg is not Python: values are "strings", numbers or [ lists ])' : '';
      this.report(pos, `syntax error near ${quoteForMessage(bad)}${hint}`);
      this.i = end;
    }
  }

  /** A quoted string, with libxlutil's escapes; it may not contain a raw newline. */
  private string(q: string, pos: CfgPos): Tok {
    const s = this.src;
    let out = '';
    let i = this.i + 1;
    for (;;) {
      if (i >= s.length || s[i] === '\n' || (s[i] === '\r' && s[i + 1] === '\n')) {
        this.report(pos, `unterminated string (a string ends on the line it starts: close it with ${q})`);
        this.i = i;
        return { t: 'string', s: out, pos };
      }
      const c = s[i];
      if (c === q) {
        this.i = i + 1;
        return { t: 'string', s: out, pos };
      }
      if (c !== '\\') { out += c; i++; continue; }
      const e = s[i + 1];
      const epos = { line: this.line, column: i - this.lineStart + 1 };
      if (e === undefined || e === '\n') { i++; continue; }
      const simple = SIMPLE_ESCAPES[e];
      if (simple !== undefined) { out += simple; i += 2; continue; }
      if (e === 'x') {
        const hex = /^[0-9A-Fa-f]{2}/.exec(s.slice(i + 2, i + 4));
        if (!hex) {
          this.report(epos, 'invalid \\x escape in quoted string (expected two hex digits)');
          i += 2;
          continue;
        }
        out += String.fromCharCode(parseInt(hex[0], 16));
        i += 4;
        continue;
      }
      if (e >= '0' && e <= '7') {
        const oct = /^[0-7]{1,3}/.exec(s.slice(i + 1, i + 4)) as RegExpExecArray;
        const v = parseInt(oct[0], 8);
        if (v > 0xff) this.report(epos, `octal escape \\${oct[0]} in quoted string is above \\377`);
        out += String.fromCharCode(v & 0xff);
        i += 1 + oct[0].length;
        continue;
      }
      this.report(epos, `unknown escape \\${e} in quoted string`);
      i += 2;
    }
  }
}

/** Quote a piece of source for an error message, shortened and with control characters shown. */
export function quoteForMessage(s: string, max = 40): string {
  const cut = s.length > max ? s.slice(0, max) + '...' : s;
  return '`' + cut.replace(/[\x00-\x1f\x7f]/g, (ch) => `\\x${ch.charCodeAt(0).toString(16).padStart(2, '0')}`) + "'";
}

// ---------------------------------------------------------------- parser

/** Nested lists deeper than this are refused (no real key needs more than 2). */
const MAX_DEPTH = 16;

class Parser {
  private tok: Tok;
  readonly issues: CfgIssue[] = [];
  private readonly settings = new Map<string, CfgSetting>();

  constructor(private readonly file: string, src: string) {
    this.lex = new Lexer(src, (pos, msg) => this.error(pos, msg));
    this.tok = this.lex.next();
  }
  private readonly lex: Lexer;

  private error(pos: CfgPos, message: string): void {
    this.issues.push({ file: this.file, line: pos.line, column: pos.column, message });
  }

  private advance(): Tok {
    const t = this.tok;
    this.tok = this.lex.next();
    return t;
  }

  private skipNewlines(): void {
    while (this.tok.t === 'nl') this.advance();
  }

  /** After a syntax error: drop tokens up to the end of the statement, outside any list. */
  private recover(): void {
    let depth = 0;
    for (;;) {
      const t = this.tok.t;
      if (t === 'eof') return;
      if (t === '[') depth++;
      if (t === ']' && depth > 0) depth--;
      if ((t === 'nl' || t === ';') && depth === 0) return;
      this.advance();
    }
  }

  parse(): CfgSetting[] {
    for (;;) {
      const t = this.tok;
      if (t.t === 'eof') break;
      if (t.t === 'nl' || t.t === ';') { this.advance(); continue; }
      if (!this.statement()) this.recover();
    }
    return [...this.settings.values()];
  }

  /** `KEY = VALUE` or `KEY += VALUE`, then a newline, `;` or the end. False on a syntax error. */
  private statement(): boolean {
    const key = this.tok;
    if (key.t !== 'ident') {
      this.error(key.pos, `expected a key at the start of a setting, found ${describe(key)}`);
      return false;
    }
    this.advance();
    const op = this.tok;
    if (op.t !== '=' && op.t !== '+=') {
      this.error(op.pos, `expected = after ${quoteForMessage(key.s)}, found ${describe(op)}`);
      return false;
    }
    this.advance();
    const value = this.value(0);
    if (!value) return false;
    const end = this.tok;
    if (end.t !== 'nl' && end.t !== ';' && end.t !== 'eof') {
      this.error(end.pos, `expected a newline or ; after the value of ${quoteForMessage(key.s)}, found ${describe(end)}`);
      return false;
    }
    this.store(key.s, key.pos, op.t, value);
    return true;
  }

  private store(key: string, pos: CfgPos, op: '=' | '+=', value: CfgValue): void {
    const prev = this.settings.get(key);
    if (op === '=' || !prev) {
      // Xen: a later setting of the same key replaces the earlier one.
      this.settings.delete(key);
      this.settings.set(key, { key, pos, value });
      return;
    }
    const a = prev.value;
    if (a.kind === 'list' && value.kind === 'list') {
      this.settings.set(key, { key, pos: prev.pos, value: { kind: 'list', items: [...a.items, ...value.items], pos: a.pos } });
    } else if (a.kind !== 'list' && value.kind !== 'list') {
      const text = (v: CfgValue): string => (v.kind === 'string' ? v.value : v.kind === 'number' ? v.text : '');
      this.settings.set(key, { key, pos: prev.pos, value: { kind: 'string', value: text(a) + text(value), pos: a.pos } });
    } else {
      this.error(pos, `+= on ${quoteForMessage(key)} mixes a list and a single value (line ${prev.pos.line} set it to a ${a.kind === 'list' ? 'list' : 'single value'})`);
    }
  }

  private value(depth: number): CfgValue | null {
    const t = this.tok;
    if (t.t === 'string') { this.advance(); return { kind: 'string', value: t.s, pos: t.pos }; }
    if (t.t === 'number') { this.advance(); return { kind: 'number', text: t.s, pos: t.pos }; }
    if (t.t === '[') return this.list(depth + 1);
    if (t.t === 'ident') {
      this.error(t.pos, `expected a value, found the bare word ${quoteForMessage(t.s)} (strings need quotes: "${t.s}")`);
    } else {
      this.error(t.pos, `expected a value ("string", number or [ list ]), found ${describe(t)}`);
    }
    return null;
  }

  /** `[ VALUE, VALUE, ... ]`: newlines allowed anywhere inside, one trailing comma allowed. */
  private list(depth: number): CfgValue | null {
    const open = this.advance();
    if (depth > MAX_DEPTH) {
      this.error(open.pos, `lists nested more than ${MAX_DEPTH} deep`);
      return null;
    }
    const items: CfgValue[] = [];
    this.skipNewlines();
    for (;;) {
      const t = this.tok;
      if (t.t === ']') { this.advance(); return { kind: 'list', items, pos: open.pos }; }
      if (t.t === 'eof') {
        this.error(open.pos, 'unclosed [ (the list has no closing ])');
        return null;
      }
      const v = this.value(depth);
      if (!v) return null;
      items.push(v);
      this.skipNewlines();
      const sep = this.tok;
      if (sep.t === ',') { this.advance(); this.skipNewlines(); continue; }
      if (sep.t === ']') continue;
      this.error(sep.pos, sep.t === 'eof' ? 'unclosed [ (the list has no closing ])' : `expected , or ] in a list, found ${describe(sep)}`);
      return null;
    }
  }
}

function describe(t: Tok): string {
  switch (t.t) {
    case 'ident': return `the word ${quoteForMessage(t.s)}`;
    case 'number': return `the number ${quoteForMessage(t.s)}`;
    case 'string': return `the string ${quoteForMessage(JSON.stringify(t.s))}`;
    case 'nl': return 'the end of the line';
    case 'eof': return 'the end of the file';
    default: return quoteForMessage(t.t);
  }
}

/**
 * Parse config text into its settings, in order of (last) assignment.
 * Throws XlCfgError listing every syntax problem; never anything else.
 */
export function parseCfgSyntax(text: string, file = '<config>'): CfgSetting[] {
  const p = new Parser(file, text);
  const settings = p.parse();
  if (p.issues.length > 0) throw new XlCfgError(p.issues);
  return settings;
}

/**
 * A number in xl.cfg's forms (libxlutil's strtol with base 0): decimal,
 * octal with a leading 0, hexadecimal with 0x. Null if it is not one.
 */
export function parseCfgNumber(text: string): number | null {
  const t = text.trim();
  let v: number;
  if (/^0[xX][0-9A-Fa-f]+$/.test(t)) v = parseInt(t.slice(2), 16);
  else if (/^0[0-7]*$/.test(t)) v = t.length > 1 ? parseInt(t.slice(1), 8) : 0;
  else if (/^[1-9][0-9]*$/.test(t)) v = parseInt(t, 10);
  else return null;
  return Number.isSafeInteger(v) ? v : null;
}

/** A string literal that parses back to exactly `s` (double-quoted, escaped). */
export function quoteCfgString(s: string): string {
  let out = '"';
  for (const ch of s) {
    const code = ch.charCodeAt(0);
    if (ch === '"' || ch === '\\') out += '\\' + ch;
    else if (ch === '\n') out += '\\n';
    else if (ch === '\t') out += '\\t';
    else if (ch === '\r') out += '\\r';
    else if (code < 0x20 || code === 0x7f) out += '\\x' + code.toString(16).padStart(2, '0');
    else out += ch;
  }
  return out + '"';
}
