import { QuiesceError } from '../errors.js';
import { formatDuration } from '../config/duration.js';
import { runCommand, runInWindow } from '../workflow/command.js';
import type { PlannedSnapshot, SnapshotProvider } from './types.js';

/** Provider `command`: any argv (lvcreate -s, zfs snapshot, rbd snap create, virsh snapshot-create-as …). */
export function commandProvider(s: Extract<PlannedSnapshot, { provider: 'command' }>): SnapshotProvider {
  return {
    describe: () =>
      `${s.argv.map((x) => (/^[\w@%+=:,./-]+$/.test(x) ? x : `'${x.replace(/'/g, `'\\''`)}'`)).join(' ')} (timeout ${formatDuration(s.timeoutMs)})`,
    take: async (ctx) => {
      const run = ctx.inWindow ? runInWindow : runCommand;
      const r = await run(s.argv, {
        timeoutMs: s.timeoutMs,
        guest: ctx.guest,
        step: 'snapshot',
        log: ctx.log,
        ...(ctx.signal ? { signal: ctx.signal } : {}),
      });
      if (!r.ok) throw new QuiesceError('STEP_FAILED', r.error ?? 'the snapshot command failed', { guest: ctx.guest });
      return {};
    },
  };
}
