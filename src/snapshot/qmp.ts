import { randomBytes } from 'node:crypto';
import { closeSync, ftruncateSync, openSync, rmSync } from 'node:fs';
import { QuiesceError } from '../errors.js';
import { formatDuration } from '../config/duration.js';
import { fillPlaceholders } from '../config/placeholders.js';
import type { Log } from '../log/logger.js';
import { QmpClient, type PreparedCommand, type QmpEvent } from './qmp-client.js';
import type { PlannedQmpSnapshot, SnapshotContext, SnapshotProvider, SnapshotTaken } from './types.js';

/** After one job of a grouped transaction fails, how long the others get to report their end. */
const GROUP_SETTLE_MS = 5000;
/** How long dispose() waits for cancelled jobs to end. */
const CANCEL_WAIT_MS = 10_000;

/** One disk of the guest as QEMU knows it, and what this run makes of it. */
interface Disk {
  /** The {disk} value: the name given in the config, or with `all` the device id (else the node name). */
  readonly name: string;
  /** The node backed up, or snapshotted (the device's top node). */
  readonly node: string;
  readonly size: number;
  readonly target: string;
  readonly fileNode: string;
  readonly formatNode: string;
  readonly jobId: string;
  readonly overlayNode: string;
}

interface AttachedDisk {
  readonly device: string | undefined;
  readonly id: string | undefined;
  readonly node: string;
  readonly ro: boolean;
  readonly size: number;
}

/** How a block job ended, from its events. */
interface JobEnd {
  readonly kind: 'completed' | 'cancelled';
  readonly error?: string;
  readonly incomplete?: boolean;
}

/**
 * Provider `qmp`. Mode `backup`: before the freeze it creates one target file
 * per disk (exclusively, never overwriting; raw sized to the disk, or a qcow2
 * made by `blockdev-create`) and adds it as a node (`blockdev-add`); inside
 * the window one `transaction` of `blockdev-backup` (sync full) starts a job
 * per disk — the point in time is the job start, so take() returns with the
 * transaction's reply; after the thaw complete() waits for every
 * BLOCK_JOB_COMPLETED, fails on an error or cancellation, and removes the
 * nodes. Mode `snapshot`: one `transaction` of `blockdev-snapshot-sync`
 * (atomic external qcow2 overlays; the images below them are the point in time).
 */
export function qmpProvider(s: PlannedQmpSnapshot): SnapshotProvider {
  return new QmpSnapshot(s);
}

class QmpSnapshot implements SnapshotProvider {
  private qmp: QmpClient | undefined;
  private preparing: Promise<void> | undefined;
  private disks: Disk[] = [];
  /** Files this run created (exclusively): removed again unless they hold a finished snapshot. */
  private readonly created: string[] = [];
  /** Nodes this run added, in order. */
  private readonly added: string[] = [];
  /** The transaction, once sent: resolves true if QEMU accepted it. */
  private transaction: Promise<boolean> | undefined;
  private finished = false;
  private readonly ends = new Map<string, JobEnd>();
  private readonly errors = new Map<string, string>();
  private wake: (() => void) | undefined;
  private unsubscribe: (() => void) | undefined;
  private guest: string | undefined;
  private disposed = false;
  private request: PreparedCommand | undefined;

  constructor(private readonly s: PlannedQmpSnapshot) {}

  describe(): string {
    const s = this.s;
    const disks = s.disks === 'all' ? 'all disks' : s.disks.join(', ');
    return s.mode === 'backup'
      ? `QMP unix:${s.socket}: one transaction of blockdev-backup (sync full) of ${disks} → ${s.target} (${s.format}); the copy finishes after the thaw (timeout ${formatDuration(s.timeoutMs)})`
      : `QMP unix:${s.socket}: one transaction of blockdev-snapshot-sync of ${disks} → ${s.target} (qcow2 overlays)`;
  }

