import { commandProvider } from './command.js';
import type { PlannedSnapshot, SnapshotProvider } from './types.js';

/** The provider for a planned snapshot. */
export function snapshotProvider(s: PlannedSnapshot): SnapshotProvider {
  switch (s.provider) {
    case 'command':
      return commandProvider(s);
  }
}

export type { PlannedSnapshot, SnapshotProvider, SnapshotTaken, SnapshotContext } from './types.js';
