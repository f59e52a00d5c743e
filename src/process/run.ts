import { spawn, type ChildProcess } from 'node:child_process';
import type { Log } from '../log/logger.js';
import { GroupTerminator, liveMembers } from './group.js';
import { BoundedOutput, linesToLog } from './output.js';

export { killGroup } from './group.js';
export { MAX_LOGGED_LINES, MAX_OUTPUT_BYTES } from './output.js';

/** Default time between SIGTERM and SIGKILL to a command's process group. */
export const DEFAULT_GRACE_MS = 1500;
/** setTimeout's ceiling; a longer (or infinite) budget means no timer. */
const MAX_TIMER_MS = 2 ** 31 - 1;

export interface ProcessOptions {
  readonly timeoutMs: number;
  readonly signal?: AbortSignal | undefined;
  /** Between SIGTERM and SIGKILL to the group (default 1500 ms). */
  readonly graceMs?: number | undefined;
  /** `capture` (default): output is kept and logged; `inherit`: passed through to our stdout/stderr. */
  readonly stdio?: 'capture' | 'inherit' | undefined;
  /** The child's whole environment (default: ours). */
  readonly env?: NodeJS.ProcessEnv | undefined;
  readonly guest: string;
  readonly step: string;
  readonly log: Log;
}

export interface ProcessResult {
  readonly ok: boolean;
  readonly exitCode: number | undefined;
  readonly signal: NodeJS.Signals | undefined;
  /** From just before the spawn to the direct child's exit. */
  readonly durationMs: number;
  readonly timedOut: boolean;
  readonly cancelled: boolean;
  /** What went wrong, in one line. */
  readonly error: string | undefined;
  /** The group still had live processes when the direct child exited (they are being terminated). */
  readonly leftovers: boolean;
  /** The direct child's pid (= its process group id); undefined when it was never started. */
  readonly pid: number | undefined;
  /** Captured output (first 64 KiB, one final newline stripped); '' with `inherit`. */
  readonly stdout: string;
  readonly stderr: string;
}

let warm: Promise<void> | undefined;

/**
 * The first child a process spawns costs ~10 ms more than later ones (lazy
 * module and libuv set-up). Running `true` through the same path once, before
 * a freeze, keeps that out of the frozen window. Never rejects.
 */
export function warmUpSpawn(): Promise<void> {
  warm ??= runProcess(['true'], { timeoutMs: 5000, guest: '', step: 'warm-up', log: () => {} }).then(() => undefined);
  return warm;
}

function reasonText(signal: AbortSignal | undefined): string {
  const reason: unknown = signal?.reason;
  if (reason instanceof Error) return reason.message;
  return reason === undefined ? 'aborted' : String(reason);
}

/**
 * Runs one argv (never through a shell) in its own process group, for both
 * the in-window snapshot command and the commands outside the window.
 *
 * On timeout or abort the whole group gets SIGTERM, then SIGKILL after
 * `graceMs`. The promise settles when the direct child exits, not when its
 * inherited pipes close: a grandchild still holding them is terminated the
 * same way (`leftovers: true`) and our pipe ends are closed. An already
 * aborted signal spawns nothing. Never throws for the command's failure.
 */
