import { closeSync } from 'node:fs';
import { errorText } from '../errno.js';
import { QgaError } from '../qapi/errors.js';
import { GuestFile, openDescriptor } from './guest-file.js';
import type { HandleCounter } from './handle-counter.js';
import { parseOpenMode } from './open-mode.js';

/**
 * At most this many guest files are open at once. The reference has no limit
 * of its own and runs into the process's descriptor limit instead, which then
 * also breaks everything else the agent opens (the freeze marker, hooks, log).
 */
export const MAX_OPEN_FILES = 1024;

/** The open guest files by handle. */
export class FileTable {
  private readonly files = new Map<bigint, GuestFile>();

  constructor(
    private readonly counter: HandleCounter,
    readonly limit = MAX_OPEN_FILES,
  ) {}

  get size(): number {
    return this.files.size;
  }

  /** guest-file-open: mode check, the cap, open, then a handle (the file is closed again if none can be had). */
  open(path: string, modeText: string): bigint {
    const mode = parseOpenMode(modeText);
    if (this.files.size >= this.limit) {
      throw new QgaError(
        `failed to open file '${path}' (mode: '${modeText}'): too many open handles (at most ${this.limit}; close some with guest-file-close)`,
      );
    }
    const { fd, pathBytes } = openDescriptor(path, mode);
    let file: GuestFile;
    try {
      const handle = this.counter.take();
      file = GuestFile.describe(handle, fd, mode, pathBytes);
    } catch (err) {
      closeSync(fd);
      throw err;
    }
    this.files.set(file.handle, file);
    return file.handle;
  }

  /** The file for a handle, or the reference's error. */
  get(handle: bigint): GuestFile {
    const file = this.files.get(handle);
    if (!file) throw new QgaError(`handle '${handle}' has not been found`);
    return file;
  }

  /** guest-file-close. The handle is gone even when close(2) reports an error (the descriptor is released either way). */
  close(handle: bigint): void {
    const file = this.get(handle);
    this.files.delete(handle);
    try {
      file.close();
    } catch (err) {
      throw new QgaError(`failed to close handle: ${errorText(err)}`);
    }
  }

  /** Closes everything (the agent is stopping). */
  closeAll(): void {
    for (const file of this.files.values()) {
      try {
        file.close();
      } catch {
        // Nothing to report to at exit.
      }
    }
    this.files.clear();
  }
}
