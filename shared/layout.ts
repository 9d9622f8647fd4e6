/**
 * Shared-memory and wire layouts, declared once as data (STYLE.md rule 1).
 *
 * A layout names a C struct, the header it comes from, its total size and each
 * field's offset and width. `defineLayout` checks the declaration when the module
 * loads (fields inside the struct, naturally aligned, no overlap unless the field
 * is marked as a union member); a broken declaration is a bug in our code and
 * throws. Readers and writers go through `StructView`, so no offset is ever
 * written twice; tests pin offsets and sizes against XEN-ABI-FACTS.md.
 *
 * u64 fields read as JS numbers. Values above 2^53 lose precision but stay above
 * every limit the hypervisor checks them against, so validation still rejects them;
 * use `getBig` where the exact 64-bit value matters.
 */

export type Scalar = 'u8' | 'i8' | 'u16' | 'i16' | 'u32' | 'i32' | 'u64' | 'i64';

const WIDTH: Readonly<Record<Scalar, number>> = {
  u8: 1, i8: 1, u16: 2, i16: 2, u32: 4, i32: 4, u64: 8, i64: 8,
};

export interface ScalarField {
  readonly kind: 'scalar';
  readonly type: Scalar;
  readonly offset: number;
  /** Member of a C union: may overlap other union members. */
  readonly union?: string;
}
export interface BytesField {
  readonly kind: 'bytes';
  readonly offset: number;
  readonly length: number;
  readonly union?: string;
}
export interface ArrayField {
  readonly kind: 'array';
  readonly type: Scalar;
  readonly offset: number;
  readonly count: number;
  readonly union?: string;
}
export type Field = ScalarField | BytesField | ArrayField;
export type Fields = Readonly<Record<string, Field>>;

export const u8 = (offset: number, union?: string): ScalarField => ({ kind: 'scalar', type: 'u8', offset, union });
export const i8 = (offset: number, union?: string): ScalarField => ({ kind: 'scalar', type: 'i8', offset, union });
export const u16 = (offset: number, union?: string): ScalarField => ({ kind: 'scalar', type: 'u16', offset, union });
export const i16 = (offset: number, union?: string): ScalarField => ({ kind: 'scalar', type: 'i16', offset, union });
export const u32 = (offset: number, union?: string): ScalarField => ({ kind: 'scalar', type: 'u32', offset, union });
export const i32 = (offset: number, union?: string): ScalarField => ({ kind: 'scalar', type: 'i32', offset, union });
export const u64 = (offset: number, union?: string): ScalarField => ({ kind: 'scalar', type: 'u64', offset, union });
export const i64 = (offset: number, union?: string): ScalarField => ({ kind: 'scalar', type: 'i64', offset, union });
export const bytes = (offset: number, length: number, union?: string): BytesField => ({ kind: 'bytes', offset, length, union });
export const array = (type: Scalar, offset: number, count: number, union?: string): ArrayField =>
  ({ kind: 'array', type, offset, count, union });

export interface Layout<F extends Fields = Fields> {
  /** The C name, e.g. "start_info_t". */
  readonly name: string;
  /** Where Xen declares it, e.g. "xen/include/public/xen.h". */
  readonly header: string;
  readonly size: number;
  readonly fields: F;
}

export function fieldWidth(f: Field): number {
  switch (f.kind) {
    case 'scalar': return WIDTH[f.type];
    case 'bytes': return f.length;
    case 'array': return WIDTH[f.type] * f.count;
  }
}

function alignOf(f: Field): number {
  switch (f.kind) {
    case 'scalar': return WIDTH[f.type];
    case 'bytes': return 1;
    case 'array': return WIDTH[f.type];
  }
}

/** Declare a layout; throws if the declaration itself is inconsistent. */
export function defineLayout<F extends Fields>(
  meta: { name: string; header: string; size: number },
  fields: F,
): Layout<F> {
  const spans: Array<{ name: string; start: number; end: number; union?: string }> = [];
  for (const [name, f] of Object.entries(fields)) {
    const w = fieldWidth(f);
    if (f.offset < 0 || f.offset + w > meta.size) {
      throw new Error(`layout ${meta.name}: field ${name} [${f.offset}, ${f.offset + w}) outside size ${meta.size}`);
    }
    if (f.offset % alignOf(f) !== 0) {
      throw new Error(`layout ${meta.name}: field ${name} at ${f.offset} is not ${alignOf(f)}-aligned`);
    }
    for (const s of spans) {
      const overlaps = f.offset < s.end && s.start < f.offset + w;
      const sameUnion = f.union !== undefined && f.union === s.union;
      if (overlaps && !sameUnion) {
        throw new Error(`layout ${meta.name}: field ${name} overlaps ${s.name}`);
      }
    }
    spans.push({ name, start: f.offset, end: f.offset + w, union: f.union });
  }
  return Object.freeze({ ...meta, fields: Object.freeze(fields) });
}

export function offsetOf<F extends Fields>(layout: Layout<F>, field: keyof F & string): number {
  return layout.fields[field].offset;
}

/** Index of a 32-bit field in an Int32Array/Uint32Array over the same buffer. */
export function wordIndex<F extends Fields>(layout: Layout<F>, field: keyof F & string, base = 0): number {
  const f = layout.fields[field];
  if (f.kind !== 'scalar' || WIDTH[f.type] !== 4 || (base + f.offset) % 4 !== 0) {
    throw new Error(`layout ${layout.name}: ${field} is not an aligned 32-bit field`);
  }
  return (base + f.offset) >> 2;
}

