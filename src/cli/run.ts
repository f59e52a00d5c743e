import { acquireLock } from '../guest/lock.js';
import { execute } from '../workflow/executor.js';
import { formatPlan, loadGuestKinds, newRunId, plan } from '../workflow/plan.js';
import { SignalGuard } from '../workflow/signals.js';
import { writeMetrics } from '../report/metrics.js';
import { writeReport } from '../report/report.js';
import type { ResolvedConfig } from '../config/types.js';
import { pickJob, type CliContext } from './context.js';
import { formatReport } from './summary.js';
import { compiledEagerly } from './load-command.js';
import { exitCodeFor } from '../workflow/exit-code.js';
import type { LevelPreview } from '../snapshot/qmp/chain.js';
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
  // Compiled whole before any window; a no-op when loadConfig({ frozenWindow }) loaded them (not for --demo).
  // The prune and verify steps' modules too, where a guest has them: with several units, one unit's prune
  // or verify runs while another is frozen, and a module's first load runs its code there.
  const guests = p.units.flatMap((u) => u.guests);
  await compiledEagerly(() =>
    Promise.all([
      loadGuestKinds(guests),
      guests.some((g) => g.prune) ? import('../workflow/prune.js') : undefined,
      guests.some((g) => g.verify && g.verify.kind !== 'command') ? import('../verify/index.js') : undefined,
    ]),
  );
  const lock = await acquireLock(`job:${config.stateDir}:${job}`, {
    waitMs: opts.waitMs ?? config.lockWaitMs,
    what: `job ${job}`,
    runId: p.runId,
  });
  const signals = new SignalGuard(ctx.log).install();
  try {
    const recovered = await ctx.recover(config.stateDir);
    // No module may load inside a frozen window: the log's winston is loaded before the first one opens.
    await ctx.log.ready();
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

/**
 * `quiesce plan [JOB]`: what run would do, without touching a guest. For a
 * backup into a repository it also says which level a run would take now and
 * why (from the manifests and QEMU's bitmaps, read-only).
 */
export async function showPlan(ctx: CliContext, config: ResolvedConfig, jobArg: string | undefined): Promise<number> {
  const now = new Date();
  const p = plan(config, pickJob(config, jobArg), { runId: newRunId(now), now });
  const levels: LevelPreview[] = [];
  for (const g of p.units.flatMap((u) => u.guests)) {
    const s = g.snapshot;
    if (s.provider === 'qmp' && s.repository)
      levels.push(
        await (await import('../snapshot/qmp/chain.js')).previewLevel({ ...s, repository: s.repository }, g.name),
      );
    if (s.provider === 'libvirt' && s.repository)
      levels.push(
        await (
          await import('../snapshot/libvirt/chain.js')
        ).previewLibvirtLevel({ ...s, repository: s.repository }, g.name),
      );
  }
  const text = levels.map((l) => `${l.guest}: next backup: ${l.level} — ${l.reason}\n`).join('');
  ctx.print(levels.length ? { ...p, levels } : p, `${await formatPlan(p)}${text ? `\n${text}` : ''}`);
  return 0;
}
