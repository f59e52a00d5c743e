import { QuiesceError } from '../../errors.js';
import { formatDuration } from '../../config/duration.js';
import { LibvirtError } from '../../libvirt/error.js';
import type { DomainEvent } from '../../libvirt/events.js';
import { BlockCommitFlags, BlockJobAbortFlags, BlockJobStatus, DomainEventId } from '../../libvirt/protocol.js';
import { parseDisks } from './domain-xml.js';
import type { LibvirtSession } from './session.js';

/** How long the pivot of one disk may take to report its end. */
const PIVOT_WAIT_MS = 60_000;

/** The command that finishes by hand what merge() could not. */
export function recoveryHint(session: LibvirtSession, disks: readonly string[]): string {
  const uri = session.s.uri !== undefined ? ` -c ${session.s.uri}` : '';
  return disks
    .map((d) => `virsh${uri} blockcommit ${session.s.domain} ${d} --active --shallow --pivot --verbose`)
    .join('; ');
}

/**
 * Merges each picked disk's overlay back into the image below it and switches
 * the disk back to that image: an active block commit (shallow: only the top
 * overlay, never further down a chain the domain already had) per disk, all
 * started first, then for each the READY event, the pivot
 * (block-job-abort --pivot) and its COMPLETED event. Last, the domain XML
 * must name the original image again, and the overlay is deleted (libvirt's
 * DELETE flag; locally, whatever is left). A failure cancels the commits still
 * running — the overlays stay active, so the guest keeps every write — and
 * throws BLOCK_JOB_FAILED with the command that finishes the job by hand.
 */
export async function merge(
  session: LibvirtSession,
  o: { readonly timeoutMs: number; readonly signal?: AbortSignal; readonly warn: (message: string) => void },
): Promise<void> {
  const { s, guest } = session;
  const t = { timeoutMs: s.commandTimeoutMs };
  const names = session.picked.map((p) => p.disk.name);
  await session.lease.withDomain(s.domain, async (conn, dom) => {
    const cb = await conn.registerDomainEvent(DomainEventId.BLOCK_JOB_2, dom, t);
    const started: string[] = [];
    const event = (disk: string, statuses: readonly number[]) => (e: DomainEvent) =>
      e.kind === 'block-job' && e.callbackId === cb && e.disk === disk && statuses.includes(e.status);
    try {
      const since = conn.lastEventSeq();
      for (const disk of names) {
        await conn.blockCommit(
          dom,
          disk,
          { flags: BlockCommitFlags.ACTIVE | BlockCommitFlags.SHALLOW | BlockCommitFlags.DELETE },
          t,
        );
        started.push(disk);
      }
      const deadline = performance.now() + o.timeoutMs;
      for (const disk of names) {
        const e = await conn.waitForDomainEvent(
          event(disk, [BlockJobStatus.READY, BlockJobStatus.FAILED, BlockJobStatus.CANCELED, BlockJobStatus.COMPLETED]),
          {
            since,
            timeoutMs: Math.max(1, deadline - performance.now()),
            what: `the READY event of ${disk}'s commit (within ${formatDuration(o.timeoutMs)})`,
            ...(o.signal ? { signal: o.signal } : {}),
          },
        );
        if (e.kind === 'block-job' && e.status !== BlockJobStatus.READY)
          throw new QuiesceError(
            'BLOCK_JOB_FAILED',
            `the commit of ${disk} ${e.status === BlockJobStatus.FAILED ? 'failed' : 'ended before it was ready'}`,
            { guest },
          );
      }
      for (const disk of names) {
        const since2 = conn.lastEventSeq();
        await conn.blockJobAbort(dom, disk, BlockJobAbortFlags.PIVOT, t);
        const e = await conn.waitForDomainEvent(
          event(disk, [BlockJobStatus.COMPLETED, BlockJobStatus.FAILED, BlockJobStatus.CANCELED]),
          { since: since2, timeoutMs: PIVOT_WAIT_MS, what: `the end of ${disk}'s pivot` },
        );
        started.splice(started.indexOf(disk), 1);
        if (e.kind === 'block-job' && e.status !== BlockJobStatus.COMPLETED)
          throw new QuiesceError('BLOCK_JOB_FAILED', `the pivot of ${disk} back to its image failed`, { guest });
      }
      // The proof: every disk names its original image again.
      const now = parseDisks(await conn.getXmlDesc(dom, 0, t));
      const wrong = session.picked.filter((p) => now.find((d) => d.name === p.disk.name)?.source !== p.disk.source);
      if (wrong.length)
        throw new QuiesceError(
          'BLOCK_JOB_FAILED',
          `after the commit ${wrong.map((p) => `${p.disk.name} is on ${now.find((d) => d.name === p.disk.name)?.source ?? '?'}, not ${p.disk.source}`).join('; ')}`,
          { guest },
        );
    } catch (err) {
      for (const disk of started) {
        // Cancel, not pivot: the overlay stays the active image and keeps the guest's writes.
        await conn
          .blockJobAbort(dom, disk, 0, t)
          .catch((e: Error) => o.warn(`could not cancel ${disk}'s commit: ${e.message}`));
      }
      const why = err instanceof LibvirtError ? err.libvirtMessage : (err as Error).message;
      throw new QuiesceError(
        o.signal?.aborted ? 'INTERRUPTED' : 'BLOCK_JOB_FAILED',
        `merging the overlays ${session.targets.join(', ')} back failed (${why}); the domain runs on them: finish by hand with ${recoveryHint(session, names)}`,
        { guest, cause: err },
      );
    } finally {
      await conn.deregisterDomainEvent(cb, t).catch(() => undefined);
    }
  });
  // libvirt deletes a committed overlay itself (DELETE); locally, make sure.
  if (session.local) await session.removeTargets(() => undefined, 'merged back into the image below');
}
