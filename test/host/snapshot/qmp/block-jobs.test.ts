import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { QuiesceError } from '../../../../src/errors.js';
import type { QmpEvent } from '../../../../src/qmp/client.js';
import { BlockJobs, type JobMonitor, type WatchedJob } from '../../../../src/snapshot/qmp/block-jobs.js';

/** A monitor without a socket: the test emits events, closes it, and scripts command replies. */
class FakeMonitor implements JobMonitor {
  readonly commands: { command: string; args?: Record<string, unknown> }[] = [];
  readonly listeners = new Set<(e: QmpEvent) => void>();
  private readonly closeListeners = new Set<(err: QuiesceError) => void>();
  private seq = 0;

  constructor(private readonly reply: (command: string, args?: Record<string, unknown>) => unknown = () => ({})) {}

  onEvent(listener: (e: QmpEvent) => void): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  onClose(listener: (err: QuiesceError) => void): () => void {
    this.closeListeners.add(listener);
    return () => this.closeListeners.delete(listener);
  }

  execute<T = unknown>(command: string, args?: Record<string, unknown>): Promise<T> {
    this.commands.push({ command, ...(args ? { args } : {}) });
    try {
      return Promise.resolve(this.reply(command, args) as T);
    } catch (err) {
      return Promise.reject(err as Error);
    }
  }

  emit(event: string, data: Record<string, unknown>): void {
    const e: QmpEvent = { event, data, seq: ++this.seq };
    for (const l of [...this.listeners]) l(e);
  }

  close(): void {
    for (const l of [...this.closeListeners]) l(new QuiesceError('CHANNEL_GONE', 'qmp:/x: connection closed by QEMU'));
  }

  named(command: string): Record<string, unknown>[] {
    return this.commands.filter((c) => c.command === command).map((c) => c.args ?? {});
  }
}

const JOBS: WatchedJob[] = [
  { id: 'qzabc-0-backup', disk: 'vda', target: '/b/vda.img' },
  { id: 'qzabc-1-backup', disk: 'vdb', target: '/b/vdb.img' },
];
const done = (m: FakeMonitor, id: string, extra: Record<string, unknown> = {}): void =>
  m.emit('BLOCK_JOB_COMPLETED', { device: id, type: 'backup', len: 4096, offset: 4096, speed: 0, ...extra });
const failedWith = (code: string, message: RegExp) => (err: unknown) =>
  err instanceof QuiesceError && err.code === code && message.test(err.message);

