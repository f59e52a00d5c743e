import { stat } from 'node:fs/promises';
import type { RepositoryConfig } from '../../config/types.js';
import type { Log } from '../../log/logger.js';
import { QmpClient } from '../../qmp/client.js';
import { RepositoryBackup } from '../../repository/backup.js';
import { readCatalog } from '../../repository/catalog.js';
import { bitmapName } from '../../repository/layout.js';
import { chainBase, decideLevel, type BitmapState, type LevelDecision, type LiveDisk } from '../../repository/level.js';
import { readStaleBitmaps, updateStaleBitmaps } from '../../repository/stale.js';
import type { BackupRecord, WindowFacts } from '../types.js';
import { resolveDisks, runName, type Disk, type FoundDisk } from './disks.js';

type Qmp = Pick<QmpClient, 'execute'>;

interface NodeInfo {
  readonly 'node-name': string;
  readonly drv?: string;
  readonly 'dirty-bitmaps'?: readonly BitmapState[];
}

/**
 * The repository side of a QMP backup (`repository:` on provider qmp): picks
 * the level before the freeze (catalog + QEMU's bitmaps), names the backup's
 * folder and images, gives the window's transaction its bitmap actions, and
 * after the copy records the manifest (last) and drops bitmaps nothing will
 * read again. Each full or incremental adds a bitmap named after itself in
 * the same transaction as its copy (the point in time); incrementals and
 * differentials read their parent's bitmap with bitmap-mode `never`, so a
 * failed copy, or a manifest never written, leaves the chain as it was.
 * What is not QEMU's (lock, level, folder, manifest) is RepositoryBackup's.
 */
export class ChainBackup {
  private readonly repoBackup: RepositoryBackup;
  /** Disks whose bitmap can be persistent (their node is a qcow2). */
  private persistent = new Map<string, boolean>();
  /** The bitmap this backup starts (full, incremental), once QEMU may have it. */
  private added = false;

  constructor(
    private readonly repo: RepositoryConfig,
    private readonly guest: string,
    now = new Date(),
  ) {
    this.repoBackup = new RepositoryBackup(repo, guest, now);
  }

  get decision(): LevelDecision {
    return this.repoBackup.decision;
  }

  /** The bitmap this backup starts, if any (a differential starts none). */
  get newBitmap(): string | undefined {
    return this.repoBackup.newBitmap;
  }

  /**
   * Before the freeze: reads the catalog and the disks' bitmaps, decides the
   * level, creates the folder, removes bitmaps nothing will read again, and
   * returns the target template (`DIR/{disk}.qcow2`).
   */
  async decide(qmp: Qmp, found: readonly FoundDisk[], log: Log): Promise<string> {
    const [, nodes] = await Promise.all([
      this.repoBackup.open(),
      qmp.execute<NodeInfo[]>('query-named-block-nodes', { flat: true }),
    ]);
    const byNode = new Map(nodes.map((n) => [n['node-name'], n]));
    const live = liveDisks(found, nodes);
    for (const d of found) this.persistent.set(d.name, byNode.get(d.node)?.drv === 'qcow2');
    const transient = found.filter((d) => !this.persistent.get(d.name)).map((d) => d.name);
    const template = await this.repoBackup.decide(live, log, {
      amend: (decided) =>
        transient.length && decided.level !== 'differential'
          ? {
              ...decided,
              reason: `${decided.reason}; bitmap transient on ${transient.join(', ')} (not qcow2: the chain ends when QEMU stops)`,
            }
          : decided,
    });
    await this.dropUnread(qmp, found, nodes, log);
    return template;
  }

  /** The backing file of a disk's new image (undefined for a full). */
  backing(d: Disk): string | undefined {
    return this.repoBackup.backing(d.name);
  }

  /** The window's actions for one disk: the new bitmap (if any) and the copy, in one transaction. */
  actions(d: Disk, tuning: Record<string, unknown> = {}): Record<string, unknown>[] {
    const { level, parent } = this.decision;
    const copy: Record<string, unknown> = {
      'job-id': runName(d, 'backup'),
      device: d.node,
      target: runName(d, 'fmt'),
      'auto-dismiss': false,
      ...tuning,
      ...(level === 'full'
        ? { sync: 'full' }
        : { sync: 'bitmap', bitmap: parent!.manifest.bitmap, 'bitmap-mode': 'never' }),
    };
    const out: Record<string, unknown>[] = [];
    const bm = this.newBitmap;
    if (bm)
      out.push({
        type: 'block-dirty-bitmap-add',
        data: { node: d.node, name: bm, persistent: this.persistent.get(d.name) === true },
      });
    out.push({ type: 'blockdev-backup', data: copy });
    return out;
  }

  /** The transaction was sent: QEMU may hold the new bitmap from now on. */
  sent(): void {
    this.added = this.newBitmap !== undefined;
  }

  /** QEMU accepted the transaction: the point in time. */
  started(at = new Date()): void {
    this.repoBackup.pointInTime = at.toISOString();
  }

  /** For the report, from the window on. */
  record(): BackupRecord {
    return this.repoBackup.record();
  }

  /**
   * After the copy completed and its nodes were closed: writes the manifest
   * (the backup exists from here on), then removes the previous base's
   * bitmap from QEMU (a full or an incremental replaces it as the base).
   */
  async finish(
    qmp: Qmp,
    disks: readonly Disk[],
    window: WindowFacts | undefined,
    record: BackupRecord,
    log: Log,
  ): Promise<void> {
    const sizes = await Promise.all(disks.map(async (d) => (await stat(d.target)).blocks * 512));
    record.bytesWritten = await this.repoBackup.recordComplete(disks, sizes, window, log);
    const old = this.repoBackup.base;
    if (this.decision.level !== 'differential' && old) await this.removeBitmap(qmp, disks, old.manifest.bitmap, log);
  }

