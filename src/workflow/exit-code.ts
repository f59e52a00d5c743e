import { QuiesceError, type ErrorCode } from '../errors.js';
import type { RunError, RunReport } from './results.js';

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

/**
 * How bad an exit code is: 5 (a guest may be frozen) above a signal's
 * 128+n, above 4, 3, 2, 1, 0. When two outcomes meet, the worse one wins.
 */
function severity(code: number): number {
  if (code === EXIT.THAW_UNPROVEN) return 100;
  if (code >= 128) return 90;
  return code;
}

export function worseExit(a: number, b: number): number {
  return severity(b) > severity(a) ? b : a;
}

const onlyCode = (errors: readonly RunError[], code: ErrorCode): boolean =>
  errors.length > 0 && errors.every((e) => e.code === code);

/** The run's exit code, from typed error codes only (never from message text). */
export function exitCodeFor(report: RunReport, signalExit: number | undefined): number {
  if (
    report.guests.some((g) => g.thawProven === false || g.errors.some((e) => e.code === 'THAW_UNPROVEN')) ||
    report.recovered.some((r) => !r.ok && !r.busy)
  )
    return EXIT.THAW_UNPROVEN;
  if (signalExit !== undefined) return signalExit;
  const ok = report.guests.filter((g) => g.ok).length;
  let code: number;
  if (ok === report.guests.length) code = EXIT.OK;
  else if (ok === 0 && report.guests.every((g) => onlyCode(g.errors, 'LOCKED'))) code = EXIT.LOCKED;
  else code = ok === 0 ? EXIT.FAILED : EXIT.PARTIAL;
  // A report or metrics write failure is a failure of the run, and never hides a worse code.
  if (report.errors.length) code = worseExit(code, EXIT.FAILED);
  return code;
}

/** The exit code of a command that failed with an exception before any result (config, lock, a thaw). */
export function exitCodeForError(err: unknown): number {
  if (err instanceof QuiesceError) {
    if (err.code === 'CONFIG') return EXIT.CONFIG;
    if (err.code === 'LOCKED') return EXIT.LOCKED;
    if (err.code === 'THAW_UNPROVEN') return EXIT.THAW_UNPROVEN;
  }
  return EXIT.FAILED;
}
