import { mkdirSync, renameSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import type { RunReport } from '../workflow/results.js';

/** Writes a file atomically (a reader never sees half of it). */
export function writeAtomic(path: string, text: string): void {
  const tmp = `${path}.tmp-${process.pid}`;
  writeFileSync(tmp, text, { mode: 0o644 });
  renameSync(tmp, path);
}

/** STATEDIR/runs/<runId>.json plus STATEDIR/last.json (and last-<job>.json). Returns the run file. */
export function writeReport(stateDir: string, report: RunReport): string {
  const dir = join(stateDir, 'runs');
  mkdirSync(dir, { recursive: true });
  const text = `${JSON.stringify(report, null, 2)}\n`;
  const file = join(dir, `${report.runId}.json`);
  writeAtomic(file, text);
  writeAtomic(join(stateDir, 'last.json'), text);
  writeAtomic(join(stateDir, `last-${report.job}.json`), text);
  return file;
}
