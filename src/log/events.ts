import { formatProgress } from './progress.js';

/** What the agent client reports about its channel (garbage skipped, resyncs, reconnects, the local agent's stderr). */
export type ClientEvent =
  | { kind: 'guest-garbage'; address: string; text: string }
  | { kind: 'guest-resync'; address: string; reason: string }
  | { kind: 'guest-reconnect'; address: string; attempt: number; reason: string }
  /** A line the local agent wrote to its stderr. */
  | { kind: 'agent-log'; address: string; text: string }
  /** Something the operator should know about the channel (libvirt: falling back to virsh). */
  | { kind: 'warning'; message: string; guest?: string };

/** Everything the host logs, keyed on `kind`. */
export type LogEvent =
  | ClientEvent
  | { kind: 'run-start'; job: string; runId: string; units: number; guests: number }
  | { kind: 'run-end'; job: string; runId: string; ok: number; failed: number; durationMs: number; exitCode: number }
  | { kind: 'step-start'; guest: string; step: string }
  | { kind: 'step-end'; guest: string; step: string; durationMs: number; ok: boolean; error?: string }
  | { kind: 'frozen'; guest: string; filesystems: number; freezeMs: number }
  | { kind: 'thawed'; guest: string; filesystems: number; frozenWindowMs: number; proven: boolean }
  | { kind: 'group-frozen'; group: string; skewMs: number }
  | { kind: 'budget-exceeded'; unit: string; budgetMs: number }
  | { kind: 'thaw-retry'; guest: string; attempt: number; error: string }
  | { kind: 'thaw-failed'; guest: string; error: string }
  | { kind: 'fallback-crash-consistent'; guest: string; reason: string }
  | { kind: 'signal'; signal: string; action: string }
  | { kind: 'recovered'; guest: string; runId: string; thawed: number; ok: boolean; error?: string }
  | { kind: 'journal-busy'; guest: string; runId: string; pid: number }
  | { kind: 'prune'; guest: string; kept: number; removed: readonly string[]; dryRun: boolean }
  | { kind: 'command-output'; guest: string; step: string; stream: 'stdout' | 'stderr'; text: string }
  /** A repository backup's level, decided before the freeze. */
  | { kind: 'backup-level'; guest: string; id: string; level: string; reason: string }
  /** Its manifest is written: the backup is a restore point. */
  | { kind: 'backup-recorded'; guest: string; id: string; level: string; bytes: number }
  /** A libvirt push backup's copy, held nearly still from its start until the thaw returned, now let go. */
  | { kind: 'copy-held'; guest: string; disks: readonly string[]; heldMs: number }
  /** Bitmaps of this repository nothing reads any more, removed from QEMU. */
  | { kind: 'bitmaps-removed'; guest: string; names: readonly string[] }
  | { kind: 'error'; message: string; guest?: string }
  /**
   * A copy advancing (QEMU's block jobs, a restore): bytes done of total,
   * summed over the guest's disks; rate and ETA null while not known yet.
   */
  | {
      kind: 'progress';
      guest: string;
      step: string;
      done: number;
      total: number;
      rateBytesPerSec: number | null;
      etaSec: number | null;
    };

const LEVEL: Partial<Record<LogEvent['kind'], 'error' | 'warn' | 'info' | 'debug'>> = {
  'guest-garbage': 'warn',
  'guest-resync': 'warn',
  'guest-reconnect': 'warn',
  'budget-exceeded': 'error',
  'thaw-retry': 'warn',
  'thaw-failed': 'error',
  'fallback-crash-consistent': 'warn',
  signal: 'warn',
  'journal-busy': 'warn',
  'step-start': 'debug',
  'agent-log': 'debug',
  'command-output': 'debug',
  'bitmaps-removed': 'debug',
  'copy-held': 'debug',
  warning: 'warn',
  error: 'error',
};

