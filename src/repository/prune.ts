import { readdir, rm, rmdir, stat } from 'node:fs/promises';
import { join } from 'node:path';
import type { KeepRules } from '../config/types.js';
import { QuiesceError } from '../errors.js';
import type { Log } from '../log/logger.js';
import { lockRepository } from './lock.js';
import { readCatalog } from './catalog.js';
import { chainDir } from './layout.js';
import { decideRetention, type RetentionDecision } from './retention.js';
import { updateStaleBitmaps } from './stale.js';

/** What prune decided (and, unless a dry run, did) for one guest's backups in a repository. */
export interface RepositoryPrune extends RetentionDecision {
  readonly kind: 'repository';
  readonly guest: string;
  readonly repo: string;
  readonly dryRun: boolean;
  /** Bytes the removed folders take on disk (allocated), counted before removal. */
  readonly bytesFreed: number;
}

/**
 * Applies `rules` to `guest`'s restore points in `repo` (see decideRetention):
 * records the bitmaps of removed backups as stale (the next backup removes
 * them from QEMU), then removes the backup folders newest first (a child
 * before its parent, so an interrupted prune leaves no orphan), then the
 * emptied chain folders. With dryRun it only decides. Asynchronous throughout:
 * another guest may be frozen meanwhile.
 */
export async function pruneRepository(
  repo: string,
  guest: string,
  rules: KeepRules,
  opts: { readonly log: Log; readonly dryRun: boolean; readonly now?: Date },
): Promise<RepositoryPrune> {
  // A dry run only reads; a real one must not overlap a backup or a restore of the guest.
  const lock = opts.dryRun ? undefined : await lockRepository(repo, guest, 'prune');
  try {
    return await pruneLocked(repo, guest, rules, opts);
  } finally {
    await lock?.release();
  }
}

async function pruneLocked(
  repo: string,
  guest: string,
  rules: KeepRules,
  opts: { readonly log: Log; readonly dryRun: boolean; readonly now?: Date },
): Promise<RepositoryPrune> {
  const decision = decideRetention(await readCatalog(repo, guest), rules, { now: opts.now ?? new Date() });
  // Ids made in one second do not sort by time: order by time.
  const folders = [...decision.remove, ...decision.unusable.filter((u) => u.remove)].sort(newestFirst);
  const bytesFreed = (await Promise.all(folders.map((f) => allocatedBytes(f.dir)))).reduce((a, b) => a + b, 0);
  if (!opts.dryRun) {
    // Recorded first: a prune that dies halfway leaves a bitmap listed, never one forgotten in QEMU.
    if (decision.staleBitmaps.length) await updateStaleBitmaps(repo, guest, { add: decision.staleBitmaps });
    for (const f of folders) await removeFolder(f.dir);
    for (const c of decision.chains) await removeChain(chainDir(repo, guest, c), guest, opts.log);
  }
  opts.log({
    kind: 'prune',
    guest,
    kept: decision.keep.length,
    removed: folders.map((f) => f.id),
    dryRun: opts.dryRun,
  });
  return { kind: 'repository', guest, repo, dryRun: opts.dryRun, bytesFreed, ...decision };
}

function newestFirst(a: { time: string; id: string }, b: { time: string; id: string }): number {
  return Date.parse(b.time) - Date.parse(a.time) || b.id.localeCompare(a.id);
}

/** Allocated bytes of the files in a backup's folder (one level: a backup holds images and its manifest). */
async function allocatedBytes(dir: string): Promise<number> {
  try {
    const entries = await readdir(dir, { withFileTypes: true });
    const sizes = await Promise.all(
      entries.filter((e) => e.isFile()).map(async (e) => (await stat(join(dir, e.name))).blocks * 512),
    );
    return sizes.reduce((a, b) => a + b, 0);
  } catch (err) {
    throw new QuiesceError('REPOSITORY', `cannot read ${dir}: ${(err as Error).message}`, { cause: err });
  }
}

async function removeFolder(dir: string): Promise<void> {
  try {
    await rm(dir, { recursive: true });
  } catch (err) {
    throw new QuiesceError('REPOSITORY', `cannot remove ${dir}: ${(err as Error).message}`, { cause: err });
  }
}

/** Removes an emptied chain folder; one that is not empty (a run started writing into it meanwhile) stays. */
async function removeChain(dir: string, guest: string, log: Log): Promise<void> {
  try {
    await rmdir(dir);
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code === 'ENOTEMPTY' || code === 'EEXIST') {
      log({ kind: 'warning', guest, message: `prune left ${dir} in place: something else is in it` });
      return;
    }
    throw new QuiesceError('REPOSITORY', `cannot remove ${dir}: ${(err as Error).message}`, { cause: err });
  }
}