  planSteps(): { beforeFreeze: string; afterThaw?: string } {
    const s = this.s;
    return s.mode === 'backup'
      ? {
          beforeFreeze: `snapshot set-up: connect to QMP, resolve the disks, create each target (never overwriting; ${s.format}) and blockdev-add it (timeout ${formatDuration(s.commandTimeoutMs)} per command)`,
          afterThaw: `wait for BLOCK_JOB_COMPLETED of every copy (timeout ${formatDuration(s.timeoutMs)}; an error or a cancellation fails it), then blockdev-del the targets`,
        }
      : {
          beforeFreeze: `snapshot set-up: connect to QMP, resolve the disks, reserve each overlay file (never overwriting)`,
        };
  }

  prepare(ctx: { readonly guest: string; readonly log: Log }): Promise<void> {
    this.preparing ??= this.doPrepare(ctx.guest);
    return this.preparing;
  }

  private async doPrepare(guest: string): Promise<void> {
    const s = this.s;
    this.guest = guest;
    const qmp = await QmpClient.connect(s.socket, {
      connectTimeoutMs: s.connectTimeoutMs,
      commandTimeoutMs: s.commandTimeoutMs,
      guest,
    });
    this.qmp = qmp;
    this.unsubscribe = qmp.onEvent((e) => this.onEvent(e));
    const found = await resolveDisks(qmp, s.disks, s.mode, guest);
    const tag = randomBytes(3).toString('hex');
    this.disks = found.map((d, i) => {
      // Node names and job ids: a letter first, at most 31 characters.
      const base = `qz${tag}-${i}`;
      return {
        ...d,
        target: fillPlaceholders(s.target, { disk: d.name }),
        fileNode: `${base}-file`,
        formatNode: `${base}-fmt`,
        jobId: `${base}-backup`,
        overlayNode: `${base}-overlay`,
      };
    });
    const targets = this.disks.map((d) => d.target);
    const twice = targets.find((t, i) => targets.indexOf(t) !== i);
    if (twice)
      throw new QuiesceError('CONFIG', `two disks would be written to ${twice}: put {disk} in the target`, { guest });
    for (const d of this.disks) {
      this.reserve(d, guest);
      if (s.mode === 'backup') await this.addTarget(d);
    }
    this.request = this.transactionRequest();
  }

  /** Creates the target exclusively: an existing file is never overwritten (QEMU's own create would truncate it). */
  private reserve(d: Disk, guest: string): void {
    let fd: number;
    try {
      fd = openSync(d.target, 'wx', 0o600);
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code;
      const why =
        code === 'EEXIST'
          ? 'it exists already (refusing to overwrite)'
          : code === 'ENOENT'
            ? 'its directory does not exist'
            : (err as Error).message;
      throw new QuiesceError('STEP_FAILED', `cannot create ${d.target} for disk ${d.name}: ${why}`, {
        guest,
        cause: err,
      });
    }
    this.created.push(d.target);
    try {
      // A raw target is the disk's size (blockdev-backup wants equal sizes); blockdev-create sizes a qcow2.
      if (this.s.mode === 'backup' && this.s.format === 'raw') ftruncateSync(fd, d.size);
    } finally {
      closeSync(fd);
    }
  }

