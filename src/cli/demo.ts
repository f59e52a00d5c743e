import { execFileSync } from 'node:child_process';
import { mkdirSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { QuiesceError } from '../errors.js';
import { resolveConfig } from '../config/load.js';
import { runJob } from './run.js';
import type { CliContext } from './context.js';

export const DEMO_DIR = '/var/tmp/quiesce-demo';

/** Checks a copied ext4 image is clean: state "clean" and no journal to replay. Data goes as $1, never into the script. */
export const VERIFY_CLEAN_EXT4 = [
  'sh',
  '-c',
  'h=$(dumpe2fs -h "$1" 2>/dev/null) || exit 2; echo "$h" | grep -q "^Filesystem state: *clean$" || { echo "not clean"; exit 1; }; if echo "$h" | grep -q needs_recovery; then echo "needs_recovery"; exit 1; fi; echo "$1: clean, no needs_recovery"',
  'verify-clean-ext4',
];

/** The embedded default job: this machine, a loop-mounted ext4 image, snapshot by copying the image. */
export function demoConfig(dir: string): unknown {
  const image = join(dir, 'disk.img');
  const backup = join(dir, 'backups', 'demo-{timestamp}.img');
  return {
    stateDir: join(dir, 'state'),
    metricsFile: join(dir, 'state', 'quiesce.prom'),
    guests: {
      demo: {
        connector: { type: 'local' },
        freeze: [join(dir, 'mnt')],
        snapshot: { provider: 'command', argv: ['cp', '--sparse=always', image, backup] },
        verify: { argv: [...VERIFY_CLEAN_EXT4, backup] },
        prune: { dir: join(dir, 'backups'), match: 'demo-*.img', keepLast: 3 },
      },
    },
    jobs: { demo: { guests: ['demo'], budget: '10s' } },
  };
}

/**
 * `quiesce run --demo`: prepares a 64 MiB ext4 image loop-mounted at
 * /var/tmp/quiesce-demo/mnt (root needed), runs the embedded job against it
 * through a local quiesce-agent, and unmounts it again.
 */
export async function runDemo(ctx: CliContext, dir = DEMO_DIR): Promise<number> {
  if (process.getuid?.() !== 0)
    throw new QuiesceError('CONFIG', 'the demo needs root: it loop-mounts an ext4 image and freezes it');
  const mnt = join(dir, 'mnt');
  const image = join(dir, 'disk.img');
  mkdirSync(join(dir, 'backups'), { recursive: true });
  mkdirSync(mnt, { recursive: true });
  try {
    // A previous demo interrupted before its unmount.
    execFileSync('umount', [mnt], { stdio: 'ignore' });
  } catch {
    // Nothing mounted there.
  }
  rmSync(image, { force: true });
  execFileSync('truncate', ['-s', '64M', image]);
  execFileSync('mkfs.ext4', ['-q', '-F', image]);
  execFileSync('mount', ['-o', 'loop', image, mnt]);
  try {
    for (let i = 0; i < 20; i++) writeFileSync(join(mnt, `file-${i}.txt`), `demo data ${i}\n`.repeat(1000));
    const config = resolveConfig(demoConfig(dir), 'embedded demo');
    return await runJob(ctx, config, 'demo', {});
  } finally {
    // Thawing an unfrozen filesystem fails harmlessly: a last guard before the unmount.
    try {
      execFileSync('fsfreeze', ['-u', mnt], { stdio: 'ignore' });
    } catch {
      // Not frozen.
    }
    execFileSync('umount', [mnt]);
  }
}
