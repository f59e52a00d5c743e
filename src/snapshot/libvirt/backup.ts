import { QuiesceError } from '../../errors.js';
import { formatDuration } from '../../config/duration.js';
import { BackupBeginFlags, DomainEventId, JobStatsFlags, JobType } from '../../libvirt/protocol.js';
import type { DomainEvent } from '../../libvirt/events.js';
import type { TypedValue } from '../../libvirt/types.js';
import type { Log } from '../../log/logger.js';
import type {
  BackupRecord,
  PlannedLibvirtSnapshot,
  SnapshotContext,
  SnapshotProvider,
  SnapshotTaken,
  WindowFacts,
} from '../types.js';
import { LibvirtChain } from './chain.js';
import { backupXml, type PickedDisk } from './domain-xml.js';
import { holdCopies, releaseCopies } from './hold.js';
import { createImage, type ImageSpec } from './image.js';
import { LibvirtSession, warner } from './session.js';

/** While waiting for the job-completed event, how often the job is also polled (a reconnect loses events). */
const POLL_MS = 2000;
/** How long dispose() waits for an aborted job to end before removing its targets. */
const ABORT_WAIT_MS = 10_000;

/**
 * Mode `backup`: a push-mode backup job (virDomainBackupBegin). Before the
 * freeze: the connection, the domain, its disks, the targets checked free,
 * the backup XML built, the job-completed event registered and, with a
 * repository, the new checkpoint created. Inside the window: backup-begin
 * alone — the point in time is the job's start, so take() returns with its
 * reply — and the copy held nearly still through the thaw (hold.ts). After
 * the thaw, complete() lets the copy go, waits for the job-completed event (or,
 * should events be lost, the job's end seen by polling), checks the job's
 * success, and removes the partial targets of a failed or aborted job.
 * dispose() aborts a job still running (a signal, a timeout) and removes its
 * targets.
 */
export function backupProvider(s: PlannedLibvirtSnapshot): SnapshotProvider {
  return new LibvirtBackup(s);
}

interface BackupRun {
  readonly session: LibvirtSession;
  readonly xml: string;
  /** The job-completed callback id on the session's connection. */
  readonly callbackId: number;
  /**
   * The targets are reachable here (a local URI, or a repository both machines share): prepare()
   * creates them before the freeze (backup-begin gets REUSE_EXTERNAL) and a failed copy's are removed here.
   */
  readonly here: boolean;
}

type DisposeCtx = { readonly guest: string; readonly log: Log; readonly error?: string };

class LibvirtBackup implements SnapshotProvider {
  private preparing: Promise<BackupRun> | undefined;
  private disposing: Promise<void> | undefined;
  private run: BackupRun | undefined;
  /** The copies are whole: keep them, nothing to undo. */
  private finished = false;
  /** The targets were removed already (a failed complete()). */
  private cleaned = false;
  /** prepare() created target files (removed again unless the copy finished). */
  private created = false;
  /** With a repository: the level, the images, the checkpoints and the manifest. */
  private chain: LibvirtChain | undefined;
  /** The disks whose copy take() held through the thaw, and since when (never rejects). */
  private held: Promise<{ readonly disks: readonly string[]; readonly at: number }> | undefined;

  constructor(private readonly s: PlannedLibvirtSnapshot) {}

  describe(): string {
    const s = this.s;
    const disks = s.disks === 'all' ? 'all disks' : s.disks.join(', ');
    if (s.repository) {
      const r = s.repository;
      const every = [
        r.fullEvery.backups !== undefined ? `${r.fullEvery.backups} backups` : '',
        r.fullEvery.ageMs !== undefined ? formatDuration(r.fullEvery.ageMs) : '',
      ].filter(Boolean);
      return `libvirt ${s.uri ?? 'default'}/${s.domain}: push backup job (backup-begin; its checkpoint created just before the freeze) of ${disks} into repository ${r.dir} (level ${r.level}${every.length ? `, a new chain every ${every.join(' or ')}` : ''}; qcow2 chains with libvirt checkpoints); the copy finishes after the thaw (timeout ${formatDuration(s.timeoutMs)})`;
    }
    return `libvirt ${s.uri ?? 'default'}/${s.domain}: push backup job (backup-begin) of ${disks} → ${s.target} (${s.format}); the copy finishes after the thaw (timeout ${formatDuration(s.timeoutMs)})`;
  }

