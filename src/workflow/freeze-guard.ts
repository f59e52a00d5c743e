import { QuiesceError } from '../errors.js';
import type { Log } from '../log/logger.js';
import { warmUpSpawn } from '../process/run.js';
import type { GuestRun } from './guest-run.js';
import type { Journal, JournalRecord } from './journal.js';
import type { SignalGuard } from './signals.js';

export interface GuardOutcome {
  readonly snapshotOk: boolean;
  /**
   * The journal was written, then no snapshot began: arming the agent's
   * watchdog or a freeze failed, or hung until the budget or a signal.
   */
  readonly freezeFailed: boolean;
  readonly budgetExceeded: boolean;
  readonly skewMs: number | undefined;
  readonly frozenWindowMs: number | undefined;
}

/**
 * The one place a thaw is guaranteed. For every member a journal record is
 * durable before the first freeze (no record, no freeze), and removed only
 * after a proven thaw. Inside: freeze all (in parallel, a barrier), snapshot
 * all, with a budget timer that cancels the snapshot and thaws at once, and
 * signals that do the same. On every path (error, timeout, signal) every
 * member whose freeze was sent is thawed, in reverse order. While a member
 * is frozen nothing here waits on a host filesystem: journal updates are
 * asynchronous and not awaited before the thaw.
 */
export async function freezeGuard(
  unit: string,
  members: readonly GuestRun[],
  ctx: {
    runId: string;
    job: string;
    budgetMs: number;
    journal: Journal;
    signals: SignalGuard;
    log: Log;
    /** Told when the frozen window opens and closes (the CLI holds its log meanwhile). */
    onWindow?: (open: boolean) => void;
    /**
     * The snapshot step starts a process inside the window (a command provider, `freeze`'s CMD): the
     * process runner's first spawn is warmed up before the freeze.
     */
    spawnsInWindow: boolean;
  },
  snapshot: (m: GuestRun, signal: AbortSignal) => Promise<void>,
): Promise<GuardOutcome> {
  const abort = new AbortController();
  let budgetTimer: NodeJS.Timeout | undefined;
  let budgetExceeded = false;
  let snapshotOk = false;
  let journalWritten = false;
  let snapshotsBegan = false;
  let skewMs: number | undefined;
  let snapshots: Promise<unknown> | undefined;
  let windowOpen = false;
  const records = new Map<GuestRun, JournalRecord>();
  const updates: Promise<void>[] = [];
  const t0 = performance.now();

  ctx.signals.register(abort);
  try {
    const written = await Promise.allSettled(
      members.map(async (m) => {
        const r = await ctx.journal.write({
          runId: ctx.runId,
          job: ctx.job,
          guest: m.plan.name,
          address: m.plan.address,
          connector: m.plan.connector,
        });
        records.set(m, r);
      }),
    );
    const unwritten = written.find((w) => w.status === 'rejected');
    if (unwritten) throw (unwritten as PromiseRejectedResult).reason;
    journalWritten = true;
    for (const m of members) await m.armWatchdog(ctx.budgetMs);
    if (ctx.spawnsInWindow) await warmUpSpawn();
    if (abort.signal.aborted) throw new QuiesceError('INTERRUPTED', 'interrupted before the freeze');

    budgetTimer = setTimeout(() => {
      budgetExceeded = true;
      ctx.log({ kind: 'budget-exceeded', unit, budgetMs: ctx.budgetMs });
      abort.abort(new QuiesceError('BUDGET_EXCEEDED', `frozen longer than the ${ctx.budgetMs} ms budget`));
    }, ctx.budgetMs);

    ctx.onWindow?.(true);
    windowOpen = true;
    const aborted = new Promise<'aborted'>((resolve) =>
      abort.signal.addEventListener('abort', () => resolve('aborted'), { once: true }),
    );
    const freezes = Promise.allSettled(members.map((m) => m.freeze()));
    // A member whose freeze hangs must not keep the others frozen past the budget: on abort, go and thaw
    // (each member's thaw waits for its own freeze's reply or timeout; the others thaw at once).
    const frozenOrAborted = await Promise.race([freezes, aborted]);
    if (frozenOrAborted === 'aborted') throw abort.signal.reason;
    const frozen = frozenOrAborted;
    for (const m of members) {
      const n = m.result.frozenFilesystems;
      const r = records.get(m);
      // Recovery checks its thaw count against this; written in the background, never waited on while frozen.
      if (n !== undefined && r)
        updates.push(
          ctx.journal
            .update(r, { frozen: n })
            .catch((err: unknown) => ctx.log({ kind: 'warning', guest: m.plan.name, message: (err as Error).message })),
        );
    }
    const failed = frozen.find((r) => r.status === 'rejected');
    if (failed) throw (failed as PromiseRejectedResult).reason;
    if (members.length > 1) {
      const at = members.map((m) => m.frozenAt!);
      skewMs = Math.round(Math.max(...at) - Math.min(...at));
      ctx.log({ kind: 'group-frozen', group: unit, skewMs });
    }
    if (abort.signal.aborted) throw abort.signal.reason;

    snapshotsBegan = true;
    const each = members.map((m) => snapshot(m, abort.signal));
    // Waited for after the thaw: every member's cancelled snapshot (its process group) has ended then.
    snapshots = Promise.allSettled(each);
    // Thaw the moment the budget or a signal says so, even while the snapshot process is still being killed.
    const first = await Promise.race([Promise.all(each).then(() => 'done' as const), aborted]);
    if (first === 'aborted') throw abort.signal.reason;
    snapshotOk = true;
  } catch (err) {
    // One member's failure ends the window for all: the others' snapshots, still running, are cancelled.
    if (!abort.signal.aborted) abort.abort(err);
    const code = err instanceof QuiesceError ? err.code : 'STEP_FAILED';
    for (const m of members) m.addError(code, (err as Error).message);
  } finally {
    clearTimeout(budgetTimer);
    const attempted = members.filter((m) => m.freezeAttempted).reverse();
    await Promise.all(attempted.map((m) => m.thawAndProve()));
    if (windowOpen) ctx.onWindow?.(false);
    ctx.signals.unregister(abort);
  }
  await Promise.all(updates);
  for (const m of members) {
    if (records.has(m) && (!m.freezeAttempted || m.result.thawProven))
      await ctx.journal
        .remove(ctx.runId, m.plan.name)
        .catch((err: unknown) =>
          ctx.log({ kind: 'warning', guest: m.plan.name, message: `journal: ${(err as Error).message}` }),
        );
  }
  // The cancelled snapshot's process group ends outside the window.
  await snapshots?.catch(() => undefined);
  const freezeFailed = journalWritten && !snapshotsBegan;
  return { snapshotOk, freezeFailed, budgetExceeded, skewMs, frozenWindowMs: Math.round(performance.now() - t0) };
}
