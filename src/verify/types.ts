import type { Log } from '../log/logger.js';

/** The kinds of verify that check a restore point (the command form is the workflow's own). */
export type VerifyKind = 'fsck' | 'boot';

/** One check of a verify run. */
export interface VerifyCheck {
  readonly name: string;
  readonly ok: boolean;
  /** What was found (a checker's last lines, what was mounted, an exit status). */
  readonly detail?: string;
}

/** The verdict on one restore point. */
export interface VerifyResult {
  readonly guest: string;
  readonly id: string;
  readonly kind: VerifyKind;
  readonly ok: boolean;
  /** ISO time the verify started. */
  readonly at: string;
  readonly durationMs: number;
  /** Boot: QEMU started → the agent answered guest-ping (absent when it never did). */
  readonly bootMs?: number;
  readonly checks: readonly VerifyCheck[];
}

export interface VerifyOptions {
  readonly log: Log;
  /** Aborting stops the checker or QEMU at once and removes every temporary file; the verify then throws INTERRUPTED. */
  readonly signal?: AbortSignal | undefined;
  /** Where the temporary overlays and copies go (default: the OS temp folder, $TMPDIR). */
  readonly tmpDir?: string | undefined;
}
