import type { CallOptions } from '../../libvirt/client.js';
import { VirErr } from '../../libvirt/error.js';
import { libvirtPool, type LibvirtPool } from '../../libvirt/pool.js';
import type { LibvirtConnection } from '../../libvirt/remote.js';
import type { DomainRef } from '../../libvirt/types.js';
import type { CheckpointDrop } from '../../repository/prune.js';

/** Where a libvirt guest's checkpoints live: what prune needs of its snapshot's config. */
export interface CheckpointHome {
  readonly uri: string | undefined;
  readonly domain: string;
  readonly connectTimeoutMs: number;
  readonly commandTimeoutMs: number;
}

/**
 * Deletes one checkpoint with its bitmaps (not metadata only; libvirt merges
 * its bitmap into its parent's). 'absent' when libvirt no longer has it; any
 * other failure throws.
 */
export async function dropCheckpoint(
  conn: LibvirtConnection,
  dom: DomainRef,
  name: string,
  call: CallOptions,
): Promise<'deleted' | 'absent'> {
  try {
    await conn.checkpointDelete(await conn.checkpointLookupByName(dom, name, call), 0, call);
    return 'deleted';
  } catch (err) {
    if ((err as { virCode?: number }).virCode === VirErr.NO_DOMAIN_CHECKPOINT) return 'absent';
    throw err;
  }
}

/**
 * Deletes checkpoints of pruned backups from the domain, metadata and
 * bitmaps: one by one, newest first (ids sort by time, so a child before its
 * parent), never with CHILDREN — a kept backup's checkpoint may be a child of
 * a stale one, and libvirt merges a deleted checkpoint's bitmap into its
 * parent's and hands its children to that parent, so a kept checkpoint keeps
 * tracking exactly what it did. A name libvirt does not list is gone already.
 * Throws when libvirt or the domain cannot be reached (prune then leaves the
 * names listed for the next backup).
 */
export function deleteCheckpoints(
  home: CheckpointHome,
  guest: string,
  pool: LibvirtPool = libvirtPool,
): CheckpointDrop {
  return async (names) => {
    const lease = pool.lease(home.uri, guest);
    try {
      const { conn, dom } = await lease.domain(home.domain, { timeoutMs: home.connectTimeoutMs });
      const call = { timeoutMs: home.commandTimeoutMs };
      const listed = new Set((await conn.listAllCheckpoints(dom, 0, call)).map((c) => c.name));
      const deleted: string[] = [];
      const absent = names.filter((n) => !listed.has(n));
      const failed: { name: string; error: string }[] = [];
      for (const name of names
        .filter((n) => listed.has(n))
        .sort()
        .reverse()) {
        try {
          if ((await dropCheckpoint(conn, dom, name, call)) === 'deleted') deleted.push(name);
          else absent.push(name);
        } catch (err) {
          failed.push({ name, error: (err as Error).message });
        }
      }
      return { deleted, absent, failed };
    } finally {
      lease.release();
    }
  };
}
