import type { Log } from '../log/logger.js';
import type { RepositoryRecord, WindowRecord } from '../repository/backup.js';

import type { CommandSnapshotConfig, LibvirtSnapshotConfig, QmpSnapshotConfig } from '../config/types.js';

/** A snapshot step as planned for one guest, provider-specific and fully resolved. */
export type PlannedSnapshot = CommandSnapshotConfig | PlannedQmpSnapshot | PlannedLibvirtSnapshot;

/**
 * What a provider that talks to a service (QMP, libvirt) adds to its config for
 * one run: the target has every placeholder filled but {disk} (filled per disk
 * once the disks are known), and the guest's timeouts for the service's calls.
 */
interface ServiceTimeouts {
  /** Connecting (outside the window). */
  readonly connectTimeoutMs: number;
  /** Each call; the one inside the window is bounded by the budget too. */
  readonly commandTimeoutMs: number;
}

/** Provider `qmp`: block jobs or overlays through QEMU's monitor. */
export type PlannedQmpSnapshot = QmpSnapshotConfig & ServiceTimeouts;

/** Provider `libvirt`: a push backup job or external overlays through libvirt, for the guest's libvirt domain. */
export type PlannedLibvirtSnapshot = LibvirtSnapshotConfig & ServiceTimeouts;

export interface SnapshotContext {
  readonly guest: string;
  /** Aborted when the budget runs out or a signal arrives: stop at once. */
  readonly signal?: AbortSignal;
  readonly log: Log;
  /** True when running inside the frozen window (keep it lean). */
  readonly inWindow: boolean;
}

/** What the run knows of the frozen window once it ended (recorded with a backup). */
export type WindowFacts = WindowRecord;

/** A backup in a repository, as the run report shows it (bytesWritten filled once the copy completed). */
export type BackupRecord = RepositoryRecord;

/** What a provider leaves running after the point in time is fixed (a block job still copying). */
export interface SnapshotTaken {
  /** Files the snapshot writes (backup targets, overlays), for the report. */
  readonly files?: readonly string[];
  /** A repository backup: what it is (filled in further by complete()). */
  readonly backup?: BackupRecord;
  /** Awaited after the thaw, outside the window; throws if the copy failed. */
  readonly complete?: (ctx: {
    readonly log: Log;
    readonly signal?: AbortSignal;
    readonly window?: WindowFacts;
  }) => Promise<void>;
  /**
   * Awaited once the steps after the snapshot (backup, verify, post-hooks) ran,
   * whether they succeeded or not: undoes what the snapshot put in place for
   * them (libvirt snapshot mode: merges the overlays back); throws if that
   * failed. Where the run does not call it, dispose() does the same and warns
   * on failure.
   */
  readonly release?: (ctx: { readonly log: Log; readonly signal?: AbortSignal }) => Promise<void>;
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
  /** Always called once the guest's run ends (success or not); never throws. `error`: why the run failed, if it did. */
  dispose?(ctx: { readonly guest: string; readonly log: Log; readonly error?: string }): Promise<void>;
  /** One line for `quiesce plan`. */
  describe(): string;
  /** For `quiesce plan`: what prepare() does before the freeze and complete() after the thaw, if anything. */
  planSteps?(): { readonly beforeFreeze?: string; readonly afterThaw?: string };
}
