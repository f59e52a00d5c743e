import { execa } from 'execa';
import type { Log } from '../log/logger.js';

export interface CommandResult {
  readonly ok: boolean;
  readonly exitCode: number | undefined;
  readonly durationMs: number;
  readonly timedOut: boolean;
  readonly cancelled: boolean;
  /** What went wrong, in one line. */
  readonly error: string | undefined;
}

/** Output kept per stream for the log and report; the rest is dropped. */
const MAX_OUTPUT = 64 * 1024;

/**
 * Runs one argv (never a shell) with a timeout and an abort signal; output
 * goes to the log as typed events. Never throws for the command's failure.
 */
export async function runCommand(
  argv: readonly string[],
  opts: { timeoutMs: number; signal?: AbortSignal; guest: string; step: string; log: Log; env?: NodeJS.ProcessEnv },
): Promise<CommandResult> {
  const t0 = performance.now();
  const [file, ...args] = argv;
  const r = await execa(file!, args, {
    reject: false,
    stdin: 'ignore',
    timeout: opts.timeoutMs,
    ...(opts.signal ? { cancelSignal: opts.signal } : {}),
    forceKillAfterDelay: 2000,
    maxBuffer: MAX_OUTPUT,
    stripFinalNewline: true,
    ...(opts.env ? { env: opts.env } : {}),
  });
  const durationMs = Math.round(performance.now() - t0);
  for (const [stream, text] of [
    ['stdout', r.stdout],
    ['stderr', r.stderr],
  ] as const) {
    if (typeof text === 'string' && text) {
      for (const line of text.split('\n').slice(0, 50))
        opts.log({ kind: 'command-output', guest: opts.guest, step: opts.step, stream, text: line });
    }
  }
  const ok = !r.failed;
  let error: string | undefined;
  if (!ok) {
    if (r.timedOut) error = `${file} timed out after ${opts.timeoutMs} ms`;
    else if (r.isCanceled)
      error = `${file} was cancelled (${String((opts.signal?.reason as Error | undefined)?.message ?? 'aborted')})`;
    else if (r.exitCode !== undefined) error = `${file} exited with status ${r.exitCode}${lastLine(r.stderr)}`;
    else if (r.signal) error = `${file} was killed by ${r.signal}`;
    else error = r.shortMessage ?? `${file} failed`;
  }
  return { ok, exitCode: r.exitCode, durationMs, timedOut: r.timedOut, cancelled: r.isCanceled, error };
}

function lastLine(text: unknown): string {
  if (typeof text !== 'string' || !text.trim()) return '';
  const lines = text.trim().split('\n');
  return `: ${lines[lines.length - 1]!.slice(0, 300)}`;
}
