import { mkdir, open, readFile, rename, unlink } from 'node:fs/promises';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { QuiesceError } from '../errors.js';
import { ownStart, processAlive } from '../process/pid.js';
import { guestDir } from './layout.js';

/** The lock file in a guest's folder of a repository. */
export const REPO_LOCK = '.lock';

interface Holder {
  readonly pid: number;
  readonly start: string;
  readonly what: string;
  readonly since: string;
}

/** Locks this process holds, by file: nested users (a run's backup, then its prune) share one. */
const held = new Map<string, { count: number; holder: Holder }>();

/** A held repository lock; release() once (it is shared within the process). */
export interface RepoLock {
  release(): Promise<void>;
}

/**
 * Takes the lock of one guest's part of a repository, so that a backup, a
 * prune and a restore of it never overlap (a prune could delete what a
 * restore reads; two writers could lose a stale-bitmaps update). A lock file
 * created exclusively holds the owner's pid and start time: one whose owner
 * died (or whose pid was reused) is taken over. Within this process the lock
 * is shared. Throws LOCKED naming the holder.
 */
export async function lockRepository(repo: string, guest: string, what: string): Promise<RepoLock> {
  const dir = guestDir(repo, guest);
  const file = join(dir, REPO_LOCK);
  const mine = held.get(file);
  if (mine) {
    mine.count++;
    return releaser(file);
  }
  const holder: Holder = { pid: process.pid, start: ownStart(), what, since: new Date().toISOString() };
  await mkdir(dir, { recursive: true }).catch((err: Error) => {
    throw new QuiesceError('REPOSITORY', `cannot create ${dir}: ${err.message}`, { cause: err, guest });
  });
  for (let attempt = 0; attempt < 3; attempt++) {
    try {
      const fh = await open(file, 'wx', 0o644);
      try {
        await fh.writeFile(`${JSON.stringify(holder)}\n`);
      } finally {
        await fh.close();
      }
      held.set(file, { count: 1, holder });
      return releaser(file);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EEXIST')
        throw new QuiesceError('REPOSITORY', `cannot lock ${dir}: ${(err as Error).message}`, { cause: err, guest });
    }
    // A holder still writing its file reads as nothing for a moment: look twice.
    const other = (await readHolder(file)) ?? (await sleep(200).then(() => readHolder(file)));
    if (other && processAlive(other.pid, other.start))
      throw new QuiesceError(
        'LOCKED',
        `${dir} is in use by pid ${other.pid} (${other.what}, since ${other.since}); try again when it is done`,
        { guest },
      );
    // The owner is gone (or the file is unreadable half-written debris): move it aside atomically, then retry.
    const aside = `${file}.stale-${process.pid}`;
    await rename(file, aside)
      .then(() => unlink(aside))
      .catch(() => undefined);
  }
  throw new QuiesceError('LOCKED', `could not take the lock ${file}: others keep taking it`, { guest });
}

async function readHolder(file: string): Promise<Holder | undefined> {
  try {
    const v = JSON.parse(await readFile(file, 'utf8')) as Partial<Holder>;
    return typeof v.pid === 'number' && typeof v.start === 'string'
      ? { pid: v.pid, start: v.start, what: String(v.what), since: String(v.since) }
      : undefined;
  } catch {
    return undefined;
  }
}

function releaser(file: string): RepoLock {
  let released = false;
  return {
    async release(): Promise<void> {
      if (released) return;
      released = true;
      const h = held.get(file);
      if (!h) return;
      if (--h.count > 0) return;
      held.delete(file);
      await unlink(file).catch(() => undefined);
    },
  };
}
