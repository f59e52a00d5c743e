import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { link, lstat, mkdir, rmdir, stat, unlink } from 'node:fs/promises';
import { dirname, join, relative, resolve } from 'node:path';
import { QuiesceError } from '../errors.js';
import type { Log } from '../log/logger.js';
import { GroupTerminator } from '../process/group.js';
import { runProcess } from '../process/run.js';
import type { RestorePoint } from './catalog.js';
import type { ManifestDisk, Verified } from './manifest.js';
import { lockRepository } from './lock.js';
import { fsyncPath } from './store.js';

/** What a restored disk image is written as. */
export type RestoreFormat = 'raw' | 'qcow2';

export const RESTORE_FORMATS: readonly RestoreFormat[] = ['raw', 'qcow2'];

/** Progress of one disk's copy, as qemu-img reports it. */
export interface RestoreProgress {
  readonly disk: string;
  /** 1-based position of the disk among the point's disks. */
  readonly index: number;
  readonly count: number;
  readonly percent: number;
  /** Bytes of every disk of the point (virtual sizes), and how many of them are copied so far. */
  readonly total: number;
  readonly done: number;
}

export interface RestoreOptions {
  /** The folder to restore into; created when missing. Nothing in it is ever overwritten. */
  readonly to: string;
  readonly format: RestoreFormat;
  /** Aborting stops qemu-img and removes what this restore wrote. */
  readonly signal?: AbortSignal | undefined;
  /** Called as each disk's copy advances (qemu-img -p); without it qemu-img reports nothing. */
  readonly onProgress?: ((p: RestoreProgress) => void) | undefined;
  readonly log: Log;
}

/** One restored image. */
export interface RestoredDisk {
  readonly name: string;
  readonly path: string;
  readonly format: RestoreFormat;
  readonly virtualSize: number;
  /** Bytes the image takes on disk. */
  readonly allocated: number;
}

/** What a restore wrote, and how long it took. */
export interface RestoreResult {
  readonly guest: string;
  readonly id: string;
  readonly time: string;
  readonly level: string;
  readonly chain: string;
  /** The backups read, from the chain's full down to the point. */
  readonly lineage: readonly string[];
  readonly to: string;
  readonly disks: readonly RestoredDisk[];
  /** The copies (qemu-img convert), all disks. */
  readonly convertMs: number;
  /** Checks and read-back comparisons, all disks. */
  readonly verifyMs: number;
  readonly durationMs: number;
  /** Allocated bytes written per second of copying. */
  readonly bytesPerSecond: number;
  /** The point's verify result, when a verify step ran on it. */
  readonly verified?: Verified;
}

/** One disk's source image, its final name in the target folder, and the temp name it is written under. */
interface Planned {
  readonly disk: ManifestDisk;
  readonly source: string;
  readonly final: string;
  readonly temp: string;
}

const fail = (message: string, cause?: unknown): never => {
  throw new QuiesceError('REPOSITORY', message, cause === undefined ? {} : { cause });
};

/**
 * Restores `point` into `opts.to`: one image per disk, `DISK.raw` or
 * `DISK.qcow2`, converted from the point's own image (its backing chain, which
 * is checked to be exactly the point's lineage, makes it whole; no later
 * backup is ever read). Never overwrites: refuses before writing when a
 * final name exists, writes under a hidden temp name, and link()s it into
 * place. Every image is checked (qemu-img check for qcow2, the virtual size)
 * and read back against the point (qemu-img compare), then fsynced with its
 * folder. On any failure or abort, everything this restore wrote is removed.
 */
export async function restorePoint(point: RestorePoint, opts: RestoreOptions): Promise<RestoreResult> {
  // No prune (or backup) of the guest while its chain is read: REPO/GUEST/CHAIN/ID → REPO.
  const lock = await lockRepository(resolve(point.dir, '../../..'), point.manifest.guest, 'restore');
  try {
    return await restoreLocked(point, opts);
  } finally {
    await lock.release();
  }
}

