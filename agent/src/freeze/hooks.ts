import { spawn } from 'node:child_process';
import { accessSync, constants, readdirSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { errorText } from '../errno.js';
import type { AgentLogEvent } from '../log.js';

export type HookPhase = 'freeze' | 'thaw';

/** A hook failure; the message is the error reply's text. */
export class HookError extends Error {}

/** Bytes of one hook run's output kept for the log; the rest is counted, not kept. */
export const HOOK_OUTPUT_LIMIT = 64 * 1024;

/** How long a hook's output pipes may stay open after it exited (a background child holding them). */
const PIPE_GRACE_MS = 200;

export interface HookOptions {
  /** A script, or a directory of scripts (this agent's extension); undefined: no hooks. */
  readonly path: string | undefined;
  /** Each script's limit per run; 0: none (the reference has none). */
  readonly timeoutMs: number;
  readonly log: (event: AgentLogEvent) => void;
}

/** The outcome of a freeze phase: the scripts that were started (the failing one included). */
export interface FreezePhase {
  readonly started: readonly string[];
  readonly error?: HookError;
}

/** What the freeze controller needs of the hooks. */
export interface HookRunner {
  /** A hook path is set (whether or not anything there runs). */
  readonly configured: boolean;
  /** Runs the freeze phase, stopping at the first failure. */
  freeze(): Promise<FreezePhase>;
  /** Runs the thaw phase (all of it, or the scripts `only` names), returning the first failure. */
  thaw(only?: readonly string[]): Promise<HookError | undefined>;
}

/**
 * The fsfreeze hook as the reference runs it (`HOOK freeze` before freezing,
 * `HOOK thaw` after thawing, own session, no stdin), plus: a directory runs
 * its executables in name order for freeze and in reverse for thaw; each run
 * has a timeout after which its process group is killed; stdout and stderr
 * go to the agent's log (held while frozen) instead of /dev/null.
 */
export class FreezeHooks implements HookRunner {
  constructor(private readonly opts: HookOptions) {}

  get configured(): boolean {
    return this.opts.path !== undefined;
  }

  /**
   * The scripts to run, resolved on every freeze (a directory may change
   * between freezes). Throws the reference's "can't access" error.
   */
  scripts(): { readonly scripts: string[]; readonly directory: boolean } {
    const path = this.opts.path;
    if (path === undefined) return { scripts: [], directory: false };
    try {
      accessSync(path, constants.X_OK);
      if (!statSync(path).isDirectory()) return { scripts: [path], directory: false };
      const scripts = readdirSync(path)
        .filter((name) => !name.startsWith('.'))
        .sort((a, b) => Buffer.compare(Buffer.from(a), Buffer.from(b)))
        .map((name) => join(path, name))
        .filter(isExecutableFile);
      return { scripts, directory: true };
    } catch (err) {
      throw new HookError(`can't access fsfreeze hook '${path}': ${errorText(err)}`);
    }
  }

  /** Runs the freeze phase in order, stopping at the first failure. */
  async freeze(): Promise<FreezePhase> {
    let resolved;
    try {
      resolved = this.scripts();
    } catch (err) {
      return { started: [], error: err as HookError };
    }
    const started: string[] = [];
    for (const script of resolved.scripts) {
      started.push(script);
      const error = await this.run(script, 'freeze', resolved.directory);
      if (error) return { started, error };
    }
    return { started };
  }

  /**
   * Runs the thaw phase in reverse order, every script even when one fails;
   * returns the first failure. `only` limits it to the scripts a failed
   * freeze phase started.
   */
  async thaw(only?: readonly string[]): Promise<HookError | undefined> {
    let resolved;
    try {
      resolved = only ? { scripts: [...only], directory: this.isDirectory() } : this.scripts();
    } catch (err) {
      return err as HookError;
    }
    let first: HookError | undefined;
    for (const script of [...resolved.scripts].reverse()) {
      const error = await this.run(script, 'thaw', resolved.directory);
      first ??= error;
    }
    return first;
  }

  private isDirectory(): boolean {
    try {
      return this.opts.path !== undefined && statSync(this.opts.path).isDirectory();
    } catch {
      return false;
    }
  }

  /** One script run; undefined on success. */
  private run(script: string, phase: HookPhase, directory: boolean): Promise<HookError | undefined> {
    const { log, timeoutMs } = this.opts;
    const which = directory ? ` (${script})` : '';
    log({ kind: 'info', message: `executing fsfreeze hook ${script} with arg '${phase}'` });
    return new Promise((resolve) => {
      let child;
      try {
        child = spawn(script, [phase], { detached: true, stdio: ['ignore', 'pipe', 'pipe'] });
      } catch (err) {
        // Like the reference's child when exec fails: _exit(EXIT_FAILURE).
        log({ kind: 'warning', message: `fsfreeze hook ${script}: ${(err as Error).message}` });
        resolve(new HookError(`fsfreeze hook has failed with status 1${which}`));
        return;
      }
      const budget = { kept: 0, dropped: 0 };
      const out = new HookOutput(script, phase, log, budget);
      const err = new HookOutput(script, phase, log, budget);
      child.stdout.on('data', (d: Buffer) => out.add(d));
      child.stderr.on('data', (d: Buffer) => err.add(d));
      let timedOut = false;
      let spawnError: Error | undefined;
      const timer =
        timeoutMs > 0
          ? setTimeout(() => {
              timedOut = true;
              killGroup(child.pid);
            }, timeoutMs)
          : undefined;
      child.once('error', (err) => {
        spawnError = err;
        // Not started at all (no pid): no 'close' is coming for a process.
        if (child.pid === undefined) finish(null, null);
      });
      child.once('close', (code, signal) => finish(code, signal));
      child.once('exit', () => {
        // A background child of the hook may keep the pipes open: stop waiting for them.
        setTimeout(() => {
          child.stdout.destroy();
          child.stderr.destroy();
        }, PIPE_GRACE_MS).unref();
      });
      let done = false;
      const finish = (code: number | null, signal: NodeJS.Signals | null): void => {
        if (done) return;
        done = true;
        if (timer) clearTimeout(timer);
        out.flush();
        err.flush();
        if (budget.dropped > 0) {
          log({
            kind: 'info',
            message: `fsfreeze hook ${script} ${phase}: (${budget.dropped} more bytes of output not logged)`,
          });
        }
        if (spawnError) {
          log({ kind: 'warning', message: `fsfreeze hook ${script}: ${spawnError.message}` });
          resolve(new HookError(`fsfreeze hook has failed with status 1${which}`));
        } else if (timedOut) {
          const text = `fsfreeze hook has timed out after ${timeoutMs / 1000} s and was killed${which}`;
          log({ kind: 'warning', message: text });
          resolve(new HookError(text));
        } else if (signal !== null || code === null) {
          log({ kind: 'warning', message: `fsfreeze hook ${script} ${phase}: killed by ${signal}` });
          resolve(new HookError(`fsfreeze hook has terminated abnormally${which}`));
        } else if (code !== 0) {
          log({ kind: 'warning', message: `fsfreeze hook ${script} ${phase}: exit status ${code}` });
          resolve(new HookError(`fsfreeze hook has failed with status ${code}${which}`));
        } else {
          resolve(undefined);
        }
      };
    });
  }
}

function isExecutableFile(path: string): boolean {
  try {
    if (!statSync(path).isFile()) return false;
    accessSync(path, constants.X_OK);
    return true;
  } catch {
    return false;
  }
}

/** SIGKILL to the hook's whole session (it runs detached: its own process group). */
function killGroup(pid: number | undefined): void {
  if (pid === undefined) return;
  try {
    process.kill(-pid, 'SIGKILL');
  } catch {
    // Already gone.
  }
}

/** One output stream of a hook, logged line by line; both streams share one byte budget. */
class HookOutput {
  private partial = '';

  constructor(
    private readonly script: string,
    private readonly phase: HookPhase,
    private readonly log: (event: AgentLogEvent) => void,
    private readonly budget: { kept: number; dropped: number },
  ) {}

  add(chunk: Buffer): void {
    const room = HOOK_OUTPUT_LIMIT - this.budget.kept;
    if (room <= 0) {
      this.budget.dropped += chunk.length;
      return;
    }
    const part = chunk.length > room ? chunk.subarray(0, room) : chunk;
    this.budget.dropped += chunk.length - part.length;
    this.budget.kept += part.length;
    const lines = (this.partial + part.toString('utf8')).split('\n');
    this.partial = lines.pop()!;
    for (const line of lines) this.line(line);
  }

  flush(): void {
    if (this.partial !== '') this.line(this.partial);
    this.partial = '';
  }

  private line(text: string): void {
    this.log({ kind: 'info', message: `fsfreeze hook ${this.script} ${this.phase}: ${text}` });
  }
}
