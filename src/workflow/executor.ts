import { QuiesceError } from '../errors.js';
import type { Log } from '../log/logger.js';
import { runProcess } from '../process/run.js';
import { exitCodeFor } from './exit-code.js';
import { freezeGuard } from './freeze-guard.js';
import { defaultAgentFactory, GuestRun, type AgentFactory } from './guest-run.js';
import { Journal } from './journal.js';
import type { Plan, UnitPlan } from './plan.js';
import type { GuestResult, RecoveryResult, RunReport, UnitResult } from './results.js';
import type { SignalGuard } from './signals.js';

export interface RunDeps {
  readonly log: Log;
  readonly signals: SignalGuard;
  readonly journal?: Journal;
  readonly agentFactory?: AgentFactory;
  readonly lockWaitMs?: number;
  readonly recovered?: RecoveryResult[];
  /** Told when a frozen window opens and closes (the CLI holds its log meanwhile). */
  readonly onWindow?: (open: boolean) => void;
}

/** Executes a plan: units with bounded concurrency; one unit's failure never delays another's thaw. */
export async function execute(plan: Plan, deps: RunDeps): Promise<RunReport> {
  const startedAt = new Date();
  const journal = deps.journal ?? new Journal(plan.stateDir);
  const report: RunReport = {
    runId: plan.runId,
    job: plan.job,
    configSource: plan.configSource,
    budgetMs: plan.budgetMs,
    startedAt: startedAt.toISOString(),
    endedAt: '',
    durationMs: 0,
    exitCode: 0,
    recovered: deps.recovered ?? [],
    errors: [],
    units: [],
    guests: [],
  };
  deps.log({
    kind: 'run-start',
    job: plan.job,
    runId: plan.runId,
    units: plan.units.length,
    guests: plan.units.reduce((n, u) => n + u.guests.length, 0),
  });

  // One controller for every step after the thaw: a signal stops the running step's process group at once.
  const stop = new AbortController();
  deps.signals.register(stop);
  try {
    const queue = [...plan.units];
    const worker = async (): Promise<void> => {
      for (let u = queue.shift(); u; u = queue.shift()) {
        const { unit, guests } = await runUnit(u, plan, { ...deps, journal }, stop.signal);
        report.units.push(unit);
        report.guests.push(...guests);
      }
    };
    await Promise.all(Array.from({ length: Math.min(plan.concurrency, plan.units.length) }, worker));

    if (plan.notify && !deps.signals.received) {
      const r = await runProcess(plan.notify.argv, {
        timeoutMs: plan.notify.timeoutMs,
        signal: stop.signal,
        guest: '-',
        step: 'notify',
        log: deps.log,
      });
      if (!r.ok) deps.log({ kind: 'warning', message: `notify: ${r.error}` });
    }
  } finally {
    deps.signals.unregister(stop);
  }
  const endedAt = new Date();
  report.endedAt = endedAt.toISOString();
  report.durationMs = endedAt.getTime() - startedAt.getTime();
  if (deps.signals.received) report.interruptedBy = deps.signals.received;
  report.exitCode = exitCodeFor(report, deps.signals.exitCode());
  deps.log({
    kind: 'run-end',
    job: plan.job,
    runId: plan.runId,
    ok: report.guests.filter((g) => g.ok).length,
    failed: report.guests.filter((g) => !g.ok).length,
    durationMs: report.durationMs,
    exitCode: report.exitCode,
  });
  return report;
}

function interrupted(signals: SignalGuard, what: string): QuiesceError {
  return new QuiesceError('INTERRUPTED', `${what}: interrupted by ${signals.received ?? 'a signal'}`);
}

