import { stat } from 'node:fs/promises';
import type { RepositoryConfig } from '../../config/types.js';
import { QuiesceError } from '../../errors.js';
import { libvirtPool, type LibvirtLease, type LibvirtPool } from '../../libvirt/pool.js';
import { CheckpointCreateFlags, CheckpointXmlFlags } from '../../libvirt/protocol.js';
import type { LibvirtConnection } from '../../libvirt/remote.js';
import type { DomainRef } from '../../libvirt/types.js';
import type { Log } from '../../log/logger.js';
import { RepositoryBackup, type CopiedDisk } from '../../repository/backup.js';
import { readCatalog, type RestorePoint } from '../../repository/catalog.js';
import { BITMAP_PREFIX, bitmapName } from '../../repository/layout.js';
import { chainBase, decideLevel, type BitmapState, type LevelDecision, type LiveDisk } from '../../repository/level.js';
import type { ManifestCheckpoint } from '../../repository/manifest.js';
import { readStaleBitmaps, updateStaleBitmaps } from '../../repository/stale.js';
import type { LevelPreview } from '../qmp/chain.js';
import type { BackupRecord, PlannedLibvirtSnapshot, WindowFacts } from '../types.js';
import {
  checkpointXml,
  parseCheckpointDisks,
  parseDisks,
  withoutParent,
  type DomainDisk,
  type PickedDisk,
} from './domain-xml.js';
import { dropCheckpoint } from './prune.js';
import { chooseDisks } from './session.js';

/** What the session knows once the disks are chosen (LibvirtSession.open's target callback). */
export interface FoundDomain {
  readonly lease: LibvirtLease;
  readonly conn: LibvirtConnection;
  readonly dom: DomainRef;
  readonly disks: readonly DomainDisk[];
}

/** Where the chain's checkpoint calls go (the session's connection and domain). */
interface Domain {
  readonly conn: LibvirtConnection;
  readonly dom: DomainRef;
}

/** libvirt's text form of a domain UUID (16 raw bytes). */
export function uuidText(uuid: Buffer): string {
  const h = uuid.toString('hex');
  return `${h.slice(0, 8)}-${h.slice(8, 12)}-${h.slice(12, 16)}-${h.slice(16, 20)}-${h.slice(20, 32)}`;
}

/**
 * A saved checkpoint's XML for the domain as it is now: the `<uuid>` of its
 * `<domain>` copy replaced by the domain's. libvirt refuses a redefine whose
 * domain UUID is not the domain's, and a transient domain created again from
 * its XML gets a new UUID (its bitmaps, in the images, are still there).
 */
export function forDomain(checkpointXml: string, uuid: Buffer): string {
  const at = /<domain[\s>]/.exec(checkpointXml);
  if (!at) return checkpointXml;
  const head = checkpointXml.slice(0, at.index);
  return head + checkpointXml.slice(at.index).replace(/<uuid>[^<]*<\/uuid>/, `<uuid>${uuidText(uuid)}</uuid>`);
}

/** What the base's checkpoint says of each disk, or why the chain cannot go on from it. */
interface Tracking {
  readonly bitmaps: Map<string, BitmapState[]>;
  readonly why?: string;
  /** Read-only: the checkpoint is missing and a run would try to redefine it from the manifest. */
  readonly wouldRedefine?: boolean;
}

/**
 * The base's checkpoint as libvirt has it: present (or, with `redefine`,
 * redefined from the base's manifest: libvirt validates that its bitmaps are
 * still in the images), covering every disk, its sizes readable (which needs
 * its bitmaps). Each disk then has the base's bitmap, with the bytes changed
 * since; otherwise `why` says what breaks the chain. Without `redefine` it
 * changes nothing.
 */