  private async addTarget(d: Disk): Promise<void> {
    const qmp = this.qmp!;
    await qmp.execute('blockdev-add', { driver: 'file', 'node-name': d.fileNode, filename: d.target });
    this.added.push(d.fileNode);
    if (this.s.format === 'qcow2') {
      const jobId = `${d.fileNode.slice(0, -'-file'.length)}-create`;
      const since = qmp.lastEventSeq();
      await qmp.execute('blockdev-create', {
        'job-id': jobId,
        options: { driver: 'qcow2', file: d.fileNode, size: d.size },
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
    await qmp.execute('blockdev-add', { driver: this.s.format, 'node-name': d.formatNode, file: d.fileNode });
    this.added.push(d.formatNode);
  }

  async take(ctx: SnapshotContext): Promise<SnapshotTaken> {
    await this.prepare(ctx);
    // Not tied to the signal: if the window is cut short, dispose() still learns whether QEMU accepted it.
    const reply = this.qmp!.send(this.request!);
    this.transaction = reply.then(
      () => true,
      () => false,
    );
    await untilAborted(reply, ctx.signal, ctx.guest);
    const files = this.disks.map((d) => d.target);
    if (this.s.mode === 'snapshot') {
      this.finished = true;
      return { files };
    }
    return { files, complete: (c) => this.complete(c) };
  }

  /** The one transaction for the window, encoded before the freeze. */
  private transactionRequest(): PreparedCommand {
    const s = this.s;
    const actions =
      s.mode === 'backup'
        ? this.disks.map((d) => ({
            type: 'blockdev-backup',
            data: { 'job-id': d.jobId, device: d.node, target: d.formatNode, sync: 'full', 'auto-dismiss': false },
          }))
        : this.disks.map((d) => ({
            type: 'blockdev-snapshot-sync',
            data: {
              'node-name': d.node,
              'snapshot-file': d.target,
              'snapshot-node-name': d.overlayNode,
              format: 'qcow2',
              mode: 'absolute-paths',
            },
          }));
    return this.qmp!.prepareCommand('transaction', {
      actions,
      // One job failing cancels the others: a backup is all disks or nothing.
      ...(s.mode === 'backup' && this.disks.length > 1 ? { properties: { 'completion-mode': 'grouped' } } : {}),
    });
  }

  /** After the thaw: every job must end with BLOCK_JOB_COMPLETED and no error; then the target nodes go. */
  private async complete(ctx: { readonly log: Log; readonly signal?: AbortSignal }): Promise<void> {
    const qmp = this.qmp!;
    await this.waitJobs(this.s.timeoutMs, ctx.signal);
    // The copies are whole from here on: keep the files whatever the clean-up below says.
    this.finished = true;
    for (const d of this.disks) await qmp.execute('job-dismiss', { id: d.jobId });
    // Closing the nodes flushes the targets to disk.
    await this.removeNodes(true);
  }

  private onEvent(e: QmpEvent): void {
    const id = e.data['device'];
    if (typeof id !== 'string' || !this.disks.some((d) => d.jobId === id)) return;
    if (e.event === 'BLOCK_JOB_COMPLETED') {
      const error = typeof e.data['error'] === 'string' ? e.data['error'] : undefined;
      const incomplete = e.data['offset'] !== e.data['len'];
      this.ends.set(id, { kind: 'completed', ...(error ? { error } : {}), ...(incomplete ? { incomplete } : {}) });
    } else if (e.event === 'BLOCK_JOB_CANCELLED') {
      this.ends.set(id, { kind: 'cancelled' });
    } else if (e.event === 'BLOCK_JOB_ERROR') {
      this.errors.set(id, `${String(e.data['operation'])} error (action ${String(e.data['action'])})`);
    } else return;
    this.wake?.();
  }

  private waitJobs(timeoutMs: number, signal: AbortSignal | undefined): Promise<void> {
    const opt = this.guest !== undefined ? { guest: this.guest } : {};
    return new Promise<void>((resolve, reject) => {
      let settle: NodeJS.Timeout | undefined;
      const finish = (err?: Error): void => {
        clearTimeout(timer);
        clearTimeout(settle);
        this.wake = undefined;
        offClose();
        signal?.removeEventListener('abort', onAbort);
        if (err) reject(err);
        else resolve();
      };
      const failure = (): QuiesceError | undefined => {
        const problems: string[] = [];
        // Root causes first; the cancellations a grouped transaction causes after.
        for (const d of this.disks) {
          const end = this.ends.get(d.jobId);
          const err = this.errors.get(d.jobId);
          if (end?.error || err)
            problems.push(`${d.name} → ${d.target}: ${[err, end?.error].filter(Boolean).join(': ')}`);
          else if (end?.incomplete) problems.push(`${d.name} → ${d.target}: ended before copying everything`);
        }
        for (const d of this.disks) {
          if (this.ends.get(d.jobId)?.kind === 'cancelled' && !this.errors.has(d.jobId))
            problems.push(`${d.name} → ${d.target}: cancelled`);
        }
        return problems.length
          ? new QuiesceError('BLOCK_JOB_FAILED', `backup failed: ${problems.join('; ')}`, opt)
          : undefined;
      };
      const check = (): void => {
        const err = failure();
        if (this.disks.every((d) => this.ends.has(d.jobId))) return finish(err);
        // A failed job stops the group; give the others a moment to report, then fail anyway.
        if (err && !settle) settle = setTimeout(() => finish(failure()), GROUP_SETTLE_MS);
      };
      const timer = setTimeout(() => {
        const left = this.disks.filter((d) => !this.ends.has(d.jobId)).map((d) => d.name);
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
      const offClose = this.qmp!.onClose((err) =>
        finish(new QuiesceError('BLOCK_JOB_FAILED', `QEMU's monitor went away during the copy: ${err.message}`, opt)),
      );
      if (signal?.aborted) return onAbort();
      signal?.addEventListener('abort', onAbort, { once: true });
      this.wake = check;
      check();
    });
  }

  /** blockdev-del of the nodes this run added, newest first; `strict` rethrows the first failure. */
  private async removeNodes(strict: boolean, log?: (message: string) => void): Promise<void> {
    const qmp = this.qmp!;
    while (this.added.length) {
      const node = this.added.pop()!;
      try {
        await qmp.execute('blockdev-del', { 'node-name': node });
      } catch (err) {
        if (strict) throw err;
        log?.(`could not remove QMP node ${node}: ${(err as Error).message}`);
      }
    }
  }

  async dispose(ctx: { readonly guest: string; readonly log: Log }): Promise<void> {
    if (this.disposed) return;
    this.disposed = true;
    const warn = (message: string): void => ctx.log({ kind: 'warning', guest: ctx.guest, message });
    const qmp = this.qmp;
    try {
      if (this.finished || !qmp || qmp.closed) return;
      const accepted = this.transaction
        ? await Promise.race([this.transaction, sleep(this.s.commandTimeoutMs).then(() => undefined)])
        : false;
      if (this.s.mode === 'snapshot') {
        if (accepted !== false) {
          // QEMU took (or may still take) the overlays after the window was cut short: they are live now.
          warn(
            `the overlays ${this.disks.map((d) => d.target).join(', ')} ${accepted ? 'were' : 'may have been'} created after the frozen window was cut short: the images below them are not frozen-consistent`,
          );
          this.created.length = 0;
        }
        return;
      }
      if (accepted !== false) await this.cancelJobs(qmp, warn);
      await this.removeNodes(false, warn);
    } catch (err) {
      warn(`cleaning up after the QMP snapshot: ${(err as Error).message}`);
    } finally {
      this.unsubscribe?.();
      qmp?.close();
      if (!this.finished) {
        for (const f of this.created) {
          rmSync(f, { force: true });
          warn(`removed ${f}: the snapshot did not finish`);
        }
      }
    }
  }

  /** Cancels our jobs that have not ended, waits for them, and dismisses every one (ignoring those that never existed). */
  private async cancelJobs(qmp: QmpClient, warn: (m: string) => void): Promise<void> {
    for (const d of this.disks) {
      if (this.ends.has(d.jobId)) continue;
      await qmp.execute('block-job-cancel', { device: d.jobId, force: true }).catch(() => undefined);
    }
    const deadline = Date.now() + CANCEL_WAIT_MS;
    while (this.disks.some((d) => !this.ends.has(d.jobId)) && Date.now() < deadline) {
      const jobs = await qmp.execute<{ id: string; status: string }[]>('query-jobs').catch(() => []);
      const ours = jobs.filter((j) => this.disks.some((d) => d.jobId === j.id));
      if (ours.every((j) => j.status === 'concluded' || j.status === 'null')) break;
      await sleep(100);
    }
    for (const d of this.disks) {
      await qmp.execute('job-dismiss', { id: d.jobId }).catch((err: Error) => {
        if (!/not found|No job/i.test(err.message)) warn(`could not dismiss job ${d.jobId}: ${err.message}`);
      });
    }
  }
}

/** The disks to snapshot: the config's selection checked against query-block (and, for backups, any named node). */
export async function resolveDisks(
  qmp: QmpClient,
  want: 'all' | readonly string[],
  mode: 'backup' | 'snapshot',
  guest?: string,
): Promise<{ name: string; node: string; size: number }[]> {
  const opt = guest !== undefined ? { guest } : {};
  const blocks = await qmp.execute<
    {
      device?: string;
      qdev?: string;
      inserted?: { 'node-name': string; ro?: boolean; image?: { 'virtual-size'?: number } };
    }[]
  >('query-block');
  const attached: AttachedDisk[] = blocks.flatMap((b) =>
    b.inserted
      ? [
          {
            device: b.device || undefined,
            id: /^\/machine\/peripheral\/([^/]+)/.exec(b.qdev ?? '')?.[1],
            node: b.inserted['node-name'],
            ro: b.inserted.ro === true,
            size: Number(b.inserted.image?.['virtual-size'] ?? NaN),
          },
        ]
      : [],
  );
  let picked: { name: string; node: string; size: number }[];
  if (want === 'all') {
    picked = attached
      .filter((a) => !a.ro)
      .map((a) => ({ name: a.device ?? a.id ?? a.node, node: a.node, size: a.size }));
    if (picked.length === 0)
      throw new QuiesceError('CONFIG_MISMATCH', `QEMU (${qmp.address}) has no writable disk`, opt);
  } else {
    type NodeInfo = { 'node-name': string; image?: { 'virtual-size'?: number } };
    let nodes: NodeInfo[] | undefined;
    picked = [];
    for (const sel of want) {
      const a = attached.find((x) => x.node === sel || x.device === sel || x.id === sel);
      if (a) {
        picked.push({ name: sel, node: a.node, size: a.size });
        continue;
      }
      if (mode === 'backup') {
        // Any named node can be copied (a format or protocol node below a device, too).
        if (!nodes) nodes = await qmp.execute<NodeInfo[]>('query-named-block-nodes', { flat: true });
        const n = nodes.find((x) => x['node-name'] === sel);
        if (n) {
          picked.push({ name: sel, node: sel, size: Number(n.image?.['virtual-size'] ?? NaN) });
          continue;
        }
      }
      const known = attached.map((x) => [x.id ?? x.device, x.node].filter(Boolean).join('/')).join(', ');
      throw new QuiesceError(
        'CONFIG_MISMATCH',
        `QEMU (${qmp.address}) has no ${mode === 'snapshot' ? 'device or top node' : 'device or node'} '${sel}' (disks: ${known || 'none'})`,
        opt,
      );
    }
    const nodes2 = picked.map((p) => p.node);
    const dup = nodes2.find((n, i) => nodes2.indexOf(n) !== i);
    if (dup) throw new QuiesceError('CONFIG_MISMATCH', `two of the listed disks are the same node ${dup}`, opt);
  }
  for (const p of picked) {
    if (!Number.isSafeInteger(p.size) || p.size <= 0)
      throw new QuiesceError('QMP_ERROR', `QEMU reports no size for disk ${p.name} (node ${p.node})`, opt);
  }
  return picked;
}

/** Waits for `p`, or rejects as soon as `signal` aborts (the window must end without waiting for QEMU). */
function untilAborted<T>(p: Promise<T>, signal: AbortSignal | undefined, guest: string): Promise<T> {
  if (!signal) return p;
  return new Promise<T>((resolve, reject) => {
    const onAbort = (): void =>
      reject(new QuiesceError('INTERRUPTED', 'the QMP transaction was cut short', { guest, cause: signal.reason }));
    if (signal.aborted) return onAbort();
    signal.addEventListener('abort', onAbort, { once: true });
    p.then(resolve, reject).finally(() => signal.removeEventListener('abort', onAbort));
  });
}

function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms).unref());
}
