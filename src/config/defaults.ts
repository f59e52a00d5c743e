import { homedir } from 'node:os';
import { join } from 'node:path';

/**
 * Every default of quiesce, in one place: the config's resolution, the CLI's
 * config-less commands, the agent client and recovery all read them here.
 */
export const DEFAULTS = {
  /** The longest a unit may stay frozen. */
  budgetMs: 10_000,
  concurrency: 4,
  failurePolicy: 'fail',
  /** Agent round trips: a freeze flushes dirty data first, so it gets much longer than a ping. */
  timeouts: { connectMs: 5_000, freezeMs: 60_000, thawMs: 30_000, commandMs: 10_000 },
  /** guest-sync(-delimited): getting in step with the agent. */
  syncMs: 5_000,
  /** Backup, verify and snapshot copies: outside the frozen window. */
  stepMs: 3_600_000,
  /** A verify by boot: from starting QEMU to the last check. */
  verifyBootMs: 300_000,
  verifyBootMemoryMiB: 1024,
  /** The kernel command line of a verify by boot when the config gives none. */
  verifyBootAppend: 'console=ttyS0 panic=-1',
  /** Pre- and post-hooks, as a multiple of the guest's agent command timeout. */
  hookTimeoutFactor: 6,
  notifyMs: 60_000,
  /** Recovery of a dead run's guest, which has no config of its own at hand. */
  recoveryThawMs: 30_000,
  maxReplyBytes: 10 * 1024 * 1024,
} as const;

export function defaultStateDir(env: NodeJS.ProcessEnv = process.env): string {
  if (process.getuid?.() === 0) return '/var/lib/quiesce';
  return join(env['XDG_STATE_HOME'] ?? join(homedir(), '.local', 'state'), 'quiesce');
}
