import { QuiesceError } from '../errors.js';

const UNITS = { ms: 1, s: 1000, m: 60_000, h: 3_600_000, d: 86_400_000 } as const;

const DURATION_TEXT = /^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*$/;

/** What a duration may look like, for error messages. */
export const DURATION_FORMS = 'use seconds or "500ms", "10s", "2m", "1h", "7d"';

/**
 * A duration in config: seconds as a number, or a string like "500ms", "10s", "2m", "1h", "7d".
 * A pure parser: it says nothing about sensible ranges (see durationProblem), only that the
 * result is a finite, non-negative number of milliseconds.
 */
export function parseDuration(value: number | string): number | undefined {
  let ms: number;
  if (typeof value === 'number') {
    if (!Number.isFinite(value) || value < 0) return undefined;
    ms = Math.round(value * 1000);
  } else {
    const m = DURATION_TEXT.exec(value);
    if (!m) return undefined;
    ms = Math.round(Number(m[1]) * UNITS[(m[2] ?? 's') as keyof typeof UNITS]);
  }
  // 1e300 s is finite, but 1e300 * 1000 ms or a 400-digit string is not.
  return Number.isFinite(ms) ? ms : undefined;
}

export function formatDuration(ms: number): string {
  if (ms % 3_600_000 === 0 && ms > 0) return `${ms / 3_600_000}h`;
  if (ms % 60_000 === 0 && ms > 0) return `${ms / 60_000}m`;
  if (ms % 1000 === 0) return `${ms / 1000}s`;
  return `${ms}ms`;
}

/** Inclusive bounds of one duration setting, in milliseconds. */
export interface DurationRange {
  readonly min: number;
  readonly max: number;
}

const DAY = 86_400_000;

/** Longest budget: a day, well inside quiesce-agent's watchdog range (1..2147483 s, armed at budget + 30 s). */
export const MAX_BUDGET_MS = DAY;
/** Longest wait for another run of the same job (lockWait, `--wait`). */
export const MAX_WAIT_MS = DAY;
/** Longest agent command timeout (connect, freeze, thaw, command): hooks get 6x it, a thaw is retried 4x. */
export const MAX_AGENT_TIMEOUT_MS = DAY;
/** Longest step timeout (backup, verify, snapshot): under Node's setTimeout limit (2^31-1 ms, ~24.8 d), past which a timer fires at once. */
export const MAX_STEP_MS = 7 * DAY;

/** The bounds per kind of setting; only a wait may be 0 (do not wait). */
export const DURATION_RANGES = {
  /** How long a guest or group may stay frozen. */
  budget: { min: 1, max: MAX_BUDGET_MS },
  /** One agent command: connect, freeze, thaw, others. */
  agent: { min: 1, max: MAX_AGENT_TIMEOUT_MS },
  /** Backup, verify and snapshot steps (a QMP copy may take long). */
  step: { min: 1, max: MAX_STEP_MS },
  /** Waiting for another run of the same job. */
  lockWait: { min: 0, max: MAX_WAIT_MS },
  /** A backup chain's age at which `auto` starts a new one (an hour to about a year). */
  chainAge: { min: 3_600_000, max: 400 * DAY },
} as const satisfies Record<string, DurationRange>;

function formatLimit(ms: number): string {
  return ms >= 2 * DAY && ms % DAY === 0 ? `${ms / DAY}d` : formatDuration(ms);
}

function show(value: unknown): string {
  return typeof value === 'string' ? JSON.stringify(value) : String(value);
}

/** Why `value` is not a duration within `range`, or its milliseconds. */
export function checkDuration(value: unknown, range: DurationRange): { ms: number } | { problem: string } {
  const ms = typeof value === 'number' || typeof value === 'string' ? parseDuration(value) : undefined;
  if (ms !== undefined && ms >= range.min && ms <= range.max) return { ms };
  const bounds = `must be between ${formatLimit(range.min)} and ${formatLimit(range.max)} (got ${show(value)})`;
  if (ms !== undefined) return { problem: bounds };
  // -5, 1e308 or a 400-digit string are durations outside the range, not typos.
  const wellFormed =
    typeof value === 'number'
      ? !Number.isNaN(value)
      : typeof value === 'string' && DURATION_TEXT.test(value.replace(/^\s*-/, ''));
  return { problem: wellFormed ? bounds : `not a duration: ${show(value)} (${DURATION_FORMS})` };
}

/**
 * A duration given on the command line (`--wait 30`, `--budget 2m`): seconds or
 * a duration string, within `range`. Throws a CONFIG error naming the flag.
 */
export function parseCliDuration(flag: string, text: string, range: DurationRange): number {
  const r = checkDuration(text, range);
  if ('problem' in r) throw new QuiesceError('CONFIG', `${flag}: ${r.problem}`);
  return r.ms;
}
