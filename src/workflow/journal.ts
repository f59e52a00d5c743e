import { readdirSync, readFileSync } from 'node:fs';
import { mkdir, open, rename, unlink } from 'node:fs/promises';
import { join } from 'node:path';
import { QuiesceError } from '../errors.js';
import type { ConnectorSpec } from '../config/connector.js';
import { ownStart, processAlive } from '../process/pid.js';

/** A guest this process is about to freeze; removed only after its thaw is proven. */
export interface JournalRecord {
  readonly version: 1;
  readonly runId: string;
  readonly job: string;
  readonly guest: string;
  readonly address: string;
  readonly connector: ConnectorSpec;
  readonly pid: number;
  /** The owner's start time (clock ticks since boot), so a reused pid is not mistaken for the owner. */
  readonly pidStart: string;
  readonly startedAt: string;
  /** Filesystems the agent reported frozen, once it has (recovery checks its thaw count against it). */
  readonly frozen?: number;
}

/** True while the process that wrote `r` is still running (not gone, not a reused pid, not a zombie). */
export function ownerAlive(r: Pick<JournalRecord, 'pid' | 'pidStart'>): boolean {
  return processAlive(r.pid, r.pidStart);
}

async function fsyncPath(path: string, flags: string): Promise<void> {
  const fh = await open(path, flags);
  try {
    await fh.sync();
  } finally {
    await fh.close();
  }
}

/**
 * The journal of frozen guests: one file per guest and run under
 * STATEDIR/journal. A record is durable before the freeze (temp file, fsync,
 * rename, fsync of the directory), so a crash of this process is recovered
 * by the next invocation; a failed write leaves no file behind. Every call
 * that can run while a unit is frozen is asynchronous: the event loop never
 * waits on a filesystem (the config refuses a state dir on a filesystem a
 * local unit freezes; this keeps the timers alive whatever happens).
 */
export class Journal {
  readonly dir: string;
  /** Operations on one record run in order (an update never lands after the removal). */
  private readonly chains = new Map<string, Promise<unknown>>();
  /** The directory is made once per journal, not once per record. */
  private made: Promise<unknown> | undefined;
  /** The latest fsync of the directory, and whether it has begun (see syncDir). */
  private dirSync: { started: boolean; done: Promise<void> } | undefined;

  constructor(stateDir: string) {
    this.dir = join(stateDir, 'journal');
  }

  private file(runId: string, guest: string): string {
    return join(this.dir, `${runId}--${encodeURIComponent(guest)}.json`);
  }

  private serial<T>(path: string, op: () => Promise<T>): Promise<T> {
    const next = (this.chains.get(path) ?? Promise.resolve()).then(op, op);
    const tail = next.catch(() => undefined);
    this.chains.set(path, tail);
    void tail.then(() => {
      if (this.chains.get(path) === tail) this.chains.delete(path);
    });
    return next;
  }

  /**
   * Makes every rename done so far in the directory durable. One fsync of the
   * directory covers every rename that completed before it began, so records
   * written at once (a fleet's units) share it: a caller joins the fsync that
   * has not begun yet, or queues one behind the fsync already running (which
   * may have begun before its rename).
   */
  private syncDir(): Promise<void> {
    if (this.dirSync && !this.dirSync.started) return this.dirSync.done;
    const before = this.dirSync?.done.catch(() => undefined);
    const entry: { started: boolean; done: Promise<void> } = { started: false, done: Promise.resolve() };
    entry.done = (async () => {
      await before;
      entry.started = true;
      await fsyncPath(this.dir, 'r');
    })();
    this.dirSync = entry;
    return entry.done;
  }

  /** `durable`: fsync the file and the directory (the record before a freeze must survive a crash). */
  private async writeFile(path: string, record: JournalRecord, durable: boolean): Promise<void> {
    const tmp = `${path}.tmp-${process.pid}`;
    try {
      this.made ??= mkdir(this.dir, { recursive: true, mode: 0o700 }).catch((err: unknown) => {
        this.made = undefined;
        throw err;
      });
      await this.made;
      const fh = await open(tmp, 'w', 0o600);
      try {
        await fh.writeFile(`${JSON.stringify(record)}\n`);
        if (durable) await fh.sync();
      } finally {
        await fh.close();
      }
      await rename(tmp, path);
      if (durable) await this.syncDir();
    } catch (err) {
      await unlink(tmp).catch(() => undefined);
      throw new QuiesceError('JOURNAL', `cannot write the journal record ${path}: ${(err as Error).message}`, {
        cause: err,
      });
    }
  }

  /** Makes the record durable; throws QuiesceError JOURNAL (and leaves nothing) when it cannot. */
  write(r: Omit<JournalRecord, 'version' | 'pid' | 'pidStart' | 'startedAt'>): Promise<JournalRecord> {
    const record: JournalRecord = {
      version: 1,
      ...r,
      pid: process.pid,
      pidStart: ownStart(),
      startedAt: new Date().toISOString(),
    };
    const path = this.file(r.runId, r.guest);
    return this.serial(path, async () => {
      await this.writeFile(path, record, true);
      return record;
    });
  }

  /**
   * Adds what became known after the write (the frozen count); atomic like
   * write, but not fsynced: if a crash loses it, recovery still has the
   * durable record and proves the thaw by status alone.
   */
  update(record: JournalRecord, patch: Pick<JournalRecord, 'frozen'>): Promise<void> {
    const path = this.file(record.runId, record.guest);
    return this.serial(path, () => this.writeFile(path, { ...record, ...patch }, false));
  }

  /**
   * Not fsynced: if the removal is lost in a crash, recovery thaws a guest
   * that is already thawed, which is harmless (the write before the freeze is
   * the one that must be durable).
   */
  remove(runId: string, guest: string): Promise<void> {
    const path = this.file(runId, guest);
    return this.serial(path, async () => {
      try {
        await unlink(path);
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
      }
    });
  }

  /**
   * Every record, readable or not (an unreadable one is reported, never
   * silently dropped). Synchronous: called when a command starts, before
   * anything is frozen.
   */
  list(): { records: JournalRecord[]; unreadable: string[] } {
    let names: string[];
    try {
      names = readdirSync(this.dir).filter((n) => n.endsWith('.json'));
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return { records: [], unreadable: [] };
      throw err;
    }
    const records: JournalRecord[] = [];
    const unreadable: string[] = [];
    for (const n of names.sort()) {
      try {
        const r = JSON.parse(readFileSync(join(this.dir, n), 'utf8')) as JournalRecord;
        if (!isRecord(r)) throw new Error('unknown format');
        records.push(r);
      } catch {
        unreadable.push(join(this.dir, n));
      }
    }
    return { records, unreadable };
  }
}

/** A record recovery can act on: every field it reads is there, with its type. */
function isRecord(r: unknown): r is JournalRecord {
  const x = r as Partial<JournalRecord> | null;
  return (
    typeof x === 'object' &&
    x !== null &&
    x.version === 1 &&
    typeof x.runId === 'string' &&
    typeof x.guest === 'string' &&
    typeof x.address === 'string' &&
    typeof x.connector === 'object' &&
    x.connector !== null &&
    typeof (x.connector as { kind?: unknown }).kind === 'string' &&
    Number.isInteger(x.pid) &&
    typeof x.pidStart === 'string' &&
    (x.frozen === undefined || Number.isInteger(x.frozen))
  );
}
