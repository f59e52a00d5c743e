import { randomBytes } from 'node:crypto';
import { rm } from 'node:fs/promises';
import { join } from 'node:path';
import type { RepositoryConfig } from '../config/types.js';
import type { Log } from '../log/logger.js';
import { version } from '../version.js';
import { readCatalog, type Catalog, type RestorePoint } from './catalog.js';
import { backingFile, backupDir, bitmapName, imageName } from './layout.js';
import { chainBase, decideLevel, type LevelDecision, type LevelInput, type LiveDisk } from './level.js';
import { backupId, type Manifest, type ManifestCheckpoint } from './manifest.js';
import { lockRepository, type RepoLock } from './lock.js';
import { makeBackupDir, writeManifest } from './store.js';

/** One disk of a backup as the provider copied it. */
export interface CopiedDisk {
  readonly name: string;
  /** What was copied: a QEMU node name, or (libvirt) the disk's image. */
  readonly node: string;
  readonly size: number;
}

/** The frozen window as the run saw it (the snapshot layer calls it WindowFacts). */
export interface WindowRecord {
  readonly frozenWindowMs: number | undefined;
  readonly consistency: 'application' | 'filesystem' | 'crash' | 'none';
  readonly agentVersion: string | undefined;
}

/** The backup as the run report shows it (the snapshot layer calls it BackupRecord). */
export interface RepositoryRecord {
  readonly repository: string;
  readonly id: string;
  readonly chain: string;
  readonly level: 'full' | 'incremental' | 'differential';
  readonly parent: string | null;
  readonly reason: string;
  /** Bytes the images take, once the copy completed. */
  bytesWritten?: number;
}

/**
 * What every repository backup does, whatever copies it (QMP block jobs,
 * libvirt backup jobs): holds the guest's repository lock from decide() to
 * release(), reads the catalog, decides the level (the provider supplies the
 * disks' change tracking), names the folder, the images and their backing
 * files, and writes the manifest last — complete, or the failure record.
 * A full or an incremental starts change tracking named `quiesce-<id>`
 * (a QEMU bitmap; with libvirt, the checkpoint of that name and its bitmaps).
 */
export class RepositoryBackup {
  readonly id: string;
  /** When the copy's point in time was fixed (the window's call was accepted), as ISO time. */
  pointInTime: string | undefined;
  private decided: LevelDecision | undefined;
  private read: Catalog | undefined;
  private chainId: string | undefined;
  private lock: RepoLock | undefined;

  constructor(
    readonly repo: RepositoryConfig,
    readonly guest: string,
    now = new Date(),
  ) {
    this.id = backupId(now, randomBytes(2).toString('hex'));
  }

  /** Takes the guest's lock (held until release(): no prune or restore meanwhile) and reads the catalog. */
  async open(): Promise<Catalog> {
    this.lock ??= await lockRepository(this.repo.dir, this.guest, 'backup');
    this.read = await readCatalog(this.repo.dir, this.guest);
    return this.read;
  }

  get catalog(): Catalog {
    if (!this.read) throw new Error('RepositoryBackup: open() first');
    return this.read;
  }

  /** The restore point the next incremental would build on (before this backup). */
  get base(): RestorePoint | undefined {
    return chainBase(this.catalog);
  }

  get decision(): LevelDecision {
    if (!this.decided) throw new Error('RepositoryBackup: decide() first');
    return this.decided;
  }

  get decidedYet(): boolean {
    return this.decided !== undefined;
  }

  get chain(): string {
    return this.chainId ?? this.decision.parent?.manifest.chain ?? this.id;
  }

  /** The backup's folder (known once decided). */
  get dir(): string {
    return backupDir(this.repo.dir, this.guest, this.chain, this.id);
  }

  /** The change tracking this backup starts, if any (a differential starts none). */
  get newBitmap(): string | undefined {
    return this.decision.level === 'differential' ? undefined : bitmapName(this.id);
  }

  /** The change tracking this backup reads (its parent's), if any. */
  get readBitmap(): string | undefined {
    return this.decision.parent?.manifest.bitmap;
  }

