import { accessSync } from 'node:fs';
import { errorText } from '../errno.js';
import type { AgentLogEvent } from '../log.js';
import { QgaError } from '../qapi/errors.js';
import type { HookRunner } from './hooks.js';
import type { FreezeBackend } from './ioctl.js';
import { FrozenMarker, markerPath } from './marker.js';
import { MOUNTINFO, readMounts, type FsMount } from './mounts.js';
import { FreezeWatchdog } from './watchdog.js';
import type { MaybePromise } from '../maybe-promise.js';
import { SerialQueue } from '../serial-queue.js';

/** What happened to the last freeze (the watchdog extension's record). */
export interface FreezeRecord {
  /** ms since the epoch: the freeze (or, when recovered, the agent's start). */
  start: number;
  /** ms since the epoch of the thaw; absent while frozen. */
  end?: number;
  /** The watchdog limit in seconds for this freeze; 0: none. */
  limit: number;
  /** The watchdog thawed it, not a command. */
  autoThawed: boolean;
  /** The freeze's count; absent when the freeze was found at start (marker). */
  frozen?: number;
  /** The thaw's count. */
  thawed?: number;
  /** The mounts FIFREEZE succeeded on, in freeze order. */
  mountpoints: string[];
  /** Found frozen at start (a marker left by a crashed agent). */
  recovered: boolean;
  /** Why the freeze failed (everything was thawed again). */
  error?: string;
}

export type ThawReason = 'command' | 'watchdog' | 'stop' | 'rollback' | 'crash';

export interface FreezeControllerOptions {
  readonly statedir: string;
  /** Only these mountpoints may ever be frozen (and thawed); undefined: all, like the reference. */
  readonly include: readonly string[] | undefined;
  /** Default watchdog limit in seconds; 0 disables it. */
  readonly limitSeconds: number;
  readonly hooks: HookRunner;
  readonly backend: FreezeBackend;
  readonly log: (event: AgentLogEvent) => void;
  /** The agent's frozen mode: command gate and held log. */
  readonly setFrozen: (frozen: boolean) => void;
  readonly isFrozen: () => boolean;
  /** Runs `fn` once the reply to the running command is written. */
  readonly afterReply: (fn: () => void) => void;
  readonly mounts?: () => FsMount[];
}

/**
 * The freeze state machine: the reference's freeze/thaw semantics, a
 * frozen-state marker for crash recovery, hooks that always get their thaw,
 * and a watchdog. Freeze, thaw, the watchdog and stop never interleave.
 */
export class FreezeController {
  readonly marker: FrozenMarker;
  private readonly watchdog = new FreezeWatchdog();
  /** Freeze, thaw, stop and the watchdog's thaw never interleave. */
  private readonly lock = new SerialQueue();
  private nextLimit: number | undefined;
  /** Thawed by a command, its marker not removed yet (see removeMarkerAfterReply). */
  private markerStale = false;
  private last: FreezeRecord | undefined;
  private readonly include: ReadonlySet<string> | undefined;
  private readonly mounts: () => FsMount[];

  constructor(private readonly opts: FreezeControllerOptions) {
    this.marker = new FrozenMarker(markerPath(opts.statedir));
    this.include = opts.include ? new Set(opts.include) : undefined;
    this.mounts = opts.mounts ?? readMounts;
  }

  /**
   * At start: a marker means a previous agent may have left filesystems
   * frozen, so come up frozen (only the freeze-safe commands, log held) until
   * a thaw, as the reference does. The watchdog applies here too.
   */
  recover(): boolean {
    try {
      accessSync(this.marker.path);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return false;
      // The reference refuses to start here; coming up frozen is the safe reading.
      this.opts.log({ kind: 'warning', message: `cannot check ${this.marker.path}: ${errorText(err)}` });
    }
    this.opts.setFrozen(true);
    this.opts.log({
      kind: 'warning',
      message:
        'previous session indicates guest may have been frozen, disabling guest agent logging and ' +
        'non-frozen safe commands until guest-fsfreeze-thaw is called',
    });
    const limit = this.opts.limitSeconds;
    this.last = { start: Date.now(), limit, autoThawed: false, mountpoints: [], recovered: true };
    this.watchdog.arm(limit, () => this.expire(limit));
    return true;
  }

  status(): 'frozen' | 'thawed' {
    return this.opts.isFrozen() ? 'frozen' : 'thawed';
  }

