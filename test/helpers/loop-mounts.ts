import { spawn, spawnSync, type ChildProcess, type SpawnSyncReturns } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, readlinkSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before } from 'node:test';

export type FsType = 'ext4' | 'xfs' | 'btrfs';

/**
 * A private mount namespace for a suite's loop mounts. Mounts made in it are
 * invisible to the rest of the machine, so another test's qemu-ga (whose thaw
 * thaws every mount it can see) cannot thaw them under this suite, and this
 * suite's agents see them. Commands reach it through `wrap` (nsenter).
 */
export interface MountNamespace {
  readonly pid: number;
  /** Prefix a command line with this to run it in the namespace (nsenter execs in place). */
  readonly wrap: readonly string[];
  stop(): void;
}

/** A filesystem image this test made and loop-mounted. Only these may ever be frozen. */
export interface LoopMount {
  readonly type: FsType;
  /** Temporary directory (on /) holding the image and the mountpoint. */
  readonly dir: string;
  readonly image: string;
  readonly mnt: string;
  /** /dev/loopN */
  readonly device: string;
  /** The namespace prefix processes need to see this mount; [] when it is in this process's namespace. */
  readonly wrap: readonly string[];
}

/** Something to write to: a mount, or another path seen through a mount's namespace. */
export type WriteTarget = { readonly mnt: string; readonly wrap: readonly string[] };

const MKFS: Record<FsType, string[]> = {
  ext4: ['mkfs.ext4', '-q', '-F'],
  xfs: ['mkfs.xfs', '-q', '-f'],
  btrfs: ['mkfs.btrfs', '-q', '-f'],
};

function have(program: string): boolean {
  return spawnSync('sh', ['-c', `command -v ${program}`], { stdio: 'ignore' }).status === 0;
}

/**
 * Why freeze tests cannot run here (false when they can): they need root, loop
 * devices, mkfs for each type, losetup, unshare/nsenter and fsfreeze(8) (the
 * guard and cleanup).
 */
export function loopMountSkipReason(types: readonly FsType[] = ['ext4']): string | false {
  if (process.getuid?.() !== 0) return 'needs root: creates, loop-mounts and freezes its own filesystem images';
  if (!existsSync('/dev/loop-control')) return 'needs loop devices (/dev/loop-control)';
  const programs = ['losetup', 'mount', 'umount', 'fsfreeze', 'truncate', 'unshare', 'nsenter', 'dd'];
  for (const p of [...programs, ...types.map((t) => MKFS[t][0]!)]) {
    if (!have(p)) return `needs ${p} (e2fsprogs, xfsprogs, btrfs-progs, util-linux)`;
  }
  return false;
}

/** Runs a command, in the namespace when `wrap` says so. */
export function runIn(
  wrap: readonly string[],
  cmd: string,
  args: readonly string[],
  timeout = 30_000,
): SpawnSyncReturns<string> {
  const [c, ...a] = [...wrap, cmd, ...args];
  return spawnSync(c!, a, { encoding: 'utf8', timeout, stdio: ['ignore', 'pipe', 'pipe'] });
}

function must(r: SpawnSyncReturns<string>, what: string): string {
  if (r.status !== 0) throw new Error(`${what} failed (${r.status ?? r.signal}): ${r.stderr || r.error?.message}`);
  return r.stdout;
}

/** A private mount namespace that ends by itself when this process does. */
export function startMountNamespace(): MountNamespace {
  const holder: ChildProcess = spawn(
    'unshare',
    [
      '--mount',
      '--propagation',
      'private',
      'sh',
      '-c',
      'while kill -0 "$1" 2>/dev/null; do sleep 1; done',
      'ns',
      String(process.pid),
    ],
    { stdio: 'ignore' },
  );
  holder.unref();
  const pid = holder.pid!;
  const wrap = ['nsenter', '-t', String(pid), '-m', '--'];
  // unshare execs the holder once the namespace exists: wait for that before anyone enters it.
  const own = readlinkSync('/proc/self/ns/mnt');
  for (let i = 0; ; i++) {
    try {
      if (readlinkSync(`/proc/${pid}/ns/mnt`) !== own && readFileSync(`/proc/${pid}/comm`, 'utf8').trim() === 'sh')
        break;
    } catch {
      // Not there yet.
    }
    if (i === 500) {
      holder.kill('SIGKILL');
      throw new Error('the mount namespace did not come up');
    }
    spawnSync('sleep', ['0.01']);
  }
  return { pid, wrap, stop: () => void holder.kill('SIGKILL') };
}

