import { readdir, stat, unlink } from 'node:fs/promises';
import { join } from 'node:path';
import type { PruneConfig } from '../config/types.js';
import type { Log } from '../log/logger.js';

export interface PruneDecision {
  readonly keep: readonly string[];
  readonly remove: readonly string[];
}

/** `*` and `?` wildcards over one file name. */
export function globToRegExp(pattern: string): RegExp {
  const body = pattern
    .replace(/[.+^${}()|[\]\\]/g, '\\$&')
    .replace(/\*/g, '.*')
    .replace(/\?/g, '.');
  return new RegExp(`^${body}$`);
}

function isoWeek(d: Date): string {
  const t = new Date(Date.UTC(d.getUTCFullYear(), d.getUTCMonth(), d.getUTCDate()));
  const day = t.getUTCDay() || 7;
  t.setUTCDate(t.getUTCDate() + 4 - day);
  const yearStart = Date.UTC(t.getUTCFullYear(), 0, 1);
  return `${t.getUTCFullYear()}-W${Math.ceil(((t.getTime() - yearStart) / 86_400_000 + 1) / 7)}`;
}

/**
 * Which backups to keep: the newest `keepLast`, the newest of each of the
 * last `keepDaily` days and `keepWeekly` ISO weeks that have one (as Proxmox'
 * keep-* rules). Pure: names with their times in, decision out.
 */
export function decide(
  files: readonly { name: string; mtime: Date }[],
  rules: Pick<PruneConfig, 'keepLast' | 'keepDaily' | 'keepWeekly'>,
): PruneDecision {
  const sorted = [...files].sort((a, b) => b.mtime.getTime() - a.mtime.getTime() || b.name.localeCompare(a.name));
  const keep = new Set<string>(sorted.slice(0, rules.keepLast).map((f) => f.name));
  const byPeriod = (key: (d: Date) => string, count: number): void => {
    const seen = new Set<string>();
    for (const f of sorted) {
      const k = key(f.mtime);
      if (seen.has(k)) continue;
      if (seen.size >= count) break;
      seen.add(k);
      keep.add(f.name);
    }
  };
  byPeriod((d) => d.toISOString().slice(0, 10), rules.keepDaily);
  byPeriod(isoWeek, rules.keepWeekly);
  return {
    keep: sorted.filter((f) => keep.has(f.name)).map((f) => f.name),
    remove: sorted.filter((f) => !keep.has(f.name)).map((f) => f.name),
  };
}

/** Applies the rules to the guest's backups in `dir` (files matching `match`); with dryRun only lists. */
export async function prune(
  guest: string,
  p: PruneConfig,
  opts: { log: Log; dryRun: boolean },
): Promise<PruneDecision> {
  if (p.dir === undefined || p.match === undefined) return { keep: [], remove: [] };
  const dir = p.dir;
  const re = globToRegExp(p.match);
  // Asynchronous: another unit of the run may be frozen meanwhile, and the event loop never waits on a filesystem.
  const names = (await readdir(dir)).filter((n) => re.test(n));
  const files = await Promise.all(names.map(async (name) => ({ name, mtime: (await stat(join(dir, name))).mtime })));
  const d = decide(files, p);
  opts.log({ kind: 'prune', guest, kept: d.keep.length, removed: d.remove, dryRun: opts.dryRun });
  if (!opts.dryRun) for (const name of d.remove) await unlink(join(dir, name));
  return d;
}
