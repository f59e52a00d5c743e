import { setTimeout as sleep } from 'node:timers/promises';
import type { ResolvedGuest } from '../config/types.js';
import { QuiesceError } from '../errors.js';
import { describeConnector } from '../config/connector.js';
import { acquireGuestLock, describeHolder, LockedError, type HeldLock, type LockHolder } from '../guest/lock.js';
import type { GuestAgent } from '../guest/types.js';
import type { Log } from '../log/logger.js';
import { processAlive, stoppedNote } from '../process/pid.js';
import { Journal, ownerAlive } from './journal.js';
import { thawAndProve, type ThawOutcome } from './thaw.js';

/** How long a terminated owner gets to thaw and exit by itself before SIGKILL, and SIGKILL to take effect. */
export const TAKEOVER_GRACE_MS = 2000;
const KILL_WAIT_MS = 1500;

export interface EmergencyResult {
  readonly outcome: ThawOutcome;
  /** The stuck run this thaw took the channel from (--force). */
  readonly tookOverFrom?: LockHolder & { readonly killed: boolean };
}

/**
 * `quiesce thaw GUEST [--force]`, the emergency brake. It needs the guest's
 * agent channel: when another quiesce process holds it, it refuses at once
 * naming the holder, or with `force` terminates the holder (SIGTERM and
 * SIGCONT, so a stopped run wakes and thaws by itself; SIGKILL after a grace
 * for a hung one), takes the channel, thaws and proves. Journal records of
 * dead owners for this guest go once the thaw is proven.
 */
export async function emergencyThaw(
  g: ResolvedGuest,
  o: {
    stateDir: string;
    log: Log;
    force: boolean;
    agent: (g: ResolvedGuest) => GuestAgent | Promise<GuestAgent>;
  },
): Promise<EmergencyResult> {
  const address = describeConnector(g.connector);
  let lock: HeldLock;
  let tookOverFrom: EmergencyResult['tookOverFrom'];
  try {
    lock = await acquireGuestLock(address, 0);
  } catch (err) {
    if (!(err instanceof LockedError)) throw err;
    const holder = err.holder;
    if (!o.force || !holder) {
      const who = holder ? describeHolder(holder) : 'a quiesce process that did not name itself';
      const stopped = holder !== undefined && stoppedNote(holder.pid) !== undefined;
      throw new QuiesceError(
        'LOCKED',
        `${g.name}: its agent channel is held by ${who}; ${stopped ? 'that process is stopped and will not thaw it until it is continued' : `a healthy run thaws ${g.name} itself within its budget`}. ` +
          (holder
            ? `To take over now: quiesce thaw ${g.name} --force (terminates pid ${holder.pid}, then thaws and proves)`
            : 'Wait for it, or end that process'),
        { guest: g.name },
      );
    }
    o.log({ kind: 'warning', guest: g.name, message: `taking over from ${describeHolder(holder)}: SIGTERM` });
    const killed = await terminate(holder);
    tookOverFrom = { ...holder, killed };
    lock = await acquireGuestLock(address, KILL_WAIT_MS);
  }
  let agent: GuestAgent | undefined;
  try {
    agent = await o.agent(g);
    const journal = new Journal(o.stateDir);
    const records = journal.list().records.filter((r) => r.guest === g.name && !ownerAlive(r));
    const frozen = records.find((r) => r.frozen !== undefined)?.frozen;
    const outcome = await thawAndProve(agent, {
      guest: g.name,
      log: o.log,
      thawTimeoutMs: g.timeouts.thawMs,
      statusTimeoutMs: g.timeouts.commandMs,
      ...(frozen !== undefined ? { frozen } : {}),
      zeroIsThawed: true,
    });
    if (outcome.proven) for (const r of records) await journal.remove(r.runId, r.guest);
    return { outcome, ...(tookOverFrom ? { tookOverFrom } : {}) };
  } finally {
    await agent?.close().catch(() => undefined);
    await lock.release();
  }
}

/** SIGTERM (+SIGCONT) and a grace to thaw and exit by itself, then SIGKILL. True when SIGKILL was needed. */
async function terminate(h: LockHolder): Promise<boolean> {
  const signal = (s: NodeJS.Signals): void => {
    try {
      process.kill(h.pid, s);
    } catch {
      // Gone already.
    }
  };
  signal('SIGTERM');
  signal('SIGCONT');
  const deadline = Date.now() + TAKEOVER_GRACE_MS;
  while (processAlive(h.pid, h.pidStart) && Date.now() < deadline) await sleep(50);
  if (!processAlive(h.pid, h.pidStart)) return false;
  signal('SIGKILL');
  const killDeadline = Date.now() + KILL_WAIT_MS;
  while (processAlive(h.pid, h.pidStart) && Date.now() < killDeadline) await sleep(20);
  return true;
}
