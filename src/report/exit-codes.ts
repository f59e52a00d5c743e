import { EXIT } from '../workflow/exit-code.js';

/** The exit statuses as README and --help print them. */
export const EXIT_TABLE: readonly [number, string][] = [
  [EXIT.OK, 'success: every guest snapshotted, every thaw proven'],
  [EXIT.PARTIAL, 'partial failure: some guests failed, every frozen guest was thawed'],
  [EXIT.CONFIG, 'config or usage error: nothing was touched'],
  [
    EXIT.FAILED,
    'total failure: every guest failed (or the command, the report or the metrics write failed), every frozen guest was thawed',
  ],
  [EXIT.LOCKED, 'lock held: another run of this job (or of this guest) is in progress'],
  [
    EXIT.THAW_UNPROVEN,
    'a thaw could not be proven: a guest may still be frozen (quiesce thaw GUEST / quiesce recover); wins over every other code',
  ],
  [130, 'interrupted by SIGINT (143: SIGTERM, 129: SIGHUP) after thawing everything'],
];

export function exitTableText(): string {
  return EXIT_TABLE.map(([code, text]) => `  ${String(code).padStart(3)}  ${text}`).join('\n');
}
