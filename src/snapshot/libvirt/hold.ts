import { QuiesceError } from '../../errors.js';
import type { CallOptions } from '../../libvirt/client.js';
import { JobType } from '../../libvirt/protocol.js';
import type { DomainRef } from '../../libvirt/types.js';

/**
 * How fast a held copy goes, in MiB/s (libvirt's unit): as good as paused.
 *
 * A push backup starts copying with the job, inside the frozen window. At
 * full speed QEMU's copy competes with the guest for the host's CPUs, and the
 * thaw's round trip through the guest's agent waits for it (most of all under
 * TCG; docs/benchmarks.md has the figures). So the copy is held from
 * backup-begin's reply until the thaw has returned, then let go.
 */
export const HELD_MIB_S = 1n;

/** The calls used here (LibvirtConnection has them). */
export interface SpeedControl {
  blockJobSetSpeed(dom: DomainRef, disk: string, bandwidth: bigint, flags?: number, opts?: CallOptions): Promise<void>;
  getJobInfo(dom: DomainRef, opts?: CallOptions): Promise<{ readonly type: number }>;
}

/**
 * Holds each disk's copy at HELD_MIB_S; returns the disks held. Never throws:
 * a copy that cannot be held (it ended already, a small incremental) runs on
 * at full speed, which only costs the thaw some time.
 */
export async function holdCopies(
  conn: SpeedControl,
  dom: DomainRef,
  disks: readonly string[],
  opts: CallOptions,
): Promise<string[]> {
  const held = await Promise.all(
    disks.map((disk) =>
      conn.blockJobSetSpeed(dom, disk, HELD_MIB_S, 0, opts).then(
        () => disk,
        () => undefined,
      ),
    ),
  );
  return held.filter((d): d is string => d !== undefined);
}

/**
 * After the thaw: lets each held copy go at full speed. A copy left held
 * would crawl until the backup's timeout, so a lift that fails while the
 * domain's job still runs is BLOCK_JOB_FAILED (the caller aborts the job);
 * one that fails because the job ended already is fine.
 */
export async function releaseCopies(
  conn: SpeedControl,
  dom: DomainRef,
  disks: readonly string[],
  guest: string,
  opts: CallOptions,
): Promise<void> {
  for (const disk of disks) {
    try {
      await conn.blockJobSetSpeed(dom, disk, 0n, 0, opts);
    } catch (err) {
      const running = await conn.getJobInfo(dom, opts).then(
        (info) => info.type !== JobType.NONE,
        () => true,
      );
      if (!running) return;
      throw new QuiesceError(
        'BLOCK_JOB_FAILED',
        `could not let the libvirt backup of ${disk} go at full speed after the thaw: ${(err as Error).message}`,
        { guest, cause: err },
      );
    }
  }
}
