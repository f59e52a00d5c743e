import type { Logger } from 'winston';
import { describe, levelOf, type LogEvent } from './events.js';

export type Log = (event: LogEvent) => void;

export interface LoggerOptions {
  /** JSON lines (cron, CI) or readable lines (a terminal). Default: JSON when stderr is not a TTY. */
  readonly json?: boolean;
  readonly verbose?: boolean;
  /** Also keep every event (tests, reports). */
  readonly capture?: LogEvent[];
  /**
   * While true, nothing is written (in --local mode the log may sit on a
   * filesystem being frozen): events wait in memory and are written after.
   */
  readonly hold?: () => boolean;
  /**
   * Wraps each write to stderr (a live display on the same terminal takes its
   * lines away first and draws them again after).
   */
  readonly around?: (write: () => void) => void;
}

/** The host's log function; `flush` writes what waited, `ready` resolves once winston is loaded. */
export type HostLog = Log & { flush(): void; readonly ready: () => Promise<void> };

/**
 * The host's one log function. winston writes to stderr: JSON lines with the
 * event's fields when not on a terminal, readable lines when on one.
 * winston is loaded on the first event (or `ready()`), not with the CLI: a
 * command that logs nothing never loads it, and `freeze --local` loads it while
 * its agent starts. Events wait in memory until it is; a frozen window opens
 * only after `ready()` (a module loading inside the window would block it).
 */
export function createLogger(opts: LoggerOptions = {}): HostLog {
  const json = opts.json ?? !process.stderr.isTTY;
  let logger: Logger | undefined;
  let loading: Promise<void> | undefined;
  const held: LogEvent[] = [];
  const writeNow = (e: LogEvent): void => {
    // winston appends a `message` member of the metadata to the message: the event's own goes in as `text`.
    const { message, ...rest } = e as LogEvent & { message?: unknown };
    logger!.log(levelOf(e), describe(e), message === undefined ? rest : { ...rest, text: message });
  };
  const { around } = opts;
  const level = opts.verbose ? 3 : 2;
  const RANK = { error: 0, warn: 1, info: 2, debug: 3 } as const;
  // winston's Console transport writes synchronously, so a wrapper sees the write happen inside it.
  const write = around
    ? (e: LogEvent): void => {
        if (RANK[levelOf(e)] <= level) around(() => writeNow(e));
      }
    : writeNow;
  const flush = (): void => {
    if (logger) for (const h of held.splice(0)) write(h);
  };
  const ready = (): Promise<void> =>
    (loading ??= import('winston').then(({ default: winston }) => {
      logger = winston.createLogger({
        level: opts.verbose ? 'debug' : 'info',
        transports: [new winston.transports.Console({ stderrLevels: ['error', 'warn', 'info', 'debug'] })],
        format: json
          ? winston.format.combine(winston.format.timestamp(), winston.format.json())
          : winston.format.printf(
              (info) => `${String(info.level) === 'info' ? '' : `${String(info.level)}: `}${String(info.message)}`,
            ),
      });
      if (!opts.hold?.()) flush();
    }));
  const log = (e: LogEvent): void => {
    opts.capture?.push(e);
    if (!logger || opts.hold?.()) {
      if (held.length < 10_000) held.push(e);
      if (!logger) void ready();
      return;
    }
    flush();
    write(e);
  };
  return Object.assign(log, { flush, ready });
}

/** A logger that only records (for tests). */
export function captureLogger(into: LogEvent[] = []): Log & { events: LogEvent[] } {
  const log = ((e: LogEvent) => void into.push(e)) as Log & { events: LogEvent[] };
  log.events = into;
  return log;
}