  get record(): Readonly<FreezeRecord> | undefined {
    return this.last;
  }

  /** When the watchdog thaws, ms since the epoch; undefined when not armed. */
  get deadline(): number | undefined {
    return this.watchdog.expiresAt;
  }

  /** The watchdog limit for the next freeze only (seconds, > 0). */
  setNextLimit(seconds: number): void {
    this.nextLimit = seconds;
  }

  /** guest-fsfreeze-freeze (no list) and guest-fsfreeze-freeze-list. */
  freeze(mountpoints?: readonly string[]): Promise<number> {
    return this.lock.run(() => this.doFreeze(mountpoints));
  }

  /** guest-fsfreeze-thaw: synchronous unless thaw hooks run. */
  thaw(): MaybePromise<number> {
    return this.lock.run(() => this.doThaw('command'));
  }

  /** Stopping (signal, end of input): thaw first if frozen. */
  close(): Promise<void> {
    return this.lock.run(async () => {
      if (!this.leaving('stopping while frozen: thawing first')) return;
      try {
        await this.doThaw('stop');
      } catch (err) {
        this.opts.log({ kind: 'warning', message: `thaw before stopping: ${(err as Error).message}` });
      }
    });
  }

  /**
   * After a bug (an uncaught exception) the process ends: thaw now, in this
   * turn, past the lock, since whatever holds it will never finish. Thaw
   * hooks are not run (they are asynchronous); the filesystems come first.
   */
  crashThaw(): void {
    if (this.leaving('internal error while frozen: thawing before exiting')) this.thawFilesystems('crash');
  }

  /** The agent is ending: no watchdog, no stale marker. True when frozen (logged with `why`): the caller thaws. */
  private leaving(why: string): boolean {
    this.watchdog.disarm();
    this.removeStaleMarker();
    if (!this.opts.isFrozen()) return false;
    this.opts.log({ kind: 'warning', message: why });
    return true;
  }

  private allowed(dir: string): boolean {
    return this.include === undefined || this.include.has(dir);
  }

  private readMounts(): FsMount[] {
    try {
      return this.mounts();
    } catch (err) {
      throw new QgaError(`failed to read ${MOUNTINFO}: ${errorText(err)}`);
    }
  }

  private async doFreeze(list: readonly string[] | undefined): Promise<number> {
    const { log, hooks, backend } = this.opts;
    log({ kind: 'debug', message: list ? `guest-fsfreeze called (${list.join(', ')})` : 'guest-fsfreeze called' });
    this.removeStaleMarker();
    const phase = await hooks.freeze();
    // Beyond the reference: the hooks that were started get their thaw even when one failed.
    const undoHooks = async (): Promise<void> => {
      const err = await hooks.thaw(phase.started);
      if (err) log({ kind: 'warning', message: `after a failed freeze: ${err.message}` });
    };
    if (phase.error) {
      await undoHooks();
      throw new QgaError(phase.error.message);
    }
    let mounts: FsMount[];
    try {
      mounts = this.readMounts();
      this.marker.create();
    } catch (err) {
      await undoHooks();
      if (err instanceof QgaError) throw err;
      // Without a marker a crash while frozen could not be recovered: refuse (the reference only warns).
      throw new QgaError(`unable to create ${this.marker.path}: ${errorText(err)}`);
    }
    const limit = this.nextLimit ?? this.opts.limitSeconds;
    this.nextLimit = undefined;
    const record: FreezeRecord = {
      start: Date.now(),
      limit,
      autoThawed: false,
      frozen: 0,
      mountpoints: [],
      recovered: false,
    };
    this.last = record;
    // Cannot risk the agent blocking itself on a write from here on.
    this.opts.setFrozen(true);
    if (list) {
      for (const dir of list) {
        if (!this.allowed(dir)) log({ kind: 'warning', message: `not freezing ${dir}: not in fsfreeze-include` });
      }
    }
    let failure: string | undefined;
    for (let i = mounts.length - 1; i >= 0; i--) {
      const dir = mounts[i]!.dir;
      if (list && !list.includes(dir)) continue;
      if (!this.allowed(dir)) continue;
      const r = backend.freeze(dir);
      if (r.ok) {
        record.mountpoints.push(dir);
        continue;
      }
      if (r.stage === 'open') {
        failure = `failed to open ${dir}: ${r.text}`;
        break;
      }
      // Not freezable, or frozen already (a second mount of the same filesystem): not counted.
      if (r.code === 'EOPNOTSUPP' || r.code === 'EBUSY') {
        log({ kind: 'debug', message: `not freezing ${dir}: ${r.text}` });
        continue;
      }
      failure = `failed to freeze ${dir}: ${r.text}`;
      break;
    }
    record.frozen = record.mountpoints.length;
    if (failure !== undefined) {
      record.error = failure;
      log({ kind: 'warning', message: `${failure}; thawing everything` });
      try {
        await this.doThaw('rollback', phase.started);
      } catch (err) {
        log({ kind: 'warning', message: `after a failed freeze: ${(err as Error).message}` });
      }
      throw new QgaError(failure);
    }
    if (record.frozen === 0) {
      // Nothing frozen: the agent stays thawed, as the reference leaves it.
      this.removeMarker();
      this.opts.setFrozen(false);
      record.end = Date.now();
      record.thawed = 0;
      log({ kind: 'info', message: 'no filesystem frozen' });
      await undoHooks();
      return 0;
    }
    log({ kind: 'info', message: `froze ${record.frozen} filesystem(s) via ${backend.name}` });
    this.watchdog.arm(limit, () => this.expire(limit));
    return record.frozen;
  }