function readScalar(dv: DataView, at: number, type: Scalar): number {
  switch (type) {
    case 'u8': return dv.getUint8(at);
    case 'i8': return dv.getInt8(at);
    case 'u16': return dv.getUint16(at, true);
    case 'i16': return dv.getInt16(at, true);
    case 'u32': return dv.getUint32(at, true);
    case 'i32': return dv.getInt32(at, true);
    case 'u64': return Number(dv.getBigUint64(at, true));
    case 'i64': return Number(dv.getBigInt64(at, true));
  }
}

function writeScalar(dv: DataView, at: number, type: Scalar, v: number): void {
  switch (type) {
    case 'u8': dv.setUint8(at, v); return;
    case 'i8': dv.setInt8(at, v); return;
    case 'u16': dv.setUint16(at, v, true); return;
    case 'i16': dv.setInt16(at, v, true); return;
    case 'u32': dv.setUint32(at, v >>> 0, true); return;
    case 'i32': dv.setInt32(at, v | 0, true); return;
    case 'u64': dv.setBigUint64(at, BigInt.asUintN(64, BigInt(Math.trunc(v))), true); return;
    case 'i64': dv.setBigInt64(at, BigInt.asIntN(64, BigInt(Math.trunc(v))), true); return;
  }
}

type ScalarKeys<F extends Fields> = { [K in keyof F]: F[K] extends ScalarField ? K : never }[keyof F] & string;
type BytesKeys<F extends Fields> = { [K in keyof F]: F[K] extends BytesField ? K : never }[keyof F] & string;
type ArrayKeys<F extends Fields> = { [K in keyof F]: F[K] extends ArrayField ? K : never }[keyof F] & string;

/**
 * Typed accessors for one instance of a layout at `base` in a byte buffer. For
 * private copies (a struct copied out of guest memory) and for shared memory that
 * needs no atomicity; atomics go through Int32Array views and `wordIndex`.
 */
export class StructView<F extends Fields> {
  readonly dv: DataView;
  constructor(readonly layout: Layout<F>, buf: Uint8Array, readonly base = 0) {
    if (base < 0 || base + layout.size > buf.byteLength) {
      throw new Error(`StructView ${layout.name}: ${layout.size} bytes at ${base} exceed buffer of ${buf.byteLength}`);
    }
    this.dv = new DataView(buf.buffer, buf.byteOffset, buf.byteLength);
  }

  /** A zeroed private instance. */
  static alloc<F extends Fields>(layout: Layout<F>): StructView<F> {
    return new StructView(layout, new Uint8Array(layout.size));
  }

  get(field: ScalarKeys<F>): number {
    const f = this.layout.fields[field] as ScalarField;
    return readScalar(this.dv, this.base + f.offset, f.type);
  }

  set(field: ScalarKeys<F>, v: number): this {
    const f = this.layout.fields[field] as ScalarField;
    writeScalar(this.dv, this.base + f.offset, f.type, v);
    return this;
  }

  getBig(field: ScalarKeys<F>): bigint {
    const f = this.layout.fields[field] as ScalarField;
    const at = this.base + f.offset;
    if (f.type === 'u64') return this.dv.getBigUint64(at, true);
    if (f.type === 'i64') return this.dv.getBigInt64(at, true);
    return BigInt(readScalar(this.dv, at, f.type));
  }

  setBig(field: ScalarKeys<F>, v: bigint): this {
    const f = this.layout.fields[field] as ScalarField;
    const at = this.base + f.offset;
    if (f.type === 'u64') this.dv.setBigUint64(at, BigInt.asUintN(64, v), true);
    else if (f.type === 'i64') this.dv.setBigInt64(at, BigInt.asIntN(64, v), true);
    else writeScalar(this.dv, at, f.type, Number(v));
    return this;
  }

  /** A view (not a copy) of a bytes field. */
  bytes(field: BytesKeys<F>): Uint8Array {
    const f = this.layout.fields[field] as BytesField;
    return new Uint8Array(this.dv.buffer, this.dv.byteOffset + this.base + f.offset, f.length);
  }

  /** Write `src` into a bytes field, zero-filling the rest; returns bytes written. */
  setBytes(field: BytesKeys<F>, src: Uint8Array): number {
    const dst = this.bytes(field);
    const n = Math.min(src.length, dst.length);
    dst.fill(0);
    dst.set(src.subarray(0, n));
    return n;
  }

  /** A NUL-terminated string field. */
  getString(field: BytesKeys<F>): string {
    const b = this.bytes(field);
    const end = b.indexOf(0);
    return new TextDecoder().decode(end < 0 ? b : b.subarray(0, end));
  }

  /** Store a string NUL-terminated (truncated to fit with its NUL). */
  setString(field: BytesKeys<F>, s: string): this {
    const f = this.layout.fields[field] as BytesField;
    const enc = new TextEncoder().encode(s).subarray(0, f.length - 1);
    this.setBytes(field, enc);
    return this;
  }

  getAt(field: ArrayKeys<F>, i: number): number {
    const f = this.layout.fields[field] as ArrayField;
    if (i < 0 || i >= f.count) throw new Error(`${this.layout.name}.${field}[${i}] out of range`);
    return readScalar(this.dv, this.base + f.offset + i * WIDTH[f.type], f.type);
  }

  setAt(field: ArrayKeys<F>, i: number, v: number): this {
    const f = this.layout.fields[field] as ArrayField;
    if (i < 0 || i >= f.count) throw new Error(`${this.layout.name}.${field}[${i}] out of range`);
    writeScalar(this.dv, this.base + f.offset + i * WIDTH[f.type], f.type, v);
    return this;
  }

  /** The raw bytes of this instance (a view). */
  raw(): Uint8Array {
    return new Uint8Array(this.dv.buffer, this.dv.byteOffset + this.base, this.layout.size);
  }
}
