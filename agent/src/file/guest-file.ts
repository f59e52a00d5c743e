import {
  closeSync,
  constants,
  fchmodSync,
  fstatSync,
  openSync,
  readFileSync,
  readSync,
  statfsSync,
  unlinkSync,
  writeSync,
} from 'node:fs';
import { isatty } from 'node:tty';
import { errorText, strerror } from '../errno.js';
import { INT64_MAX } from '../protocol/index.js';
import { toModUtf8 } from '../protocol/utf8.js';
import { QgaError } from '../qapi/errors.js';
import type { OpenMode } from './open-mode.js';

/**
 * How a descriptor behaves for positions: regular files, directories and block
 * devices are seekable; pipes, sockets and terminals are streams (seeking
 * fails with ESPIPE); other character devices keep their own position.
 */
export type FileKind = 'regular' | 'directory' | 'block' | 'char' | 'stream';

export type Whence = 0 | 1 | 2;

const EXT4_SUPER_MAGIC = 0xef53;
const TMPFS_MAGIC = 0x01021994;
const EMPTY = Buffer.alloc(0);

/**
 * Opens like the reference's safe_open_or_create(): a file that may be created
 * is first created exclusively (mode 0) and then given mode 0666 whatever the
 * umask; if it already exists it is opened without O_CREAT and keeps its mode.
 */
export function openDescriptor(path: string, mode: OpenMode): { fd: number; pathBytes: Buffer } {
  // The reference holds paths as modified UTF-8 C strings: U+0000 is C0 80, never a terminator.
  const pathBytes = toModUtf8(path);
  const failed = (err: unknown): QgaError =>
    new QgaError(`failed to open file '${path}' (mode: '${mode.text}'): ${errorText(err)}`);
  let fd: number;
  let created = false;
  try {
    if (mode.create) {
      try {
        fd = openSync(pathBytes, mode.flags | constants.O_EXCL, 0);
        created = true;
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
        fd = openSync(pathBytes, mode.flags & ~constants.O_CREAT);
      }
    } else {
      fd = openSync(pathBytes, mode.flags);
    }
  } catch (err) {
    throw failed(err);
  }
  if (created) {
    try {
      fchmodSync(fd, 0o666);
    } catch (err) {
      closeSync(fd);
      try {
        unlinkSync(pathBytes);
      } catch {
        // Nothing more to undo.
      }
      throw new QgaError(
        `failed to set permission 0666 on new file '${path}' (mode: '${mode.text}'): ${errorText(err)}`,
      );
    }
  }
  return { fd, pathBytes };
}

/**
 * One open guest file. The reference wraps the descriptor in a stdio FILE and
 * its replies follow stdio's rules; this class reproduces what a client can
 * observe of them without a userspace buffer: data reaches the kernel at once,
 * so guest-file-flush has nothing left to do and an error is reported by the
 * write that caused it. Positions are kept here (Node has no lseek) and I/O on
 * seekable files is positional; streams and character devices use the
 * descriptor's own position.
 */
export class GuestFile {
  private position = 0n;
  /** The reference's RW_STATE: switching between reading and writing goes through a flush or a seek. */
  private state: 'new' | 'reading' | 'writing' = 'new';
  private readonly positional: boolean;

  constructor(
    readonly handle: bigint,
    readonly fd: number,
    readonly mode: OpenMode,
    private readonly kind: FileKind,
    /** The largest position the filesystem allows (the kernel's s_maxbytes). */
    private readonly maxBytes: bigint,
    /** The position SEEK_END starts from; throws the errno text when the kernel refuses. */
    private readonly end: () => bigint,
  ) {
    this.positional = kind === 'regular' || kind === 'directory' || kind === 'block';
  }

  static describe(handle: bigint, fd: number, mode: OpenMode, pathBytes: Buffer): GuestFile {
    const st = fstatSync(fd, { bigint: true });
    let kind: FileKind = 'regular';
    if (st.isFIFO() || st.isSocket()) kind = 'stream';
    else if (st.isCharacterDevice()) kind = isatty(fd) ? 'stream' : 'char';
    else if (st.isBlockDevice()) kind = 'block';
    else if (st.isDirectory()) kind = 'directory';
    let magic = 0n;
    let blockSize = 4096n;
    try {
      const fs = statfsSync(pathBytes, { bigint: true });
      magic = fs.type;
      blockSize = fs.bsize;
    } catch {
      // The path may be gone already; fall back to the generic limits.
    }
    let maxBytes = INT64_MAX;
    let end = (): bigint => fstatSync(fd, { bigint: true }).size;
    if (kind === 'regular' && magic === BigInt(EXT4_SUPER_MAGIC)) {
      // ext4 extent files end one block short of 2^32 blocks.
      maxBytes = ((1n << 32n) - 1n) * blockSize;
    } else if (kind === 'directory' && magic === BigInt(EXT4_SUPER_MAGIC)) {
      // ext4 hashed directories: positions are hashes and the end is the largest one.
      end = () => INT64_MAX;
    } else if (kind === 'directory' && magic === BigInt(TMPFS_MAGIC)) {
      end = () => {
        throw new QgaError(`failed to seek file: ${strerror('EINVAL')}`);
      };
    } else if (kind === 'block') {
      const size = blockDeviceSize(st.rdev);
      maxBytes = size;
      end = () => size;
    }
    return new GuestFile(handle, fd, mode, kind, maxBytes, end);
  }

