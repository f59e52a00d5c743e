import { QuiesceError } from '../errors.js';

/**
 * XDR (RFC 4506) as libvirt's RPC uses it: big-endian 4-byte units, strings
 * and opaques carry a length and are padded to 4 bytes, optional data
 * (`type *name`) is a 0/1 discriminant before the value. Written here rather
 * than taken from npm: the one maintained library (@stellar/js-xdr) wants a
 * schema DSL with its own value classes and, in its current major, Node 22;
 * libvirt needs a dozen primitives, and this file is all of them. No I/O.
 */

/** Bytes that are not the XDR they should be: a truncated or corrupt message. Nothing after it can be trusted. */
export class XdrError extends QuiesceError {
  constructor(message: string) {
    super('OUT_OF_SYNC', `XDR: ${message}`);
    this.name = 'XdrError';
  }
}

const pad = (n: number): number => (4 - (n % 4)) % 4;
const INT32_MIN = -0x8000_0000;
const INT32_MAX = 0x7fff_ffff;
const UINT32_MAX = 0xffff_ffff;
const UINT32_ANY = Number.MAX_SAFE_INTEGER;

/** Appends XDR values to a growing buffer. Out-of-range input is a caller's bug: RangeError. */
export class XdrWriter {
  private buf: Buffer;
  private len = 0;

  constructor(initialBytes = 256) {
    this.buf = Buffer.alloc(initialBytes);
  }

  /** Bytes written so far. */
  get length(): number {
    return this.len;
  }

  /** The encoded bytes (a copy: the writer may go on). */
  toBuffer(): Buffer {
    return Buffer.from(this.buf.subarray(0, this.len));
  }

  int(v: number): this {
    if (!Number.isInteger(v) || v < INT32_MIN || v > INT32_MAX) throw new RangeError(`XDR int out of range: ${v}`);
    this.reserve(4).writeInt32BE(v, this.len);
    this.len += 4;
    return this;
  }

  uint(v: number): this {
    if (!Number.isInteger(v) || v < 0 || v > UINT32_MAX) throw new RangeError(`XDR unsigned int out of range: ${v}`);
    this.reserve(4).writeUInt32BE(v, this.len);
    this.len += 4;
    return this;
  }

  hyper(v: bigint): this {
    if (BigInt.asIntN(64, v) !== v) throw new RangeError(`XDR hyper out of range: ${v}`);
    this.reserve(8).writeBigInt64BE(v, this.len);
    this.len += 8;
    return this;
  }

  uhyper(v: bigint): this {
    if (BigInt.asUintN(64, v) !== v) throw new RangeError(`XDR unsigned hyper out of range: ${v}`);
    this.reserve(8).writeBigUInt64BE(v, this.len);
    this.len += 8;
    return this;
  }

  bool(v: boolean): this {
    return this.int(v ? 1 : 0);
  }

  double(v: number): this {
    this.reserve(8).writeDoubleBE(v, this.len);
    this.len += 8;
    return this;
  }

  /** `opaque name[size]`: exactly `size` bytes, padded. */
  fixedOpaque(bytes: Uint8Array, size: number): this {
    if (bytes.length !== size) throw new RangeError(`XDR fixed opaque needs ${size} bytes, got ${bytes.length}`);
    return this.raw(bytes);
  }

  /** `opaque name<max>`: length, bytes, padding. */
  opaque(bytes: Uint8Array, max = UINT32_MAX): this {
    if (bytes.length > max) throw new RangeError(`XDR opaque of ${bytes.length} bytes exceeds its limit ${max}`);
    this.uint(bytes.length);
    return this.raw(bytes);
  }

  /** `string name<max>`, UTF-8 (the limit counts bytes, as libvirt's does). */
  string(s: string, max = UINT32_MAX): this {
    const bytes = Buffer.from(s, 'utf8');
    if (bytes.length > max) throw new RangeError(`XDR string of ${bytes.length} bytes exceeds its limit ${max}`);
    this.uint(bytes.length);
    return this.raw(bytes);
  }

  /** `type *name`: 0 for absent (undefined or null), else 1 and the value. */
  optional<T>(v: T | undefined | null, write: (w: XdrWriter, v: T) => void): this {
    if (v === undefined || v === null) return this.uint(0);
    this.uint(1);
    write(this, v);
    return this;
  }

  /** `type name<max>`: count, then each item. */
  array<T>(items: readonly T[], write: (w: XdrWriter, v: T) => void, max = UINT32_MAX): this {
    if (items.length > max) throw new RangeError(`XDR array of ${items.length} items exceeds its limit ${max}`);
    this.uint(items.length);
    for (const item of items) write(this, item);
    return this;
  }