  planSteps(): { beforeFreeze: string; afterThaw: string } {
    const s = this.s;
    if (s.repository)
      return {
        beforeFreeze: `snapshot set-up: connect to libvirt, read ${s.domain}'s disks, read the repository's manifests and the domain's checkpoints (redefining the base's from its manifest if libvirt lost it), pick the level (${s.repository.level}), create each qcow2 image (backing file: the parent's), listen for job-completed, create the new checkpoint (timeout ${formatDuration(s.commandTimeoutMs)} per call)`,
        afterThaw: `let the copy go at full speed (held at 1 MiB/s through the thaw), wait for the backup job's job-completed event (timeout ${formatDuration(s.timeoutMs)}), write the manifest (last) with the new checkpoint's XML, delete the checkpoint the new backup replaces; a failed or aborted job deletes the new checkpoint and its images`,
      };
    return {
      beforeFreeze: `snapshot set-up: connect to libvirt, read ${s.domain}'s disks, check each target is free, build the backup XML, listen for job-completed (timeout ${formatDuration(s.commandTimeoutMs)} per call)`,
      afterThaw: `let the copy go at full speed (held at 1 MiB/s through the thaw), wait for the backup job's job-completed event (timeout ${formatDuration(s.timeoutMs)}; a failed or aborted job fails it and its partial targets are removed)`,
    };
  }

  async prepare(ctx: { readonly guest: string; readonly log: Log }): Promise<void> {
    await this.prepared(ctx.guest, ctx.log);
  }

  private prepared(guest: string, log: Log): Promise<BackupRun> {
    this.preparing ??= this.open(guest, log);
    return this.preparing;
  }

  private async open(guest: string, log: Log): Promise<BackupRun> {
    const chain = this.s.repository ? new LibvirtChain(this.s.repository, guest, this.s.commandTimeoutMs) : undefined;
    this.chain = chain;
    const session = await LibvirtSession.open(this.s, guest, chain ? { target: (f) => chain.decide(f, log) } : {});
    // Targets quiesce can create: local ones, and a repository's (over a remote URI it is storage both share).
    const here = session.local || chain !== undefined;
    try {
      await noJobRunning(session, this.s.commandTimeoutMs);
      const callbackId = await session.conn.registerDomainEvent(DomainEventId.JOB_COMPLETED, session.dom, {
        timeoutMs: this.s.commandTimeoutMs,
      });
      const run: BackupRun = {
        session,
        xml: backupXml(session.all, session.picked, this.s.format, {
          ...(chain?.incremental !== undefined ? { incremental: chain.incremental } : {}),
        }),
        callbackId,
        here,
      };
      this.run = run;
      // The targets are made here, before the freeze: libvirt's own creation of each target
      // (blockdev-create jobs) would otherwise run inside backup-begin, in the window.
      if (here) for (const p of session.picked) await this.createTarget(session, p);
      await this.createCheckpoint(run);
      return run;
    } catch (err) {
      // Once the run exists, dispose() undoes it (targets, checkpoint) and gives the session back.
      if (!this.run) session.release();
      throw err;
    }
  }

  /** A target (a chain's: 16 KiB clusters, the parent's image as backing file). */
  private async createTarget(session: LibvirtSession, p: PickedDisk): Promise<void> {
    const backing = this.chain?.backing(p.disk.name);
    // 16 KiB clusters keep a small incremental's qcow2 skeleton small.
    const spec: ImageSpec =
      this.s.format === 'raw'
        ? { format: 'raw' }
        : {
            format: 'qcow2',
            ...(this.chain ? { clusterBits: 14 } : {}),
            ...(backing ? { backing: { file: backing, format: 'qcow2', mustExist: true } } : {}),
          };
    await createImage(session, p, spec, () => {
      this.created = true;
    });
  }

  /**
   * With a repository (not a differential): the new checkpoint, created last
   * before the freeze rather than by backup-begin in the window, where libvirt
   * would also copy the domain's definition into it and write its metadata
   * file. Its bitmaps then start recording a little before the copy's point
   * in time: the next incremental copies the writes of that gap once more,
   * and misses none. A run that does not finish deletes it (abandon()).
   */
  private async createCheckpoint(run: BackupRun): Promise<void> {
    const xml = this.chain?.checkpointXml(run.session.all, run.session.picked);
    if (xml === undefined) return;
    this.chain!.sent();
    await run.session.conn.checkpointCreateXml(run.session.dom, xml, 0, { timeoutMs: this.s.commandTimeoutMs });
  }