  /**
   * Decides the level from the catalog and the disks as they are now,
   * `amend` adding to the reason, logs it and creates the folder; returns
   * the image path template (`DIR/{disk}.qcow2`).
   */
  async decide(
    disks: readonly LiveDisk[],
    log: Log,
    o: { readonly untracked?: LevelInput['untracked']; readonly amend?: (d: LevelDecision) => LevelDecision } = {},
  ): Promise<string> {
    const decided = decideLevel({
      configured: this.repo.level,
      fullEvery: this.repo.fullEvery,
      now: new Date(),
      catalog: this.catalog,
      disks,
      ...(o.untracked ? { untracked: o.untracked } : {}),
    });
    this.decided = o.amend ? o.amend(decided) : decided;
    this.chainId = decided.parent?.manifest.chain ?? this.id;
    log({
      kind: 'backup-level',
      guest: this.guest,
      id: this.id,
      level: this.decided.level,
      reason: this.decided.reason,
    });
    await makeBackupDir(this.dir);
    return join(this.dir, imageName('{disk}'));
  }

  /** The backing file of a disk's new image (undefined for a full). */
  backing(disk: string): string | undefined {
    const p = this.decision.parent;
    return p ? backingFile(p.manifest.id, disk) : undefined;
  }

  /** For the report, from the window on. */
  record(): RepositoryRecord {
    const d = this.decision;
    return {
      repository: this.repo.dir,
      id: this.id,
      chain: this.chain,
      level: d.level,
      parent: d.parent?.manifest.id ?? null,
      reason: d.reason,
    };
  }

  /** The backup exists from here on: writes its manifest (last), logs it, and returns the bytes written. */
  async recordComplete(
    disks: readonly CopiedDisk[],
    sizes: readonly number[],
    window: WindowRecord | undefined,
    log: Log,
    extra: { readonly checkpoint?: ManifestCheckpoint } = {},
  ): Promise<number> {
    const bytes = sizes.reduce((a, b) => a + b, 0);
    await writeManifest(this.dir, this.manifest(disks, sizes, window, true, undefined, extra));
    log({ kind: 'backup-recorded', guest: this.guest, id: this.id, level: this.decision.level, bytes });
    return bytes;
  }

  /**
   * Records that the backup did not complete (`complete: false` and why), so
   * the folder is never taken for a restore point or a parent. A record that
   * cannot be written takes the folder with it. Nothing before decide(): no folder.
   */
  async recordFailure(disks: readonly CopiedDisk[], error: string, log: Log): Promise<void> {
    if (!this.chainId) return;
    const m = this.manifest(
      disks,
      disks.map(() => 0),
      undefined,
      false,
      error,
    );
    await writeManifest(this.dir, m).catch(async (err: Error) => {
      log({
        kind: 'warning',
        guest: this.guest,
        message: `could not record the failed backup ${this.id}: ${err.message}`,
      });
      await rm(this.dir, { recursive: true, force: true });
    });
  }

  private manifest(
    disks: readonly CopiedDisk[],
    sizes: readonly number[],
    window: WindowRecord | undefined,
    complete: boolean,
    error: string | undefined,
    extra: { readonly checkpoint?: ManifestCheckpoint } = {},
  ): Manifest {
    const d = this.decision;
    return {
      version: 1,
      id: this.id,
      guest: this.guest,
      time: this.pointInTime ?? new Date().toISOString(),
      level: d.level,
      chain: this.chain,
      parent: d.parent?.manifest.id ?? null,
      bitmap: this.newBitmap ?? d.parent!.manifest.bitmap,
      ...(extra.checkpoint ? { checkpoint: extra.checkpoint } : {}),
      reason: d.reason,
      disks: disks.map((x, i) => ({
        name: x.name,
        node: x.node,
        virtualSize: x.size,
        file: imageName(x.name),
        format: 'qcow2' as const,
        bytesWritten: sizes[i]!,
      })),
      consistency: window?.consistency ?? 'none',
      frozenWindowMs: window?.frozenWindowMs ?? null,
      quiesceVersion: version(),
      agentVersion: window?.agentVersion ?? null,
      complete,
      ...(error !== undefined ? { error } : {}),
    };
  }

  /** Lets go of the repository (the run's end, whatever happened). */
  async release(): Promise<void> {
    await this.lock?.release();
    this.lock = undefined;
  }
}
