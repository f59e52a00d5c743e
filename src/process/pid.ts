import { readFileSync } from 'node:fs';

/** What /proc says of a process: its start time (to tell a reused pid), its state letter and its group. */
export interface ProcessInfo {
  /** Clock ticks since boot at which the process started (field 22 of /proc/PID/stat). */
  readonly start: string;
  /** R running, S sleeping, D disk wait, T stopped, t traced, Z zombie, X dead, … */
  readonly state: string;
  /** Its process group. */
  readonly pgrp: number;
}

export function processInfo(pid: number): ProcessInfo | undefined {
  if (!Number.isInteger(pid) || pid <= 0) return undefined;
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    // Fields after the command name (which may contain spaces and parentheses) start after the last ')'.
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    return { state: fields[0]!, pgrp: Number(fields[2]), start: fields[19]! };
  } catch {
    return undefined;
  }
}

let own: string | undefined;

/** This process's start time, read once. */
export function ownStart(): string {
  return (own ??= processInfo(process.pid)?.start ?? '');
}

/**
 * True while process `pid`, started at `start`, still runs: a vanished pid, a
 * pid reused by another process (different start time) and a zombie (exited,
 * not yet reaped by its parent: its files and sockets are already closed) are
 * all dead.
 */
export function processAlive(pid: number, start: string): boolean {
  const p = processInfo(pid);
  return p !== undefined && p.start === start && p.state !== 'Z' && p.state !== 'X';
}

/** "stopped" for a process stopped by a signal (SIGSTOP, ^Z) or a debugger, else undefined. */
export function stoppedNote(pid: number): string | undefined {
  const s = processInfo(pid)?.state;
  return s === 'T' || s === 't' ? 'stopped' : undefined;
}
