import { setTimeout as sleep } from 'node:timers/promises';
import { QuiesceError } from '../../errors.js';
import { formatDuration } from '../../config/duration.js';
import type { QmpClient } from '../../qmp/client.js';

/** After one job of a grouped transaction fails, how long the others get to report their end. */
const GROUP_SETTLE_MS = 5000;
/** How long cancel() waits for cancelled jobs to end. */
const CANCEL_WAIT_MS = 10_000;
/** How often wait() asks QEMU how far the copies are, when someone listens. */
const PROGRESS_POLL_MS = 1000;

/** How far the copies are: bytes, summed over the disks. */
export interface JobsProgress {
  readonly done: number;
  readonly total: number;
}

export interface BlockJobsOptions {
  readonly guest?: string;
  readonly settleMs?: number;
  readonly cancelWaitMs?: number;
  /**
   * Told how far the copies are while wait() waits (query-jobs every
   * `progressPollMs`). wait() runs after the thaw only: nothing polls inside
   * the frozen window.
   */
  readonly onProgress?: (p: JobsProgress) => void;
  readonly progressPollMs?: number;
}

/** One block job copying one disk. */
export interface WatchedJob {
  readonly id: string;
  /** The disk's {disk} name and the target file, for messages. */
  readonly disk: string;
  readonly target: string;
}

/** What BlockJobs needs of the monitor (a QmpClient; a fake in tests). */
export type JobMonitor = Pick<QmpClient, 'onEvent' | 'onClose' | 'execute'>;

/** How a block job ended, from its events. */
interface JobEnd {
  readonly kind: 'completed' | 'cancelled';
  readonly error?: string;
  readonly incomplete?: boolean;
}

/**
 * Follows a set of block jobs through QMP events from construction on (so
 * create it before the transaction that starts them): how each ended
 * (BLOCK_JOB_COMPLETED, with or without an error; BLOCK_JOB_CANCELLED) and
 * the errors reported on the way (BLOCK_JOB_ERROR).
 */
export class BlockJobs {
  private readonly ends = new Map<string, JobEnd>();
  private readonly errors = new Map<string, string>();
  /** Called after each event about one of our jobs. */
  private readonly waiters = new Set<() => void>();
  private readonly unsubscribe: () => void;
  private readonly opt: { guest?: string };
  private readonly settleMs: number;
  private readonly cancelWaitMs: number;
  private readonly onProgress: ((p: JobsProgress) => void) | undefined;
  private readonly progressPollMs: number;
  /** Each job's last known figures (a job query-jobs no longer lists keeps them). */
  private readonly progress = new Map<string, { current: number; total: number }>();

  constructor(
    private readonly qmp: JobMonitor,
    private readonly jobs: readonly WatchedJob[],
    o: BlockJobsOptions = {},
  ) {
    this.opt = o.guest !== undefined ? { guest: o.guest } : {};
    this.settleMs = o.settleMs ?? GROUP_SETTLE_MS;
    this.cancelWaitMs = o.cancelWaitMs ?? CANCEL_WAIT_MS;
    this.onProgress = o.onProgress;
    this.progressPollMs = o.progressPollMs ?? PROGRESS_POLL_MS;
    this.unsubscribe = qmp.onEvent((e) => {
      const id = e.data['device'];
      if (typeof id !== 'string' || !this.jobs.some((j) => j.id === id)) return;
      if (e.event === 'BLOCK_JOB_COMPLETED') {
        const error = typeof e.data['error'] === 'string' ? e.data['error'] : undefined;
        const incomplete = e.data['offset'] !== e.data['len'];
        this.ends.set(id, { kind: 'completed', ...(error ? { error } : {}), ...(incomplete ? { incomplete } : {}) });
      } else if (e.event === 'BLOCK_JOB_CANCELLED') {
        this.ends.set(id, { kind: 'cancelled' });
      } else if (e.event === 'BLOCK_JOB_ERROR') {
        this.errors.set(id, `${String(e.data['operation'])} error (action ${String(e.data['action'])})`);
      } else return;
      for (const w of [...this.waiters]) w();
    });
  }

  /** True once every job has ended (successfully or not). */
  get allEnded(): boolean {
    return this.jobs.every((j) => this.ends.has(j.id));
  }

