import { execFileSync, spawn } from 'node:child_process';
import { mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

export type FsType = 'ext4' | 'xfs' | 'btrfs';

/** A filesystem image of the test's own, loop-mounted. Only these may ever be frozen. */
export interface LoopFs {
  readonly type: FsType;
  readonly dir: string;
  readonly image: string;
  readonly mnt: string;
}

export function canLoopMount(): boolean {
  return process.getuid?.() === 0;
}

/** Creates, formats and loop-mounts an image (xfs needs ≥ 300 MB). */
export function makeLoopFs(type: FsType = 'ext4', sizeMB = type === 'xfs' ? 320 : 64): LoopFs {
  const dir = mkdtempSync(join(tmpdir(), `loopfs-${type}-`));
  const image = join(dir, 'fs.img');
  const mnt = join(dir, 'mnt');
  mkdirSync(mnt);
  execFileSync('truncate', ['-s', `${sizeMB}M`, image]);
  const mkfs: Record<FsType, string[]> = {
    ext4: ['mkfs.ext4', '-q', '-F', image],
    xfs: ['mkfs.xfs', '-q', '-f', image],
    btrfs: ['mkfs.btrfs', '-q', '-f', image],
  };
  execFileSync(mkfs[type][0]!, mkfs[type].slice(1), { stdio: 'ignore' });
  execFileSync('mount', ['-o', 'loop', image, mnt]);
  return { type, dir, image, mnt };
}

/** Thaws (harmless if not frozen), unmounts and deletes. Safe to call twice. */
export function removeLoopFs(fs: LoopFs): void {
  for (let i = 0; i < 3; i++) {
    try {
      execFileSync('fsfreeze', ['-u', fs.mnt], { stdio: 'ignore', timeout: 5000 });
    } catch {
      break; // not frozen (any more)
    }
  }
  try {
    execFileSync('umount', [fs.mnt], { stdio: 'ignore', timeout: 10_000 });
  } catch {
    // Not mounted.
  }
  rmSync(fs.dir, { recursive: true, force: true });
}

/** The `fsfreeze -u /` guard shared with the agent's freeze suites. */
export { startRootThawGuard } from './loop-mounts.js';

/**
 * Whether a write + fsync to the filesystem completes within `timeoutMs`
 * (it blocks while the filesystem is frozen). The writer is a child process so
 * a blocked write never blocks the test; it is killed if it does not finish.
 */
export function probeWrite(mnt: string, timeoutMs: number): Promise<boolean> {
  return new Promise((resolve) => {
    const file = join(mnt, `probe-${process.pid}-${Date.now()}`);
    const child = spawn('sh', ['-c', 'echo probe > "$1" && sync -f "$1"', 'probe', file], { stdio: 'ignore' });
    const timer = setTimeout(() => {
      child.kill('SIGKILL');
      resolve(false);
    }, timeoutMs);
    child.once('exit', (code) => {
      clearTimeout(timer);
      resolve(code === 0);
    });
  });
}

/** The freeze state of a mount as the kernel sees it: true when a probe write stays blocked. */
export async function isFrozen(mnt: string): Promise<boolean> {
  return !(await probeWrite(mnt, 300));
}
