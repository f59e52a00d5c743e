import { QuiesceError } from '../errors.js';
import type { BackupLevel } from '../config/types.js';
import { formatDuration } from '../config/duration.js';
import type { Catalog, RestorePoint } from './catalog.js';
import type { Level } from './manifest.js';

/** A dirty bitmap as QEMU reports it on a node (query-named-block-nodes → dirty-bitmaps). */
export interface BitmapState {
  readonly name: string;
  readonly recording: boolean;
  readonly busy: boolean;
  readonly persistent: boolean;
  readonly inconsistent: boolean;
  /** Dirty bytes. */
  readonly count: number;
}

/** A disk as QEMU has it now. */
export interface LiveDisk {
  readonly name: string;
  readonly size: number;
  readonly bitmaps: readonly BitmapState[];
}

export interface LevelDecision {
  readonly level: Level;
  /** Why, in words for the log, the report and `quiesce plan`. */
  readonly reason: string;
  /** The restore point this backup builds on (its images are the new images' backing files); none for a full. */
  readonly parent: RestorePoint | undefined;
  /** Dirty bytes the bitmap holds across the disks (what an incremental will copy, roughly). */
  readonly dirtyBytes?: number;
}

export interface LevelInput {
  readonly configured: BackupLevel;
  readonly fullEvery: { readonly backups?: number; readonly ageMs?: number };
  readonly now: Date;
  readonly catalog: Catalog;
  readonly disks: readonly LiveDisk[];
  /**
   * Why the base's change tracking cannot be read, as the caller found it
   * (libvirt: its checkpoint is gone or does not cover a disk); checked after
   * the disks' shapes, before their bitmaps.
   */
  readonly untracked?: (base: RestorePoint) => string | undefined;
}

/**
 * The restore point the next incremental or differential builds on: the
 * newest full or incremental (a differential is never a parent, and its
 * bitmap reading left the bitmap as it was).
 */
export function chainBase(c: Catalog): RestorePoint | undefined {
  for (let i = c.points.length - 1; i >= 0; i--) if (c.points[i]!.manifest.level !== 'differential') return c.points[i];
  return undefined;
}

/**
 * Which level to take and why. Each full or incremental starts a persistent
 * bitmap of its own (named after it), so the base's bitmap holds exactly the
 * writes since the base: an incremental or differential reads it, and it is
 * only removed once a newer backup is recorded. Anything that breaks that
 * (no chain, a missing, disabled or inconsistent bitmap, a disk added,
 * removed or resized) makes `auto` take a full, and a configured
 * incremental or differential fail before anything is frozen.
 */
export function decideLevel(o: LevelInput): LevelDecision {
  if (o.configured === 'full') return { level: 'full', reason: 'level full in the config', parent: undefined };
  const base = chainBase(o.catalog);
  const broken = base ? whyNotContinue(base, o.disks, o.untracked) : 'no chain to continue yet';
  const wanted: Level = o.configured === 'differential' ? 'differential' : 'incremental';
  if (broken !== undefined) {
    if (o.configured === 'auto') return { level: 'full', reason: broken, parent: undefined };
    throw new QuiesceError(
      'REPOSITORY',
      `cannot take ${o.configured === 'incremental' ? 'an incremental' : 'a differential'}: ${broken} (level auto takes a full then)`,
    );
  }
  const b = base!;
  if (o.configured === 'auto') {
    const tooLong = fullDue(o, b);
    if (tooLong) return { level: 'full', reason: tooLong, parent: undefined };
  }
  const dirtyBytes = o.disks.reduce((n, d) => n + (d.bitmaps.find((x) => x.name === b.manifest.bitmap)?.count ?? 0), 0);
  return {
    level: wanted,
    reason: `continues chain ${b.manifest.chain} from ${b.manifest.id} (${b.manifest.level}; bitmap ${b.manifest.bitmap}: ${dirtyBytes} bytes changed)`,
    parent: b,
    dirtyBytes,
  };
}

/** Why the chain cannot go on from `base` with these disks, or undefined. */
function whyNotContinue(
  base: RestorePoint,
  disks: readonly LiveDisk[],
  untracked?: (base: RestorePoint) => string | undefined,
): string | undefined {
  const m = base.manifest;
  const had = new Map(m.disks.map((d) => [d.name, d]));
  for (const d of disks) {
    const old = had.get(d.name);
    if (!old) return `disk ${d.name} was added since ${m.id}`;
    if (old.virtualSize !== d.size)
      return `disk ${d.name} was resized (${old.virtualSize} → ${d.size} bytes) since ${m.id}`;
  }
  const now = new Set(disks.map((d) => d.name));
  const gone = m.disks.find((d) => !now.has(d.name));
  if (gone) return `disk ${gone.name} of ${m.id} is not backed up any more`;
  const lost = untracked?.(base);
  if (lost !== undefined) return lost;
  for (const d of disks) {
    const bm = d.bitmaps.find((x) => x.name === m.bitmap);
    if (!bm)
      return `bitmap ${m.bitmap} is missing on disk ${d.name} (QEMU restarted without saving it, or it was removed)`;
    if (bm.inconsistent) return `bitmap ${m.bitmap} on disk ${d.name} is inconsistent (QEMU did not close cleanly)`;
    if (!bm.recording) return `bitmap ${m.bitmap} on disk ${d.name} is disabled (writes since may be missing)`;
    if (bm.busy) throw new QuiesceError('REPOSITORY', `bitmap ${m.bitmap} on disk ${d.name} is in use by another job`);
  }
  return undefined;
}

/** fullEvery's verdict for the base's chain. */
function fullDue(o: LevelInput, base: RestorePoint): string | undefined {
  const chain = base.manifest.chain;
  const { backups, ageMs } = o.fullEvery;
  if (backups !== undefined) {
    const n = o.catalog.points.filter((p) => p.manifest.chain === chain).length;
    if (n >= backups) return `chain ${chain} has ${n} backups (fullEvery.backups ${backups})`;
  }
  if (ageMs !== undefined) {
    const full = o.catalog.points.find((p) => p.manifest.id === chain);
    const age = o.now.getTime() - Date.parse(full?.manifest.time ?? base.manifest.time);
    if (age >= ageMs)
      return `chain ${chain} is ${formatDuration(Math.round(age / 1000) * 1000)} old (fullEvery.age ${formatDuration(ageMs)})`;
  }
  return undefined;
}
