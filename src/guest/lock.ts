import { createHash } from 'node:crypto';
import { createServer, type Server } from 'node:net';
import { setTimeout as sleep } from 'node:timers/promises';
import { QuiesceError } from '../errors.js';

/** A held lock; release it when done (it is also released if the process dies). */
export interface HeldLock {
  release(): Promise<void>;
}

/**
 * Exclusive use of a name across processes on this host, through an abstract
 * unix socket: only one process can bind a name, and the kernel frees it when
 * that process exits — a crashed run never leaves a stale lock behind.
 */
export async function acquireLock(
  name: string,
  opts: { waitMs?: number; pollMs?: number; what?: string } = {},
): Promise<HeldLock> {
  const socketName = `\0quiesce/${createHash('sha256').update(name).digest('hex').slice(0, 40)}`;
  const deadline = Date.now() + (opts.waitMs ?? 0);
  for (;;) {
    const server = await tryBind(socketName);
    if (server) {
      return {
        release: () => new Promise<void>((resolve) => server.close(() => resolve())),
      };
    }
    if (Date.now() >= deadline) {
      throw new QuiesceError('LOCKED', `${opts.what ?? name} is in use by another quiesce process`);
    }
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

/** The lock that keeps two quiesce processes from interleaving on one guest's agent. */
export function acquireGuestLock(address: string, waitMs = 0): Promise<HeldLock> {
  return acquireLock(`guest:${address}`, { waitMs, what: `the agent channel of ${address}` });
}