export async function baseTracking(
  d: Domain,
  base: RestorePoint,
  names: Set<string>,
  disks: readonly DomainDisk[],
  o: { readonly timeoutMs: number; readonly redefine?: (message: string) => void },
): Promise<Tracking> {
  const name = base.manifest.bitmap;
  const call = { timeoutMs: o.timeoutMs };
  const bitmaps = new Map<string, BitmapState[]>();
  if (!names.has(name)) {
    const saved = base.manifest.checkpoint;
    const missing = `checkpoint ${name} is missing in libvirt`;
    if (!saved) return { bitmaps, why: `${missing} (deleted, or libvirt lost its metadata)` };
    if (!o.redefine)
      return {
        bitmaps,
        why: `${missing}: a run redefines it from ${base.manifest.id}'s manifest (then an incremental, if its bitmaps are still in the images; else a full)`,
        wouldRedefine: true,
      };
    try {
      await d.conn.checkpointCreateXml(
        d.dom,
        forDomain(withoutParent(saved.xml), d.dom.uuid),
        CheckpointCreateFlags.REDEFINE | CheckpointCreateFlags.REDEFINE_VALIDATE,
        call,
      );
      names.add(name);
      o.redefine(`libvirt had lost checkpoint ${name}: redefined it from ${base.manifest.id}'s manifest`);
    } catch (err) {
      return {
        bitmaps,
        why: `${missing} and redefining it from ${base.manifest.id}'s manifest failed (${(err as Error).message})`,
      };
    }
  }
  let xml: string;
  try {
    const cp = await d.conn.checkpointLookupByName(d.dom, name, call);
    xml = await d.conn.checkpointGetXmlDesc(cp, CheckpointXmlFlags.NO_DOMAIN | CheckpointXmlFlags.SIZE, call);
  } catch (err) {
    return {
      bitmaps,
      why: `checkpoint ${name} cannot be read with its sizes (a bitmap gone?): ${(err as Error).message}`,
    };
  }
  const covered = new Map(parseCheckpointDisks(xml).map((c) => [c.name, c]));
  for (const disk of disks) {
    const c = covered.get(disk.name);
    if (!c || c.checkpoint !== 'bitmap') return { bitmaps, why: `checkpoint ${name} does not track disk ${disk.name}` };
    bitmaps.set(disk.name, [
      { name, recording: true, busy: false, persistent: true, inconsistent: false, count: c.size ?? 0 },
    ]);
  }
  return { bitmaps };
}

/**
 * What `quiesce plan` says of a libvirt repository backup: reads the
 * repository and, if libvirt answers within a short time, the domain's disks
 * and checkpoints (read-only: nothing is created, redefined or deleted), and
 * decides as a run would.
 */
export async function previewLibvirtLevel(
  s: PlannedLibvirtSnapshot & { readonly repository: RepositoryConfig },
  guest: string,
  pool: LibvirtPool = libvirtPool,
): Promise<LevelPreview> {
  const catalog = await readCatalog(s.repository.dir, guest);
  const input = { configured: s.repository.level, fullEvery: s.repository.fullEvery, now: new Date(), catalog };
  const base = chainBase(catalog);
  const lease = pool.lease(s.uri, guest);
  try {
    let found: { conn: LibvirtConnection; dom: DomainRef };
    try {
      found = await lease.domain(s.domain, { timeoutMs: 2000 });
    } catch (err) {
      return {
        guest,
        level: base ? 'unknown' : 'full',
        reason: base
          ? `libvirt not asked (${(err as Error).message}): ${s.repository.level === 'full' ? 'a full' : `continues chain ${base.manifest.chain} from ${base.manifest.id} if libvirt still has checkpoint ${base.manifest.bitmap}, else a full`}`
          : 'no chain to continue yet',
        checkedQemu: false,
      };
    }
    const { conn, dom } = found;
    const call = { timeoutMs: 5000 };
    try {
      const chosen = chooseDisks(parseDisks(await conn.getXmlDesc(dom, 0, call)), s.disks, { domain: s.domain, guest });
      const sizes = await Promise.all(
        chosen.map(async (d) => Number((await conn.getBlockInfo(dom, d.name, 0, call)).capacity)),
      );
      const names = new Set((await conn.listAllCheckpoints(dom, 0, call)).map((c) => c.name));
      const tracked =
        base && s.repository.level !== 'full'
          ? await baseTracking({ conn, dom }, base, names, chosen, { timeoutMs: call.timeoutMs })
          : undefined;
      const disks: LiveDisk[] = chosen.map((d, i) => ({
        name: d.name,
        size: sizes[i]!,
        bitmaps: tracked?.bitmaps.get(d.name) ?? [],
      }));
      const d = decideLevel({ ...input, disks, untracked: () => tracked?.why });
      const unsure = tracked?.wouldRedefine && d.reason === tracked.why;
      return { guest, level: unsure ? 'unknown' : d.level, reason: d.reason, checkedQemu: true };
    } catch (err) {
      return { guest, level: 'unknown', reason: `the run would fail: ${(err as Error).message}`, checkedQemu: true };
    }
  } finally {
    lease.release();
  }
}

