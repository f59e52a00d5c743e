import type { Log } from '../log/logger.js';
import { defaultAgentFactory, GuestRun, type AgentFactory } from './guest-run.js';
import { freezeGuard } from './freeze-guard.js';
import { Journal } from './journal.js';
import type { Plan, UnitPlan } from './plan.js';
import { prune } from './prune.js';
import type { GuestResult, RecoveryResult, RunReport, UnitResult } from './results.js';
import type { SignalGuard } from './signals.js';
import { runCommand } from './command.js';
import { exitCodeFor } from '../report/exit-codes.js';

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
    startedAt: startedAt.toISOString(),
    endedAt: '',
    durationMs: 0,
    exitCode: 0,
    recovered: deps.recovered ?? [],
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

  const queue = [...plan.units];
  const worker = async (): Promise<void> => {
    for (let u = queue.shift(); u; u = queue.shift()) {
      const { unit, guests } = await runUnit(u, plan, { ...deps, journal });
      report.units.push(unit);
      report.guests.push(...guests);
    }
  };
  await Promise.all(Array.from({ length: Math.min(plan.concurrency, plan.units.length) }, worker));

  if (plan.notify && !deps.signals.received) {
    await runCommand(plan.notify.argv, { timeoutMs: plan.notify.timeoutMs, guest: '-', step: 'notify', log: deps.log });
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

async function runUnit(
  u: UnitPlan,
  plan: Plan,
  deps: RunDeps & { journal: Journal },
): Promise<{ unit: UnitResult; guests: GuestResult[] }> {
  const runs = u.guests.map(
    (g) => new GuestRun(g, u.name, deps.log, deps.agentFactory ?? defaultAgentFactory, deps.lockWaitMs ?? 0),
  );
  const unit: UnitResult = { name: u.name, kind: u.kind, ok: false, budgetExceeded: false };
  try {
    if (deps.signals.received) {
      for (const r of runs) r.result.errors.push(`not started: interrupted by ${deps.signals.received}`);
      return { unit, guests: runs.map((r) => r.result) };
    }
    const prepared = await Promise.allSettled(runs.map((r) => r.connectAndCheck()));
    const canFreeze = prepared.every((p) => p.status === 'fulfilled');

    let snapshotOk = false;
    if (canFreeze) {
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
        },
        (m, signal) => m.snapshot(signal, true),
      );
      snapshotOk = outcome.snapshotOk;
      unit.budgetExceeded = outcome.budgetExceeded;
      if (outcome.skewMs !== undefined) unit.skewMs = outcome.skewMs;
      unit.frozenWindowMs = Math.max(0, ...runs.map((r) => r.result.frozenWindowMs ?? 0));
      for (const r of runs)
        r.result.consistency = snapshotOk && r.result.thawProven ? (r.hooksRan ? 'application' : 'filesystem') : 'none';
    } else if (plan.failurePolicy === 'crash-consistent' && !deps.signals.received) {
      // The policy allows a snapshot without a freeze; the result says so.
      for (const [i, p] of prepared.entries()) {
        if (p.status === 'rejected')
          deps.log({
            kind: 'fallback-crash-consistent',
            guest: runs[i]!.plan.name,
            reason: (p.reason as Error).message,
          });
      }
      const snaps = await Promise.allSettled(runs.map((r) => r.snapshot(undefined, false)));
      snapshotOk = snaps.every((s) => s.status === 'fulfilled');
      for (const r of runs) r.result.consistency = snapshotOk ? 'crash' : 'none';
    } else if (u.kind === 'group') {
      for (const r of runs)
        if (r.result.errors.length === 0)
          r.result.errors.push('not frozen: another member of its consistency group failed');
    }

    if (snapshotOk && !deps.signals.received) {
      await Promise.all(runs.map((r) => postSteps(r, deps.log, deps.signals)));
    }
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

/** Backup, verify, prune and post-hooks: outside the frozen window; the first failure stops the rest. */
async function postSteps(r: GuestRun, log: Log, signals: SignalGuard): Promise<void> {
  const g = r.plan;
  try {
    // A signal during a long copy cancels it (the guest is thawed already) rather than waiting it out.
    await r.completeSnapshot(signals);
    if (g.backup) await r.command('backup', g.backup);
    if (g.verify) await r.command('verify', g.verify);
    if (g.prune) await r.step('prune', () => prune(g.name, g.prune!, { log, dryRun: false }));
    for (const [i, h] of g.postHooks.entries()) await r.command(`post-hook ${i + 1}`, h);
  } catch {
    // Recorded in the result by step().
  }
}
