import { mkdir, open, rename, unlink } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { QuiesceError } from '../errors.js';
import { MANIFEST } from './layout.js';
import type { Manifest } from './manifest.js';

/** fsync of a file or a folder (opened read-only). */
export async function fsyncPath(path: string): Promise<void> {
  const fh = await open(path, 'r');
  try {
    await fh.sync();
  } finally {
    await fh.close();
  }
}

/**
 * Writes `text` to `path` so that a reader sees the old file or the new one,
 * never half, and the new one survives a crash once this returns (temp file,
 * fsync, rename, fsync of the folder). A failure leaves no temp file.
 */
export async function writeDurable(path: string, text: string): Promise<void> {
  const tmp = `${path}.tmp-${process.pid}`;
  try {
    const fh = await open(tmp, 'w', 0o644);
    try {
      await fh.writeFile(text);
      await fh.sync();
    } finally {
      await fh.close();
    }
    await rename(tmp, path);
    await fsyncPath(dirname(path));
  } catch (err) {
    await unlink(tmp).catch(() => undefined);
    throw new QuiesceError('REPOSITORY', `cannot write ${path}: ${(err as Error).message}`, { cause: err });
  }
}

/** Writes a backup's manifest into its folder, durably (the last thing a backup writes). */
export function writeManifest(dir: string, m: Manifest): Promise<void> {
  return writeDurable(join(dir, MANIFEST), `${JSON.stringify(m, null, 2)}\n`);
}

/** Creates a backup's folder (and its chain's and guest's), fsyncing the parents so that it survives a crash. */
export async function makeBackupDir(dir: string): Promise<void> {
  try {
    await mkdir(dir, { recursive: true, mode: 0o755 });
    await fsyncPath(dirname(dir));
  } catch (err) {
    throw new QuiesceError('REPOSITORY', `cannot create ${dir}: ${(err as Error).message}`, { cause: err });
  }
}
