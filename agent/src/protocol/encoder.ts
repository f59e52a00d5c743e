import { qdictOrder } from './dict-order.js';
import { QNum, type QObject } from './qobject.js';

/**
 * Values the encoder writes: parsed QObjects (echoed ids) and plain results
 * from commands. Plain objects keep their key order as QAPI's output visitor
 * would insert members; `undefined` members are absent optional members.
 */
export type JsonOut = QObject | number | bigint | undefined | JsonOut[] | { readonly [key: string]: JsonOut };

/** Writes a value exactly as the reference's JSON writer does. */
export function encode(value: JsonOut): string {
  if (value === null) return 'null';
  switch (typeof value) {
    case 'boolean':
      return value ? 'true' : 'false';
    case 'string':
      return quote(value);
    case 'bigint':
      return value.toString();
    case 'number':
      if (!Number.isInteger(value) || Object.is(value, -0)) return formatDouble(value);
      // Beyond 2^53 String() switches to exponent notation; BigInt writes every digit.
      return Number.isSafeInteger(value) ? String(value) : BigInt(value).toString();
    case 'undefined':
      return 'null';
  }
  if (value instanceof QNum) {
    return value.kind === 'double' ? formatDouble(value.value as number) : value.value.toString();
  }
  if (Array.isArray(value)) {
    return `[${value.map((v: JsonOut) => encode(v)).join(', ')}]`;
  }
  if (value instanceof Map) {
    const map = value as ReadonlyMap<string, JsonOut>;
    return `{${qdictOrder([...map.keys()])
      .map((k) => `${quote(k)}: ${encode(map.get(k))}`)
      .join(', ')}}`;
  }
  const obj = value as { readonly [key: string]: JsonOut };
  const keys = Object.keys(obj).filter((k) => obj[k] !== undefined);
  return `{${qdictOrder(keys)
    .map((k) => `${quote(k)}: ${encode(obj[k])}`)
    .join(', ')}}`;
}

const PLAIN = /^[\x20\x21\x23-\x5b\x5d-\x7e]*$/;

/** A JSON string with everything outside printable ASCII escaped as \uXXXX (uppercase). */
export function quote(text: string): string {
  if (PLAIN.test(text)) return `"${text}"`;
  let out = '"';
  for (const ch of text) {
    let cp = ch.codePointAt(0)!;
    switch (ch) {
      case '"':
        out += '\\"';
        continue;
      case '\\':
        out += '\\\\';
        continue;
      case '\b':
        out += '\\b';
        continue;
      case '\f':
        out += '\\f';
        continue;
      case '\n':
        out += '\\n';
        continue;
      case '\r':
        out += '\\r';
        continue;
      case '\t':
        out += '\\t';
        continue;
    }
    if (cp >= 0xd800 && cp <= 0xdfff) cp = 0xfffd; // a lone surrogate is not a character
    if (cp > 0xffff) {
      out += `\\u${hex4(0xd800 + ((cp - 0x10000) >> 10))}\\u${hex4(0xdc00 + ((cp - 0x10000) & 0x3ff))}`;
    } else if (cp < 0x20 || cp >= 0x7f) {
      out += `\\u${hex4(cp)}`;
    } else {
      out += ch;
    }
  }
  return `${out}"`;
}

function hex4(n: number): string {
  return n.toString(16).toUpperCase().padStart(4, '0');
}

/** C's printf("%.17g"), which the reference uses for doubles (so inf and nan can appear). */
export function formatDouble(x: number): string {
  if (Number.isNaN(x)) return 'nan';
  if (!Number.isFinite(x)) return x < 0 ? '-inf' : 'inf';
  if (x === 0) return Object.is(x, -0) ? '-0' : '0';
  const [mantissa, expText] = x.toExponential(16).split('e') as [string, string];
  const exp = Number(expText);
  if (exp < -4 || exp >= 17) {
    const m = stripZeros(mantissa);
    const sign = exp < 0 ? '-' : '+';
    return `${m}e${sign}${String(Math.abs(exp)).padStart(2, '0')}`;
  }
  return stripZeros(x.toFixed(16 - exp));
}

function stripZeros(s: string): string {
  return s.includes('.') ? s.replace(/\.?0+$/, '') : s;
}
