import { closeSync, constants, existsSync, openSync, unlinkSync } from 'node:fs';
import { join } from 'node:path';

/** The reference's frozen-state marker name, so either agent recovers the other's freeze. */
export const MARKER_NAME = 'qga.state.isfrozen';

export function markerPath(statedir: string): string {
  return join(statedir, MARKER_NAME);
}

/**
 * The marker says "filesystems may be frozen": created before the first
 * FIFREEZE, removed after a full thaw. Only its existence matters; it is never
 * read or written, because I/O on a frozen filesystem can block.
 */
export class FrozenMarker {
  constructor(readonly path: string) {}

  /** Checked at start (a stat, which never blocks on a frozen filesystem). */
  exists(): boolean {
    return existsSync(this.path);
  }

  /** Empty, mode 0600, like the reference's ga_create_file (an existing one is kept as it is; libuv adds O_CLOEXEC). */
  create(): void {
    closeSync(openSync(this.path, constants.O_CREAT | constants.O_WRONLY, 0o600));
  }

  /** Removes it; a missing marker is not an error. */
  remove(): void {
    try {
      unlinkSync(this.path);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
    }
  }
}
