import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { QuiesceError } from '../errors.js';
import { guestDir, STALE_BITMAPS } from './layout.js';
import { writeDurable } from './store.js';

/** Bitmap names of deleted backups, still to be removed from QEMU (the next backup of the guest does it). */
export async function readStaleBitmaps(repo: string, guest: string): Promise<string[]> {
  const file = join(guestDir(repo, guest), STALE_BITMAPS);
  let text: string;
  try {
    text = await readFile(file, 'utf8');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return [];
    throw new QuiesceError('REPOSITORY', `cannot read ${file}: ${(err as Error).message}`, { cause: err });
  }
  let v: unknown;
  try {
    v = JSON.parse(text);
  } catch {
    v = undefined;
  }
  if (!Array.isArray(v) || v.some((x) => typeof x !== 'string'))
    throw new QuiesceError('REPOSITORY', `${file}: not a JSON list of bitmap names`);
  return v as string[];
}

/** Rewrites the list: adds `add`, drops `drop` (each name once, sorted). */
export async function updateStaleBitmaps(
  repo: string,
  guest: string,
  change: { readonly add?: readonly string[]; readonly drop?: readonly string[] },
): Promise<void> {
  const names = new Set(await readStaleBitmaps(repo, guest));
  for (const n of change.add ?? []) names.add(n);
  for (const n of change.drop ?? []) names.delete(n);
  await writeDurable(join(guestDir(repo, guest), STALE_BITMAPS), `${JSON.stringify([...names].sort())}\n`);
}