/**
 * The repository side of a libvirt backup (`repository:` on provider
 * libvirt, mode backup): the QMP chain's rules through libvirt's own
 * mechanism. Each full or incremental creates a checkpoint named like its
 * bitmap (`quiesce-<id>`), created just before the freeze (its bitmap records
 * from a moment before the copy's point in time, so the next incremental
 * copies that gap again and misses nothing), so "the checkpoint exists and
 * covers every disk" stands for "the bitmap is there and records". Before the
 * freeze it decides the level (catalog + checkpoints, redefining one libvirt
 * lost from the manifest's XML) and creates the qcow2 images here, also over
 * a remote URI (the repository is then storage both machines share at the
 * same path, which decide() checks); after the copy the manifest
 * is written last, with the checkpoint's XML, and the previous base's
 * checkpoint is deleted. A failed or aborted backup deletes the checkpoint
 * it created: the next incremental never builds on a backup that does not exist.
 */
export class LibvirtChain {
  private readonly backup: RepositoryBackup;
  /** This backup's checkpoint is about to be created: libvirt may hold it from now on. */
  private sentCheckpoint = false;
  private disks: CopiedDisk[] = [];

  constructor(
    private readonly repo: RepositoryConfig,
    private readonly guest: string,
    private readonly timeoutMs: number,
    now = new Date(),
  ) {
    this.backup = new RepositoryBackup(repo, guest, now);
  }

  get decision(): LevelDecision {
    return this.backup.decision;
  }

  /** The checkpoint the copy reads (`<incremental>`), for an incremental or a differential. */
  get incremental(): string | undefined {
    return this.backup.readBitmap;
  }

  /** The checkpoint this backup creates (none for a differential). */
  get newCheckpoint(): string | undefined {
    return this.backup.newBitmap;
  }

  /**
   * Before the freeze, once the disks are chosen: takes the repository's lock,
   * reads the catalog and the domain's checkpoints, decides the level, creates
   * the folder and deletes checkpoints nothing will read again; returns the
   * image template (`DIR/{disk}.qcow2`).
   */
  async decide(found: FoundDomain, log: Log): Promise<string> {
    const opt = { guest: this.guest };
    const remote = found.lease.route.kind === 'unix' ? undefined : found.lease.uri;
    const flat = found.disks.filter((d) => d.format !== 'qcow2');
    if (flat.length)
      throw new QuiesceError(
        'CONFIG_MISMATCH',
        `${flat.map((d) => `disk ${d.name} is ${d.format ?? 'of unknown format'}`).join('; ')}: libvirt keeps checkpoints (a repository chain's bitmaps) only in qcow2 images`,
        opt,
      );
    const call = { timeoutMs: this.timeoutMs };
    const { conn, dom } = found;
    await this.backup.open().catch((err: Error) => {
      if (!remote) throw err;
      throw new QuiesceError(
        'REPOSITORY',
        `${err.message}: over the remote URI ${remote} the repository must be reachable here too, at the same path as on the hypervisor (shared storage): quiesce creates the images and writes the manifests here, QEMU writes the images there`,
        { ...opt, cause: err },
      );
    });
    const sizes = await Promise.all(
      found.disks.map(async (d) => Number((await conn.getBlockInfo(dom, d.name, 0, call)).capacity)),
    );
    this.disks = found.disks.map((d, i) => ({ name: d.name, node: d.source ?? d.name, size: sizes[i]! }));
    const names = new Set((await conn.listAllCheckpoints(dom, 0, call)).map((c) => c.name));
    const base = this.backup.base;
    const tracked =
      base && this.repo.level !== 'full'
        ? await baseTracking({ conn, dom }, base, names, found.disks, {
            timeoutMs: this.timeoutMs,
            redefine: (message) => log({ kind: 'warning', guest: this.guest, message }),
          })
        : undefined;
    const live: LiveDisk[] = this.disks.map((d) => ({
      name: d.name,
      size: d.size,
      bitmaps: tracked?.bitmaps.get(d.name) ?? [],
    }));
    const template = await this.backup.decide(live, log, { untracked: () => tracked?.why });
    await this.dropUnread({ conn, dom }, names, log);
    return template;
  }

  /** The images' backing file for a disk (undefined for a full). */
  backing(disk: string): string | undefined {
    return this.backup.backing(disk);
  }

  /** The new checkpoint's XML for checkpoint-create, or undefined (a differential creates none). */
  checkpointXml(all: readonly DomainDisk[], picked: readonly PickedDisk[]): string | undefined {
    const name = this.newCheckpoint;
    return name === undefined ? undefined : checkpointXml(name, all, picked);
  }

  /** The new checkpoint is about to be created: libvirt may hold it from now on. */
  sent(): void {
    this.sentCheckpoint = this.newCheckpoint !== undefined;
  }

  /** libvirt accepted backup-begin: the point in time. */
  started(at = new Date()): void {
    this.backup.pointInTime = at.toISOString();
  }

  record(): BackupRecord {
    return this.backup.record();
  }