  private doThaw(reason: ThawReason, hookScripts?: readonly string[]): MaybePromise<number> {
    const { hooks } = this.opts;
    this.watchdog.disarm();
    const count = this.thawFilesystems(reason);
    // Without a hook path there is nothing to run: the thaw's reply can go out in this turn.
    if (hookScripts === undefined && !hooks.configured) return count;
    return hooks.thaw(hookScripts).then((err) => {
      if (err) throw new QgaError(err.message);
      return count;
    });
  }

  /** FITHAW on every allowed mount, then the frozen state, the record and the marker. */
  private thawFilesystems(reason: ThawReason): number {
    const { log, backend } = this.opts;
    const mounts = this.readMounts();
    let count = 0;
    for (const m of mounts) {
      if (!this.allowed(m.dir)) continue;
      // FITHAW until it fails: a filesystem frozen twice needs two.
      const n = backend.thaw(m.dir);
      if (n !== undefined && n > 0) count++;
    }
    const wasFrozen = this.opts.isFrozen();
    // Logged while the log is still held, so it goes out with the held lines in one write.
    log({ kind: 'info', message: `thawed ${count} filesystem(s) (${reason})` });
    if (wasFrozen) {
      this.opts.setFrozen(false);
      const record = this.last;
      if (record && record.end === undefined) {
        record.end = Date.now();
        record.thawed = count;
        record.autoThawed = reason === 'watchdog';
      }
      // The marker only has to outlive the frozen state: a crash before its removal brings the
      // next agent up in frozen mode, which a thaw (a no-op by then) ends. After a thaw command
      // it goes once the reply is out, off the frozen window's tail (~0.3 ms under TCG).
      if (reason === 'command') this.removeMarkerAfterReply();
      else this.removeMarker();
    }
    return count;
  }

  /** A thaw command removes the marker once its reply is written; a freeze or a stop that comes first removes it itself. */
  private removeMarkerAfterReply(): void {
    this.markerStale = true;
    this.opts.afterReply(() => this.removeStaleMarker());
  }

  private removeStaleMarker(): void {
    if (!this.markerStale) return;
    this.markerStale = false;
    this.removeMarker();
  }

  private removeMarker(): void {
    try {
      this.marker.remove();
    } catch (err) {
      this.opts.log({
        kind: 'warning',
        message: `unable to delete ${this.marker.path}, fsfreeze may not function properly: ${errorText(err)}`,
      });
    }
  }

  private expire(limit: number): void {
    void this.lock.run(async () => {
      if (!this.opts.isFrozen()) return;
      this.opts.log({ kind: 'warning', message: `frozen for longer than the ${limit} s limit: thawing (watchdog)` });
      try {
        const n = await this.doThaw('watchdog');
        this.opts.log({ kind: 'warning', message: `watchdog thawed ${n} filesystem(s)` });
      } catch (err) {
        this.opts.log({ kind: 'warning', message: `watchdog thaw: ${(err as Error).message}` });
      }
    });
  }
}
