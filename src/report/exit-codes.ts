import { QuiesceError } from '../errors.js';
import type { RunReport } from '../workflow/results.js';

/** Every exit status of the CLI, in one table (README and --help print it). */
export const EXIT = {
  OK: 0,
  /** Some guests (not all) failed; every frozen guest was thawed. */
  PARTIAL: 1,
  /** Bad config or usage; nothing touched a guest. */
  CONFIG: 2,
  /** Every guest failed (or the command failed); every frozen guest was thawed. */
  FAILED: 3,
  /** Another run holds the job or guest lock. */
  LOCKED: 4,
  /** A thaw could not be proven: a guest may still be frozen. Page someone. */
  THAW_UNPROVEN: 5,
} as const;

export const EXIT_TABLE: readonly [number, string][] = [
  [EXIT.OK, 'success: every guest snapshotted, every thaw proven'],
  [EXIT.PARTIAL, 'partial failure: some guests failed, every frozen guest was thawed'],
  [EXIT.CONFIG, 'config or usage error: nothing was touched'],
  [EXIT.FAILED, 'total failure: every guest failed (or the command failed), every frozen guest was thawed'],
  [EXIT.LOCKED, 'lock held: another run of this job (or of this guest) is in progress'],
  [
    EXIT.THAW_UNPROVEN,
    'a thaw could not be proven: a guest may still be frozen (quiesce thaw GUEST / quiesce recover)',
  ],
  [130, 'interrupted by SIGINT (143: SIGTERM, 129: SIGHUP) after thawing everything'],
];

export function exitTableText(): string {
  return EXIT_TABLE.map(([code, text]) => `  ${String(code).padStart(3)}  ${text}`).join('\n');
}

export function exitCodeFor(report: RunReport, signalExit: number | undefined): number {
  if (report.guests.some((g) => g.thawProven === false) || report.recovered.some((r) => !r.ok))
    return EXIT.THAW_UNPROVEN;
  if (signalExit !== undefined) return signalExit;
  const ok = report.guests.filter((g) => g.ok).length;
  if (ok === report.guests.length) return EXIT.OK;
  if (report.guests.some((g) => g.errors.some((e) => e.includes('in use by another quiesce process'))) && ok === 0)
    return EXIT.LOCKED;
  return ok === 0 ? EXIT.FAILED : EXIT.PARTIAL;
}

export function exitCodeForError(err: unknown): number {
  if (err instanceof QuiesceError) {
    if (err.code === 'CONFIG') return EXIT.CONFIG;
    if (err.code === 'LOCKED') return EXIT.LOCKED;
    if (err.code === 'THAW_UNPROVEN') return EXIT.THAW_UNPROVEN;
  }
  return EXIT.FAILED;
}
