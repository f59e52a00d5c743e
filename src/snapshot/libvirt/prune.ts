import { VirErr } from '../../libvirt/error.js';
import { libvirtPool, type LibvirtPool } from '../../libvirt/pool.js';
import type { CheckpointDrop } from '../../repository/prune.js';

/** Where a libvirt guest's checkpoints live: what prune needs of its snapshot's config. */
export interface CheckpointHome {
  readonly uri: string | undefined;
  readonly domain: string;
  readonly connectTimeoutMs: number;
  readonly commandTimeoutMs: number;
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
          const cp = await conn.checkpointLookupByName(dom, name, call);
          await conn.checkpointDelete(cp, 0, call);
          deleted.push(name);
        } catch (err) {
          if ((err as { virCode?: number }).virCode === VirErr.NO_DOMAIN_CHECKPOINT) absent.push(name);
          else failed.push({ name, error: (err as Error).message });
        }
      }
      return { deleted, absent, failed };
    } finally {
      lease.release();
    }
  };
}