async function restoreLocked(point: RestorePoint, opts: RestoreOptions): Promise<RestoreResult> {
  const t0 = performance.now();
  if (!RESTORE_FORMATS.includes(opts.format))
    throw new QuiesceError('CONFIG', `--format ${JSON.stringify(opts.format)}: give raw or qcow2`);
  const to = resolve(opts.to);
  const planned = plan(point, to, opts.format);
  await refuseExisting(planned);
  for (const p of planned) await checkChain(point, p, opts);
  opts.signal?.throwIfAborted();

  const firstCreated = await mkdir(to, { recursive: true }).catch((err: unknown) =>
    fail(`cannot create ${to}: ${(err as Error).message}`, err),
  );
  const linked: Planned[] = [];
  let convertMs = 0;
  let verifyMs = 0;
  try {
    const total = planned.reduce((n, p) => n + p.disk.virtualSize, 0);
    let before = 0;
    for (const [i, p] of planned.entries()) {
      const c0 = performance.now();
      await convert(p, opts, { index: i + 1, count: planned.length, before, total });
      before += p.disk.virtualSize;
      const c1 = performance.now();
      await verify(p, opts);
      await fsyncPath(p.temp);
      convertMs += c1 - c0;
      verifyMs += performance.now() - c1;
    }
    for (const p of planned) {
      await linkNoReplace(p);
      linked.push(p);
    }
    for (const p of planned) await unlink(p.temp);
    await fsyncPath(to);
    if (firstCreated !== undefined) await fsyncPath(dirname(resolve(firstCreated)));
  } catch (err) {
    await undo(planned, linked, to, firstCreated);
    if (opts.signal?.aborted) throw interrupted(opts.signal, to);
    throw err;
  }
  const disks = await Promise.all(planned.map((p) => describeRestored(p, opts.format)));
  const allocated = disks.reduce((n, d) => n + d.allocated, 0);
  const m = point.manifest;
  return {
    guest: m.guest,
    id: m.id,
    time: m.time,
    level: m.level,
    chain: m.chain,
    lineage: point.lineage,
    to,
    disks,
    convertMs: Math.round(convertMs),
    verifyMs: Math.round(verifyMs),
    durationMs: Math.round(performance.now() - t0),
    bytesPerSecond: convertMs > 0 ? Math.round((allocated * 1000) / convertMs) : 0,
    ...(m.verified ? { verified: m.verified } : {}),
  };
}

/** The output name of a disk: its image's name without `.qcow2` (validated: no slash, no leading dot). */
export function restoredName(disk: ManifestDisk, format: RestoreFormat): string {
  return `${disk.file.replace(/\.qcow2$/, '')}.${format}`;
}

function plan(point: RestorePoint, to: string, format: RestoreFormat): Planned[] {
  const seen = new Set<string>();
  return point.manifest.disks.map((disk) => {
    const name = restoredName(disk, format);
    if (seen.has(name)) fail(`backup ${point.manifest.id}: two disks would both be restored as ${name}`);
    seen.add(name);
    return {
      disk,
      source: resolve(point.dir, disk.file),
      final: join(to, name),
      temp: join(to, `.${name}.partial-${randomBytes(4).toString('hex')}`),
    };
  });
}

async function refuseExisting(planned: readonly Planned[]): Promise<void> {
  for (const p of planned) {
    const exists = await lstat(p.final).then(
      () => true,
      (err: NodeJS.ErrnoException) => (err.code === 'ENOENT' ? false : fail(`cannot check ${p.final}: ${err.message}`)),
    );
    if (exists) fail(`${p.final} exists: a restore never overwrites (remove it, or restore to another folder)`);
  }
}

interface ImageInfo {
  readonly filename: string;
  readonly format: string;
  readonly 'virtual-size': number;
  readonly 'backing-filename'?: string;
}

/**
 * The image's backing chain must be exactly the point's lineage, newest first,
 * all qcow2, ending in the full: so the restore reads this point and its
 * ancestors, never a later backup or a file outside the chain's folder.
 */
