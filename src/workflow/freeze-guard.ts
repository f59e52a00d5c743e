import { QuiesceError } from '../errors.js';
import type { Log } from '../log/logger.js';
import type { GuestRun } from './guest-run.js';
import type { Journal } from './journal.js';
import type { SignalGuard } from './signals.js';
import { warmUpSpawn } from './command.js';

export interface GuardOutcome {
  readonly snapshotOk: boolean;
  readonly budgetExceeded: boolean;
  readonly skewMs: number | undefined;
  readonly frozenWindowMs: number | undefined;
}

/**
 * The one place a thaw is guaranteed. For every member: a journal record
 * (fsynced) before the freeze, removed only after a proven thaw. Inside:
 * freeze all (in parallel, a barrier), snapshot all, with a budget timer that
 * cancels the snapshot and thaws at once, and signals that do the same. On
 * every path — error, timeout, signal — every member whose freeze was sent is
 * thawed, in reverse order.
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
    /** Told when the frozen window opens and closes (the CLI holds its log meanwhile in --local mode). */
    onWindow?: (open: boolean) => void;
  },
  snapshot: (m: GuestRun, signal: AbortSignal) => Promise<void>,
): Promise<GuardOutcome> {
  const abort = new AbortController();
  let budgetTimer: NodeJS.Timeout | undefined;
  let budgetExceeded = false;
  let snapshotOk = false;
  let skewMs: number | undefined;
  let snapshots: Promise<unknown> | undefined;
  let windowOpen = false;
  const t0 = performance.now();

  for (const m of members) {
    ctx.journal.write({
      runId: ctx.runId,
      job: ctx.job,
      guest: m.plan.name,
      address: m.plan.address,
      connector: m.plan.connector,
    });
  }
  ctx.signals.register(abort);
  try {
    for (const m of members) await m.armWatchdog(ctx.budgetMs);
    await warmUpSpawn();
    if (abort.signal.aborted) throw new QuiesceError('INTERRUPTED', 'interrupted before the freeze');

    budgetTimer = setTimeout(() => {
      budgetExceeded = true;
      ctx.log({ kind: 'budget-exceeded', unit, budgetMs: ctx.budgetMs });
      abort.abort(new QuiesceError('BUDGET_EXCEEDED', `frozen longer than the ${ctx.budgetMs} ms budget`));
    }, ctx.budgetMs);

    ctx.onWindow?.(true);
    windowOpen = true;
    const frozen = await Promise.allSettled(members.map((m) => m.freeze()));
    const failed = frozen.find((r) => r.status === 'rejected');
    if (failed) throw (failed as PromiseRejectedResult).reason;
    if (members.length > 1) {
      const at = members.map((m) => m.frozenAt!);
      skewMs = Math.round(Math.max(...at) - Math.min(...at));
      ctx.log({ kind: 'group-frozen', group: unit, skewMs });
    }
    if (abort.signal.aborted) throw abort.signal.reason;

    const aborted = new Promise<'aborted'>((resolve) =>
      abort.signal.addEventListener('abort', () => resolve('aborted'), { once: true }),
    );
    snapshots = Promise.all(members.map((m) => snapshot(m, abort.signal)));
    // Thaw the moment the budget or a signal says so, even while the snapshot process is still being killed.
    const first = await Promise.race([snapshots.then(() => 'done' as const), aborted]);
    if (first === 'aborted') throw abort.signal.reason;
    snapshotOk = true;
  } catch (err) {
    for (const m of members) {
      const text = (err as Error).message;
      if (!m.result.errors.some((e) => e.endsWith(text))) m.result.errors.push(text);
    }
  } finally {
    clearTimeout(budgetTimer);
    const attempted = members.filter((m) => m.freezeAttempted).reverse();
    await Promise.all(attempted.map((m) => m.thawAndProve()));
    if (windowOpen) ctx.onWindow?.(false);
    for (const m of members) {
      if (!m.freezeAttempted || m.result.thawProven) ctx.journal.remove(ctx.runId, m.plan.name);
    }
    ctx.signals.unregister(abort);
  }
  // The cancelled snapshot's process ends outside the window.
  await snapshots?.catch(() => undefined);
  return { snapshotOk, budgetExceeded, skewMs, frozenWindowMs: Math.round(performance.now() - t0) };
}
