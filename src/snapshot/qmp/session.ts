import { rm } from 'node:fs/promises';
import { setTimeout as sleep } from 'node:timers/promises';
import { QuiesceError } from '../../errors.js';
import type { Log } from '../../log/logger.js';
import { QmpClient, type PreparedCommand } from '../../qmp/client.js';
import type { PlannedQmpSnapshot } from '../types.js';
import { nameDisks, reserveTarget, resolveDisks, type Disk, type FoundDisk } from './disks.js';

/**
 * Whether QEMU accepted the window's transaction: true, false (it refused,
 * or it was never sent), or undefined (no reply within a command timeout).
 */
export type Accepted = boolean | undefined;

/** What a mode undoes in QEMU when the snapshot did not finish (see QmpSession.dispose). */
export type Undo = (accepted: Accepted, warn: (message: string) => void) => Promise<void>;

/**
 * What every mode of provider `qmp` shares for one guest run: the monitor
 * connection, the disks, the target files this run created, and the one
 * `transaction` for the window, encoded before the freeze and sent by take().
 */
export class QmpSession {
  /** Files this run created (exclusively): removed again unless they hold a finished snapshot. */
  private readonly created: string[] = [];
  /** The transaction, once sent: resolves true if QEMU accepted it. */
  private sent: Promise<boolean> | undefined;
  private finished = false;

  private constructor(
    readonly qmp: QmpClient,
    readonly guest: string,
    readonly disks: readonly Disk[],
    private readonly request: PreparedCommand,
    private readonly commandTimeoutMs: number,
  ) {}

  /**
   * Connects to QMP, resolves and names the disks, and encodes the window's
   * transaction with the arguments `transaction` gives for those disks. On a
   * failure the connection is closed again.
   */
  static async open(
    s: PlannedQmpSnapshot,
    guest: string,
    o: {
      /** Any named node may be picked, not only a device's top node. */
      readonly anyNode: boolean;
      /** The target with {disk} unfilled (default: the config's), or what gives it once the disks are known. */
      readonly target?: string | ((qmp: QmpClient, found: readonly FoundDisk[]) => Promise<string>);
      readonly transaction: (disks: readonly Disk[], qmp: QmpClient) => Record<string, unknown>;
    },
  ): Promise<QmpSession> {
    const qmp = await QmpClient.connect(s.socket, {
      connectTimeoutMs: s.connectTimeoutMs,
      commandTimeoutMs: s.commandTimeoutMs,
      guest,
    });
    try {
      const found = await resolveDisks(qmp, s.disks, { anyNode: o.anyNode, guest });
      const target = typeof o.target === 'function' ? await o.target(qmp, found) : (o.target ?? s.target);
      if (target === undefined) throw new QuiesceError('CONFIG', 'the QMP snapshot has no target', { guest });
      const disks = nameDisks(found, target, guest);
      return new QmpSession(
        qmp,
        guest,
        disks,
        qmp.prepareCommand('transaction', o.transaction(disks, qmp)),
        s.commandTimeoutMs,
      );
    } catch (err) {
      qmp.close();
      throw err;
    }
  }

  /** True once finish() was called: the targets hold a finished snapshot. */
  get isFinished(): boolean {
    return this.finished;
  }

  /** The target of each disk, in order. */
  get targets(): string[] {
    return this.disks.map((d) => d.target);
  }

  /** Creates the disk's target exclusively (sized to `size` if given); dispose() removes it unless the snapshot finished. */
  reserve(d: Disk, size?: number): Promise<void> {
    return reserveTarget(d, { size, guest: this.guest, onCreated: (f) => this.created.push(f) });
  }

  /** Inside the window: sends the transaction and waits for QEMU's reply, or for `signal` to abort. */
  async take(signal: AbortSignal | undefined): Promise<void> {
    // Not tied to the signal: if the window is cut short, dispose() still learns whether QEMU accepted it.
    const reply = this.qmp.send(this.request);
    this.sent = reply.then(
      () => true,
      () => false,
    );
    await untilAborted(reply, signal, this.guest);
  }

  /** The targets hold a finished snapshot: dispose() keeps them and has nothing to undo. */
  finish(): void {
    this.finished = true;
  }

  /** Keeps the created files although the snapshot did not finish (QEMU has them in use). */
  keepFiles(): void {
    this.created.length = 0;
  }

  /**
   * Ends the run: unless it finished, lets the mode undo its part (`undo`,
   * told whether the transaction was accepted; a failure there is a warning),
   * then closes the connection and removes the files of an unfinished snapshot.
   */
  async dispose(ctx: { readonly guest: string; readonly log: Log }, undo: Undo): Promise<void> {
    const warn = (message: string): void => ctx.log({ kind: 'warning', guest: ctx.guest, message });
    try {
      if (this.finished || this.qmp.closed) return;
      const accepted = this.sent
        ? await Promise.race([this.sent, sleep(this.commandTimeoutMs, undefined, { ref: false })])
        : false;
      await undo(accepted, warn);
    } catch (err) {
      warn(`cleaning up after the QMP snapshot: ${(err as Error).message}`);
    } finally {
      this.qmp.close();
      if (!this.finished) await this.removeCreated(warn);
    }
  }

  /** Removes the files this run created (the snapshot did not finish); later calls find nothing left. */
  async removeCreated(warn: (message: string) => void): Promise<void> {
    while (this.created.length) {
      const f = this.created.pop()!;
      await rm(f, { force: true });
      warn(`removed ${f}: the snapshot did not finish`);
    }
  }
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
