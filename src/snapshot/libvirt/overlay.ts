import { randomBytes } from 'node:crypto';
import { formatDuration } from '../../config/duration.js';
import { SnapshotCreateFlags } from '../../libvirt/protocol.js';
import type { Log } from '../../log/logger.js';
import type { PlannedLibvirtSnapshot, SnapshotContext, SnapshotProvider, SnapshotTaken } from '../types.js';
import { merge, recoveryHint } from './commit.js';
import { snapshotXml, type DomainDisk } from './domain-xml.js';
import { createImage, type ImageSpec } from './image.js';
import { LibvirtSession, warner } from './session.js';

/**
 * The flags of the window's one call:
 * - DISK_ONLY: the disks alone (no memory state; nothing for the guest to notice);
 * - ATOMIC: every disk's overlay or none (one QEMU transaction);
 * - NO_METADATA with commit: the overlay is merged back within the run, so
 *   libvirt has nothing to remember (metadata would outlive the overlay it
 *   names); without commit the overlay stays in the chain, and libvirt's
 *   metadata lets `virsh snapshot-list` show it and `virsh snapshot-delete`
 *   (libvirt ≥ 9.0) merge it later;
 * - never QUIESCE: the filesystems are frozen already, by us, with the list
 *   the config names (libvirt's own freeze would take every filesystem).
 * - REUSE_EXT when quiesce made the overlays before the freeze (a local
 *   URI, every disk a file or block device): otherwise libvirt creates each
 *   one inside the window (a blockdev-create job per disk).
 */
export function snapshotFlags(commit: boolean, reuse: boolean): number {
  return (
    SnapshotCreateFlags.DISK_ONLY |
    SnapshotCreateFlags.ATOMIC |
    (commit ? SnapshotCreateFlags.NO_METADATA : 0) |
    (reuse ? SnapshotCreateFlags.REUSE_EXT : 0)
  );
}

/**
 * The image of an overlay on `disk`: a qcow2 with the disk's active image as
 * backing file (not opened: QEMU holds it, and the size is libvirt's).
 * Undefined where the backing is not a path here (a network disk): libvirt
 * makes that overlay.
 */
export function overlayImage(disk: DomainDisk): ImageSpec | undefined {
  if ((disk.type !== 'file' && disk.type !== 'block') || !disk.source || !disk.format) return undefined;
  return { format: 'qcow2', backing: { file: disk.source, format: disk.format } };
}

/**
 * Mode `snapshot`: an external disk-only snapshot (one qcow2 overlay per
 * disk, atomic) inside the window; the images below the overlays are the
 * point in time, for the backup step to copy. With `commit` (the default) the
 * overlays are merged back once the run's later steps ran (release(), or
 * dispose() where the run does not call it), so no chain grows; without it
 * they stay, and the chain grows by one overlay per run.
 */
export function overlayProvider(s: PlannedLibvirtSnapshot): SnapshotProvider {
  return new LibvirtOverlay(s);
}

class LibvirtOverlay implements SnapshotProvider {
  private preparing: Promise<{ session: LibvirtSession; xml: string; reuse: boolean }> | undefined;
  private disposing: Promise<void> | undefined;
  private session: LibvirtSession | undefined;
  /** The overlays are in place (libvirt accepted the snapshot in the window). */
  private taken = false;
  private merging: Promise<void> | undefined;
  /** prepare() created overlay files (removed again unless libvirt took them). */
  private created = false;

  constructor(private readonly s: PlannedLibvirtSnapshot) {}

  describe(): string {
    const s = this.s;
    const disks = s.disks === 'all' ? 'all disks' : s.disks.join(', ');
    return `libvirt ${s.uri ?? 'default'}/${s.domain}: external disk-only snapshot (atomic${s.commit ? ', no metadata' : ''}) of ${disks} → ${s.target} (qcow2 overlays)${s.commit ? '; merged back after the later steps' : '; the overlays stay (the chain grows by one per run)'}`;
  }

