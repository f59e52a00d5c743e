import type { PlannedQmpSnapshot, SnapshotProvider } from '../types.js';
import { backupProvider } from './backup.js';
import { overlayProvider } from './overlay.js';

/** Each mode of provider `qmp` is a provider of its own, in its own file. */
const MODES: Readonly<Record<PlannedQmpSnapshot['mode'], (s: PlannedQmpSnapshot) => SnapshotProvider>> = {
  backup: backupProvider,
  snapshot: overlayProvider,
};

/**
 * Provider `qmp`: block jobs (mode `backup`, see backup.ts) or external
 * overlays (mode `snapshot`, see overlay.ts) through QEMU's monitor.
 */
export function qmpProvider(s: PlannedQmpSnapshot): SnapshotProvider {
  return MODES[s.mode](s);
}
