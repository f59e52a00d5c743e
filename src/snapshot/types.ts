import type { Log } from '../log/logger.js';

/** A snapshot step as planned for one guest, provider-specific and fully resolved. */
export type PlannedSnapshot =
  | {
      readonly provider: 'command';
      readonly argv: readonly string[];
      readonly timeoutMs: number;
    }
  | PlannedQmpSnapshot;

/** Provider `qmp`: block jobs or overlays through QEMU's monitor. */
export interface PlannedQmpSnapshot {
  readonly provider: 'qmp';
  readonly socket: string;
  readonly mode: 'backup' | 'snapshot';
  readonly disks: 'all' | readonly string[];
  /** The target path with every placeholder filled but {disk} (filled per disk once the disks are known). */
  readonly target: string;
  readonly format: 'raw' | 'qcow2';
  /** Connecting to QMP (outside the window). */
  readonly connectTimeoutMs: number;
  /** Each QMP command; the transaction inside the window is bounded by the budget too. */
  readonly commandTimeoutMs: number;
  /** How long the copy may take after the thaw (backup mode). */
  readonly timeoutMs: number;
}

export interface SnapshotContext {
  readonly guest: string;
  /** Aborted when the budget runs out or a signal arrives: stop at once. */
  readonly signal?: AbortSignal;
  readonly log: Log;
  /** True when running inside the frozen window (keep it lean). */
  readonly inWindow: boolean;
}

/** What a provider leaves running after the point in time is fixed (a block job still copying). */
export interface SnapshotTaken {
  /** Files the snapshot writes (backup targets, overlays), for the report. */
  readonly files?: readonly string[];
  /** Awaited after the thaw, outside the window; throws if the copy failed. */
  readonly complete?: (ctx: { readonly log: Log; readonly signal?: AbortSignal }) => Promise<void>;
}

/**
 * Takes a guest's snapshot. `prepare` runs before the freeze (connections,
 * targets), `take` inside the frozen window and returns as soon as the point
 * in time is fixed; slow work goes into `complete`, after the thaw; `dispose`
 * always runs last and undoes what a failed run left behind.
 */
export interface SnapshotProvider {
  /** Outside the window, before the freeze; a failure here fails the guest before anything is frozen. */
  prepare?(ctx: { readonly guest: string; readonly log: Log }): Promise<void>;
  take(ctx: SnapshotContext): Promise<SnapshotTaken>;
  /** Always called once the guest's run ends (success or not); never throws. */
  dispose?(ctx: { readonly guest: string; readonly log: Log }): Promise<void>;
  /** One line for `quiesce plan`. */
  describe(): string;
  /** For `quiesce plan`: what prepare() does before the freeze and complete() after the thaw, if anything. */
  planSteps?(): { readonly beforeFreeze?: string; readonly afterThaw?: string };
}