/** Creates, formats and loop-mounts an image of its own (xfs needs ≥ 300 MB), in `ns` when given. */
export function createLoopMount(
  type: FsType,
  ns?: MountNamespace,
  sizeMB = type === 'xfs' ? 320 : type === 'btrfs' ? 128 : 64,
): LoopMount {
  const dir = mkdtempSync(join(tmpdir(), `quiesce-freeze-${type}-`));
  const image = join(dir, 'fs.img');
  const mnt = join(dir, 'mnt');
  const wrap = ns?.wrap ?? [];
  mkdirSync(mnt);
  try {
    must(runIn([], 'truncate', ['-s', `${sizeMB}M`, image]), 'truncate');
    must(runIn([], MKFS[type][0]!, [...MKFS[type].slice(1), image]), MKFS[type][0]!);
  } catch (err) {
    rmSync(dir, { recursive: true, force: true });
    throw err;
  }
  const device = must(runIn([], 'losetup', ['--find', '--show', image]), 'losetup').trim();
  const r = runIn(wrap, 'mount', [device, mnt]);
  if (r.status !== 0) {
    spawnSync('losetup', ['-d', device]);
    rmSync(dir, { recursive: true, force: true });
    must(r, 'mount');
  }
  return { type, dir, image, mnt, device, wrap };
}

/** Thaws until it is thawed (harmless when it is not frozen), via fsfreeze(8). */
export function thawFully(target: WriteTarget): void {
  for (let i = 0; i < 8; i++) {
    if (runIn(target.wrap, 'fsfreeze', ['-u', target.mnt], 5000).status !== 0) return;
  }
}

/** Whether `mnt` is a mountpoint where `wrap` runs. */
export function isMounted(target: WriteTarget): boolean {
  return runIn(target.wrap, 'findmnt', ['--mountpoint', target.mnt]).status === 0;
}

/** Thaws, unmounts, detaches the loop device and deletes the image. Safe to call twice. */
export function destroyLoopMount(m: LoopMount): void {
  thawFully(m);
  for (let i = 0; i < 50 && isMounted(m); i++) {
    if (runIn(m.wrap, 'umount', [m.mnt], 10_000).status === 0) break;
    // A write released by the thaw may still be finishing.
    spawnSync('sleep', ['0.1']);
    if (i === 49) runIn(m.wrap, 'umount', ['-l', m.mnt]);
  }
  spawnSync('losetup', ['-d', m.device], { stdio: 'ignore' });
  rmSync(m.dir, { recursive: true, force: true });
}

/**
 * The safety net while freeze tests run: a child that thaws / every second
 * (harmless when / is not frozen), and ends by itself when this process does.
 */
export function startRootThawGuard(): { stop(): void } {
  const child: ChildProcess = spawn(
    'sh',
    ['-c', 'while kill -0 "$1" 2>/dev/null; do fsfreeze -u / 2>/dev/null; sleep 1; done', 'guard', String(process.pid)],
    { stdio: 'ignore' },
  );
  child.unref();
  return { stop: () => void child.kill('SIGKILL') };
}

export interface LoopMountOptions {
  /**
   * In a private mount namespace of the suite's own (the default). Off for
   * tests that freeze from inside this process, which must see the mounts.
   */
  readonly isolated?: boolean;
}

/**
 * Registers, in the enclosing describe, a `before` that starts the root thaw
 * guard and makes one loop mount per type, and an `after` that thaws and
 * removes them all — on every path, failures included. The array is filled in
 * by the time the suite's tests run.
 */
export function useLoopMounts(types: readonly FsType[], opts: LoopMountOptions = {}): LoopMount[] {
  const mounts: LoopMount[] = [];
  let guard: { stop(): void } | undefined;
  let ns: MountNamespace | undefined;
  const cleanup = (): void => {
    for (const m of mounts.splice(0)) destroyLoopMount(m);
    ns?.stop();
    ns = undefined;
    guard?.stop();
    guard = undefined;
  };
  // A test process that dies some other way still leaves nothing frozen or mounted.
  const onExit = (): void => cleanup();
  before(() => {
    guard = startRootThawGuard();
    process.once('exit', onExit);
    if (opts.isolated !== false) ns = startMountNamespace();
    for (const t of types) mounts.push(createLoopMount(t, ns));
  });
  after(() => {
    process.off('exit', onExit);
    cleanup();
  });
  return mounts;
}

/** A child process writing a block and fsyncing it: it blocks while the filesystem is frozen. */
export interface PendingWrite {
  /** Resolves with the exit code when the write and fsync completed (or failed). */
  readonly done: Promise<number | null>;
  finished(): boolean;
  kill(): void;
}

export function startWrite(
  target: WriteTarget,
  name = `w-${process.pid}-${Date.now()}-${Math.random()}`,
): PendingWrite {
  const [cmd, ...args] = [
    ...target.wrap,
    'dd',
    'if=/dev/zero',
    `of=${join(target.mnt, name)}`,
    'bs=4096',
    'count=1',
    'conv=fsync',
    'status=none',
  ];
  const child = spawn(cmd!, args, { stdio: 'ignore' });
  let finished = false;
  const done = new Promise<number | null>((resolve) =>
    child.once('exit', (code) => {
      finished = true;
      resolve(code);
    }),
  );
  return { done, finished: () => finished, kill: () => void child.kill('SIGKILL') };
}

/** Whether a write + fsync on the target completes within `ms` (false while frozen). */
export async function writeCompletes(target: WriteTarget, ms: number): Promise<boolean> {
  const w = startWrite(target);
  const timer = new Promise<'timeout'>((r) => setTimeout(() => r('timeout'), ms));
  const r = await Promise.race([w.done, timer]);
  if (r === 'timeout') {
    w.kill();
    return false;
  }
  return r === 0;
}
