import type { Log } from '../log/logger.js';

/** A snapshot step as planned for one guest, provider-specific and fully resolved. */
export type PlannedSnapshot = {
  readonly provider: 'command';
  readonly argv: readonly string[];
  readonly timeoutMs: number;
};

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
  /** Awaited after the thaw, outside the window; throws if the copy failed. */
  readonly complete?: (ctx: { readonly log: Log; readonly signal?: AbortSignal }) => Promise<void>;
}

/**
 * Takes a guest's snapshot. `take` runs inside the frozen window and returns
 * as soon as the point in time is fixed; slow work goes into `complete`.
 */
export interface SnapshotProvider {
  take(ctx: SnapshotContext): Promise<SnapshotTaken>;
  /** One line for `quiesce plan`. */
  describe(): string;
}
