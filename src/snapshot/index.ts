import { fillArgv, fillExcept, fillPlaceholders, type PlaceholderValues } from '../config/placeholders.js';
import type { SnapshotConfig, Timeouts } from '../config/types.js';
import type { PlannedSnapshot, SnapshotProvider } from './types.js';

/** Each provider's modules, imported on first use: a run loads only the providers its guests use. */
const modules = {
  command: () => import('./command.js'),
  qmp: () => import('./qmp/index.js'),
  libvirt: () => import('./libvirt/index.js'),
} as const;

/** Loads one provider's modules (workflow/plan.ts's loadGuestKinds, before any window opens). */
export function loadProvider(kind: PlannedSnapshot['provider']): Promise<unknown> {
  return modules[kind]();
}

/** The provider for a planned snapshot (a fresh instance per guest run: providers keep state between steps). */
export async function snapshotProvider(s: PlannedSnapshot): Promise<SnapshotProvider> {
  switch (s.provider) {
    case 'command':
      return (await modules.command()).commandProvider(s);
    case 'qmp':
      return (await modules.qmp()).qmpProvider(s);
    case 'libvirt':
      return (await modules.libvirt()).libvirtProvider(s);
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
