import type { PlannedLibvirtSnapshot, SnapshotProvider } from '../types.js';
import { backupProvider } from './backup.js';
import { overlayProvider } from './overlay.js';

/** Each mode of provider `libvirt` is a provider of its own, in its own file. */
const MODES: Readonly<Record<PlannedLibvirtSnapshot['mode'], (s: PlannedLibvirtSnapshot) => SnapshotProvider>> = {
  backup: backupProvider,
  snapshot: overlayProvider,
};

/**
 * Provider `libvirt`: a push backup job (mode `backup`, see backup.ts) or an
 * external disk-only snapshot merged back after the run's steps (mode
 * `snapshot`, see overlay.ts and commit.ts), through libvirt's RPC protocol
 * on the connection the guest's libvirt connector shares.
 */
export function libvirtProvider(s: PlannedLibvirtSnapshot): SnapshotProvider {
  return MODES[s.mode](s);
}

export { libvirtChecks, type LibvirtCheck } from './doctor.js';