  /**
   * Resolves once every job completed without an error. Rejects
   * (BLOCK_JOB_FAILED) when one fails or is cancelled, when `timeoutMs`
   * passes, or when the monitor goes away; INTERRUPTED when `signal` aborts.
   */
  wait(timeoutMs: number, signal?: AbortSignal): Promise<void> {
    const opt = this.opt;
    return new Promise<void>((resolve, reject) => {
      let settle: NodeJS.Timeout | undefined;
      const polling = new AbortController();
      const finish = (err?: Error): void => {
        polling.abort();
        clearTimeout(timer);
        clearTimeout(settle);
        this.waiters.delete(check);
        offClose();
        signal?.removeEventListener('abort', onAbort);
        if (err) reject(err);
        else resolve();
      };
      const check = (): void => {
        const err = this.failure();
        if (this.allEnded) return finish(err);
        // A failed job stops the group; give the others a moment to report, then fail anyway.
        if (err && !settle) settle = setTimeout(() => finish(this.failure()), this.settleMs);
      };
      const timer = setTimeout(() => {
        const left = this.jobs.filter((j) => !this.ends.has(j.id)).map((j) => j.disk);
        finish(
          new QuiesceError(
            'BLOCK_JOB_FAILED',
            `the copy of ${left.join(', ')} did not finish within ${formatDuration(timeoutMs)}`,
            opt,
          ),
        );
      }, timeoutMs);
      const onAbort = (): void =>
        finish(
          new QuiesceError('INTERRUPTED', 'interrupted while waiting for the copy', { ...opt, cause: signal?.reason }),
        );
      const offClose = this.qmp.onClose((err) =>
        finish(new QuiesceError('BLOCK_JOB_FAILED', `QEMU's monitor went away during the copy: ${err.message}`, opt)),
      );
      if (signal?.aborted) return onAbort();
      signal?.addEventListener('abort', onAbort, { once: true });
      this.waiters.add(check);
      check();
      if (this.onProgress && !this.allEnded) void this.pollProgress(this.onProgress, polling.signal);
    });
  }

  /**
   * Until `stop` aborts: query-jobs now and every progressPollMs, and the
   * sum of our jobs' current-progress and total-progress to `report`. A
   * failed query skips one report; the wait itself decides the outcome.
   */
  private async pollProgress(report: (p: JobsProgress) => void, stop: AbortSignal): Promise<void> {
    while (!stop.aborted) {
      const listed = await this.qmp
        .execute<{ id: string; 'current-progress'?: number; 'total-progress'?: number }[]>('query-jobs')
        .catch(() => undefined);
      if (stop.aborted) return;
      if (listed) {
        for (const l of listed) {
          if (!this.jobs.some((j) => j.id === l.id)) continue;
          const current = l['current-progress'];
          const total = l['total-progress'];
          if (typeof current === 'number' && typeof total === 'number') this.progress.set(l.id, { current, total });
        }
        let done = 0;
        let total = 0;
        for (const p of this.progress.values()) {
          done += p.current;
          total += p.total;
        }
        if (this.progress.size > 0) report({ done, total });
      }
      await sleep(this.progressPollMs, undefined, { signal: stop, ref: false }).catch(() => undefined);
    }
  }

  /** Everything that went wrong so far, as one error; undefined while nothing has. */
  private failure(): QuiesceError | undefined {
    const problems: string[] = [];
    // Root causes first; the cancellations a grouped transaction causes after.
    for (const j of this.jobs) {
      const end = this.ends.get(j.id);
      const err = this.errors.get(j.id);
      if (end?.error || err) problems.push(`${j.disk} → ${j.target}: ${[err, end?.error].filter(Boolean).join(': ')}`);
      else if (end?.incomplete) problems.push(`${j.disk} → ${j.target}: ended before copying everything`);
    }
    for (const j of this.jobs) {
      if (this.ends.get(j.id)?.kind === 'cancelled' && !this.errors.has(j.id))
        problems.push(`${j.disk} → ${j.target}: cancelled`);
    }
    return problems.length
      ? new QuiesceError('BLOCK_JOB_FAILED', `backup failed: ${problems.join('; ')}`, this.opt)
      : undefined;
  }

  /** job-dismiss of every job (they run with auto-dismiss off, so that their end can be read); throws on the first failure. */
  async dismiss(): Promise<void> {
    for (const j of this.jobs) await this.qmp.execute('job-dismiss', { id: j.id });
  }

  /**
   * Cancels the jobs that have not ended, waits a while for them to end, and
   * dismisses every one (ignoring those that never existed); never throws.
   */
  async cancel(warn: (message: string) => void): Promise<void> {
    for (const j of this.jobs) {
      if (this.ends.has(j.id)) continue;
      await this.qmp.execute('block-job-cancel', { device: j.id, force: true }).catch(() => undefined);
    }
    const deadline = Date.now() + this.cancelWaitMs;
    while (!this.allEnded && Date.now() < deadline) {
      const listed = await this.qmp.execute<{ id: string; status: string }[]>('query-jobs').catch(() => []);
      const ours = listed.filter((l) => this.jobs.some((j) => j.id === l.id));
      if (ours.every((l) => l.status === 'concluded' || l.status === 'null')) break;
      await sleep(100, undefined, { ref: false });
    }
    for (const j of this.jobs) {
      await this.qmp.execute('job-dismiss', { id: j.id }).catch((err: Error) => {
        if (!/not found|No job/i.test(err.message)) warn(`could not dismiss job ${j.id}: ${err.message}`);
      });
    }
  }

  /** Stops listening to the monitor's events. */
  stop(): void {
    this.unsubscribe();
  }
}