async function checkChain(point: RestorePoint, p: Planned, opts: RestoreOptions): Promise<void> {
  const r = await qemuImg(['info', '--backing-chain', '--output=json', '-f', 'qcow2', p.source], opts, 60_000);
  let chain: ImageInfo[];
  try {
    chain = JSON.parse(r.stdout) as ImageInfo[];
  } catch (err) {
    return fail(`qemu-img info ${p.source}: unreadable output`, err);
  }
  const chainDir = dirname(resolve(point.dir));
  const expected = [...point.lineage].reverse().map((id) => join(chainDir, id, p.disk.file));
  const got = chain.map((c) => resolve(c.filename));
  const where = `backup ${point.manifest.id}, disk ${p.disk.name}`;
  for (const [i, want] of expected.entries()) {
    if (got[i] !== want) {
      const at = got[i] === undefined ? 'ends' : `reads ${relative(chainDir, got[i])}`;
      fail(
        `${where}: its backing chain ${at} where ${relative(chainDir, want)} belongs (lineage ${point.lineage.join(' → ')})`,
      );
    }
    if (chain[i]!.format !== 'qcow2') fail(`${where}: ${relative(chainDir, want)} is ${chain[i]!.format}, not qcow2`);
  }
  if (got.length > expected.length)
    fail(`${where}: the chain's full has a backing file (${chain[expected.length - 1]!['backing-filename']})`);
  if (chain[0]!['virtual-size'] !== p.disk.virtualSize)
    fail(`${where}: the image is ${chain[0]!['virtual-size']} bytes, the manifest says ${p.disk.virtualSize}`);
}

/** qemu-img convert from the point's image to the temp name; progress through `-p` when asked for. */
async function convert(
  p: Planned,
  opts: RestoreOptions,
  at: { index: number; count: number; before: number; total: number },
): Promise<void> {
  const args = ['convert', '-f', 'qcow2', '-O', opts.format, p.source, p.temp];
  const { onProgress } = opts;
  if (!onProgress) {
    await qemuImg(args, opts, Infinity);
    return;
  }
  const percent = (n: number): void =>
    onProgress({
      disk: p.disk.name,
      index: at.index,
      count: at.count,
      percent: n,
      total: at.total,
      done: at.before + Math.round((p.disk.virtualSize * n) / 100),
    });
  const error = await runWithProgress(['qemu-img', 'convert', '-p', ...args.slice(1)], opts.signal, percent);
  if (error) fail(`restoring disk ${p.disk.name}: ${error}`);
}

/**
 * The restored image must hold exactly the point's data: qcow2 metadata is
 * checked, the virtual size compared, and every byte read back against the
 * point's image through its chain (qemu-img compare).
 */
async function verify(p: Planned, opts: RestoreOptions): Promise<void> {
  if (opts.format === 'qcow2') await qemuImg(['check', '-f', 'qcow2', p.temp], opts, Infinity);
  const info = JSON.parse(
    (await qemuImg(['info', '--output=json', '-f', opts.format, p.temp], opts, 60_000)).stdout,
  ) as ImageInfo;
  if (info['virtual-size'] !== p.disk.virtualSize)
    fail(`restored disk ${p.disk.name} is ${info['virtual-size']} bytes, the backup's is ${p.disk.virtualSize}`);
  const r = await runProcess(['qemu-img', 'compare', '-f', 'qcow2', '-F', opts.format, p.source, p.temp], {
    timeoutMs: Infinity,
    signal: opts.signal,
    guest: '',
    step: 'restore',
    log: opts.log,
  });
  if (r.exitCode === 1)
    fail(`restored disk ${p.disk.name} differs from the backup: ${r.stdout.trim() || 'content mismatch'}`);
  if (!r.ok) fail(`qemu-img compare (disk ${p.disk.name}): ${r.error ?? 'failed'}`);
}

/** link() never replaces: a name that appeared meanwhile stays as it is. */
async function linkNoReplace(p: Planned): Promise<void> {
  try {
    await link(p.temp, p.final);
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code === 'EEXIST')
      fail(`${p.final} appeared while restoring: not overwritten; removed what this restore wrote`, err);
    fail(`cannot create ${p.final}: ${(err as Error).message}`, err);
  }
}

