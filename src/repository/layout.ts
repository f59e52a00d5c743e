import { join } from 'node:path';

/**
 * Where things live in a repository: `REPO/GUEST/CHAIN/ID/` holds one
 * backup — one qcow2 per disk (`DISK.qcow2`, its backing file
 * `../PARENT/DISK.qcow2`) and `manifest.json`, written last. A chain's
 * folder is named after its full.
 */
export const MANIFEST = 'manifest.json';

export function guestDir(repo: string, guest: string): string {
  return join(repo, encodeURIComponent(guest));
}

export function chainDir(repo: string, guest: string, chain: string): string {
  return join(guestDir(repo, guest), chain);
}

export function backupDir(repo: string, guest: string, chain: string, id: string): string {
  return join(chainDir(repo, guest, chain), id);
}

/** A disk's image file name inside a backup's folder. */
export function imageName(disk: string): string {
  return `${disk}.qcow2`;
}

/** The backing file an image records: relative, so that the repository can be moved. */
export function backingFile(parentId: string, disk: string): string {
  return `../${parentId}/${imageName(disk)}`;
}

/** The bitmap QEMU keeps for a chain (the same name on every disk). */
export function bitmapName(chain: string): string {
  return `quiesce-${chain}`;
}

/** Bitmaps named by quiesce (so stale ones can be told from others'). */
export const BITMAP_PREFIX = 'quiesce-';

/** A file in the guest's folder listing bitmaps of deleted chains, removed from QEMU by the next backup. */
export const STALE_BITMAPS = 'stale-bitmaps.json';
