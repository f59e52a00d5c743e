import { fillArgv, fillExcept, type PlaceholderValues } from '../config/placeholders.js';
import type { SnapshotConfig, Timeouts } from '../config/types.js';
import { commandProvider } from './command.js';
import { qmpProvider } from './qmp/index.js';
import type { PlannedSnapshot, SnapshotProvider } from './types.js';

/** The provider for a planned snapshot (a fresh instance per guest run: providers keep state between steps). */
export function snapshotProvider(s: PlannedSnapshot): SnapshotProvider {
  switch (s.provider) {
    case 'command':
      return commandProvider(s);
    case 'qmp':
      return qmpProvider(s);
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
  return {
    provider: 'qmp',
    socket: s.socket,
    mode: s.mode,
    disks: s.disks,
    // {disk} is known once QEMU lists the disks.
    target: fillExcept(s.target, values, ['disk']),
    format: s.format,
    connectTimeoutMs: o.timeouts.connectMs,
    commandTimeoutMs: o.timeouts.commandMs,
    timeoutMs: s.timeoutMs,
  };
}

export type { PlannedQmpSnapshot, PlannedSnapshot, SnapshotProvider, SnapshotTaken, SnapshotContext } from './types.js';
export { QmpClient, QmpError, type QmpEvent } from '../qmp/client.js';
