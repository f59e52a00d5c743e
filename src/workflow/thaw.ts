import pRetry from 'p-retry';
import { AgentError, QuiesceError } from '../errors.js';
import type { GuestAgent } from '../guest/types.js';
import type { Log } from '../log/logger.js';

/** What a thaw-and-prove found. */
export interface ThawOutcome {
  /** Status thawed, and the thaw count accounts for every filesystem known to be frozen. */
  readonly proven: boolean;
  /** Filesystems the thaw replies reported, summed over attempts; undefined when no reply came. */
  readonly thawed: number | undefined;
  /** performance.now() when the successful thaw's reply arrived: the frozen window ends there. */
  readonly thawedAt: number | undefined;
  /** The successful attempt's round trip. */
  readonly thawMs: number | undefined;
  readonly error: QuiesceError | undefined;
}

export interface ThawOptions {
  readonly guest: string;
  readonly log: Log;
  readonly thawTimeoutMs: number;
  readonly statusTimeoutMs?: number;
  /** Filesystems the agent reported frozen, when known (the run's freeze reply, or the journal). */
  readonly frozen?: number;
  /**
   * Recovery: a thaw count of 0 with status thawed is proof too (the dead
   * owner, or the agent's watchdog, thawed before us). A run froze the guest
   * itself, so for a run 0 of N means something else thawed it, or a thaw
   * failed: not proven.
   */
  readonly zeroIsThawed?: boolean;
}

/**
 * The one thaw of quiesce, shared by run, freeze, thaw and recover: thaw at
 * once, retry after a failure (a thaw is always safe to repeat) until a
 * deadline, then prove it: status thawed and a thaw count that covers what
 * was frozen. Never throws.
 */
export async function thawAndProve(agent: GuestAgent, o: ThawOptions): Promise<ThawOutcome> {
  let thawed: number | undefined;
  let thawedAt: number | undefined;
  let thawMs: number | undefined;
  let lostReply = false;
  const thawOnce = async (): Promise<void> => {
    const t0 = performance.now();
    const n = await agent.execute('guest-fsfreeze-thaw', undefined, { timeoutMs: o.thawTimeoutMs });
    thawedAt = performance.now();
    thawMs = Math.round((thawedAt - t0) * 100) / 100;
    if (typeof n !== 'number' || !Number.isInteger(n) || n < 0)
      throw new QuiesceError('THAW_UNPROVEN', `the thaw replied ${JSON.stringify(n)}, not a count`, {
        guest: o.guest,
      });
    thawed = (thawed ?? 0) + n;
  };
  const failed = (error: Error, attempt: number): void => {
    // A lost reply may have thawed: counts can no longer be compared.
    if (!(error instanceof AgentError)) lostReply = true;
    o.log({ kind: 'thaw-retry', guest: o.guest, attempt, error: error.message });
  };
  try {
    // First attempt straight away (it ends the frozen window); the retry machinery only after a failure.
    try {
      await thawOnce();
    } catch (err) {
      failed(err as Error, 1);
      await pRetry(thawOnce, {
        retries: 3,
        minTimeout: 250,
        maxTimeout: 2000,
        // Retries end at a deadline: a guest that never answers becomes a clear failure, not a hang.
        maxRetryTime: o.thawTimeoutMs * 3,
        onFailedAttempt: ({ error, attemptNumber }) => failed(error, attemptNumber + 1),
      });
    }
    const status = await pRetry(
      () => agent.execute('guest-fsfreeze-status', undefined, { timeoutMs: o.statusTimeoutMs ?? o.thawTimeoutMs }),
      { retries: 2, minTimeout: 200 },
    );
    if (status !== 'thawed')
      throw new QuiesceError('THAW_UNPROVEN', `status is ${String(status)} after the thaw`, { guest: o.guest });
    const n = thawed ?? 0;
    if (o.frozen !== undefined && !lostReply && n < o.frozen && !(o.zeroIsThawed && n === 0)) {
      throw new QuiesceError(
        'THAW_UNPROVEN',
        `thawed ${n} filesystem(s) but ${o.frozen} were frozen: something thawed them earlier, or a thaw failed`,
        { guest: o.guest },
      );
    }
    if (o.frozen !== undefined && n > o.frozen) {
      // More than this run froze: someone else froze one too; everything is thawed now, which is the point.
      o.log({
        kind: 'warning',
        guest: o.guest,
        message: `thawed ${n} filesystem(s), more than the ${o.frozen} frozen by this run (another tool froze one too)`,
      });
    }
    return { proven: true, thawed, thawedAt, thawMs, error: undefined };
  } catch (err) {
    const error =
      err instanceof QuiesceError && err.code === 'THAW_UNPROVEN'
        ? err
        : new QuiesceError('THAW_UNPROVEN', `the thaw could not be proven: ${(err as Error).message}`, {
            guest: o.guest,
            cause: err,
          });
    o.log({ kind: 'thaw-failed', guest: o.guest, error: error.message });
    return { proven: false, thawed, thawedAt, thawMs, error };
  }
}
