import { fillArgv, fillExcept, fillPlaceholders, type PlaceholderValues } from '../config/placeholders.js';
import type { SnapshotConfig, Timeouts } from '../config/types.js';
import type { PlannedSnapshot, SnapshotProvider } from './types.js';

/**
 * Each provider mode is a provider of its own, in its own file, imported on
 * first use: a run loads only the modes its guests use. `qmp`: block jobs
 * (backup.ts) or external overlays (overlay.ts) through QEMU's monitor.
 * `libvirt`: a push backup job (backup.ts) or an external disk-only snapshot
 * merged back after the run's steps (overlay.ts, commit.ts), through
 * libvirt's RPC protocol on the connection the guest's libvirt connector shares.
 */
const modules = {
  command: () => import('./command.js'),
  qmp: { backup: () => import('./qmp/backup.js'), snapshot: () => import('./qmp/overlay.js') },
  libvirt: { backup: () => import('./libvirt/backup.js'), snapshot: () => import('./libvirt/overlay.js') },
} as const;

/** What names a provider's module: its kind, and its mode where it has modes. */
export type ProviderKind =
  { readonly provider: 'command' } | { readonly provider: 'qmp' | 'libvirt'; readonly mode: 'backup' | 'snapshot' };

/** Loads one provider mode's modules (workflow/plan.ts's loadGuestKinds, before any window opens). */
export function loadProvider(k: ProviderKind): Promise<unknown> {
  return k.provider === 'command' ? modules.command() : modules[k.provider][k.mode]();
}

/** The provider for a planned snapshot (a fresh instance per guest run: providers keep state between steps). */
export async function snapshotProvider(s: PlannedSnapshot): Promise<SnapshotProvider> {
  switch (s.provider) {
    case 'command':
      return (await modules.command()).commandProvider(s);
    case 'qmp':
      return s.mode === 'backup'
        ? (await modules.qmp.backup()).backupProvider(s)
        : (await modules.qmp.snapshot()).overlayProvider(s);
    case 'libvirt':
      return s.mode === 'backup'
        ? (await modules.libvirt.backup()).backupProvider(s)
        : (await modules.libvirt.snapshot()).overlayProvider(s);
  }
}

/** A guest's snapshot step for one run: placeholders filled, timeouts bounded by the budget where it runs frozen. */
export function planSnapshot(
  s: SnapshotConfig,
  values: PlaceholderValues,
  o: { readonly budgetMs: number; readonly timeouts: Timeouts },
): PlannedSnapshot {
  if (s.provider === 'command')
    return { provider: 'command', argv: fillArgv(s.argv, values), timeoutMs: Math.min(s.timeoutMs, o.budgetMs) };
  if (s.provider === 'libvirt')
    return {
      provider: 'libvirt',
      ...(s.uri !== undefined ? { uri: s.uri } : {}),
      domain: s.domain,
      mode: s.mode,
      disks: s.disks,
      // {disk} is known once the domain's XML is read.
      target: s.target === undefined ? undefined : fillExcept(s.target, values, ['disk']),
      ...(s.repository ? { repository: { ...s.repository, dir: fillPlaceholders(s.repository.dir, values) } } : {}),
      format: s.format,
      commit: s.commit,
      connectTimeoutMs: o.timeouts.connectMs,
      commandTimeoutMs: o.timeouts.commandMs,
      timeoutMs: s.timeoutMs,
    };
  return {
    provider: 'qmp',
    socket: s.socket,
    mode: s.mode,
    disks: s.disks,
    // {disk} is known once QEMU lists the disks.
    target: s.target === undefined ? undefined : fillExcept(s.target, values, ['disk']),
    ...(s.repository ? { repository: { ...s.repository, dir: fillPlaceholders(s.repository.dir, values) } } : {}),
    format: s.format,
    connectTimeoutMs: o.timeouts.connectMs,
    commandTimeoutMs: o.timeouts.commandMs,
    timeoutMs: s.timeoutMs,
  };
}

export type {
  BackupRecord,
  WindowFacts,
  PlannedLibvirtSnapshot,
  PlannedQmpSnapshot,
  PlannedSnapshot,
  SnapshotProvider,
  SnapshotTaken,
  SnapshotContext,
} from './types.js';
