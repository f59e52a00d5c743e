import { closeSync, constants, openSync, opendirSync, readSync, type Dir, type Dirent } from 'node:fs';
import { errorText } from '../errno.js';

/** An error carrying the errno name of the failure, for callers that branch on ENOENT like the reference. */
export class SysError extends Error {
  constructor(
    message: string,
    readonly code: string | undefined,
  ) {
    super(message);
    this.name = 'SysError';
  }
}

const codeOf = (err: unknown): string | undefined => (err as NodeJS.ErrnoException | undefined)?.code;

/** open(path, O_RDONLY | O_DIRECTORY) as a check: throws `open("<path>"): <strerror>`. */
export function checkDirectory(path: string): void {
  let fd: number;
  try {
    fd = openSync(path, constants.O_RDONLY | constants.O_DIRECTORY);
  } catch (err) {
    throw new SysError(`open("${path}"): ${errorText(err)}`, codeOf(err));
  }
  closeSync(fd);
}

/**
 * pread(fd, buf, size, 0) of one sysfs attribute. Throws with the
 * reference's texts: `<what>` names the file as the caller's message does.
 */
export function preadFile(path: string, size: number, openText: string, readText: string): Buffer {
  let fd: number;
  try {
    fd = openSync(path, constants.O_RDONLY);
  } catch (err) {
    throw new SysError(`${openText}: ${errorText(err)}`, codeOf(err));
  }
  try {
    const buf = Buffer.alloc(size);
    let n: number;
    try {
      n = readSync(fd, buf, 0, size, 0);
    } catch (err) {
      throw new SysError(`${readText}: ${errorText(err)}`, codeOf(err));
    }
    if (n === 0) throw new SysError(`${readText}: unexpected EOF`, undefined);
    return buf.subarray(0, n);
  } finally {
    closeSync(fd);
  }
}

/** d_type & DT_DIR, as the reference tests it: directories, and also block devices and sockets (bit 4 set). */
export function dtypeHasDirBit(e: Dirent): boolean {
  return e.isDirectory() || e.isBlockDevice() || e.isSocket();
}

/** The entries of a directory in readdir() order (the reference never sorts), "." and ".." left out. */
export function readdirRaw(dir: Dir): Dirent[] {
  const out: Dirent[] = [];
  try {
    for (let e = dir.readSync(); e !== null; e = dir.readSync()) out.push(e);
  } finally {
    dir.closeSync();
  }
  return out;
}

/** opendir(path) in readdir order; throws the Node error (its `code` tells ENOENT apart). */
export function listDirectory(path: string): Dirent[] {
  return readdirRaw(opendirSync(path));
}