/** Removes what this restore wrote: the final names it linked (if still its own), the temps, folders it made. */
async function undo(
  planned: readonly Planned[],
  linked: readonly Planned[],
  to: string,
  firstCreated: string | undefined,
): Promise<void> {
  for (const p of linked) {
    const [a, b] = await Promise.all([stat(p.final).catch(() => undefined), stat(p.temp).catch(() => undefined)]);
    if (a && b && a.ino === b.ino && a.dev === b.dev) await unlink(p.final).catch(() => {});
  }
  for (const p of planned) await unlink(p.temp).catch(() => {});
  if (firstCreated === undefined) return;
  // Only the folders mkdir made, deepest first, and only while empty.
  const top = resolve(firstCreated);
  for (let d = to; d.startsWith(top); d = dirname(d)) {
    if (
      !(await rmdir(d).then(
        () => true,
        () => false,
      ))
    )
      break;
    if (d === top) break;
  }
}

function interrupted(signal: AbortSignal, to: string): QuiesceError {
  const reason: unknown = signal.reason;
  if (reason instanceof QuiesceError) return reason;
  return new QuiesceError('INTERRUPTED', `restore into ${to} interrupted; removed what it wrote`);
}

async function describeRestored(p: Planned, format: RestoreFormat): Promise<RestoredDisk> {
  const s = await stat(p.final);
  return { name: p.disk.name, path: p.final, format, virtualSize: p.disk.virtualSize, allocated: s.blocks * 512 };
}

async function qemuImg(args: readonly string[], opts: RestoreOptions, timeoutMs: number) {
  const r = await runProcess(['qemu-img', ...args], {
    timeoutMs,
    signal: opts.signal,
    guest: '',
    step: 'restore',
    // info's JSON is read here, not worth a log line per line of it.
    log: args[0] === 'info' ? () => {} : opts.log,
  });
  if (!r.ok) fail(`qemu-img ${args[0]}: ${r.error ?? 'failed'}`);
  return r;
}

/** qemu-img -p writes `    (12.34/100%)\r`, on stdout, as the copy advances. */
const PROGRESS = /\((\d+(?:\.\d+)?)\/100%\)/g;

/**
 * Runs qemu-img with -p in its own process group, as runProcess does, but
 * reads its stdout as it comes to report progress. Resolves with an error
 * text, or undefined on success; an abort terminates the group.
 */
function runWithProgress(
  argv: readonly string[],
  signal: AbortSignal | undefined,
  onPercent: (n: number) => void,
): Promise<string | undefined> {
  if (signal?.aborted) return Promise.resolve('cancelled');
  return new Promise((done) => {
    const child = spawn(argv[0]!, argv.slice(1), { detached: true, stdio: ['ignore', 'pipe', 'pipe'] });
    let pending = '';
    let stderr = '';
    child.stdout.setEncoding('utf8').on('data', (chunk: string) => {
      pending += chunk;
      let last: number | undefined;
      for (const m of pending.matchAll(PROGRESS)) last = Number(m[1]);
      if (last !== undefined) onPercent(last);
      pending = pending.slice(-32);
    });
    child.stderr.setEncoding('utf8').on('data', (chunk: string) => {
      stderr = (stderr + chunk).slice(-4096);
    });
    const group = child.pid === undefined ? undefined : new GroupTerminator(child.pid, 1500, () => {});
    const onAbort = (): void => group?.terminate();
    signal?.addEventListener('abort', onAbort, { once: true });
    child.on('error', (err) => {
      if (child.pid !== undefined) return;
      done(`${argv[0]}: ${err.message}`);
    });
    child.once('exit', (code, sig) => {
      signal?.removeEventListener('abort', onAbort);
      group?.stop();
      // One turn of the loop reads what is left in the pipes.
      setImmediate(() => {
        const last = stderr.trim().split('\n').at(-1);
        if (signal?.aborted) done('cancelled');
        else if (code === 0) done(undefined);
        else
          done(
            `${argv[0]} ${code === null ? `was killed by ${sig}` : `exited with status ${code}`}${last ? `: ${last}` : ''}`,
          );
      });
    });
  });
}
