/**
 * The few libc number and field parsers the reference runs over /proc and
 * /sys text, with their C semantics (partial matches, wrap-around, EOF), so
 * odd input gives the same numbers as qemu-ga's.
 */

const U64 = 1n << 64n;
const U32 = 1n << 32n;
const LONG_MAX = (1n << 63n) - 1n;
const LONG_MIN = -(1n << 63n);

const isSpace = (c: string | undefined): boolean =>
  c === ' ' || c === '\t' || c === '\n' || c === '\v' || c === '\f' || c === '\r';

function digitValue(c: string | undefined, base: number): number {
  if (c === undefined) return -1;
  const v = parseInt(c, 36);
  return Number.isNaN(v) || v >= base ? -1 : v;
}

/** Where a strtol-family parse stopped and what it read (sign applied, not yet clamped). */
interface Parsed {
  readonly value: bigint;
  readonly end: number;
  readonly digits: boolean;
}

function parseInteger(s: string, from: number, base: 10 | 16): Parsed {
  let i = from;
  while (isSpace(s[i])) i++;
  let negative = false;
  if (s[i] === '+' || s[i] === '-') {
    negative = s[i] === '-';
    i++;
  }
  if (base === 16 && s[i] === '0' && (s[i + 1] === 'x' || s[i + 1] === 'X') && digitValue(s[i + 2], 16) >= 0) i += 2;
  let value = 0n;
  const start = i;
  for (let d = digitValue(s[i], base); d >= 0; d = digitValue(s[i], base)) {
    // Past 2^64 the exact value no longer matters: the callers clamp.
    if (value < U64 * 2n) value = value * BigInt(base) + BigInt(d);
    i++;
  }
  if (i === start) return { value: 0n, end: from, digits: false };
  return { value: negative ? -value : value, end: i, digits: true };
}

/** strtoul(s, NULL, 10) on LP64: ULONG_MAX on overflow, a negative number wraps. */
export function strtoul(s: string, base: 10 | 16 = 10): bigint {
  const { value } = parseInteger(s, 0, base);
  return toUlong(value);
}

function toUlong(value: bigint): bigint {
  const magnitude = value < 0n ? -value : value;
  if (magnitude >= U64) return U64 - 1n;
  return value < 0n ? (U64 - magnitude) % U64 : value;
}

/** strtol(s, NULL, base) on LP64: clamped to LONG_MIN..LONG_MAX. */
export function strtol(s: string, base: 10 | 16 = 10): bigint {
  const { value } = parseInteger(s, 0, base);
  if (value > LONG_MAX) return LONG_MAX;
  if (value < LONG_MIN) return LONG_MIN;
  return value;
}

/** atoi(s): strtol truncated to a C int. */
export function atoi(s: string): number {
  return Number(BigInt.asIntN(32, strtol(s)));
}

/** One sscanf conversion: %s, %u (unsigned int) or %lu (unsigned long). */
export type Conversion = 's' | 'u' | 'lu';

/**
 * sscanf(line, "%s %lu …") for formats made only of conversions and
 * blanks: returns how many conversions were assigned (-1, EOF, when the
 * input ends before the first one) and their values (strings, or bigints
 * reduced as glibc stores them: %u to 32 bits, %lu to 64).
 */
export function scan(line: string, format: readonly Conversion[]): { count: number; values: (string | bigint)[] } {
  const values: (string | bigint)[] = [];
  let i = 0;
  for (const conv of format) {
    while (isSpace(line[i])) i++;
    if (i >= line.length) return { count: values.length === 0 ? -1 : values.length, values };
    if (conv === 's') {
      const start = i;
      while (i < line.length && !isSpace(line[i])) i++;
      values.push(line.slice(start, i));
      continue;
    }
    const parsed = parseInteger(line, i, 10);
    if (!parsed.digits) break;
    i = parsed.end;
    const ul = toUlong(parsed.value);
    values.push(conv === 'u' ? ul % U32 : ul);
  }
  return { count: values.length, values };
}

/** Lines as getline() returns them (the last one even without a newline). */
export function lines(text: string): string[] {
  const out = text.split('\n');
  if (out.at(-1) === '') out.pop();
  return out;
}