export function levelOf(e: LogEvent): 'error' | 'warn' | 'info' | 'debug' {
  if (e.kind === 'step-end' && !e.ok) return 'error';
  if (e.kind === 'recovered' && !e.ok) return 'error';
  if (e.kind === 'thawed' && !e.proven) return 'error';
  return LEVEL[e.kind] ?? 'info';
}

/** One readable line for a terminal. */
export function describe(e: LogEvent): string {
  switch (e.kind) {
    case 'run-start':
      return `run ${e.runId}: job ${e.job}, ${e.guests} guest(s) in ${e.units} unit(s)`;
    case 'run-end':
      return `run ${e.runId} done in ${(e.durationMs / 1000).toFixed(1)} s: ${e.ok} ok, ${e.failed} failed (exit ${e.exitCode})`;
    case 'step-start':
      return `${e.guest}: ${e.step}…`;
    case 'step-end':
      return `${e.guest}: ${e.step} ${e.ok ? 'ok' : `FAILED: ${e.error}`} (${e.durationMs} ms)`;
    case 'frozen':
      return `${e.guest}: froze ${e.filesystems} filesystem(s) in ${e.freezeMs} ms`;
    case 'thawed':
      return `${e.guest}: thawed ${e.filesystems} filesystem(s), frozen window ${e.frozenWindowMs} ms${e.proven ? '' : ' — THAW NOT PROVEN'}`;
    case 'group-frozen':
      return `${e.group}: all members frozen, skew ${e.skewMs} ms`;
    case 'budget-exceeded':
      return `${e.unit}: frozen longer than the ${e.budgetMs} ms budget — snapshot cancelled, thawing now`;
    case 'thaw-retry':
      return `${e.guest}: thaw attempt ${e.attempt} failed (${e.error}), retrying`;
    case 'thaw-failed':
      return `${e.guest}: THAW FAILED: ${e.error} — the guest may still be frozen; run 'quiesce thaw ${e.guest}'`;
    case 'fallback-crash-consistent':
      return `${e.guest}: cannot freeze (${e.reason}); taking a crash-consistent snapshot as the job's policy allows`;
    case 'signal':
      return `received ${e.signal}: ${e.action}`;
    case 'recovered':
      return `${e.guest}: recovered from run ${e.runId}: ${e.ok ? `thawed (${e.thawed} filesystem(s))` : `FAILED: ${e.error}`}`;
    case 'journal-busy':
      return `${e.guest}: frozen by run ${e.runId} (pid ${e.pid}), which is still running`;
    case 'backup-level':
      return `${e.guest}: backup ${e.id} will be ${e.level === 'incremental' ? 'an' : 'a'} ${e.level}: ${e.reason}`;
    case 'backup-recorded':
      return `${e.guest}: backup ${e.id} (${e.level}) recorded, ${e.bytes} bytes`;
    case 'copy-held':
      return `${e.guest}: the copy of ${e.disks.join(', ')} held for ${e.heldMs} ms through the thaw, now at full speed`;
    case 'bitmaps-removed':
      return `${e.guest}: removed bitmaps ${e.names.join(', ')} (nothing reads them any more)`;
    case 'prune':
      return `${e.guest}: prune ${e.dryRun ? '(dry run) would remove' : 'removed'} ${e.removed.length}, kept ${e.kept}`;
    case 'command-output':
      return `${e.guest}: ${e.step}: ${e.text}`;
    case 'guest-garbage':
      return `${e.address}: skipped garbage from the agent: ${e.text}`;
    case 'guest-resync':
      return `${e.address}: out of sync (${e.reason}); will resync`;
    case 'guest-reconnect':
      return `${e.address}: attempt ${e.attempt} failed (${e.reason}); reconnecting`;
    case 'agent-log':
      return `${e.address} agent: ${e.text}`;
    case 'progress':
      return `${e.guest}: ${e.step}: ${formatProgress(e)}`;
    case 'warning':
    case 'error':
      return e.guest ? `${e.guest}: ${e.message}` : e.message;
  }
}
