import type { ConnectorSpec } from '../config/connector.js';
import { DEFAULTS } from '../config/defaults.js';
import { basename } from 'node:path';
import { guestAgent } from '../guest/connect.js';
import { acquireGuestLock, LockedError } from '../guest/lock.js';
import type { GuestAgent } from '../guest/types.js';
import type { Log } from '../log/logger.js';
import { processInfo } from '../process/pid.js';
import { Journal, ownerAlive } from './journal.js';
import type { RecoveryResult } from './results.js';
import { thawAndProve } from './thaw.js';

export type RecoveryAgentFactory = (connector: ConnectorSpec, log: Log) => GuestAgent | Promise<GuestAgent>;

const defaultFactory: RecoveryAgentFactory = (c, log) => guestAgent(c, { onEvent: log });

/**
 * Every command starts here: journal records left by a process that is no
 * longer running (gone, pid reused, or a zombie) are guests it may have left
 * frozen. Thaw them through the one thaw (workflow/thaw.ts), prove it, drop
 * the record, report. Records of a live owner are reported busy and left
 * alone: `quiesce thaw GUEST --force` takes over from a stuck owner.
 */
export async function recover(
  stateDir: string,
  log: Log,
  factory: RecoveryAgentFactory = defaultFactory,
): Promise<RecoveryResult[]> {
  const journal = new Journal(stateDir);
  const { records, unreadable } = journal.list();
  const results: RecoveryResult[] = [];
  for (const path of unreadable) {
    const message = `unreadable journal record ${path}: inspect it and remove it by hand`;
    log({ kind: 'warning', message });
    // Its guest may be frozen and nothing here can tell: never a silent success.
    // Records are named RUNID--GUEST.json; any other name is shown as it is.
    const name = basename(path, '.json');
    const cut = name.indexOf('--');
    const [runId, guest] = cut < 0 ? ['?', name] : [name.slice(0, cut), safeDecode(name.slice(cut + 2))];
    results.push({ guest, runId, ok: false, error: message });
  }
  for (const r of records) {
    if (r.pid === process.pid) continue;
    if (ownerAlive(r)) {
      const state = processInfo(r.pid)?.state;
      log({ kind: 'journal-busy', guest: r.guest, runId: r.runId, pid: r.pid });
      results.push({
        guest: r.guest,
        runId: r.runId,
        ok: false,
        busy: { pid: r.pid, ...(state ? { state } : {}) },
        error: `its run (pid ${r.pid}${state === 'T' ? ', stopped' : ''}) is still running; 'quiesce thaw ${r.guest} --force' takes over`,
      });
      continue;
    }
    let lock;
    try {
      lock = await acquireGuestLock(r.address, 0);
    } catch (err) {
      const holder = err instanceof LockedError ? err.holder : undefined;
      const error = `left frozen by run ${r.runId}, but its agent is in use: ${(err as Error).message}; not touching it`;
      log({ kind: 'warning', guest: r.guest, message: error });
      // Never a silent success: the guest may be frozen and this command did not thaw it.
      results.push({ guest: r.guest, runId: r.runId, ok: false, error, busy: { pid: holder?.pid ?? 0 } });
      continue;
    }
    let agent: GuestAgent | undefined;
    try {
      agent = await factory(r.connector, log);
      const t = await thawAndProve(agent, {
        guest: r.guest,
        log,
        thawTimeoutMs: DEFAULTS.recoveryThawMs,
        ...(r.frozen !== undefined ? { frozen: r.frozen } : {}),
        zeroIsThawed: true,
      });
      if (t.proven) {
        await journal.remove(r.runId, r.guest);
        results.push({ guest: r.guest, runId: r.runId, ok: true, thawed: t.thawed ?? 0 });
        log({ kind: 'recovered', guest: r.guest, runId: r.runId, thawed: t.thawed ?? 0, ok: true });
      } else {
        const error = t.error?.message ?? 'the thaw could not be proven';
        results.push({ guest: r.guest, runId: r.runId, ok: false, error });
        log({ kind: 'recovered', guest: r.guest, runId: r.runId, thawed: 0, ok: false, error });
      }
    } catch (err) {
      // The agent could not even be set up: this guest is not thawed, and the others still get their turn.
      const error = `cannot reach the agent: ${(err as Error).message}`;
      results.push({ guest: r.guest, runId: r.runId, ok: false, error });
      log({ kind: 'recovered', guest: r.guest, runId: r.runId, thawed: 0, ok: false, error });
    } finally {
      await agent?.close().catch(() => undefined);
      await lock.release();
    }
  }
  return results;
}

function safeDecode(s: string): string {
  try {
    return decodeURIComponent(s);
  } catch {
    return s;
  }
}
