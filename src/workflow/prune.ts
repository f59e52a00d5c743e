import { readdir, stat, unlink } from 'node:fs/promises';
import { join } from 'node:path';
import type { KeepRules } from '../config/types.js';
import type { Log } from '../log/logger.js';
import { formatBytes } from '../repository/list.js';
import { pruneRepository, type RepositoryPrune } from '../repository/prune.js';
import { selectByRules } from '../repository/retention.js';
import type { CheckpointHome } from '../snapshot/libvirt/prune.js';

/**
 * A guest's retention as planned for a run: over backup files (`dir` and
 * `match`, placeholders filled), or over the restore points of the guest's
 * repository (the snapshot's, placeholders filled); for a libvirt backup,
 * with the domain whose checkpoints of pruned backups it deletes.
 */
export type PlannedPrune = KeepRules &
  (
    | { readonly dir: string; readonly match: string; readonly repository: undefined }
    | {
        readonly dir: undefined;
        readonly match: undefined;
        readonly repository: string;
        readonly checkpoints?: CheckpointHome | undefined;
      }
  );

/** A backup file kept, and the rules that keep it. */
export interface KeptFile {
  readonly name: string;
  readonly reasons: readonly string[];
}

/** Which backup files to keep (newest first) and which to remove. */
export interface FileDecision {
  readonly keep: readonly KeptFile[];
  readonly remove: readonly string[];
}

/** What prune decided (and, unless a dry run, did) for one guest's backup files. */
export interface FilePrune extends FileDecision {
  readonly kind: 'files';
  readonly guest: string;
  readonly dir: string;
  readonly dryRun: boolean;
}

export type PruneResult = FilePrune | RepositoryPrune;

/** `*` and `?` wildcards over one file name. */
export function globToRegExp(pattern: string): RegExp {
  const body = pattern
    .replace(/[.+^${}()|[\]\\]/g, '\\$&')
    .replace(/\*/g, '.*')
    .replace(/\?/g, '.');
  return new RegExp(`^${body}$`);
}

/**
 * Which backup files to keep: the keep rules over their modification times
 * (see selectByRules). Pure: names with their times in, decision out.
 */
export function decide(files: readonly { name: string; mtime: Date }[], rules: KeepRules): FileDecision {
  const sorted = [...files].sort((a, b) => b.mtime.getTime() - a.mtime.getTime() || b.name.localeCompare(a.name));
  const selected = selectByRules(
    sorted.map((f) => f.mtime),
    rules,
  );
  return {
    keep: [...selected].sort(([a], [b]) => a - b).map(([i, reasons]) => ({ name: sorted[i]!.name, reasons })),
    remove: sorted.filter((_, i) => !selected.has(i)).map((f) => f.name),
  };
}

/** Applies a guest's retention: to its backup files or its repository's restore points; with dryRun only decides. */
export function prune(guest: string, p: PlannedPrune, opts: { log: Log; dryRun: boolean }): Promise<PruneResult> {
  if (p.repository === undefined) return pruneFiles(guest, p, opts);
  const home = p.checkpoints;
  return pruneRepository(p.repository, guest, p, {
    ...opts,
    // libvirt's client loads only when there are checkpoints to delete.
    ...(home
      ? {
          dropCheckpoints: async (names) =>
            (await import('../snapshot/libvirt/prune.js')).deleteCheckpoints(home, guest)(names),
        }
      : {}),
  });
}

async function pruneFiles(
  guest: string,
  p: KeepRules & { readonly dir: string; readonly match: string },
  opts: { log: Log; dryRun: boolean },
): Promise<FilePrune> {
  const re = globToRegExp(p.match);
  // Asynchronous: another unit of the run may be frozen meanwhile, and the event loop never waits on a filesystem.
  const names = (await readdir(p.dir)).filter((n) => re.test(n));
  const files = await Promise.all(names.map(async (name) => ({ name, mtime: (await stat(join(p.dir, name))).mtime })));
  const d = decide(files, p);
  opts.log({ kind: 'prune', guest, kept: d.keep.length, removed: d.remove, dryRun: opts.dryRun });
  if (!opts.dryRun) for (const name of d.remove) await unlink(join(p.dir, name));
  return { kind: 'files', guest, dir: p.dir, dryRun: opts.dryRun, ...d };
}

/** A prune's result as lines for a person: what is kept and why, what is (or would be) removed. */
export function formatPrune(r: PruneResult): string[] {
  const verb = r.dryRun ? 'would remove' : 'removed';
  if (r.kind === 'files')
    return [
      `${r.guest}: files in ${r.dir}`,
      ...r.keep.map((k) => `  keep ${k.name} (${k.reasons.join(', ')})`),
      ...r.remove.map((name) => `  ${verb} ${name}`),
    ];
  const lines = [`${r.guest}: restore points in ${r.repo}`];
  for (const k of r.keep) lines.push(`  keep ${k.id} (${k.level}, ${k.time}): ${k.reasons.join(', ')}`);
  for (const p of r.remove) lines.push(`  ${verb} ${p.id} (${p.level}, ${p.time})`);
  for (const u of r.unusable)
    lines.push(
      u.remove
        ? `  ${verb} unusable ${u.id}: ${u.why} (older than 24 h)`
        : `  leave unusable ${u.id}: ${u.why} (younger than 24 h: a run may still be writing it)`,
    );
  for (const c of r.chains) lines.push(`  ${verb} chain ${c} (nothing in it is kept)`);
  if (r.checkpointsDeleted?.length)
    lines.push(`  deleted checkpoints from libvirt (with their bitmaps): ${r.checkpointsDeleted.join(', ')}`);
  if (r.checkpointsLeft?.length)
    lines.push(`  checkpoints for the next backup to delete from libvirt: ${r.checkpointsLeft.join(', ')}`);
  // A real prune of a libvirt guest says above what became of its checkpoints.
  if (r.staleBitmaps.length && r.checkpointsDeleted === undefined)
    lines.push(`  bitmaps for the next backup to remove from QEMU: ${r.staleBitmaps.join(', ')}`);
  if (r.bytesFreed > 0) lines.push(`  ${r.dryRun ? 'would free' : 'freed'} ${formatBytes(r.bytesFreed)}`);
  return lines;
}