async function runUnit(
  u: UnitPlan,
  plan: Plan,
  deps: RunDeps & { journal: Journal },
  stop: AbortSignal,
): Promise<{ unit: UnitResult; guests: GuestResult[] }> {
  const runs = u.guests.map(
    (g) =>
      new GuestRun(g, u.name, deps.log, deps.agentFactory ?? defaultAgentFactory, deps.lockWaitMs ?? 0, plan.runId),
  );
  const unit: UnitResult = { name: u.name, kind: u.kind, ok: false, budgetExceeded: false };
  try {
    if (deps.signals.received) {
      for (const r of runs) r.addError('INTERRUPTED', interrupted(deps.signals, 'not started').message);
      return { unit, guests: runs.map((r) => r.result) };
    }
    const prepared = await Promise.allSettled(runs.map((r) => r.connectAndCheck(stop)));
    const canFreeze = prepared.every((p) => p.status === 'fulfilled');

    let snapshotOk = false;
    if (canFreeze && !deps.signals.received) {
      const outcome = await freezeGuard(
        u.name,
        runs,
        {
          runId: plan.runId,
          job: plan.job,
          budgetMs: plan.budgetMs,
          journal: deps.journal,
          signals: deps.signals,
          log: deps.log,
          ...(deps.onWindow ? { onWindow: deps.onWindow } : {}),
          spawnsInWindow: runs.some((r) => r.plan.snapshot.provider === 'command'),
        },
        (m, signal) => m.snapshot(signal, true),
      );
      snapshotOk = outcome.snapshotOk;
      unit.budgetExceeded = outcome.budgetExceeded;
      if (outcome.skewMs !== undefined) unit.skewMs = outcome.skewMs;
      unit.frozenWindowMs = Math.max(0, ...runs.map((r) => r.result.frozenWindowMs ?? 0));
      for (const r of runs)
        r.result.consistency = snapshotOk && r.result.thawProven ? (r.hooksRan ? 'application' : 'filesystem') : 'none';
      // An agent that answered the preflight, then failed or hung arming its watchdog or freezing: the policy
      // decides, as for one that never answered. The thaw was tried first (the guard); the errors stay.
      if (outcome.freezeFailed && plan.failurePolicy === 'crash-consistent' && !deps.signals.received)
        snapshotOk = await withoutFreeze(
          runs,
          runs.map((r) => r.result.errors[0]?.message ?? 'the freeze failed'),
          deps.log,
          stop,
        );
    } else if (!canFreeze && plan.failurePolicy === 'crash-consistent' && !deps.signals.received) {
      snapshotOk = await withoutFreeze(
        runs,
        prepared.map((p) => (p.status === 'rejected' ? (p.reason as Error).message : undefined)),
        deps.log,
        stop,
      );
    } else if (deps.signals.received) {
      for (const r of runs) r.addError('INTERRUPTED', interrupted(deps.signals, 'not frozen').message);
    } else if (u.kind === 'group') {
      for (const r of runs)
        if (r.result.errors.length === 0)
          r.addError('STEP_FAILED', 'not frozen: another member of its consistency group failed');
    }

    if (snapshotOk) await Promise.all(runs.map((r) => postSteps(r, deps.log, deps.signals, stop)));
    for (const r of runs) {
      r.result.ok =
        snapshotOk && r.result.thawProven !== false && r.result.errors.length === 0 && r.result.consistency !== 'none';
    }
    unit.ok = runs.every((r) => r.result.ok);
    return { unit, guests: runs.map((r) => r.result) };
  } finally {
    await Promise.all(runs.map((r) => r.close()));
  }
}

/**
 * failurePolicy crash-consistent, once a unit cannot be frozen: every member's
 * snapshot taken without a freeze, recorded as consistency `crash`, and each
 * reason (a failed connect, preflight or freeze) logged. The members' errors
 * stay: never a success. Returns whether every snapshot was taken.
 */
async function withoutFreeze(
  runs: readonly GuestRun[],
  reasons: readonly (string | undefined)[],
  log: Log,
  stop: AbortSignal,
): Promise<boolean> {
  for (const [i, reason] of reasons.entries())
    if (reason !== undefined) log({ kind: 'fallback-crash-consistent', guest: runs[i]!.plan.name, reason });
  const snaps = await Promise.allSettled(runs.map((r) => r.snapshot(stop, false)));
  const ok = snaps.every((s) => s.status === 'fulfilled');
  for (const r of runs) r.result.consistency = ok ? 'crash' : 'none';
  return ok;
}

/**
 * Copy wait, backup, verify, prune and post-hooks: outside the frozen window;
 * the first failure stops the rest. A signal stops the running step's process
 * group at once and starts no further step; the guest is reported interrupted.
 */
async function postSteps(r: GuestRun, log: Log, signals: SignalGuard, stop: AbortSignal): Promise<void> {
  const g = r.plan;
  const steps: [string, () => Promise<void>][] = [['snapshot-complete', () => r.completeSnapshot(stop)]];
  if (g.backup) steps.push(['backup', () => r.processStep('backup', g.backup!, stop)]);
  if (g.verify) steps.push(['verify', () => r.verify(g.verify!, stop)]);
  if (g.prune)
    steps.push([
      'prune',
      // Imported here (cli/run.ts loads it before any window when a guest prunes): a run whose guests keep
      // no rules never loads the repository's modules.
      async () =>
        void (await r.step('prune', async () =>
          (await import('./prune.js')).prune(g.name, g.prune!, { log, dryRun: false }),
        )),
    ]);
  for (const [i, h] of g.postHooks.entries())
    steps.push([`post-hook ${i + 1}`, () => r.processStep(`post-hook ${i + 1}`, h, stop)]);
  try {
    for (const [name, run] of steps) {
      if (signals.received) {
        r.addError('INTERRUPTED', interrupted(signals, `${name} not started`).message, name);
        return;
      }
      try {
        await run();
      } catch {
        // Recorded in the result by step().
        return;
      }
    }
  } finally {
    // Whatever happened to the steps: a snapshot held for the copy (an overlay) is given back now.
    await r.releaseSnapshot(stop).catch(() => undefined);
  }
}
