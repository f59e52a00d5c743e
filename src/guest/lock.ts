import { createHash, randomBytes } from 'node:crypto';
import { lstatSync } from 'node:fs';
import { mkdir, open, readFile, writeFile } from 'node:fs/promises';
import { createServer, type Server } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { QuiesceError } from '../errors.js';
import { ownStart, processAlive, stoppedNote } from '../process/pid.js';

/** A held lock; release it when done (it is also released if the process dies). */
export interface HeldLock {
  release(): Promise<void>;
}

/** Who holds a lock, as the holder wrote it down when it took the lock. */
export interface LockHolder {
  readonly pid: number;
  readonly pidStart: string;
  /** What the holder is doing: "quiesce run nightly", the whole command line. */
  readonly command: string;
  readonly runId?: string;
  readonly since: string;
}

/** A lock another live process holds; names the holder when it is known. */
export class LockedError extends QuiesceError {
  constructor(
    readonly what: string,
    readonly holder: LockHolder | undefined,
  ) {
    super('LOCKED', `${what} is in use by another quiesce process${holder ? ` (${describeHolder(holder)})` : ''}`);
    this.name = 'LockedError';
  }
}

export function describeHolder(h: LockHolder): string {
  const stopped = stoppedNote(h.pid);
  return `pid ${h.pid}${stopped ? `, ${stopped}` : ''}: ${h.command}${h.runId ? `, run ${h.runId}` : ''}, since ${h.since}`;
}

/**
 * Where locks live: a directory only this user can enter. Root uses
 * /run/quiesce, so every root run on the host shares one set of locks
 * whatever its state dir; QUIESCE_RUN_DIR overrides (tests).
 */
export function lockDir(env: NodeJS.ProcessEnv = process.env): string {
  if (env['QUIESCE_RUN_DIR']) return env['QUIESCE_RUN_DIR'];
  const uid = process.getuid?.() ?? 0;
  if (uid === 0) return '/run/quiesce';
  return join(env['XDG_RUNTIME_DIR'] ?? tmpdir(), `quiesce-${uid}`);
}

let secrets = new Map<string, Promise<string>>();

/** For tests that change QUIESCE_RUN_DIR within one process. */
export function forgetLockSecrets(): void {
  secrets = new Map();
}

/**
 * The lock names are abstract unix sockets, which any local user can bind.
 * Deriving them from a secret that only this user can read (0600, in a 0700
 * directory it owns) means another user cannot compute a name to squat it.
 */
async function loadSecret(dir: string): Promise<string> {
  await mkdir(dir, { recursive: true, mode: 0o700 });
  const st = lstatSync(dir);
  const uid = process.getuid?.() ?? 0;
  if (!st.isDirectory() || st.uid !== uid || (st.mode & 0o077) !== 0) {
    throw new QuiesceError(
      'LOCKED',
      `the lock directory ${dir} must be a directory owned by uid ${uid} with mode 0700 (it is uid ${st.uid}, mode ${(st.mode & 0o777).toString(8)}): remove it or set QUIESCE_RUN_DIR`,
    );
  }
  const path = join(dir, 'secret');
  try {
    const fh = await open(path, 'wx', 0o600);
    try {
      await fh.writeFile(randomBytes(32).toString('hex'));
      await fh.sync();
    } finally {
      await fh.close();
    }
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
  }
  // A writer that lost the race may still be writing: the secret is complete once it is 64 characters.
  for (let i = 0; ; i++) {
    const s = (await readFile(path, 'utf8')).trim();
    if (s.length === 64) return s;
    if (i > 50) throw new QuiesceError('LOCKED', `${path} is not a lock secret: remove it`);
    await sleep(10);
  }
}

function secretFor(dir: string): Promise<string> {
  let s = secrets.get(dir);
  if (!s) {
    s = loadSecret(dir);
    secrets.set(dir, s);
    s.catch(() => secrets.delete(dir));
  }
  return s;
}

function holderPath(dir: string, id: string): string {
  return join(dir, `${id}.holder.json`);
}

/** The live holder of lock `name`, if one wrote itself down. */
export async function lockHolder(name: string): Promise<LockHolder | undefined> {
  const dir = lockDir();
  const id = lockId(name, await secretFor(dir));
  return readHolder(dir, id);
}

async function readHolder(dir: string, id: string): Promise<LockHolder | undefined> {
  try {
    const h = JSON.parse(await readFile(holderPath(dir, id), 'utf8')) as LockHolder;
    return processAlive(h.pid, h.pidStart) ? h : undefined;
  } catch {
    return undefined;
  }
}

function lockId(name: string, secret: string): string {
  return createHash('sha256').update(secret).update('\0').update(name).digest('hex').slice(0, 40);
}

/** What this process is, for a holder record. */
export function thisCommand(): string {
  const args = process.argv.slice(2).map((a) => (/^[\w@%+=:,./-]+$/.test(a) ? a : JSON.stringify(a)));
  return ['quiesce', ...args].join(' ');
}

/**
 * Exclusive use of a name among this user's processes on this host: an
 * abstract unix socket that only one process can bind and that the kernel
 * frees when its holder exits (a crashed run never leaves a stale lock). The
 * holder writes who it is next to it, so a refused caller can name it.
 */
export async function acquireLock(
  name: string,
  opts: { waitMs?: number; pollMs?: number; what?: string; runId?: string } = {},
): Promise<HeldLock> {
  const dir = lockDir();
  const id = lockId(name, await secretFor(dir));
  const socketName = `\0quiesce/${id}`;
  const deadline = Date.now() + (opts.waitMs ?? 0);
  for (;;) {
    const server = await tryBind(socketName);
    if (server) {
      const holder: LockHolder = {
        pid: process.pid,
        pidStart: ownStart(),
        command: thisCommand(),
        ...(opts.runId ? { runId: opts.runId } : {}),
        since: new Date().toISOString(),
      };
      // Only a name for humans: the socket is the lock, so a failed write takes nothing away.
      await writeFile(holderPath(dir, id), JSON.stringify(holder), { mode: 0o600 }).catch(() => undefined);
      return {
        // The holder file stays: a reader checks that its pid still runs with its start time, so a
        // stale one names nobody, and the next holder overwrites it (one file per lock name).
        release: () => new Promise<void>((resolve) => server.close(() => resolve())),
      };
    }
    if (Date.now() >= deadline) throw new LockedError(opts.what ?? name, await readHolder(dir, id));
    await sleep(Math.min(opts.pollMs ?? 100, Math.max(1, deadline - Date.now())));
  }
}

function tryBind(socketName: string): Promise<Server | undefined> {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.once('error', (err: NodeJS.ErrnoException) => {
      if (err.code === 'EADDRINUSE') resolve(undefined);
      else reject(err);
    });
    server.listen(socketName, () => {
      // The lock must not keep the process alive on its own.
      server.unref();
      resolve(server);
    });
  });
}

export function guestLockName(address: string): string {
  return `guest:${address}`;
}

/** The lock that keeps two quiesce processes from interleaving on one guest's agent. */
export function acquireGuestLock(address: string, waitMs = 0, runId?: string): Promise<HeldLock> {
  return acquireLock(guestLockName(address), {
    waitMs,
    what: `the agent channel of ${address}`,
    ...(runId ? { runId } : {}),
  });
}
