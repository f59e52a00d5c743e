import type { LogEvent } from '../log/events.js';
import { formatProgress, Throttle, type Clock } from '../log/progress.js';

/** How progress is shown: a live display (a terminal), throttled log events (cron, --json), or not at all (--quiet). */
export type ProgressMode = 'tty' | 'events' | 'off';

/** At most one `progress` log event per guest this often: cron mail stays short. */
export const PROGRESS_EVENT_INTERVAL_MS = 10_000;

/**
 * The interval, from QUIESCE_PROGRESS_INTERVAL_MS when set: for tests only,
 * so that an end-to-end test need not run for minutes.
 */
export function progressIntervalFromEnv(env: NodeJS.ProcessEnv = process.env): number {
  const v = Number(env['QUIESCE_PROGRESS_INTERVAL_MS']);
  return Number.isFinite(v) && v > 0 ? v : PROGRESS_EVENT_INTERVAL_MS;
}

/** Where the display writes (process.stderr; a fake in tests). */
export interface DisplayStream {
  write(text: string): unknown;
  readonly columns?: number | undefined;
}

export interface ProgressSinkOptions {
  readonly mode: ProgressMode;
  /** While true (a frozen window is open) nothing is written: a terminal write can block. */
  readonly hold: () => boolean;
  readonly stream?: DisplayStream;
  readonly intervalMs?: number;
  readonly now?: Clock;
}

interface GuestLine {
  step: string;
  state: 'running' | 'ok' | 'failed';
  progress?: Extract<LogEvent, { kind: 'progress' }> | undefined;
}

const ESC = '\x1b[';

/**
 * Where every log event passes first. On a terminal it keeps one line per
 * guest (its step; a copy's bytes, rate and ETA) redrawn in place below the
 * log's lines; `progress` events go only there. Off a terminal `progress`
 * events go to the log at most once per interval per guest. Nothing is
 * written while `hold()` says a frozen window is open: the display catches up
 * after the thaw, as the logger's held lines do.
 */
export class ProgressSink {
  private readonly guests = new Map<string, GuestLine>();
  private readonly throttle: Throttle;
  private readonly stream: DisplayStream;
  /** Lines of the display on the screen now, above the cursor. */
  private drawn = 0;

  constructor(private readonly o: ProgressSinkOptions) {
    this.throttle = new Throttle(o.intervalMs ?? PROGRESS_EVENT_INTERVAL_MS, o.now);
    this.stream = o.stream ?? process.stderr;
  }

  get mode(): ProgressMode {
    return this.o.mode;
  }

  /** Sees an event before the log; returns whether the log should write it. */
  admit(e: LogEvent): boolean {
    if (e.kind === 'progress') {
      if (this.o.mode === 'events') return this.throttle.take(e.guest);
      if (this.o.mode === 'tty')
        this.update(e.guest, (g) => ((g.step = e.step), (g.state = 'running'), (g.progress = e)));
      return false;
    }
    if (this.o.mode !== 'tty') return true;
    if (e.kind === 'step-start')
      this.update(e.guest, (g) => ((g.step = e.step), (g.state = 'running'), (g.progress = undefined)));
    else if (e.kind === 'step-end')
      this.update(e.guest, (g) => ((g.step = e.step), (g.state = e.ok ? 'ok' : 'failed'), (g.progress = undefined)));
    else if (e.kind === 'run-end') this.end();
    return true;
  }

  /** For the logger: takes the display away, lets the line be written, draws the display again. */
  readonly around = (write: () => void): void => {
    if (this.o.mode !== 'tty') return write();
    this.erase();
    write();
    this.draw();
  };

  /** After a frozen window closed: draws what changed meanwhile. */
  resume(): void {
    if (this.o.mode === 'tty') this.draw();
  }

  /** Takes the display away for good (before the result goes to stdout, or an error to stderr). */
  end(): void {
    if (this.o.mode !== 'tty') return;
    this.erase();
    this.guests.clear();
  }

  private update(guest: string, change: (g: GuestLine) => void): void {
    let g = this.guests.get(guest);
    if (!g) {
      g = { step: '', state: 'running' };
      this.guests.set(guest, g);
    }
    change(g);
    this.draw();
  }

  /** The display's lines, cut to the terminal's width so that none wraps (the cursor-up count relies on it). */
  lines(): string[] {
    // A terminal that reports no size (0 columns) gets 80.
    const width = Math.max(20, (this.stream.columns || 80) - 1);
    const name = Math.max(...[...this.guests.keys()].map((k) => k.length));
    return [...this.guests].map(([guest, g]) => {
      const state = g.state === 'ok' ? ' ok' : g.state === 'failed' ? ' FAILED' : g.progress ? '' : '…';
      const copy = g.progress ? `  ${formatProgress(g.progress)}` : '';
      const line = `  ${guest.padEnd(name)}  ${g.step}${state}${copy}`;
      return line.length > width ? `${line.slice(0, width - 1)}…` : line;
    });
  }

  private draw(): void {
    if (this.o.hold() || this.guests.size === 0) return;
    const up = this.drawn ? `${ESC}${this.drawn}A` : '';
    const lines = this.lines();
    this.stream.write(`${up}\r${ESC}J${lines.join('\n')}\n`);
    this.drawn = lines.length;
  }

  private erase(): void {
    if (this.drawn === 0 || this.o.hold()) return;
    this.stream.write(`${ESC}${this.drawn}A\r${ESC}J`);
    this.drawn = 0;
  }
}
