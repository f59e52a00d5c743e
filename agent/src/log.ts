import { appendFileSync, openSync, closeSync } from 'node:fs';

/** Everything the agent logs, keyed on `kind`. */
export type AgentLogEvent =
  | { kind: 'started'; version: string; method: string; path: string; frozen: boolean }
  | { kind: 'stopping'; reason: string }
  | { kind: 'internal-error'; error: string }
  | { kind: 'client-connected' }
  | { kind: 'client-gone'; reason: string }
  | { kind: 'channel-waiting'; reason: string }
  | { kind: 'request'; command: string }
  | { kind: 'parse-error'; desc: string }
  | { kind: 'write-failed'; reason: string }
  | { kind: 'warning'; message: string }
  | { kind: 'info'; message: string }
  | { kind: 'debug'; message: string };

type Level = 'critical' | 'warning' | 'info' | 'debug';

const LEVEL: Record<AgentLogEvent['kind'], Level> = {
  started: 'info',
  stopping: 'info',
  'internal-error': 'critical',
  'client-connected': 'debug',
  'client-gone': 'debug',
  'channel-waiting': 'debug',
  request: 'debug',
  'parse-error': 'debug',
  'write-failed': 'warning',
  warning: 'warning',
  info: 'info',
  debug: 'debug',
};

function text(e: AgentLogEvent): string {
  switch (e.kind) {
    case 'started':
      return `quiesce-agent ${e.version} listening (${e.method} ${e.path})${e.frozen ? ', in frozen mode' : ''}`;
    case 'stopping':
      return `stopping: ${e.reason}`;
    case 'internal-error':
      return `internal error, exiting: ${e.error}`;
    case 'client-connected':
      return 'client connected';
    case 'client-gone':
      return `client gone: ${e.reason}`;
    case 'channel-waiting':
      return `channel not ready: ${e.reason}`;
    case 'request':
      return `running command ${e.command}`;
    case 'parse-error':
      return `bad request: ${e.desc}`;
    case 'write-failed':
      return `error sending response: ${e.reason}`;
    case 'warning':
    case 'info':
    case 'debug':
      return e.message;
  }
}

function line(now: number, level: Level, event: AgentLogEvent): string {
  return `${Math.floor(now / 1000)}.${String((now % 1000) * 1000).padStart(6, '0')}: ${level}: ${text(event)}\n`;
}

/** Lines kept while frozen; older ones are dropped (and counted) past this. */
export const FROZEN_BUFFER_LINES = 1000;

/**
 * The agent's one log function. Writes `seconds.micros: level: text` lines to
 * stderr or the logfile. While filesystems are frozen nothing is written (a
 * write to a frozen filesystem would block the agent): lines wait in a bounded
 * buffer and are written after the thaw.
 */
export class AgentLog {
  /** Events kept while frozen, formatted only when written (a line's formatting is measurable in the window). */
  private held: { now: number; level: Level; event: AgentLogEvent }[] | undefined;
  private dropped = 0;
  private fd: number | undefined;
  readonly captured: AgentLogEvent[] = [];

  constructor(
    private readonly verbose: boolean,
    private logfile: string | undefined,
    private readonly capture = false,
  ) {}

  readonly log = (event: AgentLogEvent): void => {
    if (this.capture) this.captured.push(event);
    const level = LEVEL[event.kind];
    if (level === 'debug' && !this.verbose) return;
    const now = Date.now();
    if (this.held) {
      if (this.held.length >= FROZEN_BUFFER_LINES) {
        this.held.shift();
        this.dropped++;
      }
      this.held.push({ now, level, event });
      return;
    }
    this.write(line(now, level, event));
  };

  /** Stops writing (before a freeze, or at start in frozen mode). */
  hold(): void {
    this.held ??= [];
  }

  /** Writes what was held (after the thaw) and resumes. */
  release(): void {
    const held = this.held;
    if (!held) return;
    this.held = undefined;
    if (this.dropped > 0) {
      this.write(`${held.length} log lines kept, ${this.dropped} older ones dropped while frozen\n`);
      this.dropped = 0;
    }
    // One write: the thaw's tail is the frozen window's, and a write per line adds to it.
    if (held.length > 0) this.write(held.map((h) => line(h.now, h.level, h.event)).join(''));
  }

  private write(line: string): void {
    try {
      if (this.logfile === undefined) {
        process.stderr.write(line);
        return;
      }
      this.fd ??= openSync(this.logfile, 'a', 0o600);
      appendFileSync(this.fd, line);
    } catch {
      // Logging must never take the agent down.
    }
  }

  close(): void {
    if (this.fd !== undefined) closeSync(this.fd);
    this.fd = undefined;
  }
}