  /**
   * The backup did not complete: removes the bitmap it started (QEMU's own
   * rule leaves the parent's as it was) and records the failure in a manifest
   * with `complete: false` (the images are removed by the session).
   */
  async abandon(qmp: Qmp | undefined, disks: readonly Disk[], error: string, log: Log): Promise<void> {
    if (!this.repoBackup.decidedYet) return;
    const bm = this.newBitmap;
    if (qmp && this.added && bm) await this.removeBitmap(qmp, disks, bm, log);
    await this.repoBackup.recordFailure(disks, error, log);
  }

  /** Lets go of the repository (the run's end, whatever happened). */
  async release(): Promise<void> {
    await this.repoBackup.release();
  }

  /**
   * Removes, before the freeze, bitmaps of this repository nothing will read
   * again: those listed stale by prune, and those of any other backup of the
   * guest here than the chain's base (a failed run's, a replaced base's).
   */
  private async dropUnread(qmp: Qmp, found: readonly FoundDisk[], nodes: readonly NodeInfo[], log: Log): Promise<void> {
    const catalog = this.repoBackup.catalog;
    const keep = chainBase(catalog)?.manifest.bitmap;
    const ours = new Set(
      [...catalog.points.map((p) => p.manifest.id), ...catalog.unusable.map((u) => u.id)].map(bitmapName),
    );
    const stale = new Set(await readStaleBitmaps(this.repo.dir, this.guest));
    const gone: string[] = [];
    for (const d of found) {
      const info = nodes.find((n) => n['node-name'] === d.node);
      for (const b of info?.['dirty-bitmaps'] ?? []) {
        if (b.name === keep || !(stale.has(b.name) || ours.has(b.name))) continue;
        await qmp
          .execute('block-dirty-bitmap-remove', { node: d.node, name: b.name })
          .then(() => gone.push(b.name))
          .catch((err: Error) =>
            log({
              kind: 'warning',
              guest: this.guest,
              message: `could not remove stale bitmap ${b.name} from ${d.name}: ${err.message}`,
            }),
          );
      }
    }
    const forget = [...stale].filter((n) => n !== keep);
    if (forget.length) await updateStaleBitmaps(this.repo.dir, this.guest, { drop: forget });
    if (gone.length) log({ kind: 'bitmaps-removed', guest: this.guest, names: [...new Set(gone)] });
  }

  /** Removes `name` from every disk that has it; a failure is a warning and lands on the stale list. */
  private async removeBitmap(qmp: Qmp, disks: readonly Disk[], name: string, log: Log): Promise<void> {
    let failed = false;
    for (const d of disks) {
      await qmp.execute('block-dirty-bitmap-remove', { node: d.node, name }).catch((err: Error) => {
        if (/not found|Dirty bitmap '.*' not found/i.test(err.message)) return;
        failed = true;
        log({
          kind: 'warning',
          guest: this.guest,
          message: `could not remove bitmap ${name} from ${d.name}: ${err.message}`,
        });
      });
    }
    if (failed) await updateStaleBitmaps(this.repo.dir, this.guest, { add: [name] }).catch(() => undefined);
  }
}

/** The disks with the bitmaps QEMU has on their nodes, as the level decision reads them. */
function liveDisks(found: readonly FoundDisk[], nodes: readonly NodeInfo[]): LiveDisk[] {
  const byNode = new Map(nodes.map((n) => [n['node-name'], n]));
  return found.map((d) => ({ name: d.name, size: d.size, bitmaps: byNode.get(d.node)?.['dirty-bitmaps'] ?? [] }));
}

/** What `quiesce plan` says of a repository backup: the level a run would take now, and why. */
export interface LevelPreview {
  readonly guest: string;
  readonly level: 'full' | 'incremental' | 'differential' | 'unknown';
  readonly reason: string;
  /** False when QEMU (provider libvirt: libvirt) could not be asked (its bitmaps or checkpoints were not checked). */
  readonly checkedQemu: boolean;
}

/**
 * Reads the repository and, if QEMU answers within a short time, the disks'
 * bitmaps (read-only queries: nothing is created or changed), and decides as
 * a run would.
 */
export async function previewLevel(
  s: { readonly socket: string; readonly disks: 'all' | readonly string[]; readonly repository: RepositoryConfig },
  guest: string,
): Promise<LevelPreview> {
  const catalog = await readCatalog(s.repository.dir, guest);
  const input = { configured: s.repository.level, fullEvery: s.repository.fullEvery, now: new Date(), catalog };
  let qmp: QmpClient;
  try {
    qmp = await QmpClient.connect(s.socket, { connectTimeoutMs: 2000, commandTimeoutMs: 5000, guest });
  } catch (err) {
    const base = chainBase(catalog);
    return {
      guest,
      level: base ? 'unknown' : 'full',
      reason: base
        ? `QEMU not asked (${(err as Error).message}): ${s.repository.level === 'full' ? 'a full' : `continues chain ${base.manifest.chain} from ${base.manifest.id} if QEMU still has bitmap ${base.manifest.bitmap}, else a full`}`
        : 'no chain to continue yet',
      checkedQemu: false,
    };
  }
  try {
    const found = await resolveDisks(qmp, s.disks, { anyNode: true, guest });
    const nodes = await qmp.execute<NodeInfo[]>('query-named-block-nodes', { flat: true });
    try {
      const d = decideLevel({ ...input, disks: liveDisks(found, nodes) });
      return { guest, level: d.level, reason: d.reason, checkedQemu: true };
    } catch (err) {
      return { guest, level: 'unknown', reason: `the run would fail: ${(err as Error).message}`, checkedQemu: true };
    }
  } finally {
    qmp.close();
  }
}
