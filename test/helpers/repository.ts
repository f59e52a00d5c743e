// Backup repositories on disk for tests: folders with manifests and tiny placeholder images, made
// without QEMU. The images are not qcow2 (nothing here reads them); the manifests are real.
import { mkdirSync, writeFileSync } from 'node:fs';
import fc from 'fast-check';
import type { KeepRules } from '../../src/config/types.js';
import { join } from 'node:path';
import type { Catalog, RestorePoint, Unusable } from '../../src/repository/catalog.js';
import { backupDir, bitmapName, imageName, MANIFEST } from '../../src/repository/layout.js';
import { backupId, type Level, type Manifest } from '../../src/repository/manifest.js';

/** One backup to write. Left out: a complete one-disk ("vda") backup with a filesystem-consistent manifest. */
export interface BackupSpec {
  readonly guest: string;
  readonly id: string;
  readonly level: Level;
  /** The chain's full (the id itself for a full). */
  readonly chain: string;
  readonly parent: string | null;
  /** ISO time; default: the time the id names. */
  readonly time?: string;
  readonly complete?: boolean;
  readonly error?: string;
  readonly disks?: readonly string[];
  /** False: the images only, no manifest (a run that died before recording). */
  readonly manifest?: boolean;
  /** Default: a full's or incremental's own (named after it), a differential's parent's. */
  readonly bitmap?: string;
}

/** A deterministic backup id for `at`: the random part is `n` in hex (keeps ids in one second apart). */
export function testBackupId(at: Date, n: number): string {
  return backupId(at, (n % 0x10000).toString(16).padStart(4, '0'));
}

/** The time a backup id names, as ISO. */
export function idTimeIso(id: string): string {
  const m = /^(\d{4})(\d{2})(\d{2})T(\d{2})(\d{2})(\d{2})Z/.exec(id)!;
  return `${m[1]}-${m[2]}-${m[3]}T${m[4]}:${m[5]}:${m[6]}.000Z`;
}

/** The manifest a backup of `spec` records. */
export function manifestFor(spec: BackupSpec): Manifest {
  const complete = spec.complete ?? true;
  return {
    version: 1,
    id: spec.id,
    guest: spec.guest,
    time: spec.time ?? idTimeIso(spec.id),
    level: spec.level,
    chain: spec.chain,
    parent: spec.parent,
    bitmap: spec.bitmap ?? bitmapName(spec.level === 'differential' ? spec.parent! : spec.id),
    reason: 'written by a test',
    disks: (spec.disks ?? ['vda']).map((name) => ({
      name,
      node: `node-${name}`,
      virtualSize: 1 << 20,
      file: imageName(name),
      format: 'qcow2' as const,
      bytesWritten: 4096,
    })),
    consistency: 'filesystem',
    frozenWindowMs: 12,
    quiesceVersion: '0.0.0-test',
    agentVersion: null,
    complete,
    ...(spec.error !== undefined ? { error: spec.error } : {}),
  };
}

/** Writes `REPO/GUEST/CHAIN/ID/` with a placeholder image per disk and (unless told not to) its manifest; returns the folder. */
export function writeBackup(repo: string, spec: BackupSpec): string {
  const dir = backupDir(repo, spec.guest, spec.chain, spec.id);
  mkdirSync(dir, { recursive: true });
  const m = manifestFor(spec);
  for (const d of m.disks) writeFileSync(join(dir, d.file), 'placeholder image\n');
  if (spec.manifest !== false) writeFileSync(join(dir, MANIFEST), `${JSON.stringify(m, null, 2)}\n`);
  return dir;
}

/**
 * Backups taken at `times` (ascending) with the chain rules: a full starts a
 * chain; an incremental's and a differential's parent is the newest full or
 * incremental of the chain (a differential is never a parent). The first
 * backup is a full whatever it was asked to be.
 */
export function scheduleBackups(
  guest: string,
  takes: readonly { readonly level: Level; readonly time: Date }[],
): BackupSpec[] {
  const specs: BackupSpec[] = [];
  let chain = '';
  let base = '';
  for (const [n, t] of takes.entries()) {
    const id = testBackupId(t.time, n);
    const level: Level = n === 0 ? 'full' : t.level;
    if (level === 'full') chain = id;
    specs.push({
      guest,
      id,
      level,
      chain,
      parent: level === 'full' ? null : base,
      time: t.time.toISOString(),
    });
    if (level !== 'differential') base = id;
  }
  return specs;
}

/**
 * The catalog readCatalog would give for `specs` written with writeBackup,
 * without the disk (for pure tests): complete backups whose parent is a
 * restore point are restore points; the rest are unusable, with a short why.
 */
export function catalogOf(repo: string, guest: string, specs: readonly BackupSpec[]): Catalog {
  const points = new Map<string, RestorePoint>();
  const unusable: Unusable[] = [];
  for (const s of [...specs].sort((a, b) => a.id.localeCompare(b.id))) {
    const dir = backupDir(repo, guest, s.chain, s.id);
    const m = manifestFor(s);
    const parent = s.parent === null ? undefined : points.get(s.parent);
    const why =
      s.manifest === false
        ? 'no manifest (unfinished, or its run died)'
        : !m.complete
          ? 'incomplete'
          : s.parent !== null && !parent
            ? `its parent ${s.parent} is not a restore point`
            : undefined;
    if (why === undefined) points.set(s.id, { manifest: m, dir, lineage: [...(parent?.lineage ?? []), s.id] });
    else
      unusable.push({
        chain: s.chain,
        id: s.id,
        dir,
        why,
        time: new Date(s.manifest === false ? idTimeIso(s.id) : m.time),
        ...(s.manifest === false ? {} : { manifest: m }),
      });
  }
  return {
    repo,
    guest,
    points: [...points.values()].sort(
      (a, b) => a.manifest.time.localeCompare(b.manifest.time) || a.manifest.id.localeCompare(b.manifest.id),
    ),
    unusable,
    chains: [...new Set(specs.map((s) => s.chain))].sort(),
  };
}

/** Random schedules over months for scheduleBackups: random levels, gaps of a minute to three weeks. */
export const scheduleArb: fc.Arbitrary<{ level: Level; time: Date }[]> = fc
  .array(
    fc.record({
      level: fc.constantFrom<Level>('full', 'incremental', 'differential'),
      gapMs: fc.integer({ min: 60_000, max: 21 * 86_400_000 }),
    }),
    { minLength: 1, maxLength: 40 },
  )
  .map((takes) => {
    let t = Date.UTC(2026, 0, 1);
    return takes.map(({ level, gapMs }) => ({ level, time: new Date((t += gapMs)) }));
  });

/** Random keep rules that keep something. */
export const keepRulesArb: fc.Arbitrary<KeepRules> = fc
  .record({
    keepLast: fc.integer({ min: 0, max: 6 }),
    keepDaily: fc.integer({ min: 0, max: 6 }),
    keepWeekly: fc.integer({ min: 0, max: 5 }),
    keepMonthly: fc.integer({ min: 0, max: 4 }),
  })
  .filter((r) => r.keepLast + r.keepDaily + r.keepWeekly + r.keepMonthly > 0);
