import { QuiesceError } from '../errors.js';
import { formatDuration } from '../config/duration.js';
import { runProcess } from '../process/run.js';
import type { PlannedSnapshot, SnapshotProvider } from './types.js';

/** Provider `command`: any argv (lvcreate -s, zfs snapshot, rbd snap create, virsh snapshot-create-as …). */
export function commandProvider(s: Extract<PlannedSnapshot, { provider: 'command' }>): SnapshotProvider {
  return {
    describe: () =>
      `${s.argv.map((x) => (/^[\w@%+=:,./-]+$/.test(x) ? x : `'${x.replace(/'/g, `'\\''`)}'`)).join(' ')} (timeout ${formatDuration(s.timeoutMs)})`,
    take: async (ctx) => {
      const r = await runProcess(s.argv, {
        timeoutMs: s.timeoutMs,
        guest: ctx.guest,
        step: 'snapshot',
        log: ctx.log,
        ...(ctx.signal ? { signal: ctx.signal } : {}),
      });
      if (!r.ok)
        throw new QuiesceError(r.cancelled ? 'INTERRUPTED' : 'STEP_FAILED', r.error ?? 'the snapshot command failed', {
          guest: ctx.guest,
        });
      return {};
    },
  };
}
