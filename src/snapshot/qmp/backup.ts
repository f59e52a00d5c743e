import { QuiesceError } from '../../errors.js';
import { formatDuration } from '../../config/duration.js';
import type { Log } from '../../log/logger.js';
import { progressReporter } from '../../log/progress.js';
import type { QmpClient } from '../../qmp/client.js';
import type { BackupRecord, PlannedQmpSnapshot, SnapshotContext, SnapshotProvider, SnapshotTaken } from '../types.js';
import { BlockJobs } from './block-jobs.js';
import { ChainBackup } from './chain.js';
import { runName, type Disk } from './disks.js';
import { QmpSession } from './session.js';

/**
 * Mode `backup`: before the freeze it creates one target file per disk
 * (exclusively, never overwriting; raw sized to the disk, or a qcow2 made by
 * `blockdev-create`) and adds it as a node (`blockdev-add`); inside the window
 * one `transaction` of `blockdev-backup` (sync full) starts a job per disk —
 * the point in time is the job start, so take() returns with the
 * transaction's reply; after the thaw complete() waits for every
 * BLOCK_JOB_COMPLETED, fails on an error or cancellation, and removes the nodes.
 */
export function backupProvider(s: PlannedQmpSnapshot): SnapshotProvider {
  return new QmpBackup(s);
}

type CompleteCtx = Parameters<NonNullable<SnapshotTaken['complete']>>[0];

/**
 * The copy's tuning: since QEMU 6.2 the backup job can copy with
 * copy_file_range (`x-perf.use-copy-range`, off by default there). Measured
 * here (bench/chain.ts): a 1 GiB qcow2 with 512 MiB data copied in 0.54-0.66 s
 * with it against 1.7-2.0 s without; `qemu-img convert` of the same disk took
 * 1.3-1.5 s. Older QEMUs get nothing (the key would fail the transaction).
 */
export function copyPerf(qmp: Pick<QmpClient, 'qemuVersion'>): Record<string, unknown> {
  const v = qmp.qemuVersion;
  return v && (v[0] > 6 || (v[0] === 6 && v[1] >= 2))
    ? { 'x-perf': { 'use-copy-range': true, 'max-chunk': 64 << 20 } }
    : {};
}

type DisposeCtx = { readonly guest: string; readonly log: Log; readonly error?: string };

/** One run's state from the connection on. */
interface BackupRun {
  readonly session: QmpSession;
  /** Watched from before the transaction that starts them. */
  readonly jobs: BlockJobs;
  /** Nodes this run added, in order. */
  readonly nodes: string[];
}

class QmpBackup implements SnapshotProvider {
  private preparing: Promise<BackupRun> | undefined;
  private disposing: Promise<void> | undefined;
  /** Set as soon as connected, so that dispose() undoes whatever a failed prepare() got to. */
  private run: BackupRun | undefined;
  /** With a repository: the level, the folder, the bitmaps and the manifest. */
  private chain: ChainBackup | undefined;

  constructor(private readonly s: PlannedQmpSnapshot) {}

  describe(): string {
    const s = this.s;
    const disks = s.disks === 'all' ? 'all disks' : s.disks.join(', ');
    if (s.repository) {
      const r = s.repository;
      const every = [
        r.fullEvery.backups !== undefined ? `${r.fullEvery.backups} backups` : '',
        r.fullEvery.ageMs !== undefined ? formatDuration(r.fullEvery.ageMs) : '',
      ].filter(Boolean);
      return `QMP unix:${s.socket}: one transaction of blockdev-backup of ${disks} into repository ${r.dir} (level ${r.level}${every.length ? `, a new chain every ${every.join(' or ')}` : ''}; qcow2 chains with dirty bitmaps); the copy finishes after the thaw (timeout ${formatDuration(s.timeoutMs)})`;
    }
    return `QMP unix:${s.socket}: one transaction of blockdev-backup (sync full) of ${disks} → ${s.target} (${s.format}); the copy finishes after the thaw (timeout ${formatDuration(s.timeoutMs)})`;
  }

