import { randomInt } from 'node:crypto';
import {
  closeSync,
  constants,
  fstatSync,
  fsyncSync,
  openSync,
  readSync,
  renameSync,
  unlinkSync,
  writeSync,
} from 'node:fs';
import { errorText } from '../errno.js';
import { cStringToText } from '../protocol/index.js';

/**
 * File names here are byte strings: one char per byte (latin1), because a
 * home directory from the user database is bytes, not necessarily UTF-8, and
 * must reach the file system unchanged.
 */
export type BytePath = string;

export const toBytes = (p: BytePath): Buffer => Buffer.from(p, 'latin1');
export const fromBytes = (b: Buffer): BytePath => b.toString('latin1');

/** A file name in a message: UTF-8, invalid bytes as U+FFFD (g_filename_display_name, and %s in the JSON writer). */
export const display = (p: BytePath): string => cStringToText(toBytes(p));

/** An error from the GLib-style helpers: the message is GLib's text. */
export class GFileError extends Error {
  override readonly name = 'GFileError';
}

/**
 * g_build_filename() on POSIX: at each boundary the separators are merged
 * into one, empty elements are skipped, the first element keeps its leading
 * separators and the last its trailing ones.
 */
export function buildFilename(...elements: BytePath[]): BytePath {
  let result = '';
  let isFirst = true;
  let haveLeading = false;
  let single: string | undefined;
  let lastTrailing: string | undefined;
  for (const element of elements) {
    if (element === '') continue;
    let start = 0;
    while (element[start] === '/') start++;
    let end = element.length;
    while (end >= start + 1 && element[end - 1] === '/') end--;
    let trailing = end;
    while (trailing >= 1 && element[trailing - 1] === '/') trailing--;
    lastTrailing = element.slice(trailing);
    if (!haveLeading) {
      // Only separators: the result is exactly this element, unless more follows.
      if (trailing <= start) single = element;
      result += element.slice(0, start);
      haveLeading = true;
    } else {
      single = undefined;
    }
    if (end === start) continue;
    if (!isFirst) result += '/';
    result += element.slice(start, end);
    isFirst = false;
  }
  if (single !== undefined) return single;
  return result + (lastTrailing ?? '');
}

function fail(format: (name: string) => string, path: BytePath, err: unknown): GFileError {
  return new GFileError(`${format(display(path))}: ${errorText(err)}`);
}

/**
 * g_file_get_contents(): a regular file of known size is read with read(),
 * anything else (an empty file, a directory, a pipe) through stdio, whose
 * failure has its own text.
 */
export function getContents(path: BytePath): Buffer {
  let fd: number;
  try {
    fd = openSync(toBytes(path), constants.O_RDONLY);
  } catch (err) {
    throw fail((n) => `Failed to open file “${n}”`, path, err);
  }
  try {
    let size: number;
    let regular: boolean;
    try {
      const st = fstatSync(fd);
      size = st.size;
      regular = st.isFile();
    } catch (err) {
      throw fail((n) => `Failed to get attributes of file “${n}”: fstat() failed`, path, err);
    }
    const stdio = !(size > 0 && regular);
    const chunks: Buffer[] = [];
    let total = 0;
    for (;;) {
      const want = stdio ? 4096 : size - total;
      if (want <= 0) break;
      const buf = Buffer.alloc(want);
      let n: number;
      try {
        n = readSync(fd, buf, 0, want, null);
      } catch (err) {
        if (stdio) throw fail((name) => `Error reading file “${name}”`, path, err);
        throw fail((name) => `Failed to read from file “${name}”`, path, err);
      }
      if (n === 0) break;
      chunks.push(buf.subarray(0, n));
      total += n;
    }
    return Buffer.concat(chunks);
  } finally {
    closeSync(fd);
  }
}

const TEMPLATE_CHARS = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789';

/**
 * g_file_set_contents(): the data goes to a new temporary file next to the
 * target ("NAME.XXXXXX"), which is then renamed over it, so a reader sees the
 * old or the new contents, never a mix. The temporary file is created 0600
 * (the reference's is 0666 less the umask until its caller's chmod).
 */
export function setContents(path: BytePath, data: Buffer): void {
  let tmp = '';
  let fd: number | undefined;
  let lastErr: unknown;
  for (let attempt = 0; attempt < 100 && fd === undefined; attempt++) {
    let suffix = '';
    for (let i = 0; i < 6; i++) suffix += TEMPLATE_CHARS[randomInt(TEMPLATE_CHARS.length)];
    tmp = `${path}.${suffix}`;
    try {
      fd = openSync(toBytes(tmp), constants.O_RDWR | constants.O_CREAT | constants.O_EXCL, 0o600);
    } catch (err) {
      lastErr = err;
      if ((err as NodeJS.ErrnoException).code !== 'EEXIST') break;
    }
  }
  if (fd === undefined) throw fail((n) => `Failed to create file “${n}”`, tmp, lastErr);
  try {
    try {
      for (let off = 0; off < data.length;) off += writeSync(fd, data, off, data.length - off);
    } catch (err) {
      throw fail((n) => `Failed to write file “${n}”: write() failed`, tmp, err);
    }
    try {
      fsyncSync(fd);
    } catch (err) {
      throw fail((n) => `Failed to write file “${n}”: fsync() failed`, tmp, err);
    }
  } catch (err) {
    closeSync(fd);
    unlinkQuietly(tmp);
    throw err;
  }
  closeSync(fd);
  try {
    renameSync(toBytes(tmp), toBytes(path));
  } catch (err) {
    unlinkQuietly(tmp);
    throw fail((n) => `Failed to rename file “${n}” to “${display(path)}”: g_rename() failed`, tmp, err);
  }
}

function unlinkQuietly(path: BytePath): void {
  try {
    unlinkSync(toBytes(path));
  } catch {
    // Nothing more to undo.
  }
}
