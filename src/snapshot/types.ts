import type { Log } from '../log/logger.js';

/** A snapshot step as planned for one guest, provider-specific and fully resolved. */
export type PlannedSnapshot =
  | {
      readonly provider: 'command';
      readonly argv: readonly string[];
      readonly timeoutMs: number;
    }
  | PlannedQmpSnapshot
  | PlannedLibvirtSnapshot;

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

/** Provider `libvirt`: a push backup job or external overlays through libvirt, for the guest's libvirt domain. */
export interface PlannedLibvirtSnapshot {
  readonly provider: 'libvirt';
  /** The connector's URI (undefined: libvirt's default). */
  readonly uri?: string;
  /** The connector's domain. */
  readonly domain: string;
  readonly mode: 'backup' | 'snapshot';
  /** Target device names (vda, sdb), or every writable disk. */
  readonly disks: 'all' | readonly string[];
  /** The target (backup copy or overlay) with every placeholder filled but {disk}. */
  readonly target: string;
  /** The backup copy's format (snapshot mode: always qcow2 overlays). */
  readonly format: 'raw' | 'qcow2';
  /** Snapshot mode: merge the overlays back (block commit + pivot) once the backup step ran. */
  readonly commit: boolean;
  /** Opening the libvirt connection (outside the window). */
  readonly connectTimeoutMs: number;
  /** Each libvirt call; the one inside the window is bounded by the budget too. */
  readonly commandTimeoutMs: number;
  /** How long the copy (backup mode) or the merge (snapshot mode) may take after the thaw. */
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
  /** Always called once the guest's run ends (success or not); never throws. */
  dispose?(ctx: { readonly guest: string; readonly log: Log }): Promise<void>;
  /** One line for `quiesce plan`. */
  describe(): string;
  /** For `quiesce plan`: what prepare() does before the freeze and complete() after the thaw, if anything. */
  planSteps?(): { readonly beforeFreeze?: string; readonly afterThaw?: string };
}
