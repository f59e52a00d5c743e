import type { Log } from './logger.js';

/** A clock in milliseconds (performance.now() or Date.now(); tests pass their own). */
export type Clock = () => number;

/** Rate and time left of a copy, from its samples. */
export interface Rate {
  /** Bytes per second over the meter's window; null until two samples span enough time. */
  readonly rateBytesPerSec: number | null;
  /** Seconds left at that rate (0 when done); null while the rate is unknown or zero. */
  readonly etaSec: number | null;
}

/** Shortest span of samples a rate is computed from: shorter spans give wild figures. */
const MIN_SPAN_MS = 500;

/**
 * The rate of a copy over a sliding window of samples (the last `windowMs`),
 * so that a stall shows within the window and a burst does not last. A
 * sample whose `done` went down (a new disk, a restarted copy) starts over.
 */
export class RateMeter {
  private samples: { at: number; done: number }[] = [];

  constructor(private readonly windowMs = 10_000) {}

  /** Adds a sample taken at `at` (ms) and returns the rate and ETA from the window. */
  add(done: number, total: number, at: number): Rate {
    const last = this.samples.at(-1);
    if (last && (done < last.done || at < last.at)) this.samples = [];
    this.samples.push({ at, done });
    // Keep the newest sample at or before the window's start, so the span covers the whole window.
    while (this.samples.length > 2 && this.samples[1]!.at <= at - this.windowMs) this.samples.shift();
    const first = this.samples[0]!;
    const span = at - first.at;
    if (done >= total && total > 0)
      return { rateBytesPerSec: span >= MIN_SPAN_MS ? rate(done - first.done, span) : null, etaSec: 0 };
    if (span < MIN_SPAN_MS) return { rateBytesPerSec: null, etaSec: null };
    const r = rate(done - first.done, span);
    return { rateBytesPerSec: r, etaSec: r > 0 ? Math.ceil((total - done) / r) : null };
  }
}

const rate = (bytes: number, ms: number): number => Math.round((bytes * 1000) / ms);

/** True at most once per `intervalMs` per key (the first call for a key is always true). */
export class Throttle {
  private readonly last = new Map<string, number>();

  constructor(
    private readonly intervalMs: number,
    private readonly now: Clock = () => performance.now(),
  ) {}

  /** Whether `key` may go now; if so, the interval starts again from now. */
  take(key: string): boolean {
    const t = this.now();
    const prev = this.last.get(key);
    if (prev !== undefined && t - prev < this.intervalMs) return false;
    this.last.set(key, t);
    return true;
  }

  forget(key: string): void {
    this.last.delete(key);
  }
}

/**
 * A copy's progress reporter: each call with bytes done of total logs a
 * `progress` event with the rate and ETA so far. It logs every sample: the
 * sinks decide how often to show one (a terminal redraws, a log throttles).
 */
export function progressReporter(
  log: Log,
  guest: string,
  step: string,
  now: Clock = () => performance.now(),
): (done: number, total: number, stepNow?: string) => void {
  const meter = new RateMeter();
  return (done, total, stepNow) => {
    const { rateBytesPerSec, etaSec } = meter.add(done, total, now());
    log({ kind: 'progress', guest, step: stepNow ?? step, done, total, rateBytesPerSec, etaSec });
  };
}

/** Bytes for a person, in binary units (1.5 GiB). */
export function formatSize(n: number): string {
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB', 'PiB'];
  let i = 0;
  let v = n;
  while (v >= 1024 && i < units.length - 1) {
    v /= 1024;
    i++;
  }
  return i === 0 ? `${n} B` : `${v < 10 ? v.toFixed(1) : Math.round(v)} ${units[i]}`;
}

/** Seconds as m:ss or h:mm:ss. */
export function formatEta(sec: number): string {
  const s = Math.max(0, Math.round(sec));
  const h = Math.floor(s / 3600);
  const m = Math.floor((s % 3600) / 60);
  const ss = String(s % 60).padStart(2, '0');
  return h > 0 ? `${h}:${String(m).padStart(2, '0')}:${ss}` : `${m}:${ss}`;
}

/** "1.5 GiB of 4.0 GiB (37%), 120 MiB/s, ETA 0:24": the copy part of a progress line. */
export function formatProgress(p: {
  readonly done: number;
  readonly total: number;
  readonly rateBytesPerSec: number | null;
  readonly etaSec: number | null;
}): string {
  const pct = p.total > 0 ? Math.floor((p.done * 100) / p.total) : 0;
  const parts = [`${formatSize(p.done)} of ${formatSize(p.total)} (${pct}%)`];
  if (p.rateBytesPerSec !== null) parts.push(`${formatSize(p.rateBytesPerSec)}/s`);
  if (p.etaSec !== null && p.done < p.total) parts.push(`ETA ${formatEta(p.etaSec)}`);
  return parts.join(', ');
}