  async take(ctx: SnapshotContext): Promise<SnapshotTaken> {
    const run = await this.prepared(ctx.guest, ctx.log);
    const { session } = run;
    const chain = this.chain;
    // Before the call: a small backup can end before backup-begin's reply arrives.
    const since = session.conn.lastEventSeq();
    await session.send(
      session.conn.backupBegin(session.dom, run.xml, undefined, run.here ? BackupBeginFlags.REUSE_EXTERNAL : 0, {
        timeoutMs: this.s.commandTimeoutMs,
      }),
      ctx.signal,
      'backup-begin',
    );
    // The hold is sent, not waited for: the thaw follows at once (libvirtd runs both calls side by side),
    // and a copy too small to need holding costs the window nothing. complete() waits for it.
    if (ctx.inWindow) {
      const at = performance.now();
      const disks = session.picked.map((p) => p.disk.name);
      this.held = holdCopies(session.conn, session.dom, disks, { timeoutMs: this.s.commandTimeoutMs }).then((held) => ({
        disks: held,
        at,
      }));
    }
    if (!chain) return { files: session.targets, complete: (c) => this.complete(run, since, c) };
    chain.started();
    const backup = chain.record();
    return { files: session.targets, backup, complete: (c) => this.complete(run, since, c, backup) };
  }

  /**
   * After the thaw: the job must end with success (a failure removes the
   * partial targets); with a repository the manifest is then written.
   */
  private async complete(
    run: BackupRun,
    since: number,
    ctx: { readonly log: Log; readonly signal?: AbortSignal; readonly window?: WindowFacts },
    backup?: BackupRecord,
  ): Promise<void> {
    const { session } = run;
    try {
      await this.letGo(run, ctx.log);
      await waitForJob(run, since, this.s.timeoutMs, ctx.signal);
    } catch (err) {
      // Interrupted: dispose() aborts the job and removes the targets.
      if (err instanceof QuiesceError && err.code === 'INTERRUPTED') throw err;
      const warn = warner({ guest: session.guest, log: ctx.log });
      await abortJob(run, warn);
      await session.removeTargets(warn, 'the backup job did not complete', run.here);
      this.cleaned = true;
      throw err;
    }
    if (this.chain && backup) await this.chain.finish(session, session.targets, ctx.window, backup, ctx.log);
    this.finished = true;
  }

  /** After the thaw: the held copies go at full speed (reconnecting once if the connection dropped). */
  private async letGo(run: BackupRun, log: Log): Promise<void> {
    const held = await this.held;
    if (!held?.disks.length) return;
    const { session } = run;
    await session.lease.withDomain(session.s.domain, (c, d) =>
      releaseCopies(c, d, held.disks, session.guest, { timeoutMs: this.s.commandTimeoutMs }),
    );
    log({
      kind: 'copy-held',
      guest: session.guest,
      disks: held.disks,
      heldMs: Math.round(performance.now() - held.at),
    });
  }

  dispose(ctx: DisposeCtx): Promise<void> {
    this.disposing ??= this.close(ctx);
    return this.disposing;
  }

  private async close(ctx: DisposeCtx): Promise<void> {
    try {
      await this.undo(ctx);
    } finally {
      await this.chain?.release();
    }
  }

  private async undo(ctx: DisposeCtx): Promise<void> {
    const run = this.run;
    // prepare() failed before the run existed (after the level was decided, say): record that.
    if (!run) return this.chain?.abandon(undefined, ctx.error ?? 'the run failed', ctx.log);
    const warn = warner(ctx);
    const { session } = run;
    try {
      if (!this.finished && !this.cleaned) {
        const accepted = await session.wasAccepted();
        if (accepted !== false) await abortJob(run, warn);
        if (accepted !== false || this.created)
          await session.removeTargets(warn, 'the backup did not finish', run.here);
      }
      // After the job ended (aborted above): libvirt refuses to delete a checkpoint a job still uses.
      if (!this.finished) await this.chain?.abandon(session, ctx.error ?? 'the run failed', ctx.log);
      await session.conn
        .deregisterDomainEvent(run.callbackId, { timeoutMs: this.s.commandTimeoutMs })
        .catch(() => undefined);
    } catch (err) {
      warn(`cleaning up after the libvirt backup: ${(err as Error).message}`);
    } finally {
      session.release();
    }
  }
}

/**
 * Before the freeze: libvirt runs one job per domain at a time. With one
 * running (a killed run's backup, a migration), backup-begin would wait for it
 * inside the window, then fail.
 */
async function noJobRunning(session: LibvirtSession, timeoutMs: number): Promise<void> {
  const job = await session.conn.getJobInfo(session.dom, { timeoutMs });
  if (job.type === JobType.NONE) return;
  const d = session.s.domain;
  throw new QuiesceError(
    'STEP_FAILED',
    `domain ${d} already runs a job (a backup left by a killed run, a migration, …): libvirt takes no backup until it ends; see \`virsh domjobinfo ${d}\`, end it with \`virsh domjobabort ${d}\``,
    { guest: session.guest },
  );
}

