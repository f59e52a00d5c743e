import { closeSync, fsyncSync, mkdirSync, openSync, readdirSync, readFileSync, unlinkSync, writeSync } from 'node:fs';
import { join } from 'node:path';
import type { ConnectorSpec } from '../guest/connect.js';

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
}

export function processStart(pid: number): string | undefined {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    // Fields after the command name (which may contain spaces) start after the last ')'.
    return stat.slice(stat.lastIndexOf(')') + 2).split(' ')[19];
  } catch {
    return undefined;
  }
}

let ownStart: string | undefined;

/** True while the process that wrote `r` is still running. */
export function ownerAlive(r: JournalRecord): boolean {
  return processStart(r.pid) === r.pidStart;
}

function fsyncDir(dir: string): void {
  const fd = openSync(dir, 'r');
  try {
    fsyncSync(fd);
  } finally {
    closeSync(fd);
  }
}

/**
 * The journal of frozen guests: one file per guest and run under
 * STATEDIR/journal, written and fsynced (file and directory) before the
 * freeze, so a crash of this process is recovered by the next invocation.
 */
export class Journal {
  readonly dir: string;

  constructor(stateDir: string) {
    this.dir = join(stateDir, 'journal');
  }

  private file(runId: string, guest: string): string {
    return join(this.dir, `${runId}--${encodeURIComponent(guest)}.json`);
  }

  write(r: Omit<JournalRecord, 'version' | 'pid' | 'pidStart' | 'startedAt'>): JournalRecord {
    mkdirSync(this.dir, { recursive: true, mode: 0o700 });
    const record: JournalRecord = {
      version: 1,
      ...r,
      pid: process.pid,
      pidStart: (ownStart ??= processStart(process.pid) ?? ''),
      startedAt: new Date().toISOString(),
    };
    const path = this.file(r.runId, r.guest);
    const fd = openSync(path, 'w', 0o600);
    try {
      writeSync(fd, `${JSON.stringify(record)}\n`);
      fsyncSync(fd);
    } finally {
      closeSync(fd);
    }
    fsyncDir(this.dir);
    return record;
  }

  /**
   * Not fsynced: if the removal is lost in a crash, recovery thaws a guest
   * that is already thawed, which is harmless (the write before the freeze is
   * the one that must be durable).
   */
  remove(runId: string, guest: string): void {
    try {
      unlinkSync(this.file(runId, guest));
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
    }
  }

  /** Every record, readable or not (an unreadable one is reported, never silently dropped). */
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
        if (r.version !== 1 || typeof r.guest !== 'string') throw new Error('unknown format');
        records.push(r);
      } catch {
        unreadable.push(join(this.dir, n));
      }
    }
    return { records, unreadable };
  }
}
