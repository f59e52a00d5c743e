import { fillArgv, fillExcept, fillPlaceholders, type PlaceholderValues } from '../config/placeholders.js';
import type { SnapshotConfig, Timeouts } from '../config/types.js';
import { commandProvider } from './command.js';
import { libvirtProvider } from './libvirt/index.js';
import { qmpProvider } from './qmp/index.js';
import type { PlannedSnapshot, SnapshotProvider } from './types.js';

/** The provider for a planned snapshot (a fresh instance per guest run: providers keep state between steps). */
export function snapshotProvider(s: PlannedSnapshot): SnapshotProvider {
  switch (s.provider) {
    case 'command':
      return commandProvider(s);
    case 'qmp':
      return qmpProvider(s);
    case 'libvirt':
      return libvirtProvider(s);
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

export { libvirtChecks, type LibvirtCheck } from './libvirt/index.js';
export { previewLevel, type LevelPreview } from './qmp/chain.js';
export { previewLibvirtLevel } from './libvirt/chain.js';
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
export { QmpClient, QmpError, type QmpEvent } from '../qmp/client.js';
