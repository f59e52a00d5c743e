// Real backup chains for repository tests: qcow2 images made with qemu-img, data written with qemu-io,
// manifests as the backup step writes them. A model of each disk's bytes at each point says what a
// restore of that point must hold.
import { execFile, spawnSync } from 'node:child_process';
import { mkdir, mkdtemp, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { backingFile, backupDir, bitmapName, imageName, MANIFEST } from '../../src/repository/layout.js';
import { backupId, type Level, type Manifest } from '../../src/repository/manifest.js';

const run = promisify(execFile);

/** Why tests that need qemu-img and qemu-io skip, or false. */
export function qemuToolsMissing(): string | false {
  for (const tool of ['qemu-img', 'qemu-io'])
    if (spawnSync(tool, ['--version']).status !== 0) return `needs ${tool} (apt-get install qemu-utils)`;
  return false;
}

/** One qemu-io write: `write -P PATTERN OFFSET LENGTH` on one disk. */
export interface Write {
  readonly disk: string;
  readonly pattern: number;
  readonly offset: number;
  readonly length: number;
}

/** A backup made by the helper, with the bytes each of its disks must restore to. */
export interface MadeBackup {
  readonly id: string;
  readonly chain: string;
  readonly level: Level;
  readonly time: Date;
  readonly dir: string;
  /** Disk name → the whole disk as restoring this point must give it. */
  readonly expected: ReadonlyMap<string, Buffer>;
  readonly manifest: Manifest;
}

export interface BackupSpec {
  readonly time: Date;
  /** A full when absent. */
  readonly parent?: MadeBackup;
  /** Disks of a full (an incremental has its parent's). */
  readonly disks?: readonly { readonly name: string; readonly size: number }[];
  /** Written into this backup's images; none for an incremental that changed nothing. */
  readonly writes?: readonly Write[];
  /** Fields to override in the manifest (complete: false, verified, …); false writes none. */
  readonly manifest?: Partial<Manifest> | false;
  readonly random?: string;
}

let counter = 0;

/** A temp repository with a guest's folder; remove() deletes it all. */
export async function makeRepository(): Promise<{ repo: string; remove: () => Promise<void> }> {
  const repo = await mkdtemp(join(tmpdir(), 'quiesce-repo-'));
  return { repo, remove: () => rm(repo, { recursive: true, force: true }) };
}

export async function qemuIo(image: string, command: string, format = 'qcow2', readOnly = false): Promise<void> {
  await run('qemu-io', [...(readOnly ? ['-r'] : []), '-f', format, '-c', command, image]);
}

/**
 * Makes one backup of `guest` in `repo`: a full (qemu-img create) or an
 * incremental on its parent (`-b ../PARENT/DISK.qcow2 -F qcow2`), its writes,
 * then its manifest, last, as the backup step does.
 */
export async function makeBackup(repo: string, guest: string, spec: BackupSpec): Promise<MadeBackup> {
  const random = spec.random ?? (counter++ % 0x10000).toString(16).padStart(4, '0');
  const id = backupId(spec.time, random);
  const parent = spec.parent;
  const chain = parent ? parent.chain : id;
  const level: Level = parent ? 'incremental' : 'full';
  const disks = parent
    ? parent.manifest.disks.map((d) => ({ name: d.name, size: d.virtualSize }))
    : (spec.disks ?? [{ name: 'vda', size: 4 << 20 }]);
  const dir = backupDir(repo, guest, chain, id);
  await mkdir(dir, { recursive: true });
  const expected = new Map<string, Buffer>();
  for (const d of disks) {
    const image = join(dir, imageName(d.name));
    if (parent)
      await run('qemu-img', [
        'create',
        '-q',
        '-f',
        'qcow2',
        '-b',
        backingFile(parent.id, d.name),
        '-F',
        'qcow2',
        image,
      ]);
    else await run('qemu-img', ['create', '-q', '-f', 'qcow2', image, String(d.size)]);
    expected.set(d.name, Buffer.from(parent?.expected.get(d.name) ?? Buffer.alloc(d.size)));
  }
  for (const w of spec.writes ?? []) {
    await qemuIo(join(dir, imageName(w.disk)), `write -P 0x${w.pattern.toString(16)} ${w.offset} ${w.length}`);
    expected.get(w.disk)!.fill(w.pattern, w.offset, w.offset + w.length);
  }
  const manifest: Manifest = {
    version: 1,
    id,
    guest,
    time: spec.time.toISOString(),
    level,
    chain,
    parent: parent ? parent.id : null,
    bitmap: bitmapName(chain),
    reason: parent ? 'auto: the chain goes on' : 'auto: no chain yet',
    disks: await Promise.all(
      disks.map(async (d) => ({
        name: d.name,
        node: `drive-${d.name}`,
        virtualSize: d.size,
        file: imageName(d.name),
        format: 'qcow2' as const,
        bytesWritten: (await stat(join(dir, imageName(d.name)))).blocks * 512,
      })),
    ),
    consistency: 'filesystem',
    frozenWindowMs: 14,
    quiesceVersion: '0.1.0',
    agentVersion: '0.1.0',
    complete: true,
    ...(spec.manifest || {}),
  };
  if (spec.manifest !== false) await writeManifest(dir, manifest);
  return { id, chain, level, time: spec.time, dir, expected, manifest };
}

/** Writes `manifest.json` into a backup's folder. */
export async function writeManifest(dir: string, manifest: Manifest): Promise<void> {
  await writeFile(join(dir, MANIFEST), `${JSON.stringify(manifest, null, 2)}\n`);
}

/** A raw image file of `mb` MiB with an ext4 filesystem holding `files` (name → content), made with mkfs.ext4 -d. */
export async function ext4Image(path: string, mb: number, files: Record<string, string>): Promise<void> {
  const src = await mkdtemp(join(tmpdir(), 'ext4-src-'));
  try {
    for (const [name, content] of Object.entries(files)) await writeFile(join(src, name), content);
    await run('truncate', ['-s', `${mb}M`, path]);
    await run('mkfs.ext4', ['-F', '-q', '-d', src, path]);
  } finally {
    await rm(src, { recursive: true, force: true });
  }
}

/** Replaces a backup's image of `disk` with `raw` converted to qcow2 (the same virtual size: a full made empty, then filled). */
export async function fillImage(b: MadeBackup, raw: string, disk = 'vda'): Promise<void> {
  const image = join(b.dir, imageName(disk));
  await rm(image);
  await run('qemu-img', ['convert', '-q', '-f', 'raw', '-O', 'qcow2', raw, image]);
}
