import { closeSync, constants, openSync, opendirSync, readSync, writeSync } from 'node:fs';
import type { JsonOut } from '../protocol/index.js';
import { MEMORY_DIR } from '../system/memory-blocks.js';

/** One element of guest-set-memory-blocks (can-offline is accepted and ignored, as by the reference). */
export interface MemoryBlockRequest {
  readonly physIndex: bigint;
  readonly online: boolean;
}

type Response = 'success' | 'not-found' | 'operation-not-supported' | 'operation-failed';

/** errno as a number, the way the reference puts it in error-code (0 when there was none). */
function errnoOf(err: unknown): number {
  const n = (err as NodeJS.ErrnoException | undefined)?.errno;
  return typeof n === 'number' ? Math.abs(n) : 0;
}

const codeOf = (err: unknown): string | undefined => (err as NodeJS.ErrnoException | undefined)?.code;

/** An attribute read or write that failed, with the errno it left (0 for an empty read). */
class AttributeError extends Error {
  constructor(readonly errno: number) {
    super(`errno ${errno}`);
  }
}

function readState(path: string): Buffer {
  let fd: number;
  try {
    fd = openSync(path, constants.O_RDONLY);
  } catch (err) {
    throw new AttributeError(errnoOf(err));
  }
  try {
    const buf = Buffer.alloc(10);
    let n: number;
    try {
      n = readSync(fd, buf, 0, 10, 0);
    } catch (err) {
      throw new AttributeError(errnoOf(err));
    }
    if (n === 0) throw new AttributeError(0);
    return buf;
  } finally {
    closeSync(fd);
  }
}

function writeState(path: string, word: string): void {
  let fd: number;
  try {
    // O_WRONLY without O_TRUNC: sysfs takes the word as one write at offset 0.
    fd = openSync(path, constants.O_WRONLY);
  } catch (err) {
    throw new AttributeError(errnoOf(err));
  }
  try {
    writeSync(fd, Buffer.from(word), 0, word.length, 0);
  } catch (err) {
    throw new AttributeError(errnoOf(err));
  } finally {
    closeSync(fd);
  }
}

/**
 * One block, as the reference's transfer_memory_block() in the
 * block-to-system direction: the response starts as success (its zero
 * value), and every failure sets error-code to the errno it left, whatever
 * the response became.
 */
function transferBlock(block: MemoryBlockRequest, memDir: string): JsonOut {
  let response: Response = 'success';
  const result = (errorCode?: number): JsonOut => ({
    'phys-index': block.physIndex,
    response,
    ...(errorCode === undefined ? {} : { 'error-code': errorCode }),
  });
  try {
    opendirSync(memDir).closeSync();
  } catch (err) {
    // No memory directory: the guest cannot hot-plug memory. Other errors keep "success".
    if (codeOf(err) === 'ENOENT') response = 'operation-not-supported';
    return result(errnoOf(err));
  }
  // The reference formats the uint64 index with PRId64.
  const dirpath = `${memDir}memory${BigInt.asIntN(64, block.physIndex)}/`;
  try {
    closeSync(openSync(dirpath, constants.O_RDONLY | constants.O_DIRECTORY));
  } catch (err) {
    response = codeOf(err) === 'ENOENT' ? 'not-found' : 'operation-failed';
    return result(errnoOf(err));
  }
  let state: Buffer;
  try {
    state = readState(`${dirpath}state`);
  } catch (err) {
    const errno = (err as AttributeError).errno;
    // Old kernels have no state attribute: online is fine, offline is not supported.
    if (errno === 2) {
      if (!block.online) response = 'operation-not-supported';
    } else {
      response = 'operation-failed';
    }
    return result(errno);
  }
  const isOnline = state.subarray(0, 6).toString('latin1') === 'online';
  if (block.online !== isOnline) {
    try {
      writeState(`${dirpath}state`, block.online ? 'online' : 'offline');
    } catch (err) {
      response = 'operation-failed';
      return result((err as AttributeError).errno);
    }
  }
  return result();
}

/** guest-set-memory-blocks: one response per block, in request order. */
export function setMemoryBlocks(blocks: readonly MemoryBlockRequest[], memDir = MEMORY_DIR): JsonOut[] {
  return blocks.map((b) => transferBlock(b, memDir));
}