  private raw(bytes: Uint8Array): this {
    const padded = bytes.length + pad(bytes.length);
    const buf = this.reserve(padded);
    buf.set(bytes, this.len);
    buf.fill(0, this.len + bytes.length, this.len + padded);
    this.len += padded;
    return this;
  }

  private reserve(n: number): Buffer {
    if (this.len + n <= this.buf.length) return this.buf;
    let size = this.buf.length * 2 || 256;
    while (size < this.len + n) size *= 2;
    const next = Buffer.alloc(size);
    this.buf.copy(next, 0, 0, this.len);
    this.buf = next;
    return next;
  }
}

/**
 * Reads XDR values from one buffer. Every length is checked against what is
 * left before anything is allocated, so a hostile length costs nothing; any
 * violation throws XdrError.
 */
export class XdrReader {
  private pos: number;

  constructor(
    private readonly buf: Buffer,
    offset = 0,
  ) {
    this.pos = offset;
  }

  /** Bytes not read yet. */
  get remaining(): number {
    return this.buf.length - this.pos;
  }

  get offset(): number {
    return this.pos;
  }

  int(): number {
    const v = this.need(4, 'int').readInt32BE(this.pos);
    this.pos += 4;
    return v;
  }

  uint(): number {
    const v = this.need(4, 'unsigned int').readUInt32BE(this.pos);
    this.pos += 4;
    return v;
  }

  hyper(): bigint {
    const v = this.need(8, 'hyper').readBigInt64BE(this.pos);
    this.pos += 8;
    return v;
  }

  uhyper(): bigint {
    const v = this.need(8, 'unsigned hyper').readBigUInt64BE(this.pos);
    this.pos += 8;
    return v;
  }

  bool(): boolean {
    const v = this.int();
    if (v !== 0 && v !== 1) throw new XdrError(`bool is ${v}, not 0 or 1`);
    return v === 1;
  }

  double(): number {
    const v = this.need(8, 'double').readDoubleBE(this.pos);
    this.pos += 8;
    return v;
  }

  /** `opaque name[size]` (a copy, so it outlives the packet buffer). */
  fixedOpaque(size: number): Buffer {
    return Buffer.from(this.raw(size, 'fixed opaque'));
  }

  /** `opaque name<max>`. */
  opaque(max = UINT32_ANY): Buffer {
    const n = this.length(max, 'opaque');
    return Buffer.from(this.raw(n, 'opaque'));
  }

  /** `string name<max>`, decoded as UTF-8. */
  string(max = UINT32_ANY): string {
    const n = this.length(max, 'string');
    return this.raw(n, 'string').toString('utf8');
  }

  /** `type *name`: undefined when absent. */
  optional<T>(read: (r: XdrReader) => T): T | undefined {
    const present = this.uint();
    if (present === 0) return undefined;
    if (present !== 1) throw new XdrError(`optional-data discriminant is ${present}, not 0 or 1`);
    return read(this);
  }

  /**
   * `type name<max>`. `minItemBytes` (default 4: no XDR item is smaller) turns
   * an absurd count into an error before any item is read.
   */
  array<T>(read: (r: XdrReader) => T, max = UINT32_ANY, minItemBytes = 4): T[] {
    const n = this.uint();
    if (n > max) throw new XdrError(`array of ${n} items exceeds its limit ${max}`);
    if (n * minItemBytes > this.remaining)
      throw new XdrError(`array of ${n} items cannot fit in the ${this.remaining} bytes left`);
    const out: T[] = [];
    for (let i = 0; i < n; i++) out.push(read(this));
    return out;
  }

  /** Fails unless every byte was read: a payload longer than its type is as wrong as a shorter one. */
  end(what = 'message'): void {
    if (this.remaining !== 0) throw new XdrError(`${this.remaining} unread bytes after the ${what}`);
  }

  private length(max: number, what: string): number {
    const n = this.uint();
    if (n > max) throw new XdrError(`${what} of ${n} bytes exceeds its limit ${max}`);
    return n;
  }

  private raw(n: number, what: string): Buffer {
    const padded = n + pad(n);
    this.need(padded, what);
    const out = this.buf.subarray(this.pos, this.pos + n);
    this.pos += padded;
    return out;
  }

  private need(n: number, what: string): Buffer {
    if (this.remaining < n)
      throw new XdrError(`truncated: ${what} needs ${n} bytes at offset ${this.pos}, ${this.remaining} left`);
    return this.buf;
  }
}
