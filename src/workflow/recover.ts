import pRetry from 'p-retry';
import { QuiesceError } from '../errors.js';
import { guestAgent, type ConnectorSpec } from '../guest/connect.js';
import { acquireGuestLock } from '../guest/lock.js';
import type { GuestAgent } from '../guest/types.js';
import type { Log } from '../log/logger.js';
import { Journal, ownerAlive } from './journal.js';
import type { RecoveryResult } from './results.js';

export type RecoveryAgentFactory = (connector: ConnectorSpec, log: Log) => GuestAgent;

const defaultFactory: RecoveryAgentFactory = (c, log) => guestAgent(c, { onEvent: log });

/**
 * Thaws one guest and proves it: thaw (retried), then status thawed. Used by
 * recovery and by `quiesce thaw`. Returns the filesystems thawed.
 */
export async function thawGuest(agent: GuestAgent, guest: string, log: Log, thawTimeoutMs = 30_000): Promise<number> {
  let thawed = 0;
  await pRetry(
    async () => {
      thawed += (await agent.execute('guest-fsfreeze-thaw', undefined, { timeoutMs: thawTimeoutMs })) as number;
    },
    {
      retries: 4,
      minTimeout: 250,
      maxTimeout: 2000,
      onFailedAttempt: ({ error, attemptNumber }) =>
        log({ kind: 'thaw-retry', guest, attempt: attemptNumber, error: error.message }),
    },
  );
  const status = await agent.execute('guest-fsfreeze-status');
  if (status !== 'thawed')
    throw new QuiesceError('THAW_UNPROVEN', `status is ${String(status)} after the thaw`, { guest });
  return thawed;
}

/**
 * Every command starts here: journal records left by a process that is no
 * longer running are guests it may have left frozen. Thaw them, prove it,
 * drop the record, report. Records of a live run are left alone.
 */
export async function recover(
  stateDir: string,
  log: Log,
  factory: RecoveryAgentFactory = defaultFactory,
): Promise<RecoveryResult[]> {
  const journal = new Journal(stateDir);
  const { records, unreadable } = journal.list();
  for (const path of unreadable)
    log({ kind: 'warning', message: `unreadable journal record ${path}: inspect it and remove it by hand` });
  const results: RecoveryResult[] = [];
  for (const r of records) {
    if (r.pid === process.pid) continue;
    if (ownerAlive(r)) {
      log({ kind: 'journal-busy', guest: r.guest, runId: r.runId, pid: r.pid });
      continue;
    }
    let lock;
    try {
      lock = await acquireGuestLock(r.address, 0);
    } catch {
      log({
        kind: 'warning',
        guest: r.guest,
        message: `left frozen by run ${r.runId}, but another quiesce process is using its agent now; not touching it`,
      });
      continue;
    }
    const agent = factory(r.connector, log);
    try {
      const thawed = await thawGuest(agent, r.guest, log);
      journal.remove(r.runId, r.guest);
      results.push({ guest: r.guest, runId: r.runId, ok: true, thawed });
      log({ kind: 'recovered', guest: r.guest, runId: r.runId, thawed, ok: true });
    } catch (err) {
      const error = (err as Error).message;
      results.push({ guest: r.guest, runId: r.runId, ok: false, error });
      log({ kind: 'recovered', guest: r.guest, runId: r.runId, thawed: 0, ok: false, error });
    } finally {
      await agent.close().catch(() => undefined);
      await lock.release();
    }
  }
  return results;
}