describe('block jobs: waiting for their end through QMP events', () => {
  test('resolves once every job completed without an error, events before the wait included', async () => {
    const m = new FakeMonitor();
    const jobs = new BlockJobs(m, JOBS);
    done(m, JOBS[0]!.id);
    const waiting = jobs.wait(5000);
    done(m, JOBS[1]!.id);
    await waiting;
    assert.ok(jobs.allEnded);
  });

  test("ignores other jobs' events (a blockdev-create job, someone else's backup)", async () => {
    const m = new FakeMonitor();
    const jobs = new BlockJobs(m, JOBS.slice(0, 1));
    done(m, 'qzabc-0-create', { error: 'boom' });
    m.emit('BLOCK_JOB_CANCELLED', { device: 'other' });
    m.emit('JOB_STATUS_CHANGE', { id: JOBS[0]!.id, status: 'running' });
    assert.equal(jobs.allEnded, false);
    done(m, JOBS[0]!.id);
    await jobs.wait(5000);
  });

  test('an error names the disk, the target and the error; the cancellations it causes come after', async () => {
    const m = new FakeMonitor();
    const jobs = new BlockJobs(m, JOBS);
    m.emit('BLOCK_JOB_CANCELLED', { device: JOBS[0]!.id });
    m.emit('BLOCK_JOB_ERROR', { device: JOBS[1]!.id, operation: 'write', action: 'report' });
    done(m, JOBS[1]!.id, { offset: 512, error: 'No space left on device' });
    await assert.rejects(
      jobs.wait(5000),
      failedWith(
        'BLOCK_JOB_FAILED',
        /^backup failed: vdb → \/b\/vdb\.img: write error \(action report\): No space left on device; vda → \/b\/vda\.img: cancelled$/,
      ),
    );
  });

  test('a job that completed short of its length failed', async () => {
    const m = new FakeMonitor();
    const jobs = new BlockJobs(m, JOBS.slice(0, 1));
    done(m, JOBS[0]!.id, { offset: 100 });
    await assert.rejects(jobs.wait(5000), /vda → \/b\/vda\.img: ended before copying everything/);
  });

  test('after one failure the others get a moment to report, then the wait fails anyway', async () => {
    const m = new FakeMonitor();
    const jobs = new BlockJobs(m, JOBS, { settleMs: 30 });
    const t0 = Date.now();
    const waiting = jobs.wait(60_000);
    done(m, JOBS[0]!.id, { error: 'Input/output error' });
    await assert.rejects(waiting, /backup failed: vda → \/b\/vda\.img: Input\/output error$/);
    assert.ok(Date.now() - t0 < 5000);
  });

  test('a timeout names the disks whose copy has not ended', async () => {
    const m = new FakeMonitor();
    const jobs = new BlockJobs(m, JOBS);
    done(m, JOBS[0]!.id);
    await assert.rejects(jobs.wait(50), failedWith('BLOCK_JOB_FAILED', /^the copy of vdb did not finish within 50ms$/));
  });

  test('an abort ends the wait (INTERRUPTED), also when the signal was aborted already', async () => {
    const m = new FakeMonitor();
    const jobs = new BlockJobs(m, JOBS);
    const ac = new AbortController();
    setTimeout(() => ac.abort(new Error('received SIGTERM')), 20);
    await assert.rejects(jobs.wait(60_000, ac.signal), (err: unknown) => {
      assert.ok(err instanceof QuiesceError && err.code === 'INTERRUPTED');
      assert.equal((err.cause as Error).message, 'received SIGTERM');
      return true;
    });
    await assert.rejects(jobs.wait(60_000, ac.signal), failedWith('INTERRUPTED', /waiting for the copy/));
  });

  test('the monitor going away ends the wait', async () => {
    const m = new FakeMonitor();
    const jobs = new BlockJobs(m, JOBS);
    setTimeout(() => m.close(), 20);
    await assert.rejects(
      jobs.wait(60_000),
      failedWith('BLOCK_JOB_FAILED', /^QEMU's monitor went away during the copy: .*closed by QEMU$/),
    );
  });

  test('dismiss() dismisses every job and throws on the first failure', async () => {
    const m = new FakeMonitor((command) => {
      if (command === 'job-dismiss') throw new Error('Job is not concluded');
    });
    await assert.rejects(new BlockJobs(m, JOBS).dismiss(), /not concluded/);
    assert.equal(m.named('job-dismiss').length, 1);
  });

  test('stop() stops listening', () => {
    const m = new FakeMonitor();
    new BlockJobs(m, JOBS).stop();
    assert.equal(m.listeners.size, 0);
  });
});

/** cancel()'s polling sleep does not hold the process open (a real monitor's socket does): this does. */
function holdingOpen<T>(p: Promise<T>): Promise<T> {
  const timer = setInterval(() => undefined, 1000);
  return p.finally(() => clearInterval(timer));
}

describe('block jobs: cancelling', () => {
  test('cancels the jobs that have not ended, waits until QEMU lists them concluded, dismisses every one', async () => {
    let polls = 0;
    const m = new FakeMonitor((command) =>
      command === 'query-jobs'
        ? [
            { id: JOBS[1]!.id, status: ++polls < 3 ? 'aborting' : 'concluded' },
            { id: 'not-ours', status: 'running' },
          ]
        : {},
    );
    const jobs = new BlockJobs(m, JOBS);
    done(m, JOBS[0]!.id);
    const warnings: string[] = [];
    await holdingOpen(jobs.cancel((w) => warnings.push(w)));
    assert.deepEqual(m.named('block-job-cancel'), [{ device: JOBS[1]!.id, force: true }]);
    assert.equal(polls, 3);
    assert.deepEqual(
      m.named('job-dismiss').map((a) => a['id']),
      JOBS.map((j) => j.id),
    );
    assert.deepEqual(warnings, []);
  });

  test('stops waiting as soon as the cancelled jobs report their end', async () => {
    const m = new FakeMonitor((command) => {
      if (command === 'block-job-cancel') setImmediate(() => m.emit('BLOCK_JOB_CANCELLED', { device: JOBS[0]!.id }));
      return command === 'query-jobs' ? [{ id: JOBS[0]!.id, status: 'running' }] : {};
    });
    const jobs = new BlockJobs(m, JOBS.slice(0, 1), { cancelWaitMs: 60_000 });
    const t0 = Date.now();
    await holdingOpen(jobs.cancel(() => undefined));
    assert.ok(Date.now() - t0 < 5000);
  });

  test('gives up waiting after the cancel wait; warns of dismiss failures except jobs that never existed', async () => {
    const m = new FakeMonitor((command, args) => {
      if (command === 'block-job-cancel') throw new Error('Block job not found');
      if (command === 'query-jobs') return [{ id: JOBS[0]!.id, status: 'running' }];
      if (command === 'job-dismiss')
        throw new Error(args!['id'] === JOBS[0]!.id ? 'Job is not concluded' : `Job not found: ${String(args!['id'])}`);
      return {};
    });
    const warnings: string[] = [];
    await holdingOpen(new BlockJobs(m, JOBS, { cancelWaitMs: 150 }).cancel((w) => warnings.push(w)));
    assert.equal(m.named('block-job-cancel').length, 2);
    assert.deepEqual(warnings, [`could not dismiss job ${JOBS[0]!.id}: Job is not concluded`]);
  });
});

describe('block jobs: progress while waiting', () => {
  test('polls query-jobs during the wait and reports our jobs summed; not before the wait, not after it', async () => {
    let listed = [
      { id: JOBS[0]!.id, status: 'running', 'current-progress': 100, 'total-progress': 1000 },
      { id: JOBS[1]!.id, status: 'running', 'current-progress': 50, 'total-progress': 500 },
      { id: 'someone-else', status: 'running', 'current-progress': 7, 'total-progress': 9 },
    ];
    const m = new FakeMonitor((c) => (c === 'query-jobs' ? listed : {}));
    const seen: { done: number; total: number }[] = [];
    const jobs = new BlockJobs(m, JOBS, { onProgress: (p) => seen.push(p), progressPollMs: 20 });
    assert.equal(m.named('query-jobs').length, 0, 'nothing polls before wait()');
    const waiting = jobs.wait(5000);
    await new Promise((r) => setTimeout(r, 5));
    assert.deepEqual(seen[0], { done: 150, total: 1500 });
    // vdb is no longer listed: its last figures still count.
    listed = [{ id: JOBS[0]!.id, status: 'running', 'current-progress': 900, 'total-progress': 1000 }];
    await new Promise((r) => setTimeout(r, 50));
    assert.deepEqual(seen.at(-1), { done: 950, total: 1500 });
    done(m, JOBS[0]!.id);
    done(m, JOBS[1]!.id);
    await waiting;
    const polls = m.named('query-jobs').length;
    await new Promise((r) => setTimeout(r, 60));
    assert.equal(m.named('query-jobs').length, polls, 'no poll after the wait ended');
  });

  test('a failing query-jobs skips a report and does not end the wait; no listener, no polling', async () => {
    let fail = true;
    const m = new FakeMonitor((c) => {
      if (c !== 'query-jobs') return {};
      if (fail) throw new Error('busy');
      return [{ id: JOBS[0]!.id, 'current-progress': 1, 'total-progress': 2 }];
    });
    const seen: unknown[] = [];
    const jobs = new BlockJobs(m, JOBS.slice(0, 1), { onProgress: (p) => seen.push(p), progressPollMs: 10 });
    const waiting = jobs.wait(5000);
    await new Promise((r) => setTimeout(r, 25));
    assert.equal(seen.length, 0);
    fail = false;
    await new Promise((r) => setTimeout(r, 30));
    assert.deepEqual(seen.at(-1), { done: 1, total: 2 });
    done(m, JOBS[0]!.id);
    await waiting;

    const quiet = new FakeMonitor();
    const plain = new BlockJobs(quiet, JOBS.slice(0, 1), { progressPollMs: 1 });
    const w = plain.wait(5000);
    await new Promise((r) => setTimeout(r, 10));
    done(quiet, JOBS[0]!.id);
    await w;
    assert.equal(quiet.named('query-jobs').length, 0);
  });
});