export function runProcess(argv: readonly string[], opts: ProcessOptions): Promise<ProcessResult> {
  const t0 = performance.now();
  const file = argv[0] ?? '';
  const graceMs = opts.graceMs ?? DEFAULT_GRACE_MS;
  const inherit = opts.stdio === 'inherit';
  const failed = (fields: Partial<ProcessResult> & { error: string }): ProcessResult => ({
    ok: false,
    exitCode: undefined,
    signal: undefined,
    durationMs: Math.round(performance.now() - t0),
    timedOut: false,
    cancelled: false,
    leftovers: false,
    pid: undefined,
    stdout: '',
    stderr: '',
    ...fields,
  });

  if (!file) return Promise.resolve(failed({ error: 'no command to run (empty argv)' }));
  if (opts.signal?.aborted) {
    return Promise.resolve(failed({ cancelled: true, error: `${file} was cancelled (${reasonText(opts.signal)})` }));
  }

  let child: ChildProcess;
  try {
    child = spawn(file, argv.slice(1), {
      // Own process group (pgid = pid), so a budget or a signal ends all of it.
      detached: true,
      stdio: inherit ? ['ignore', 'inherit', 'inherit'] : ['ignore', 'pipe', 'pipe'],
      ...(opts.env ? { env: opts.env } : {}),
    });
  } catch (err) {
    return Promise.resolve(failed({ error: `${file}: ${(err as Error).message}` }));
  }

  return new Promise<ProcessResult>((resolve) => {
    const output = { stdout: new BoundedOutput(), stderr: new BoundedOutput() };
    for (const name of ['stdout', 'stderr'] as const) {
      const stream = child[name];
      stream?.on('data', (chunk: Buffer) => output[name].push(chunk));
      stream?.on('error', () => {}); // EPIPE/ECONNRESET after we closed our end
    }

    const pid = child.pid;
    let timedOut = false;
    let cancelled = false;
    let settled = false;
    const group =
      pid === undefined
        ? undefined
        : new GroupTerminator(pid, graceMs, (live) => {
            opts.log({
              kind: 'warning',
              guest: opts.guest,
              message: `${opts.step}: ${file}: ${live} process(es) ignored SIGTERM for ${graceMs} ms; sent SIGKILL to group ${pid}`,
            });
          });

    const budget = Number.isFinite(opts.timeoutMs)
      ? setTimeout(
          () => {
            timedOut = true;
            group?.terminate();
          },
          Math.min(Math.max(opts.timeoutMs, 0), MAX_TIMER_MS),
        )
      : undefined;
    const onAbort = (): void => {
      if (timedOut) return;
      cancelled = true;
      group?.terminate();
    };
    opts.signal?.addEventListener('abort', onAbort, { once: true });

    const finish = (result: Omit<ProcessResult, 'durationMs' | 'pid' | 'stdout' | 'stderr'>): void => {
      if (settled) return;
      settled = true;
      clearTimeout(budget);
      opts.signal?.removeEventListener('abort', onAbort);
      child.removeAllListeners('exit');
      // Whatever still holds our pipe ends (a grandchild) must not keep this step, or the loop, alive.
      child.stdout?.destroy();
      child.stderr?.destroy();
      const stdout = inherit ? '' : output.stdout.text();
      const stderr = inherit ? '' : output.stderr.text();
      for (const [stream, text] of [
        ['stdout', stdout],
        ['stderr', stderr],
      ] as const) {
        for (const line of linesToLog(text))
          opts.log({ kind: 'command-output', guest: opts.guest, step: opts.step, stream, text: line });
      }
      resolve({ ...result, durationMs: Math.round(exitedAt - t0), pid, stdout, stderr });
    };

    let exitedAt = t0;
    child.on('error', (err) => {
      // After a successful spawn, 'error' only concerns kill/IPC, which we do not use through child.
      if (pid !== undefined) return;
      exitedAt = performance.now();
      group?.stop();
      finish({
        ok: false,
        exitCode: undefined,
        signal: undefined,
        timedOut: false,
        cancelled: false,
        leftovers: false,
        error: `${file}: ${err.message}`,
      });
    });

    child.once('exit', (code, sig) => {
      if (pid === undefined) return; // a failed spawn: 'error' reports it
      exitedAt = performance.now();
      clearTimeout(budget);
      opts.signal?.removeEventListener('abort', onAbort);
      // After a SIGKILL to the group the rest is already dying (or stuck in D state, beyond any signal).
      const leftovers = group !== undefined && !group.killSent && liveMembers(group.pgid, 1) > 0;
      if (group && leftovers) {
        opts.log({
          kind: 'warning',
          guest: opts.guest,
          message: `${opts.step}: ${file} exited but left processes running in its group ${group.pgid}; terminating them (SIGTERM, SIGKILL after ${graceMs} ms)`,
        });
        group.terminate();
        group.watch();
      } else {
        group?.stop();
      }
      let error: string | undefined;
      if (timedOut) error = `${file} timed out after ${opts.timeoutMs} ms`;
      else if (cancelled) error = `${file} was cancelled (${reasonText(opts.signal)})`;
      else if (code !== null && code !== 0) {
        const last = inherit ? undefined : output.stderr.lastLine();
        error = `${file} exited with status ${code}${last ? `: ${last}` : ''}`;
      } else if (code === null) error = `${file} was killed by ${sig ?? 'a signal'}`;
      const result = {
        ok: error === undefined,
        exitCode: code ?? undefined,
        signal: sig ?? undefined,
        timedOut,
        cancelled,
        leftovers,
        error,
      };
      // The child wrote its last output before it exited: one turn of the loop reads what is in the pipes.
      if (inherit) finish(result);
      else setImmediate(() => finish(result));
    });
  });
}
