import { execFileSync, spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { existsSync, lstatSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, posix } from 'node:path';
import type { Checksums } from './guest-ops.js';
import { diskNames, makeImage, type DiskFormat, type ExtraDiskSpec, type Guest, type GuestDisk } from './qemu.js';
import { Qmp } from './qmp.js';

/**
 * Disks of a test guest seen from the host: hot-adding one through QMP, and
 * reading the files of an ext4 image without mounting it.
 */

/**
 * Runs `fn` with `qmp`, or with a connection of its own (closed afterwards) to
 * the guest's second monitor, so the code under test may hold the first.
 */
async function withQmp<T>(g: Guest, qmp: Qmp | undefined, fn: (q: Qmp) => Promise<T>): Promise<T> {
  if (qmp) return fn(qmp);
  const own = await Qmp.open(g.qmpSocket2);
  try {
    return await fn(own);
  } finally {
    own.close();
  }
}

/**
 * Hot-adds a disk: a new image in the guest's directory (`disk-vdX.qcow2|img`),
 * `blockdev-add` of its file node (`fileN`) and format node (`dataN`), then
 * `device_add virtio-blk-pci` with id `vdX` — the first index whose node names
 * and device id are all free (after vda and any BootOptions.extraDisks: vdb,
 * vdc, …). The guest is not asked to see or mount it (this guest's kernel
 * does see it: ACPI PCI hotplug). Without `qmp` it connects to the guest's
 * second monitor (qmpSocket2) for the call; each monitor takes one client at a time.
 */
export async function addDisk(g: Guest, spec: ExtraDiskSpec, qmp?: Qmp): Promise<GuestDisk> {
  return withQmp(g, qmp, async (q) => {
    const nodes = new Set(
      (await q.execute<{ 'node-name': string }[]>('query-named-block-nodes')).map((n) => n['node-name']),
    );
    const devices = new Set(
      (await q.execute<{ name: string }[]>('qom-list', { path: '/machine/peripheral' })).map((p) => p.name),
    );
    let index = 1;
    for (; ; index++) {
      const n = diskNames(index);
      if (!nodes.has(n.node) && !nodes.has(n.fileNode) && !devices.has(n.device)) break;
    }
    const names = diskNames(index);
    const image = join(g.dir, `disk-${names.device}.${spec.format === 'qcow2' ? 'qcow2' : 'img'}`);
    if (existsSync(image)) throw new Error(`addDisk: ${image} exists already`);
    makeImage(image, spec);
    const added: string[] = [];
    try {
      await q.execute('blockdev-add', { driver: 'file', 'node-name': names.fileNode, filename: image });
      added.push(names.fileNode);
      await q.execute('blockdev-add', { driver: spec.format, 'node-name': names.node, file: names.fileNode });
      added.unshift(names.node);
      await q.execute('device_add', { driver: 'virtio-blk-pci', drive: names.node, id: names.device });
    } catch (err) {
      for (const node of added) await q.execute('blockdev-del', { 'node-name': node }).catch(() => undefined);
      rmSync(image, { force: true });
      throw err;
    }
    return { ...names, image, format: spec.format };
  });
}

export interface ImageChecksumOptions {
  /** The directory inside the filesystem (default '/': the whole filesystem, lost+found left out). */
  dir?: string;
  /**
   * Replay the ext4 journal on the scratch copy first (default true), as a mount
   * would: the image of a mounted filesystem says needs_recovery, and after a
   * guest `sync` part of its metadata may sit in the journal only.
   */
  replayJournal?: boolean;
}

/**
 * sha256 of every regular file in an ext4 image (raw or qcow2) without mounting
 * it: `qemu-img convert -U` to a scratch raw copy (works on an image a running
 * QEMU holds), the journal replayed on that copy (`e2fsck -E journal_only`),
 * then `debugfs rdump` into a scratch directory and each file hashed. Keys as
 * guestChecksums gives them for the mount point: `/w/log`.
 */
export function imageChecksums(image: string, format: DiskFormat, opts: ImageChecksumOptions = {}): Checksums {
  const dir = opts.dir ?? '/';
  if (!posix.isAbsolute(dir) || /\s/.test(dir)) throw new Error(`imageChecksums: dir ${dir}: absolute, no whitespace`);
  const scratch = mkdtempSync(join(tmpdir(), 'quiesce-imgsum-'));
  try {
    const raw = join(scratch, 'fs.raw');
    run('qemu-img', ['convert', '-U', '-q', '-f', format, '-O', 'raw', image, raw]);
    if (opts.replayJournal ?? true) {
      // 0: nothing to do, 1: fixed (the journal replayed); anything else is a real failure.
      const r = spawnSync('e2fsck', ['-E', 'journal_only', '-y', raw], { encoding: 'utf8' });
      if (r.status !== 0 && r.status !== 1)
        throw new Error(`e2fsck -E journal_only on a copy of ${image}: exit ${r.status}\n${r.stdout}${r.stderr}`);
    }
    const out = join(scratch, 'files');
    mkdirSync(out);
    const r = spawnSync('debugfs', ['-R', `rdump ${dir} ${out}`, raw], { encoding: 'utf8' });
    const complaints = r.stderr.replace(/^debugfs \d[^\n]*\n/, '').trim();
    if (r.status !== 0 || complaints !== '')
      throw new Error(`debugfs rdump ${dir} of a copy of ${image} failed: ${complaints || `exit ${r.status}`}`);
    // rdump of / puts the root's entries in `out`; of /a/b it makes out/b.
    const root = dir === '/' ? out : join(out, posix.basename(dir));
    const sums: Checksums = new Map();
    const walk = (host: string, rel: string): void => {
      for (const name of readdirSync(host).sort()) {
        if (rel === '' && name === 'lost+found') continue;
        const p = join(host, name);
        const st = lstatSync(p);
        if (st.isDirectory()) walk(p, `${rel}/${name}`);
        else if (st.isFile()) sums.set(`${rel}/${name}`, createHash('sha256').update(readFileSync(p)).digest('hex'));
      }
    };
    walk(root, '');
    return new Map([...sums].sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0)));
  } finally {
    rmSync(scratch, { recursive: true, force: true });
  }
}

function run(cmd: string, args: string[]): void {
  try {
    execFileSync(cmd, args, { stdio: ['ignore', 'ignore', 'pipe'] });
  } catch (err) {
    const e = err as { stderr?: Buffer; message: string };
    throw new Error(`${cmd} ${args.join(' ')}: ${e.stderr?.toString().trim() || e.message}`);
  }
}
