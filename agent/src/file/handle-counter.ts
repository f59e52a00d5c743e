import { closeSync, fsyncSync, openSync, readFileSync, renameSync, unlinkSync, writeSync } from 'node:fs';
import { randomBytes } from 'node:crypto';
import { basename, dirname, join } from 'node:path';
import { KeyFileError, parseKeyFile } from '../config/keyfile.js';
import { errorText } from '../errno.js';
import { INT64_MAX } from '../protocol/index.js';
import { QgaError } from '../qapi/errors.js';

/** The first handle when no state file exists, as in the reference ("so that handles don't conflict with file descriptors"). */
export const FIRST_HANDLE = 1000n;

/** The reference's text when the counter cannot be saved (qga/main.c ga_get_fd_handle). */
export const COMMIT_FAILED = 'failed to commit persistent state to disk';

/**
 * File handles come from a counter kept in STATEDIR/qga.state, in the
 * reference's GLib key-file format (`[global]` / `fd_counter=N`), so handles
 * are never reused, not even across restarts or between the two agents.
 *
 * Unlike the reference, which creates the file when it starts (and refuses to
 * start when it cannot), the file is read at the first guest-file-open and
 * written on every open: an agent with an unusable state directory still
 * freezes and thaws, and only file handles are refused.
 */
export class HandleCounter {
  private next: bigint | undefined;

  constructor(
    readonly path: string,
    private readonly onWarning: (message: string) => void = () => undefined,
  ) {}

  /**
   * The next handle. The counter is advanced and saved first; when saving
   * fails the number stays used up (as in the reference) and the call fails.
   */
  take(): bigint {
    this.next ??= this.load();
    const handle = this.next;
    if (handle >= INT64_MAX) throw new QgaError('file handle counter exhausted');
    this.next = handle + 1n;
    try {
      writeAtomically(this.path, `[global]\nfd_counter=${this.next}\n`);
    } catch (err) {
      this.onWarning(`failed to write persistent state to ${this.path}: ${errorText(err)}`);
      throw new QgaError(COMMIT_FAILED);
    }
    return handle;
  }

  /** The counter as saved (the reference's parse), FIRST_HANDLE when there is no file or no key. */
  private load(): bigint {
    let text: string;
    try {
      text = readFileSync(this.path, 'utf8');
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return FIRST_HANDLE;
      throw new QgaError(`failed to load persistent state from ${this.path}: ${errorText(err)}`);
    }
    let value: string | undefined;
    try {
      value = parseKeyFile(text).get('global')?.get('fd_counter');
    } catch (err) {
      if (!(err instanceof KeyFileError)) throw err;
      throw new QgaError(`failed to load persistent state from ${this.path}: ${err.message}`);
    }
    return value === undefined ? FIRST_HANDLE : parseCounter(value);
  }
}

/**
 * GLib's integer parse (strtol, base 10, then only whitespace may follow);
 * a value it cannot read counts as 0, as in the reference. The reference reads
 * a 32-bit int, so counters past 2^31 would restart at 0 there; here the whole
 * non-negative int64 range is kept, so handles stay unique.
 */
export function parseCounter(value: string): bigint {
  const m = /^\s*([+-]?\d+)(?:\s.*)?$/s.exec(value);
  if (!m) return 0n;
  const n = BigInt(m[1]!);
  return n < 0n || n > INT64_MAX ? 0n : n;
}

/** g_file_set_contents(): a temporary file in the same directory, synced, then renamed over the target. */
function writeAtomically(path: string, data: string): void {
  const tmp = join(dirname(path), `${basename(path)}.${randomBytes(4).toString('hex')}`);
  const fd = openSync(tmp, 'wx', 0o666);
  try {
    writeSync(fd, data);
    fsyncSync(fd);
  } catch (err) {
    closeSync(fd);
    unlinkQuietly(tmp);
    throw err;
  }
  closeSync(fd);
  try {
    renameSync(tmp, path);
  } catch (err) {
    unlinkQuietly(tmp);
    throw err;
  }
}

function unlinkQuietly(path: string): void {
  try {
    unlinkSync(path);
  } catch {
    // Already gone.
  }
}
