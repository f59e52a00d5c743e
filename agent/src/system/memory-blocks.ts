import { errorText } from '../errno.js';
import type { JsonOut } from '../protocol/index.js';
import { QgaError } from '../qapi/errors.js';
import { strtol, strtoul } from './c-parse.js';
import { checkDirectory, dtypeHasDirBit, listDirectory, preadFile, SysError } from './sysfs.js';

export const MEMORY_DIR = '/sys/devices/system/memory/';

/** ga_read_sysfs_file: the texts name the attribute, not the path. */
function readAttribute(dir: string, name: string, size: number): Buffer {
  return preadFile(`${dir}${name}`, size, `open sysfs file "${name}"`, `pread sysfs file "${name}"`);
}

/** One block's state, or the error that ends the whole list. */
function memoryBlock(physIndex: bigint): JsonOut {
  const dirpath = `${MEMORY_DIR}memory${BigInt.asIntN(64, physIndex)}/`;
  const block: { 'phys-index': bigint; online: boolean; 'can-offline': boolean } = {
    'phys-index': physIndex,
    online: true,
    'can-offline': false,
  };
  checkDirectory(dirpath);
  let state: Buffer;
  try {
    state = readAttribute(dirpath, 'state', 10);
  } catch (err) {
    // Kernels without the attribute: online, and it cannot be offlined.
    if (err instanceof SysError && err.code === 'ENOENT') return block;
    throw err;
  }
  block.online = state.subarray(0, 6).toString('latin1') === 'online';
  try {
    block['can-offline'] = readAttribute(dirpath, 'removable', 1)[0] !== 0x30;
  } catch (err) {
    if (!(err instanceof SysError && err.code === 'ENOENT')) throw err;
    block['can-offline'] = false;
  }
  return block;
}

/**
 * guest-get-memory-blocks: every "memory*" directory of
 * /sys/devices/system/memory in directory order. No such directory is an
 * empty list; an empty directory is an error, as is any block that cannot
 * be read (the reference gives up on the first).
 */
export function getMemoryBlocks(): JsonOut[] {
  let entries;
  try {
    entries = listDirectory(MEMORY_DIR);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return [];
    throw new QgaError(`Can't open directory"${MEMORY_DIR}": ${errorText(err)}`);
  }
  const out: JsonOut[] = [];
  for (const e of entries) {
    if (!e.name.startsWith('memory') || !dtypeHasDirBit(e)) continue;
    try {
      out.push(memoryBlock(strtoul(e.name.slice(6))));
    } catch (err) {
      throw new QgaError(err instanceof Error ? err.message : String(err));
    }
  }
  if (out.length === 0) throw new QgaError('guest reported zero memory blocks!');
  return out;
}

/** guest-get-memory-block-info: block_size_bytes, a hex number. */
export function getMemoryBlockInfo(): JsonOut {
  let text: string;
  try {
    checkDirectory(MEMORY_DIR);
    text = readAttribute(MEMORY_DIR, 'block_size_bytes', 20).toString('latin1');
  } catch (err) {
    throw new QgaError(err instanceof Error ? err.message : String(err));
  }
  // strtol into a uint64 member: a negative value wraps.
  return { size: BigInt.asUintN(64, strtol(text, 16)) };
}
