import type { RunReport } from '../workflow/results.js';

/** A run report as a few readable lines. */
export function formatReport(r: RunReport, reportFile?: string): string {
  const lines = [
    `job ${r.job}, run ${r.runId}: exit ${r.exitCode} after ${(r.durationMs / 1000).toFixed(1)} s${r.interruptedBy ? ` (interrupted by ${r.interruptedBy})` : ''}`,
  ];
  for (const rec of r.recovered.filter((x) => !x.busy))
    lines.push(
      `  recovered ${rec.guest} left frozen by run ${rec.runId}: ${rec.ok ? 'thawed' : `FAILED: ${rec.error}`}`,
    );
  for (const e of r.errors) lines.push(`  FAILED: ${e.message}`);
  for (const u of r.units.filter((x) => x.kind === 'group')) {
    lines.push(
      `  group ${u.name}: ${u.ok ? 'ok' : 'FAILED'}, skew ${u.skewMs ?? '-'} ms${u.budgetExceeded ? ', budget exceeded' : ''}`,
    );
  }
  for (const g of r.guests) {
    const window = g.frozenWindowMs !== undefined ? `, frozen ${g.frozenWindowMs} ms` : '';
    const thaw = g.thawProven === false ? ', THAW NOT PROVEN' : '';
    lines.push(
      `  ${g.ok ? 'ok    ' : 'FAILED'} ${g.guest}: ${g.consistency}${window}${thaw}${g.errors.length ? ` — ${g.errors.map((e) => e.message).join('; ')}` : ''}`,
    );
    if (g.steps.length) {
      lines.push(
        `         steps: ${g.steps.map((s) => `${s.name} ${s.ok ? '' : 'FAILED '}${s.durationMs} ms`).join(', ')}`,
      );
    }
  }
  if (reportFile) lines.push(`  report: ${reportFile}`);
  return `${lines.join('\n')}\n`;
}