  planSteps(): { beforeFreeze: string; afterThaw: string } {
    const s = this.s;
    if (s.repository)
      return {
        beforeFreeze: `snapshot set-up: connect to QMP, resolve the disks, read the repository's manifests and the disks' bitmaps, pick the level (${s.repository.level}), create each qcow2 image (backing file: the parent's) and blockdev-add it (timeout ${formatDuration(s.commandTimeoutMs)} per command)`,
        afterThaw: `wait for BLOCK_JOB_COMPLETED of every copy (timeout ${formatDuration(s.timeoutMs)}), blockdev-del the images, write the manifest (last), remove the bitmap the new backup replaces`,
      };
    return {
      beforeFreeze: `snapshot set-up: connect to QMP, resolve the disks, create each target (never overwriting; ${s.format}) and blockdev-add it (timeout ${formatDuration(s.commandTimeoutMs)} per command)`,
      afterThaw: `wait for BLOCK_JOB_COMPLETED of every copy (timeout ${formatDuration(s.timeoutMs)}; an error or a cancellation fails it), then blockdev-del the targets`,
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
    const chain = this.s.repository ? new ChainBackup(this.s.repository, guest) : undefined;
    this.chain = chain;
    const session = await QmpSession.open(this.s, guest, {
      anyNode: true,
      ...(chain ? { target: (qmp, found) => chain.decide(qmp, found, log) } : {}),
      transaction: (disks, qmp) => ({
        actions: disks.flatMap((d) =>
          chain
            ? chain.actions(d, copyPerf(qmp))
            : [
                {
                  type: 'blockdev-backup',
                  data: {
                    'job-id': runName(d, 'backup'),
                    device: d.node,
                    target: runName(d, 'fmt'),
                    sync: 'full',
                    'auto-dismiss': false,
                    ...copyPerf(qmp),
                  },
                },
              ],
        ),
        // One job failing cancels the others: a backup is all disks or nothing. QEMU refuses grouped
        // completion beside block-dirty-bitmap-add; a chain needs none: its copies read bitmaps with
        // bitmap-mode never, so a failed disk leaves every bitmap as it was, and the run removes the new ones.
        ...(disks.length > 1 && !chain ? { properties: { 'completion-mode': 'grouped' } } : {}),
      }),
    });
    const jobs = session.disks.map((d) => ({ id: runName(d, 'backup'), disk: d.name, target: d.target }));
    // The copy's progress, polled while complete() waits for it (after the thaw).
    const report = progressReporter(log, guest, 'snapshot-complete');
    const onProgress = (p: { done: number; total: number }): void => report(p.done, p.total);
    const run: BackupRun = { session, jobs: new BlockJobs(session.qmp, jobs, { guest, onProgress }), nodes: [] };
    this.run = run;
    for (const d of session.disks) {
      // A raw target is the disk's size (blockdev-backup wants equal sizes); blockdev-create sizes a qcow2.
      await session.reserve(d, this.s.format === 'raw' ? d.size : undefined);
      await this.addTarget(run, d);
    }
    return run;
  }

  /** Adds the target file as a protocol node and a format node on it (formatting a qcow2 first). */
  private async addTarget(run: BackupRun, d: Disk): Promise<void> {
    const qmp = run.session.qmp;
    const fileNode = runName(d, 'file');
    await qmp.execute('blockdev-add', { driver: 'file', 'node-name': fileNode, filename: d.target });
    run.nodes.push(fileNode);
    if (this.s.format === 'qcow2') await this.formatQcow2(qmp, d);
    const formatNode = runName(d, 'fmt');
    await qmp.execute('blockdev-add', { driver: this.s.format, 'node-name': formatNode, file: fileNode });
    run.nodes.push(formatNode);
  }

  /** blockdev-create of a qcow2 on the target's file node, sized to the disk. */
  private async formatQcow2(qmp: QmpClient, d: Disk): Promise<void> {
    const jobId = runName(d, 'create');
    const since = qmp.lastEventSeq();
    const backing = this.chain?.backing(d);
    await qmp.execute('blockdev-create', {
      'job-id': jobId,
      options: {
        driver: 'qcow2',
        file: runName(d, 'file'),
        size: d.size,
        // A chain's images use 16 KiB clusters: the qcow2 skeleton an incremental always writes
        // (header, L1, refcount table and block, an L2) is 52 KiB instead of 196 KiB at 64 KiB.
        ...(this.chain ? { 'cluster-size': 16384 } : {}),
        ...(backing ? { 'backing-file': backing, 'backing-fmt': 'qcow2' } : {}),
      },
    });
    await qmp.waitForEvent(
      (e) => e.event === 'JOB_STATUS_CHANGE' && e.data['id'] === jobId && e.data['status'] === 'concluded',
      { since, timeoutMs: this.s.commandTimeoutMs * 3, what: `the end of ${jobId}` },
    );
    const jobs = await qmp.execute<{ id: string; error?: string }[]>('query-jobs');
    const error = jobs.find((j) => j.id === jobId)?.error;
    await qmp.execute('job-dismiss', { id: jobId });
    if (error) throw new QuiesceError('QMP_ERROR', `creating the qcow2 target ${d.target} failed: ${error}`);
  }

  async take(ctx: SnapshotContext): Promise<SnapshotTaken> {
    const run = await this.prepared(ctx.guest, ctx.log);
    const chain = this.chain;
    chain?.sent();
    await run.session.take(ctx.signal);
    if (!chain) return { files: run.session.targets, complete: (c) => this.complete(run, c) };
    chain.started();
    const backup = chain.record();
    return { files: run.session.targets, backup, complete: (c) => this.complete(run, c, backup) };
  }

  /**
   * After the thaw: every job must end with BLOCK_JOB_COMPLETED and no error;
   * then the target nodes go (flushing them) and, with a repository, the
   * manifest is written.
   */
  private async complete(run: BackupRun, ctx: CompleteCtx, backup?: BackupRecord): Promise<void> {
    await run.jobs.wait(this.s.timeoutMs, ctx.signal);
    await run.jobs.dismiss();
    // Closing the nodes flushes the targets to disk.
    await removeNodes(run, true);
    if (this.chain && backup) await this.chain.finish(run.session.qmp, run.session.disks, ctx.window, backup, ctx.log);
    // The copies are whole and recorded from here on: keep the files.
    run.session.finish();
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
    if (!run) return;
    let undone = false;
    try {
      await run.session.dispose(ctx, async (accepted, warn) => {
        undone = true;
        // Jobs may be running (or about to) unless QEMU refused the transaction.
        if (accepted !== false) await run.jobs.cancel(warn);
        await removeNodes(run, false, warn);
        // The images go before the failure is recorded: a full disk must not keep the record from landing.
        await run.session.removeCreated(warn);
        await this.chain?.abandon(run.session.qmp, run.session.disks, ctx.error ?? 'the run failed', ctx.log);
      });
    } finally {
      run.jobs.stop();
    }
    // The connection was gone (QEMU died): still record the failure, and nothing else is possible.
    if (!undone && !run.session.isFinished)
      await this.chain?.abandon(undefined, run.session.disks, ctx.error ?? 'the run failed', ctx.log);
  }
}

/** blockdev-del of the nodes this run added, newest first; `strict` rethrows the first failure. */
async function removeNodes(run: BackupRun, strict: boolean, warn?: (message: string) => void): Promise<void> {
  const qmp = run.session.qmp;
  while (run.nodes.length) {
    const node = run.nodes.pop()!;
    try {
      await qmp.execute('blockdev-del', { 'node-name': node });
    } catch (err) {
      if (strict) throw err;
      warn?.(`could not remove QMP node ${node}: ${(err as Error).message}`);
    }
  }
}