/** The job's outcome from its (completed) statistics. */
function verdict(stats: Readonly<Record<string, TypedValue>>, type: number | undefined, guest: string): void {
  const success = stats['success'];
  if (success === true || (success === undefined && type === JobType.COMPLETED)) return;
  const why = typeof stats['errmsg'] === 'string' ? stats['errmsg'] : type === JobType.CANCELLED ? 'aborted' : 'failed';
  throw new QuiesceError(
    'BLOCK_JOB_FAILED',
    `the libvirt backup job ${why === 'aborted' ? 'was aborted' : `failed: ${why}`}`,
    {
      guest,
    },
  );
}

/**
 * Waits for the job-completed event after `since`, polling the job now and
 * then: a dropped connection (reconnected by the lease) loses events, and the
 * job's end is then read from its completed statistics.
 */
async function waitForJob(
  run: BackupRun,
  since: number,
  timeoutMs: number,
  signal: AbortSignal | undefined,
): Promise<void> {
  const { session } = run;
  const guest = session.guest;
  const deadline = performance.now() + timeoutMs;
  let conn = session.conn;
  let callbackId = run.callbackId;
  let mark = since;
  const isOurs = (e: DomainEvent): boolean => e.kind === 'job-completed' && e.callbackId === callbackId;
  for (;;) {
    const left = deadline - performance.now();
    if (left <= 0)
      throw new QuiesceError(
        'BLOCK_JOB_FAILED',
        `the libvirt backup of ${session.picked.map((p) => p.disk.name).join(', ')} did not finish within ${formatDuration(timeoutMs)}`,
        { guest },
      );
    try {
      const e = await conn.waitForDomainEvent(isOurs, {
        since: mark,
        timeoutMs: Math.min(POLL_MS, left),
        what: 'the backup job-completed event',
        ...(signal ? { signal } : {}),
      });
      if (e.kind !== 'job-completed') continue;
      // Older daemons leave `success` out of the event: the completed statistics have the job's type.
      if (e.stats['success'] === undefined) {
        const st = await conn.getJobStats(session.dom, JobStatsFlags.COMPLETED, {
          timeoutMs: session.s.commandTimeoutMs,
        });
        return verdict({ ...e.stats, ...st.stats }, st.type, guest);
      }
      return verdict(e.stats, undefined, guest);
    } catch (err) {
      if (signal?.aborted)
        throw new QuiesceError('INTERRUPTED', 'interrupted while waiting for the libvirt backup', {
          guest,
          cause: signal.reason,
        });
      if (!(err instanceof QuiesceError) || (err.code !== 'TIMEOUT' && err.code !== 'CHANNEL_GONE')) throw err;
    }
    // No event yet (or the connection went): ask. The lease reconnects once if it dropped.
    const now = await session.lease.connection();
    if (now !== conn) {
      conn = now;
      mark = conn.lastEventSeq();
      callbackId = await conn.registerDomainEvent(DomainEventId.JOB_COMPLETED, undefined, {
        timeoutMs: session.s.commandTimeoutMs,
      });
    }
    const ended = await session.lease.withDomain(session.s.domain, async (c, d) => {
      const info = await c.getJobInfo(d, { timeoutMs: session.s.commandTimeoutMs });
      if (info.type !== JobType.NONE) return undefined;
      return c.getJobStats(d, JobStatsFlags.COMPLETED | JobStatsFlags.KEEP_COMPLETED, {
        timeoutMs: session.s.commandTimeoutMs,
      });
    });
    if (ended) {
      if (ended.type === JobType.NONE)
        throw new QuiesceError('BLOCK_JOB_FAILED', 'the libvirt backup job ended and left no statistics to tell how', {
          guest,
        });
      return verdict(ended.stats, ended.type, guest);
    }
  }
}

/** Aborts the domain's job if one runs, then waits a while for it to end; never throws. */
async function abortJob(run: BackupRun, warn: (message: string) => void): Promise<void> {
  const { session } = run;
  const t = { timeoutMs: session.s.commandTimeoutMs };
  try {
    await session.lease.withDomain(session.s.domain, async (c, d) => {
      const info = await c.getJobInfo(d, t);
      if (info.type === JobType.NONE) return;
      await c.abortJob(d, t);
      const deadline = Date.now() + ABORT_WAIT_MS;
      while (Date.now() < deadline && (await c.getJobInfo(d, t)).type !== JobType.NONE)
        await new Promise((r) => setTimeout(r, 100));
    });
  } catch (err) {
    warn(`could not abort the libvirt backup job of ${session.s.domain}: ${(err as Error).message}`);
  }
}
