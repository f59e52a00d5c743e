import { spawn } from 'node:child_process';
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

let warm: Promise<void> | undefined;

/**
 * The first child a process spawns costs ~10 ms more than later ones (lazy
 * module and libuv set-up). Paying that once before a freeze keeps it out of
 * the frozen window.
 */
export function warmUpSpawn(): Promise<void> {
  warm ??= execa('true', [], { reject: false, stdin: 'ignore', maxBuffer: MAX_OUTPUT }).then(() => undefined);
  return warm;
}

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

/**
 * The command that runs inside the frozen window (the snapshot, `freeze -- CMD`):
 * node's spawn directly, because execa costs ~2 ms more per spawn (measured,
 * bench/frozen-window.ts) and every millisecond here is a millisecond frozen.
 * Same contract as runCommand: timeout and abort kill it (SIGTERM, SIGKILL 2 s
 * later), bounded output, never throws. `inherit` passes the terminal through.
 */
export function runInWindow(
  argv: readonly string[],
  opts: {
    timeoutMs: number;
    signal?: AbortSignal;
    guest: string;
    step: string;
    log: Log;
    stdio?: 'capture' | 'inherit';
  },
): Promise<CommandResult> {
  const t0 = performance.now();
  const [file, ...args] = argv;
  return new Promise<CommandResult>((resolve) => {
    const inherit = opts.stdio === 'inherit';
    const child = spawn(file!, args, {
      stdio: inherit ? ['ignore', 'inherit', 'inherit'] : ['ignore', 'pipe', 'pipe'],
    });
    const output = { stdout: '', stderr: '' };
    for (const stream of ['stdout', 'stderr'] as const) {
      child[stream]?.setEncoding('utf8');
      child[stream]?.on('data', (d: string) => {
        if (output[stream].length < MAX_OUTPUT) output[stream] += d.slice(0, MAX_OUTPUT - output[stream].length);
      });
    }
    let timedOut = false;
    let cancelled = false;
    let killTimer: NodeJS.Timeout | undefined;
    const kill = (): void => {
      child.kill('SIGTERM');
      killTimer ??= setTimeout(() => child.kill('SIGKILL'), 2000);
    };
    const timer = setTimeout(() => {
      timedOut = true;
      kill();
    }, opts.timeoutMs);
    const onAbort = (): void => {
      cancelled = true;
      kill();
    };
    if (opts.signal?.aborted) onAbort();
    opts.signal?.addEventListener('abort', onAbort, { once: true });
    let spawnError: Error | undefined;
    child.once('error', (err) => (spawnError = err));
    child.once('close', (code, sig) => {
      clearTimeout(timer);
      clearTimeout(killTimer);
      opts.signal?.removeEventListener('abort', onAbort);
      for (const stream of ['stdout', 'stderr'] as const) {
        for (const line of output[stream].split('\n').filter(Boolean).slice(0, 50)) {
          opts.log({ kind: 'command-output', guest: opts.guest, step: opts.step, stream, text: line });
        }
      }
      const ok = !spawnError && !timedOut && !cancelled && code === 0;
      let error: string | undefined;
      if (!ok) {
        if (spawnError) error = `${file}: ${spawnError.message}`;
        else if (timedOut) error = `${file} timed out after ${opts.timeoutMs} ms`;
        else if (cancelled)
          error = `${file} was cancelled (${String((opts.signal?.reason as Error | undefined)?.message ?? 'aborted')})`;
        else if (code !== null) error = `${file} exited with status ${code}${lastLine(output.stderr)}`;
        else error = `${file} was killed by ${sig}`;
      }
      resolve({
        ok,
        exitCode: code ?? undefined,
        durationMs: Math.round(performance.now() - t0),
        timedOut,
        cancelled,
        error,
      });
    });
  });
}
