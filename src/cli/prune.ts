import type { ResolvedConfig } from '../config/types.js';
import { newRunId, plan } from '../workflow/plan.js';
import { formatPrune, prune, type PruneResult } from '../workflow/prune.js';
import { pickJob, type CliContext } from './context.js';

/**
 * `quiesce prune [JOB] [--dry-run]`: applies each guest's retention rules now
 * (or only lists with --dry-run), as the job's run would: to its backup files
 * or its repository's restore points, listing what is kept and why.
 */
export async function pruneJob(
  ctx: CliContext,
  config: ResolvedConfig,
  jobArg: string | undefined,
  dryRun: boolean,
): Promise<number> {
  const now = new Date();
  const p = plan(config, pickJob(config, jobArg), { runId: newRunId(now), now });
  const results: (PruneResult | { guest: string; error: string })[] = [];
  for (const g of p.units.flatMap((u) => u.guests)) {
    if (!g.prune) continue;
    try {
      results.push(await prune(g.name, g.prune, { log: ctx.log, dryRun }));
    } catch (err) {
      results.push({ guest: g.name, error: (err as Error).message });
    }
  }
  const text = results.length
    ? results.flatMap((r) => ('error' in r ? [`${r.guest}: FAILED: ${r.error}`] : formatPrune(r))).join('\n')
    : 'no guest of this job has prune rules';
  ctx.print(results, `${text}\n`);
  return results.some((r) => 'error' in r) ? 3 : 0;
}