  planSteps(): { beforeFreeze: string; afterThaw?: string } {
    const s = this.s;
    return {
      beforeFreeze: `snapshot set-up: connect to libvirt, read ${s.domain}'s disks, check each overlay path is free and, with a local URI, make each overlay (qcow2 over the disk's image, reused by libvirt), build the snapshot XML (timeout ${formatDuration(s.commandTimeoutMs)} per call)`,
      ...(s.commit
        ? {
            afterThaw: `after the backup, verify and post-hook steps: merge each overlay back (block commit --active --shallow, READY, pivot; timeout ${formatDuration(s.timeoutMs)}); the domain is back on its images`,
          }
        : {}),
    };
  }

  async prepare(ctx: { readonly guest: string }): Promise<void> {
    await this.prepared(ctx.guest);
  }

  private prepared(guest: string): Promise<{ session: LibvirtSession; xml: string; reuse: boolean }> {
    this.preparing ??= (async () => {
      const session = await LibvirtSession.open(this.s, guest);
      this.session = session;
      const name = `quiesce-${Date.now().toString(36)}-${randomBytes(3).toString('hex')}`;
      const reuse = await this.createOverlays(session);
      return { session, xml: snapshotXml(name, session.all, session.picked), reuse };
    })();
    return this.preparing;
  }

  /**
   * With a local URI, each overlay is made here, before the freeze (qcow2,
   * the disk's size, its active image as backing file), and libvirt reuses
   * them; returns whether it did. dispose() removes them unless libvirt took
   * them.
   */
  private async createOverlays(session: LibvirtSession): Promise<boolean> {
    const images = session.picked.map((p) => overlayImage(p.disk));
    if (!session.local || images.some((o) => o === undefined)) return false;
    for (const [i, p] of session.picked.entries())
      await createImage(session, p, images[i]!, () => {
        this.created = true;
      });
    return true;
  }

  async take(ctx: SnapshotContext): Promise<SnapshotTaken> {
    const { session, xml, reuse } = await this.prepared(ctx.guest);
    await session.send(
      session.conn.snapshotCreateXml(session.dom, xml, snapshotFlags(this.s.commit, reuse), {
        timeoutMs: this.s.commandTimeoutMs,
      }),
      ctx.signal,
      'snapshot-create-xml',
    );
    this.taken = true;
    return {
      files: session.targets,
      ...(this.s.commit
        ? { release: (c: { readonly log: Log; readonly signal?: AbortSignal }) => this.merge(session, c) }
        : {}),
    };
  }

  /** Once: merges the overlays back (a second call gets the first's outcome). */
  private merge(session: LibvirtSession, ctx: { readonly log: Log; readonly signal?: AbortSignal }): Promise<void> {
    this.merging ??= merge(session, {
      timeoutMs: this.s.timeoutMs,
      warn: warner({ guest: session.guest, log: ctx.log }),
      ...(ctx.signal ? { signal: ctx.signal } : {}),
    });
    return this.merging;
  }

  dispose(ctx: { readonly guest: string; readonly log: Log }): Promise<void> {
    this.disposing ??= this.close(ctx);
    return this.disposing;
  }

  private async close(ctx: { readonly guest: string; readonly log: Log }): Promise<void> {
    const session = this.session;
    if (!session) return;
    const warn = warner(ctx);
    try {
      // Taken, or perhaps taken after the window was cut short.
      const inPlace = this.taken || (await session.wasAccepted()) !== false;
      if (!inPlace) {
        if (this.created) await session.removeTargets(warn, 'the snapshot was not taken', true);
        return;
      }
      if (!this.taken)
        warn(
          `the overlays ${session.targets.join(', ')} may have been created after the frozen window was cut short: the images below them are not frozen-consistent`,
        );
      if (!this.s.commit) return;
      if (this.merging) {
        // release() ran; its failure was reported there.
        await this.merging.catch(() => undefined);
        return;
      }
      await this.merge(session, { log: ctx.log }).catch((err: Error) => warn(err.message));
    } catch (err) {
      warn(
        `cleaning up after the libvirt snapshot: ${(err as Error).message}; if the domain still runs on ${session.targets.join(', ')}: ${recoveryHint(
          session,
          session.picked.map((p) => p.disk.name),
        )}`,
      );
    } finally {
      session.release();
    }
  }
}