  /**
   * After the job completed: writes the manifest (last; with the new
   * checkpoint's XML), then deletes the previous base's checkpoint (a full or
   * an incremental replaces it as the base; libvirt merges its bitmap into
   * its parent's, if any).
   */
  async finish(
    d: Domain,
    targets: readonly string[],
    window: WindowFacts | undefined,
    record: BackupRecord,
    log: Log,
  ): Promise<void> {
    const sizes = await Promise.all(targets.map(async (t) => (await stat(t)).blocks * 512));
    const checkpoint = await this.savedCheckpoint(d, log);
    record.bytesWritten = await this.backup.recordComplete(this.disks, sizes, window, log, {
      ...(checkpoint ? { checkpoint } : {}),
    });
    const old = this.backup.base;
    if (this.decision.level !== 'differential' && old)
      await this.deleteCheckpoint(d, old.manifest.bitmap, log, 'the new backup replaces it as the base');
  }

  /** The new checkpoint's XML as checkpoint-dumpxml gives it (what a redefine takes back). */
  private async savedCheckpoint(d: Domain, log: Log): Promise<ManifestCheckpoint | undefined> {
    const name = this.newCheckpoint;
    if (name === undefined) return undefined;
    try {
      const cp = await d.conn.checkpointLookupByName(d.dom, name, { timeoutMs: this.timeoutMs });
      return { name, xml: await d.conn.checkpointGetXmlDesc(cp, 0, { timeoutMs: this.timeoutMs }) };
    } catch (err) {
      log({
        kind: 'warning',
        guest: this.guest,
        message: `could not read checkpoint ${name} for the manifest (it cannot be redefined from it): ${(err as Error).message}`,
      });
      return undefined;
    }
  }

  /**
   * The backup did not complete: deletes the checkpoint it created (if
   * libvirt has it), and records the failure (`complete: false`; the images
   * are removed by the provider). Without a connection the checkpoint is
   * listed stale, for the next backup to delete.
   */
  async abandon(d: Domain | undefined, error: string, log: Log): Promise<void> {
    if (!this.backup.decidedYet) return;
    const name = this.newCheckpoint;
    if (this.sentCheckpoint && name !== undefined) {
      if (d) await this.deleteCheckpoint(d, name, log, 'its backup did not complete');
      else await updateStaleBitmaps(this.repo.dir, this.guest, { add: [name] }).catch(() => undefined);
    }
    await this.backup.recordFailure(this.disks, error, log);
  }

  async release(): Promise<void> {
    await this.backup.release();
  }

  /**
   * Deletes, before the freeze, checkpoints of this repository nothing will
   * read again: those prune listed stale, and those of any backup of the
   * guest here other than the chain's base (a failed run's, a replaced base's).
   * Others' checkpoints are left alone.
   */
  private async dropUnread(d: Domain, names: ReadonlySet<string>, log: Log): Promise<void> {
    const catalog = this.backup.catalog;
    const keep = this.backup.base?.manifest.bitmap;
    const ours = new Set(
      [...catalog.points.map((p) => p.manifest.id), ...catalog.unusable.map((u) => u.id)].map(bitmapName),
    );
    const stale = new Set(await readStaleBitmaps(this.repo.dir, this.guest));
    const gone: string[] = [];
    for (const name of names) {
      if (!name.startsWith(BITMAP_PREFIX) || name === keep || !(stale.has(name) || ours.has(name))) continue;
      if (await this.deleteCheckpoint(d, name, log, 'nothing reads it any more')) gone.push(name);
    }
    const forget = [...stale].filter((n) => n !== keep && !names.has(n));
    if (forget.length || gone.length)
      await updateStaleBitmaps(this.repo.dir, this.guest, { drop: [...forget, ...gone] });
    if (gone.length) log({ kind: 'bitmaps-removed', guest: this.guest, names: gone });
  }

  /**
   * Deletes a checkpoint with its bitmaps (not metadata only); one already
   * gone counts as deleted. A failure is a warning and lands on the stale
   * list. True when it is gone.
   */
  private async deleteCheckpoint(d: Domain, name: string, log: Log, why: string): Promise<boolean> {
    try {
      await dropCheckpoint(d.conn, d.dom, name, { timeoutMs: this.timeoutMs });
      return true;
    } catch (err) {
      log({
        kind: 'warning',
        guest: this.guest,
        message: `could not delete checkpoint ${name} (${why}): ${(err as Error).message}`,
      });
      await updateStaleBitmaps(this.repo.dir, this.guest, { add: [name] }).catch(() => undefined);
      return false;
    }
  }
}
