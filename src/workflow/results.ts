import type { ErrorCode } from '../errors.js';
import type { BackupRecord } from '../snapshot/index.js';
import type { VerifyCheck } from '../verify/index.js';

/** A failure as results carry it: a stable code (the exit code comes from codes), a message, where it happened. */
export interface RunError {
  readonly code: ErrorCode;
  readonly message: string;
  /** The step that failed, when a step did. */
  readonly step?: string;
}

/** What a backup can be trusted for: application (hooks ran and frozen), filesystem (frozen), crash (taken without a freeze), none (no snapshot). */
export type Consistency = 'application' | 'filesystem' | 'crash' | 'none';

export interface StepResult {
  readonly name: string;
  readonly ok: boolean;
  readonly startedAt: string;
  readonly durationMs: number;
  readonly error?: string;
}

/** What the verify step found: a command's exit, or fsck/boot of this run's backup with each check. */
export interface VerifyOutcome {
  readonly kind: 'command' | 'fsck' | 'boot';
  readonly ok: boolean;
  readonly durationMs: number;
  /** fsck/boot: the backup verified (its id; the verdict is in its manifest too). */
  readonly backup?: string;
  /** boot: QEMU started → the agent answered guest-ping. */
  readonly bootMs?: number;
  readonly checks?: readonly VerifyCheck[];
}

export interface GuestResult {
  readonly guest: string;
  readonly address: string;
  readonly unit: string;
  ok: boolean;
  consistency: Consistency;
  /** Filesystems the agent reported frozen; undefined when no freeze was attempted. */
  frozenFilesystems?: number;
  thawedFilesystems?: number;
  /** true: status thawed and counts match; false: the guest may still be frozen; undefined: never frozen. */
  thawProven?: boolean;
  /** From sending the freeze to the thaw's reply (an upper bound of the real window). */
  frozenWindowMs?: number;
  freezeMs?: number;
  /** The window's other parts: the snapshot step (provider's take) and the thaw that ended it (its last attempt). */
  snapshotMs?: number;
  thawMs?: number;
  /** Files the snapshot wrote (QMP backup targets or overlays), when the provider names them. */
  snapshotFiles?: string[];
  /** A backup into a repository: its id, level and why, and its size once complete. */
  backup?: BackupRecord;
  /** The verify step's outcome, when it ran. */
  verify?: VerifyOutcome;
  steps: StepResult[];
  errors: RunError[];
}

export interface UnitResult {
  readonly name: string;
  readonly kind: 'guest' | 'group';
  ok: boolean;
  budgetExceeded: boolean;
  /** Groups: time between the first and the last member being frozen. */
  skewMs?: number;
  frozenWindowMs?: number;
}

export interface RecoveryResult {
  readonly guest: string;
  readonly runId: string;
  readonly ok: boolean;
  readonly thawed?: number;
  readonly error?: string;
  /** The record's owner is still running (stopped or hung): not touched; `quiesce thaw GUEST --force` takes over. */
  readonly busy?: { readonly pid: number; readonly state?: string };
}

export interface RunReport {
  readonly runId: string;
  readonly job: string;
  readonly configSource: string;
  /** The job's budget: the longest any of its units may stay frozen. */
  readonly budgetMs: number;
  readonly startedAt: string;
  endedAt: string;
  durationMs: number;
  exitCode: number;
  interruptedBy?: string;
  readonly recovered: RecoveryResult[];
  /** Failures of the run itself rather than of a guest (the metrics file could not be written). */
  readonly errors: RunError[];
  readonly units: UnitResult[];
  readonly guests: GuestResult[];
}
