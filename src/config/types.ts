import type { ConnectorSpec } from './connector.js';

/** An argv list of a step; placeholders like {guest} are still in it (resolved per run by plan()). */
export type ArgvTemplate = readonly string[];

export interface StepConfig {
  readonly argv: ArgvTemplate;
  readonly timeoutMs: number;
}

/** The verify step as a command (the argv form). */
export interface CommandVerifyConfig extends StepConfig {
  readonly kind: 'command';
}

/** Read-only checks of each filesystem of the backup the run made, through a temporary overlay. */
export interface FsckVerifyConfig {
  readonly kind: 'fsck';
  readonly timeoutMs: number;
}

/** What a booted restore point must show through its agent. */
export interface BootChecks {
  readonly mountpoints: readonly string[];
  readonly files: readonly { readonly path: string; readonly sha256: string }[];
  readonly commands: readonly (readonly string[])[];
}

/** Boots the backup the run made in a throwaway QEMU (direct kernel boot) and checks it through its agent. */
export interface BootVerifyConfig {
  readonly kind: 'boot';
  readonly kernel: string;
  readonly initrd: string;
  readonly append: string;
  readonly memoryMiB: number;
  readonly cpus: number;
  /** From starting QEMU to the last check. */
  readonly timeoutMs: number;
  readonly checks: BootChecks;
}

export type VerifyConfig = CommandVerifyConfig | FsckVerifyConfig | BootVerifyConfig;

/** How many restore points (or backup files) to keep; what a kept one depends on is kept too. */
export interface KeepRules {
  readonly keepLast: number;
  readonly keepDaily: number;
  readonly keepWeekly: number;
  readonly keepMonthly: number;
}

/**
 * Retention: over the files matching `match` in `dir`, or (both undefined)
 * over the restore points of the snapshot's repository.
 */
export interface PruneConfig extends KeepRules {
  readonly dir: string | undefined;
  readonly match: string | undefined;
}

/** Levels a repository backup can take; `auto` picks full or incremental. */
export type BackupLevel = 'auto' | 'full' | 'incremental' | 'differential';

/** Backup chains: where they live, and when auto starts a new one. */
export interface RepositoryConfig {
  /** Placeholders {guest} {job} {stateDir} still in it. */
  readonly dir: string;
  readonly level: BackupLevel;
  /** Auto starts a new chain once the chain has this many backups, or once its full is this old. */
  readonly fullEvery: { readonly backups?: number; readonly ageMs?: number };
}

export interface Timeouts {
  readonly connectMs: number;
  readonly freezeMs: number;
  readonly thawMs: number;
  /** Other agent commands. */
  readonly commandMs: number;
}

/** Snapshot through a shell-free argv (lvcreate -s, zfs snapshot, cp, …), inside the frozen window. */
export type CommandSnapshotConfig = { readonly provider: 'command' } & StepConfig;

/** Snapshot through QEMU's monitor (QMP): a block-job backup or external overlays of the guest's disks. */
export interface QmpSnapshotConfig {
  readonly provider: 'qmp';
  /** QEMU's QMP unix socket (`-qmp unix:PATH,server=on,wait=off`). */
  readonly socket: string;
  /** backup: blockdev-backup (sync full) to new files; snapshot: blockdev-snapshot-sync (external overlays). */
  readonly mode: 'backup' | 'snapshot';
  /** Node names or device ids, or every disk with a medium that is not read-only. */
  readonly disks: 'all' | readonly string[];
  /** A path per disk; placeholders as in argv, plus {disk}. Undefined with a repository. */
  readonly target: string | undefined;
  /** Backup mode: chains of qcow2 images (the target is then chosen per backup). */
  readonly repository?: RepositoryConfig | undefined;
  readonly format: 'raw' | 'qcow2';
  /** How long the copy may take after the thaw (backup mode). */
  readonly timeoutMs: number;
}

/**
 * Snapshot through libvirt, for the domain of the guest's libvirt connector: a
 * push backup job, or external disk-only overlays merged back after the run.
 */
export interface LibvirtSnapshotConfig {
  readonly provider: 'libvirt';
  /** From the connector. */
  readonly uri?: string;
  /** From the connector. */
  readonly domain: string;
  /** backup: backup-begin (push, full) to new files; snapshot: external disk-only overlays. */
  readonly mode: 'backup' | 'snapshot';
  /** Target device names (vda), or every writable disk with an image. */
  readonly disks: 'all' | readonly string[];
  /** A path per disk; placeholders as in argv, plus {disk}. Undefined with a repository. */
  readonly target: string | undefined;
  /** Backup mode: chains of qcow2 images kept with libvirt checkpoints (the target is then chosen per backup). */
  readonly repository?: RepositoryConfig | undefined;
  /** The backup copy's format (snapshot mode: qcow2 overlays). */
  readonly format: 'raw' | 'qcow2';
  /** Snapshot mode: merge each overlay back after the later steps (default true). */
  readonly commit: boolean;
  /** How long the copy (backup) or the merge (snapshot) may take after the thaw. */
  readonly timeoutMs: number;
}

export type SnapshotConfig = CommandSnapshotConfig | QmpSnapshotConfig | LibvirtSnapshotConfig;

/** The repository a snapshot step backs up into (providers qmp and libvirt, mode backup), if any. */
export function snapshotRepository(s: {
  readonly provider: string;
  readonly repository?: RepositoryConfig | undefined;
}): RepositoryConfig | undefined {
  return s.provider === 'command' ? undefined : s.repository;
}

/** One guest, every default applied. */
export interface ResolvedGuest {
  readonly name: string;
  readonly connector: ConnectorSpec;
  readonly freeze: 'all' | readonly string[];
  readonly hooks: { readonly pre: readonly ArgvTemplate[]; readonly post: readonly ArgvTemplate[] };
  readonly snapshot: SnapshotConfig;
  readonly backup: StepConfig | undefined;
  readonly verify: VerifyConfig | undefined;
  readonly prune: PruneConfig | undefined;
  readonly timeouts: Timeouts;
  readonly maxReplyBytes: number;
}

export type FailurePolicy = 'fail' | 'crash-consistent';

export interface ResolvedJob {
  readonly name: string;
  /** Guests run on their own. */
  readonly guests: readonly string[];
  /** Consistency groups, each frozen together. */
  readonly groups: readonly (readonly string[])[];
  readonly concurrency: number;
  readonly budgetMs: number;
  readonly failurePolicy: FailurePolicy;
  readonly notify: ArgvTemplate | undefined;
}

/** The whole configuration after validation: readonly, fully defaulted. */
export interface ResolvedConfig {
  /** Where it came from (a path, or "embedded demo"). */
  readonly source: string;
  readonly stateDir: string;
  readonly metricsFile: string | undefined;
  readonly lockWaitMs: number;
  readonly guests: ReadonlyMap<string, ResolvedGuest>;
  readonly jobs: ReadonlyMap<string, ResolvedJob>;
}
