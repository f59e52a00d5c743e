import { spawn } from 'node:child_process';
import { accessSync, constants, statSync } from 'node:fs';
import { delimiter, isAbsolute, join, resolve } from 'node:path';

/** How a program ended. */
export type ProgramResult =
  | { readonly kind: 'exited'; readonly code: number }
  | { readonly kind: 'signaled'; readonly signal: string }
  /** exec failed (the reference's forked child would _exit(1) then); `code` is the errno name. */
  | { readonly kind: 'spawn-failed'; readonly code: string | undefined };

export interface ProgramRun {
  readonly result: ProgramResult;
  /** Writing stdin failed with this errno name (EPIPE when the program did not read it). */
  readonly stdinError?: string;
  /** What the program wrote to stdout, when asked for. */
  readonly stdout: Buffer;
  /** What the program wrote to stderr, when asked for. */
  readonly stderr: Buffer;
}

export interface RunOptions {
  /** argv[0] as the program sees it (the reference's execl() names it). */
  readonly argv0: string;
  /** A session of its own (the reference's forked children call setsid()). */
  readonly setsid: boolean;
  /** Written to a pipe on stdin, then closed; without it stdin is /dev/null. */
  readonly stdin?: Buffer;
  /** Keep stdout and stderr instead of sending them to /dev/null. */
  readonly capture?: boolean;
  readonly env?: NodeJS.ProcessEnv;
}

/** Runs a program to completion; never throws. */
export function runProgram(file: string, args: readonly string[], opts: RunOptions): Promise<ProgramRun> {
  return new Promise((done) => {
    const out: Buffer[] = [];
    const err: Buffer[] = [];
    let stdinError: string | undefined;
    let settled = false;
    const finish = (result: ProgramResult): void => {
      if (settled) return;
      settled = true;
      done({
        result,
        ...(stdinError === undefined ? {} : { stdinError }),
        stdout: Buffer.concat(out),
        stderr: Buffer.concat(err),
      });
    };
    let child;
    try {
      child = spawn(file, args, {
        argv0: opts.argv0,
        detached: opts.setsid,
        env: opts.env ?? process.env,
        stdio: [opts.stdin ? 'pipe' : 'ignore', opts.capture ? 'pipe' : 'ignore', opts.capture ? 'pipe' : 'ignore'],
      });
    } catch (e) {
      finish({ kind: 'spawn-failed', code: (e as NodeJS.ErrnoException).code });
      return;
    }
    child.once('error', (e: NodeJS.ErrnoException) => finish({ kind: 'spawn-failed', code: e.code }));
    child.stdout?.on('data', (d: Buffer) => out.push(d));
    child.stderr?.on('data', (d: Buffer) => err.push(d));
    if (opts.stdin && child.stdin) {
      child.stdin.on('error', (e: NodeJS.ErrnoException) => {
        stdinError ??= e.code ?? 'EPIPE';
      });
      child.stdin.end(opts.stdin);
    }
    // 'close' (not 'exit'): the output pipes are drained by then.
    child.once('close', (code, signal) => {
      finish(signal ? { kind: 'signaled', signal } : { kind: 'exited', code: code ?? 0 });
    });
  });
}

/** GLib's G_FILE_TEST_IS_EXECUTABLE and not a directory: root needs an x bit on a regular file. */
function isExecutableFile(path: string): boolean {
  try {
    accessSync(path, constants.X_OK);
    const st = statSync(path);
    if (st.isDirectory()) return false;
    if (process.getuid?.() !== 0) return true;
    return st.isFile() && (st.mode & 0o111) !== 0;
  } catch {
    return false;
  }
}

/**
 * g_find_program_in_path(): each element of $PATH in turn ("/bin:/usr/bin:."
 * when unset; an empty element is the current directory), the first
 * executable regular file, as an absolute path.
 */
export function findProgramInPath(program: string, env: NodeJS.ProcessEnv = process.env): string | undefined {
  if (program.includes('/')) return isExecutableFile(program) ? resolve(program) : undefined;
  const path = env['PATH'] ?? '/bin:/usr/bin:.';
  for (const dir of path.split(delimiter)) {
    const candidate = join(dir === '' ? '.' : dir, program);
    if (isExecutableFile(candidate)) return isAbsolute(candidate) ? candidate : resolve(candidate);
  }
  return undefined;
}

/** A system program by absolute path, else from $PATH. */
export function findSystemProgram(program: string, dirs: readonly string[] = ['/usr/bin', '/bin']): string | undefined {
  for (const dir of dirs) {
    const candidate = join(dir, program);
    if (isExecutableFile(candidate)) return candidate;
  }
  return findProgramInPath(program);
}
