import { acquireLock } from '../guest/lock.js';
import { execute } from '../workflow/executor.js';
import { formatPlan, newRunId, plan } from '../workflow/plan.js';
import { SignalGuard } from '../workflow/signals.js';
import { writeMetrics } from '../report/metrics.js';
import { writeReport } from '../report/report.js';
import type { ResolvedConfig } from '../config/types.js';
import { pickJob, type CliContext } from './context.js';
import { prune } from '../workflow/prune.js';
import { fillPlaceholders, timeValues } from '../config/placeholders.js';
import { formatReport } from './summary.js';
import { exitCodeFor } from '../workflow/exit-code.js';
import type { RunReport } from '../workflow/results.js';

export interface RunOptions {
  /** How long to wait for another run of the job (default: the config's lockWait). */
  readonly waitMs?: number;
  readonly metricsFile?: string;
}

/**
 * Writes the metrics, then the report, so that both carry the exit code the
 * process returns: a write failure is recorded in the report (REPORT_WRITE,
 * exit 3 at least) and never hides a worse code (5 or a signal's).
 */
function writeOutputs(
  ctx: CliContext,
  report: RunReport,
  stateDir: string,
  metrics: string | undefined,
  recompute: () => number,
): { file: string | undefined; exitCode: number } {
  const failed = (what: string, err: unknown): void => {
    const message = `cannot write the ${what}: ${(err as Error).message}`;
    report.errors.push({ code: 'REPORT_WRITE', message });
    ctx.log({ kind: 'error', message });
    report.exitCode = recompute();
  };
  if (metrics) {
    try {
      writeMetrics(metrics, report);
    } catch (err) {
      failed(`metrics file ${metrics}`, err);
    }
  }
  try {
    return { file: writeReport(stateDir, report), exitCode: report.exitCode };
  } catch (err) {
    const before = report.exitCode;
    failed(`run report in ${stateDir}`, err);
    // The metrics said the code before this failure; make them agree with the exit status.
    if (metrics && report.exitCode !== before) {
      try {
        writeMetrics(metrics, report);
      } catch {
        // Reported above already.
      }
    }
    return { file: undefined, exitCode: report.exitCode };
  }
}

/** `quiesce run [JOB]`: plan, lock the job, recover, execute, report. Returns the exit code. */
export async function runJob(
  ctx: CliContext,
  config: ResolvedConfig,
  jobArg: string | undefined,
  opts: RunOptions,
): Promise<number> {
  const job = pickJob(config, jobArg);
  const now = new Date();
  const p = plan(config, job, { runId: newRunId(now), now });
  const lock = await acquireLock(`job:${config.stateDir}:${job}`, {
    waitMs: opts.waitMs ?? config.lockWaitMs,
    what: `job ${job}`,
    runId: p.runId,
  });
  const signals = new SignalGuard(ctx.log).install();
  try {
    const recovered = await ctx.recover(config.stateDir);
    const report = await execute(p, { log: ctx.log, signals, recovered, lockWaitMs: 0, onWindow: ctx.onWindow });
    const { file, exitCode } = writeOutputs(ctx, report, config.stateDir, opts.metricsFile ?? config.metricsFile, () =>
      exitCodeFor(report, signals.exitCode()),
    );
    ctx.print(report, formatReport(report, file));
    return exitCode;
  } finally {
    signals.uninstall();
    await lock.release();
  }
}

/** `quiesce plan [JOB]`: what run would do, without touching a guest. */
export function showPlan(ctx: CliContext, config: ResolvedConfig, jobArg: string | undefined): number {
  const now = new Date();
  const p = plan(config, pickJob(config, jobArg), { runId: newRunId(now), now });
  ctx.print(p, formatPlan(p));
  return 0;
}

/** `quiesce prune [JOB] [--dry-run]`: applies each guest's retention rules now (or only lists with --dry-run). */
export async function pruneJob(
  ctx: CliContext,
  config: ResolvedConfig,
  jobArg: string | undefined,
  dryRun: boolean,
): Promise<number> {
  const job = config.jobs.get(pickJob(config, jobArg))!;
  const names = [...job.guests, ...job.groups.flat()];
  const results: { guest: string; keep: readonly string[]; remove: readonly string[]; error?: string }[] = [];
  for (const name of names) {
    const g = config.guests.get(name)!;
    if (!g.prune?.match) continue;
    const now = new Date();
    const match = fillPlaceholders(g.prune.match, {
      guest: name,
      job: job.name,
      runId: '',
      stateDir: config.stateDir,
      ...timeValues(now),
    });
    try {
      const d = await prune(name, { ...g.prune, match }, { log: ctx.log, dryRun });
      results.push({ guest: name, keep: d.keep, remove: d.remove });
    } catch (err) {
      results.push({ guest: name, keep: [], remove: [], error: (err as Error).message });
    }
  }
  const verb = dryRun ? 'would remove' : 'removed';
  const text = results.length
    ? results
        .map((r) =>
          r.error
            ? `${r.guest}: FAILED: ${r.error}`
            : `${r.guest}: keep ${r.keep.join(' ') || '(none)'}; ${verb} ${r.remove.join(' ') || '(none)'}`,
        )
        .join('\n')
    : 'no guest of this job has prune rules';
  ctx.print(results, `${text}\n`);
  return results.some((r) => r.error) ? 3 : 0;
}
