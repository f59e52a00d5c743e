/**
 * QEMU's "modified UTF-8" rules: strict UTF-8 except that U+0000 is written as
 * C0 80, noncharacters and surrogates are invalid, and an invalid sequence ends
 * where the first unexpected byte is. Reproduced because they decide which
 * inputs are rejected and how stray bytes are echoed in error texts.
 */
const MIN_CP = [0x80, 0x800, 0x10000, 0x200000, 0x4000000];

export function isValidCodepoint(cp: number): boolean {
  if (cp < 0 || cp > 0x10ffff) return false;
  if ((cp >= 0xfdd0 && cp <= 0xfdef) || (cp & 0xfffe) === 0xfffe) return false;
  return !(cp >= 0xd800 && cp <= 0xdfff);
}

/**
 * Decodes one code point at `pos` (never past `end`). Returns the code point,
 * or -1 when invalid, and the position after the bytes consumed.
 */
export function decodeCodepoint(bytes: Uint8Array, pos: number, end: number): [number, number] {
  let p = pos;
  let byte = bytes[p++]!;
  if (byte < 0x80) return [byte, p];
  if (byte >= 0xfe || (byte & 0x40) === 0) return [-1, p];
  let len = 0;
  let mask = 0x80;
  for (; byte & mask; mask >>= 1) len++;
  let cp = byte & (mask - 1);
  for (let i = 1; i < len; i++) {
    byte = p < end ? bytes[p]! : 0;
    if ((byte & 0xc0) !== 0x80) return [-1, p];
    p++;
    cp = cp * 64 + (byte & 0x3f);
  }
  if (!isValidCodepoint(cp)) return [-1, p];
  if (cp < MIN_CP[len - 2]! && !(cp === 0 && len === 2)) return [-1, p];
  return [cp, p];
}

/**
 * Bytes (as the reference holds a C string) to a JS string: stops at the first
 * NUL like %s does, invalid sequences become U+FFFD.
 */
export function cStringToText(bytes: Uint8Array): string {
  let end = bytes.indexOf(0);
  if (end < 0) end = bytes.length;
  let out = '';
  let p = 0;
  while (p < end) {
    const [cp, next] = decodeCodepoint(bytes, p, end);
    out += String.fromCodePoint(cp < 0 ? 0xfffd : cp);
    p = next;
  }
  return out;
}

/** A JS string as the reference stores it: UTF-8 with U+0000 as C0 80. */
export function toModUtf8(text: string): Buffer {
  const buf = Buffer.from(text, 'utf8');
  if (!buf.includes(0)) return buf;
  const out: number[] = [];
  for (const b of buf) {
    if (b === 0) out.push(0xc0, 0x80);
    else out.push(b);
  }
  return Buffer.from(out);
}
