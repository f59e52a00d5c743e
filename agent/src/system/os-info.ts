import { readFileSync } from 'node:fs';
import { machine, release, version } from 'node:os';
import { cStringToText, type JsonOut } from '../protocol/index.js';

/** The os-release fields the reference reports, member name → key, in the schema's order. */
const FIELDS: readonly (readonly [string, string])[] = [
  ['id', 'ID'],
  ['name', 'NAME'],
  ['pretty-name', 'PRETTY_NAME'],
  ['version', 'VERSION'],
  ['version-id', 'VERSION_ID'],
  ['variant', 'VARIANT'],
  ['variant-id', 'VARIANT_ID'],
];

const ASCII_SPACE = new Set([0x20, 0x09, 0x0a, 0x0b, 0x0c, 0x0d]);

/**
 * GKeyFile's parser, as far as the reference uses it: the file is read as
 * "[os-release]\n" + content, and a line that is neither a comment, a group
 * nor a valid key=value makes the whole file unusable. Returns the raw
 * values of the os-release group (the last of a repeated key wins), or
 * undefined when GLib would refuse the file.
 */
export function parseKeyFile(content: Buffer): Map<string, Buffer> | undefined {
  const groups = new Map<string, Map<string, Buffer>>();
  let current: Map<string, Buffer> | undefined;
  let startGroup: string | undefined;
  let currentName: string | undefined;
  const text = Buffer.concat([Buffer.from('[os-release]\n'), content]);
  let from = 0;
  while (from < text.length) {
    let nl = text.indexOf(0x0a, from);
    if (nl < 0) nl = text.length;
    let line = text.subarray(from, nl);
    from = nl + 1;
    if (line.length > 0 && line[line.length - 1] === 0x0d && nl < text.length) line = line.subarray(0, -1);
    let start = 0;
    while (start < line.length && ASCII_SPACE.has(line[start]!)) start++;
    line = line.subarray(start);
    if (line.length === 0 || line[0] === 0x23) continue;
    if (isGroupLine(line)) {
      const name = line.subarray(1, line.indexOf(0x5d));
      if (!isGroupName(name)) return undefined;
      currentName = name.toString('utf8');
      startGroup ??= currentName;
      current = groups.get(currentName);
      if (!current) groups.set(currentName, (current = new Map()));
      continue;
    }
    const eq = line.indexOf(0x3d);
    // "=x" is no key-value pair; neither is a line without "=".
    if (eq <= 0) return undefined;
    let keyEnd = eq;
    while (keyEnd > 0 && ASCII_SPACE.has(line[keyEnd - 1]!)) keyEnd--;
    const key = line.subarray(0, keyEnd);
    if (!isKeyName(key)) return undefined;
    let valueStart = eq + 1;
    while (valueStart < line.length && ASCII_SPACE.has(line[valueStart]!)) valueStart++;
    const value = line.subarray(valueStart);
    const keyText = key.toString('utf8');
    if (currentName === startGroup && keyText === 'Encoding' && value.toString('latin1').toUpperCase() !== 'UTF-8') {
      return undefined;
    }
    current!.set(keyText, value);
  }
  return groups.get('os-release');
}

/** A "[name]" line, optionally followed by blanks and tabs only. */
function isGroupLine(line: Buffer): boolean {
  if (line[0] !== 0x5b) return false;
  const close = line.indexOf(0x5d);
  if (close < 0) return false;
  for (let i = close + 1; i < line.length; i++) if (line[i] !== 0x20 && line[i] !== 0x09) return false;
  return true;
}

function isGroupName(name: Buffer): boolean {
  if (name.length === 0) return false;
  for (const b of name) if (b === 0x5b || b === 0x5d || b < 0x20 || b === 0x7f) return false;
  return true;
}

/** GLib's key name rule: no "=", "[" or "]" except one trailing "[locale]", no space at either end. */
function isKeyName(key: Buffer): boolean {
  let q = 0;
  while (q < key.length && key[q] !== 0x3d && key[q] !== 0x5b && key[q] !== 0x5d) q++;
  if (q === 0) return false;
  if (key[0] === 0x20 || key[q - 1] === 0x20) return false;
  if (key[q] === 0x5b) {
    q++;
    const locale = key.subarray(q).toString('utf8');
    const m = /^[\p{L}\p{Nd}\-_.@]*/u.exec(locale)!;
    q += Buffer.byteLength(m[0]);
    if (key[q] !== 0x5d) return false;
    q++;
  }
  return q >= key.length;
}

/**
 * The reference's ga_osrelease_replace_special, on bytes: a value that does
 * not start with a double quote is cut at the first space, then at the first
 * ";" (a single-quoted value too: its test is a no-op); a double-quoted one
 * loses its quotes and the backslash before $ ' " \ `. An unterminated quote
 * leaves the tail as the in-place copy left it (its last byte twice).
 */
export function replaceSpecial(value: Buffer): Buffer {
  const v = Buffer.from(value);
  if (v[0] !== 0x22) {
    let end = v.indexOf(0x20);
    let cut = end < 0 ? v : v.subarray(0, end);
    end = cut.indexOf(0x3b);
    if (end >= 0) cut = cut.subarray(0, end);
    return cut;
  }
  const quote = v[0]!;
  let p2 = 0;
  let p = 1;
  while (p < v.length) {
    if (v[p] === 0x5c) {
      p++;
      const c = v[p];
      // $ ' " \ ` lose their backslash; anything else keeps it.
      if (!(c === 0x24 || c === 0x27 || c === 0x22 || c === 0x5c || c === 0x60)) p--;
    } else if (v[p] === quote) {
      return v.subarray(0, p2);
    }
    v[p2++] = v[p++]!;
  }
  return v;
}

/** The file's content when it is readable and valid UTF-8 up to its first NUL (g_utf8_validate with length -1). */
function readOsRelease(path: string): Map<string, Buffer> | undefined {
  let content: Buffer;
  try {
    content = readFileSync(path);
  } catch {
    return undefined;
  }
  const nul = content.indexOf(0);
  if (nul >= 0) content = content.subarray(0, nul);
  try {
    new TextDecoder('utf-8', { fatal: true }).decode(content);
  } catch {
    return undefined;
  }
  return parseKeyFile(content);
}

/**
 * guest-get-osinfo: uname's release, version and machine, and the
 * os-release fields from $QGA_OS_RELEASE, or /etc/os-release falling back
 * to /usr/lib/os-release. Fields the file lacks are left out.
 */
export function getOsInfo(env: NodeJS.ProcessEnv = process.env): JsonOut {
  const info: Record<string, JsonOut> = {
    'kernel-release': release(),
    'kernel-version': version(),
    machine: machine(),
  };
  const override = env['QGA_OS_RELEASE'];
  const keys =
    override !== undefined
      ? readOsRelease(override)
      : (readOsRelease('/etc/os-release') ?? readOsRelease('/usr/lib/os-release'));
  for (const [member, key] of FIELDS) {
    const raw = keys?.get(key);
    info[member] = raw === undefined ? undefined : cStringToText(replaceSpecial(raw));
  }
  return info;
}
