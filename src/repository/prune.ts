import { readdir, rm, rmdir, stat } from 'node:fs/promises';
import { join } from 'node:path';
import type { KeepRules } from '../config/types.js';
import { QuiesceError } from '../errors.js';
import type { Log } from '../log/logger.js';
import { lockRepository } from './lock.js';
import { readCatalog } from './catalog.js';
import { chainDir } from './layout.js';
import { decideRetention, type RetentionDecision } from './retention.js';
import { readStaleBitmaps, updateStaleBitmaps } from './stale.js';

/** What deleting change tracking of pruned backups from the hypervisor did (libvirt checkpoints). */
export interface CheckpointDropResult {
  readonly deleted: readonly string[];
  /** Not there any more (deleted before, or the hypervisor lost them). */
  readonly absent: readonly string[];
  readonly failed: readonly { readonly name: string; readonly error: string }[];
}

/** Deletes the named checkpoints from the hypervisor; throws when it cannot be reached. */
export type CheckpointDrop = (names: readonly string[]) => Promise<CheckpointDropResult>;

/** Options of a repository prune. */
export interface RepositoryPruneOptions {
  readonly log: Log;
  readonly dryRun: boolean;
  readonly now?: Date;
  /**
   * For a guest whose change tracking the hypervisor keeps by name (libvirt
   * checkpoints): deletes the stale ones now, instead of leaving them to the
   * next backup. Without it (QMP: QEMU is reached per run) they stay listed.
   */
  readonly dropCheckpoints?: CheckpointDrop;
}

/** What prune decided (and, unless a dry run, did) for one guest's backups in a repository. */
export interface RepositoryPrune extends RetentionDecision {
  readonly kind: 'repository';
  readonly guest: string;
  readonly repo: string;
  readonly dryRun: boolean;
  /** Bytes the removed folders take on disk (allocated), counted before removal. */
  readonly bytesFreed: number;
  /** With dropCheckpoints: the checkpoints deleted from the hypervisor (with their bitmaps). */
  readonly checkpointsDeleted?: readonly string[];
  /** With dropCheckpoints: the names still listed for the next backup to delete (unreachable, or refused). */
  readonly checkpointsLeft?: readonly string[];
}

/**
 * Applies `rules` to `guest`'s restore points in `repo` (see decideRetention):
 * records the bitmaps of removed backups as stale (the next backup removes
 * them from QEMU), then removes the backup folders newest first (a child
 * before its parent, so an interrupted prune leaves no orphan), then the
 * emptied chain folders; with dropCheckpoints, then deletes the listed
 * checkpoints from libvirt and unlists those gone (one that cannot be
 * deleted stays listed, with a warning). With dryRun it only decides.
 * Asynchronous throughout: another guest may be frozen meanwhile.
 */
export async function pruneRepository(
  repo: string,
  guest: string,
  rules: KeepRules,
  opts: RepositoryPruneOptions,
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
  opts: RepositoryPruneOptions,
): Promise<RepositoryPrune> {
  const catalog = await readCatalog(repo, guest);
  const decision = decideRetention(catalog, rules, { now: opts.now ?? new Date() });
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
  const result = { kind: 'repository' as const, guest, repo, dryRun: opts.dryRun, bytesFreed, ...decision };
  if (opts.dryRun || !opts.dropCheckpoints) return result;
  const kept = new Set(decision.keep.map((k) => k.id));
  // Never a kept point's: the list may hold names from before (a failed delete, an older prune).
  const inUse = new Set(catalog.points.filter((p) => kept.has(p.manifest.id)).map((p) => p.manifest.bitmap));
  const listed = (await readStaleBitmaps(repo, guest)).filter((n) => !inUse.has(n));
  if (listed.length === 0) return { ...result, checkpointsDeleted: [], checkpointsLeft: [] };
  const dropped = await dropListed(repo, guest, listed, opts.dropCheckpoints, opts.log);
  return { ...result, ...dropped };
}

/** Deletes listed checkpoints through `drop`; unlists what is gone; a failure is a warning and stays listed. */
async function dropListed(
  repo: string,
  guest: string,
  listed: readonly string[],
  drop: CheckpointDrop,
  log: Log,
): Promise<{ checkpointsDeleted: readonly string[]; checkpointsLeft: readonly string[] }> {
  let r: CheckpointDropResult;
  try {
    r = await drop(listed);
  } catch (err) {
    log({
      kind: 'warning',
      guest,
      message: `prune could not reach libvirt to delete checkpoints ${listed.join(', ')} (${(err as Error).message}): they stay listed, and the next backup deletes them`,
    });
    return { checkpointsDeleted: [], checkpointsLeft: listed };
  }
  for (const f of r.failed)
    log({
      kind: 'warning',
      guest,
      message: `prune could not delete checkpoint ${f.name} (${f.error}): it stays listed, and the next backup deletes it`,
    });
  const gone = [...r.deleted, ...r.absent];
  if (gone.length) await updateStaleBitmaps(repo, guest, { drop: gone });
  if (r.deleted.length) log({ kind: 'bitmaps-removed', guest, names: r.deleted });
  return { checkpointsDeleted: r.deleted, checkpointsLeft: r.failed.map((f) => f.name) };
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
