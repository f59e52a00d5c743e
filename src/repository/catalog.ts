import { access, readdir, readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { QuiesceError } from '../errors.js';
import { backupDir, guestDir, MANIFEST } from './layout.js';
import { idTime, isBackupId, validateManifest, type Manifest } from './manifest.js';

/** A complete backup whose whole ancestry is present and complete: it can be restored. */
export interface RestorePoint {
  readonly manifest: Manifest;
  /** The backup's folder. */
  readonly dir: string;
  /** Ids from the chain's full down to this one (inclusive): what restoring it reads. */
  readonly lineage: readonly string[];
}

/** A backup folder that is not a restore point, and why. */
export interface Unusable {
  readonly chain: string;
  readonly id: string;
  readonly dir: string;
  readonly why: string;
  /** When the folder was last known to be written to (its manifest's time, or the id's). */
  readonly time: Date;
  readonly manifest?: Manifest;
}

/** What a repository holds for one guest. */
export interface Catalog {
  readonly repo: string;
  readonly guest: string;
  /** Restore points, oldest first. */
  readonly points: readonly RestorePoint[];
  /** Folders that are not restore points: incomplete, failed, orphaned (a parent missing), unreadable. */
  readonly unusable: readonly Unusable[];
  /** Chain ids present (folders), oldest first. */
  readonly chains: readonly string[];
}

async function listIds(dir: string): Promise<string[]> {
  try {
    return (await readdir(dir, { withFileTypes: true }))
      .filter((e) => e.isDirectory() && isBackupId(e.name))
      .map((e) => e.name)
      .sort();
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return [];
    throw new QuiesceError('REPOSITORY', `cannot read ${dir}: ${(err as Error).message}`, { cause: err });
  }
}

/**
 * Reads every manifest of `guest` in `repo` (asynchronously: another guest
 * may be frozen meanwhile). Never throws on a bad backup: it lands in
 * `unusable` with the reason; only an unreadable repository throws.
 */
export async function readCatalog(repo: string, guest: string): Promise<Catalog> {
  const root = guestDir(repo, guest);
  const chains = await listIds(root);
  const points: RestorePoint[] = [];
  const unusable: Unusable[] = [];
  for (const chain of chains) {
    // Read every manifest of the chain first: ids made in one second do not sort by time.
    const read = new Map<string, { dir: string; manifest?: Manifest; problem?: string }>();
    for (const id of await listIds(join(root, chain))) {
      const dir = backupDir(repo, guest, chain, id);
      try {
        const m = validateManifest(JSON.parse(await readFile(join(dir, MANIFEST), 'utf8')), join(dir, MANIFEST));
        read.set(id, { dir, manifest: m });
      } catch (err) {
        const code = (err as NodeJS.ErrnoException).code;
        read.set(id, {
          dir,
          problem: code === 'ENOENT' ? 'no manifest (unfinished, or its run died)' : (err as Error).message,
        });
      }
    }
    const resolved = new Map<string, RestorePoint | Unusable>();
    const resolve = async (id: string): Promise<RestorePoint | Unusable> => {
      const done = resolved.get(id);
      if (done) return done;
      const r = await judge(id);
      resolved.set(id, r);
      if ('why' in r) unusable.push(r);
      else points.push(r);
      return r;
    };
    const judge = async (id: string): Promise<RestorePoint | Unusable> => {
      const { dir, manifest: m, problem } = read.get(id)!;
      const bad = (why: string): Unusable => ({
        chain,
        id,
        dir,
        why,
        time: m ? new Date(m.time) : idTime(id),
        ...(m ? { manifest: m } : {}),
      });
      if (!m) return bad(problem!);
      if (m.id !== id || m.chain !== chain || m.guest !== guest)
        return bad(`its manifest names ${m.guest}/${m.chain}/${m.id}`);
      if (!m.complete) return bad(`incomplete${m.error ? `: ${m.error}` : ''}`);
      let parent: RestorePoint | undefined;
      if (m.parent !== null) {
        const p = read.has(m.parent) && m.parent !== id ? await resolve(m.parent) : undefined;
        if (!p || 'why' in p) return bad(`its parent ${m.parent} is not a restore point`);
        if (Date.parse(p.manifest.time) > Date.parse(m.time)) return bad(`its parent ${m.parent} is newer than it`);
        parent = p;
      }
      const missing = await firstMissing(dir, m);
      if (missing) return bad(`image ${missing} is missing`);
      if (parent) {
        const theirs = new Map(parent.manifest.disks.map((d) => [d.name, d.virtualSize]));
        const odd = m.disks.find((d) => theirs.get(d.name) !== d.virtualSize);
        if (odd) return bad(`disk ${odd.name} does not match its parent's`);
      }
      return { manifest: m, dir, lineage: [...(parent?.lineage ?? []), id] };
    };
    for (const id of read.keys()) await resolve(id);
  }
  unusable.sort((a, b) => a.time.getTime() - b.time.getTime() || a.id.localeCompare(b.id));
  points.sort((a, b) => a.manifest.time.localeCompare(b.manifest.time) || a.manifest.id.localeCompare(b.manifest.id));
  return { repo, guest, points, unusable, chains };
}

async function firstMissing(dir: string, m: Manifest): Promise<string | undefined> {
  for (const d of m.disks) {
    try {
      await access(join(dir, d.file));
    } catch {
      return d.file;
    }
  }
  return undefined;
}

/** The restore point `at` names: an id, or the newest at or before a time; the newest when undefined. */
export function findPoint(c: Catalog, at?: string): RestorePoint {
  if (c.points.length === 0) throw new QuiesceError('REPOSITORY', `${c.repo} holds no restore point of ${c.guest}`);
  if (at === undefined) return c.points[c.points.length - 1]!;
  const byId = c.points.find((p) => p.manifest.id === at);
  if (byId) return byId;
  if (isBackupId(at)) {
    const why = c.unusable.find((u) => u.id === at)?.why;
    throw new QuiesceError(
      'REPOSITORY',
      `backup ${at} of ${c.guest} is ${why ? `not a restore point: ${why}` : 'not in the repository'}`,
    );
  }
  const t = Date.parse(at);
  if (Number.isNaN(t))
    throw new QuiesceError('CONFIG', `--at ${JSON.stringify(at)}: give a backup id or a time (ISO 8601)`);
  const before = c.points.filter((p) => Date.parse(p.manifest.time) <= t);
  if (before.length === 0)
    throw new QuiesceError(
      'REPOSITORY',
      `no restore point of ${c.guest} at or before ${new Date(t).toISOString()} (the oldest is ${c.points[0]!.manifest.time})`,
    );
  return before[before.length - 1]!;
}