  /** fread(): up to `count` bytes; `eof` when the end was hit before `count` bytes came. */
  read(count: number): { data: Buffer; eof: boolean } {
    // After a write the reference flushes its buffer here; nothing is buffered in this agent.
    if (this.state === 'writing') this.state = 'new';
    if (count === 0) {
      this.state = 'reading';
      return { data: EMPTY, eof: false };
    }
    const buf = Buffer.allocUnsafe(count);
    let got = 0;
    let eof = false;
    while (got < count) {
      let n: number;
      try {
        n = readSync(this.fd, buf, got, count - got, this.positional ? this.position : null);
      } catch (err) {
        const code = (err as NodeJS.ErrnoException).code;
        if (code === 'EINTR') continue;
        // A pipe ran dry after some data: return what came (the reference reports EAGAIN and drops it).
        if (code === 'EAGAIN' && got > 0) break;
        throw new QgaError(`failed to read file: ${errorText(err)}`);
      }
      if (n === 0) {
        eof = true;
        break;
      }
      got += n;
      if (this.positional) this.position += BigInt(n);
    }
    this.state = 'reading';
    return { data: got === count ? buf : buf.subarray(0, got), eof };
  }

  /**
   * Called before the payload is decoded, as the reference repositions the
   * stream first (fseek(fh, 0, SEEK_CUR)) when the last operation was a read.
   */
  beginWrite(): void {
    if (this.state !== 'reading') return;
    if (this.kind === 'stream') throw new QgaError(`failed to seek file: ${strerror('ESPIPE')}`);
    this.state = 'new';
  }

  /** fwrite() of the first `count` bytes; returns how many were written. */
  write(data: Buffer, count: number): number {
    let done = 0;
    const atEnd = this.mode.append;
    const positioned = this.positional && !atEnd;
    // Node's positional write takes a double; past 2^53 the offset would be rounded.
    if (positioned && count > 0 && this.position + BigInt(count) > BigInt(Number.MAX_SAFE_INTEGER)) {
      throw new QgaError(`failed to write to file: ${strerror('EFBIG')}`);
    }
    while (done < count) {
      let n: number;
      try {
        n = writeSync(this.fd, data, done, count - done, positioned ? Number(this.position) : null);
      } catch (err) {
        const code = (err as NodeJS.ErrnoException).code;
        if (code === 'EINTR') continue;
        // A full pipe after some data: report what went through.
        if (code === 'EAGAIN' && done > 0) break;
        throw new QgaError(`failed to write to file: ${errorText(err)}`);
      }
      done += n;
      if (positioned) this.position += BigInt(n);
    }
    // Appends land at the end, and the position follows them there.
    if (atEnd && this.positional && count > 0) this.position = fstatSync(this.fd, { bigint: true }).size;
    this.state = 'writing';
    return done;
  }

  /** fseek() then ftell(): the kernel's rules for the new position (negative or past the limit is EINVAL). */
  seek(offset: bigint, whence: Whence): bigint {
    if (this.kind === 'stream') {
      this.state = 'new';
      throw new QgaError(`failed to seek file: ${strerror('ESPIPE')}`);
    }
    let target: bigint;
    if (whence === 0) target = offset;
    else if (whence === 1) target = this.position + offset;
    else target = this.end() + offset;
    if (target < 0n || target > this.maxBytes || target > INT64_MAX) {
      throw new QgaError(`failed to seek file: ${strerror('EINVAL')}`);
    }
    this.position = target;
    this.state = 'new';
    return target;
  }

  /** fflush(): data is never held back here, so only the read/write state changes. */
  flush(): void {
    this.state = 'new';
  }

  close(): void {
    closeSync(this.fd);
  }
}

/** A block device's size in bytes, from sysfs (Node has no BLKGETSIZE64). */
function blockDeviceSize(rdev: bigint): bigint {
  const major = ((rdev >> 8n) & 0xfffn) | ((rdev >> 32n) & ~0xfffn);
  const minor = (rdev & 0xffn) | ((rdev >> 12n) & ~0xffn);
  try {
    return BigInt(readFileSync(`/sys/dev/block/${major}:${minor}/size`, 'utf8').trim()) * 512n;
  } catch {
    return INT64_MAX;
  }
}
