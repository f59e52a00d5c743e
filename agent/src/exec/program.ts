import { spawn, type ChildProcess, type StdioOptions } from 'node:child_process';
import { once } from 'node:events';
import { closeSync, statSync } from 'node:fs';
import { Socket } from 'node:net';
import { constants } from 'node:os';
import type { Readable, Writable } from 'node:stream';
import { strerror } from '../errno.js';
import { loadAddon } from '../freeze/ioctl.js';
import { toModUtf8 } from '../protocol/utf8.js';
import { QgaError } from '../qapi/errors.js';

/** What guest-exec asks to run, as its arguments arrive. */
export interface ProgramSpec {
  /** argv[0]: searched in PATH when it has no slash. */
  readonly path: string;
  readonly args: readonly string[];
  /** The whole environment of the child when given; else the agent's. */
  readonly env?: readonly string[];
  readonly stdin: 'pipe' | 'ignore';
  readonly output: 'pipe' | 'ignore';
}

/** A started child and the agent's ends of its pipes (those asked for). */
export interface StartedProgram {
  readonly child: ChildProcess;
  readonly stdin?: Writable;
  readonly stdout?: Readable;
  readonly stderr?: Readable;
}

/** pipe2(O_CLOEXEC): [read end, write end], or undefined when only Node's socket pairs are available. */
export type MakePipe = () => [number, number] | undefined;

/** The addon's pipe() when it has one. */
export const addonPipe: MakePipe = () => {
  const loaded = loadAddon();
  const pipe = 'addon' in loaded ? (loaded.addon as { pipe?: () => [number, number] | number }).pipe : undefined;
  if (typeof pipe !== 'function') return undefined;
  const r = pipe();
  if (typeof r !== 'number') return r;
  const err: NodeJS.ErrnoException = new Error('pipe2 failed');
  err.code = Object.entries(constants.errno).find(([, n]) => n === -r)?.[0] ?? 'EIO';
  throw err;
};

/** GLib's search path when PATH is set nowhere: `.` last, for security. */
export const DEFAULT_SEARCH_PATH = '/bin:/usr/bin:.';

/** The shell GLib hands a file the kernel cannot execute (ENOEXEC), like execvp does. */
const SHELL = '/bin/sh';

/** exec errors after which GLib goes on with the next PATH entry (EACCES is remembered). */
const TRY_NEXT = new Set(['EACCES', 'ENOENT', 'ESTALE', 'ENOTDIR', 'ENODEV', 'ETIMEDOUT']);

/** Node's envPairs cannot carry a NUL (and the reference's C0 80 bytes cannot be made from a JS string). */
const NUL = '\u0000';

function commandFailed(text: string): QgaError {
  return new QgaError(`Guest agent command failed, error was '${text}'`);
}

/** The reference's text for a failed g_spawn_async_with_pipes(), from the errno name. */
export function spawnErrorText(argv0: string, code: string): string {
  const why = strerror(code);
  if (code === 'EAGAIN' || code === 'ENOMEM') return `Failed to fork (${why})`;
  if (code === 'EMFILE' || code === 'ENFILE')
    return `Failed to create pipe for communicating with child process (${why})`;
  return `Failed to execute child process \u201c${argv0}\u201d (${why})`;
}

/** The value of the first `NAME=` entry, as g_environ_getenv() finds it. */
export function environGet(env: readonly string[], name: string): string | undefined {
  const prefix = `${name}=`;
  return env.find((e) => e.startsWith(prefix))?.slice(prefix.length);
}

/**
 * The child's environment for Node: entries without `=` are dropped and the
 * first of duplicate names wins (what getenv() in the child sees with the
 * reference's raw list); order is kept except for integer-like names.
 */
export function environObject(env: readonly string[]): NodeJS.ProcessEnv {
  const out: NodeJS.ProcessEnv = Object.create(null) as NodeJS.ProcessEnv;
  for (const entry of env) {
    const eq = entry.indexOf('=');
    if (eq <= 0) continue;
    const name = entry.slice(0, eq);
    if (!(name in out)) out[name] = entry.slice(eq + 1);
  }
  return out;
}

/**
 * The files GLib would try, in order, for `name` (G_SPAWN_SEARCH_PATH with
 * G_SPAWN_SEARCH_PATH_FROM_ENVP): the name itself when it has a slash, else
 * each PATH entry (an empty one is the working directory) joined with it.
 */
export function candidates(name: string, env: readonly string[] | undefined, agentPath: string | undefined): string[] {
  if (name.includes('/')) return [name];
  const path = (env && environGet(env, 'PATH')) ?? agentPath ?? DEFAULT_SEARCH_PATH;
  return path.split(':').map((dir) => (dir === '' ? `./${name}` : `${dir}/${name}`));
}

type Attempt = { child: ChildProcess } | { code: string };

/** One spawn of an exact file; resolves with the running child or the exec errno name. */
async function attempt(
  file: string,
  argv: readonly string[],
  spec: ProgramSpec,
  stdio: StdioOptions,
): Promise<Attempt> {
  let child: ChildProcess;
  try {
    child = spawn(file, argv.slice(1), {
      argv0: argv[0],
      stdio,
      env: spec.env ? environObject(spec.env) : process.env,
    });
  } catch (err) {
    return { code: (err as NodeJS.ErrnoException).code ?? 'EINVAL' };
  }
  if (child.pid !== undefined) return { child };
  // Node reports ENOENT, EACCES, EAGAIN, EMFILE and ENFILE as an 'error' event on the next tick.
  const [err] = (await once(child, 'error')) as [NodeJS.ErrnoException];
  return { code: err.code ?? 'EINVAL' };
}

/**
 * Starts a program the way the reference's g_spawn_async_with_pipes() does:
 * no shell, PATH searched (the child's PATH when `env` has one), every
 * candidate tried until one executes, EACCES reported when any candidate was
 * not executable, a file without a #! line run by /bin/sh. Failures are the
 * reference's error texts.
 */
export async function startProgram(spec: ProgramSpec, makePipe: MakePipe = addonPipe): Promise<StartedProgram> {
  spec.args.forEach((a, i) => {
    if (a.includes(NUL)) throw cannotPass(`argument ${i + 1}`);
  });
  if (spec.env?.some((e) => e.includes(NUL))) throw cannotPass('environment');
  const pipes = openPipes(spec, makePipe);
  try {
    const child = await execFirst(spec, pipes?.stdio ?? [spec.stdin, spec.output, spec.output]);
    if (!pipes) return { child, ...streams(child) };
    // The child has its own copies now.
    closeQuietly(pipes.childEnds);
    pipes.childEnds = [];
    return { child, ...pipes.open() };
  } finally {
    pipes?.closeAll();
  }
}

function streams(child: ChildProcess): Omit<StartedProgram, 'child'> {
  return {
    ...(child.stdin ? { stdin: child.stdin } : {}),
    ...(child.stdout ? { stdout: child.stdout } : {}),
    ...(child.stderr ? { stderr: child.stderr } : {}),
  };
}

interface Pipes {
  readonly stdio: StdioOptions;
  childEnds: number[];
  /** The agent's ends as streams (they own the descriptors from then on). */
  open(): Omit<StartedProgram, 'child'>;
  /** Closes every descriptor not yet handed on. */
  closeAll(): void;
}

function closeQuietly(fds: readonly number[]): void {
  for (const fd of fds) {
    try {
      closeSync(fd);
    } catch {
      // Already closed.
    }
  }
}

/** Real pipes for the child's stdio, as g_spawn_async_with_pipes() makes (Node's 'pipe' is a socket pair). */
function openPipes(spec: ProgramSpec, makePipe: MakePipe): Pipes | undefined {
  const wanted = (spec.stdin === 'pipe' ? 1 : 0) + (spec.output === 'pipe' ? 2 : 0);
  if (wanted === 0) return undefined;
  const made: [number, number][] = [];
  try {
    for (let i = 0; i < wanted; i++) {
      const p = makePipe();
      if (!p) {
        // No addon pipe(): Node's socket pairs for all of them.
        closeQuietly(made.flat());
        return undefined;
      }
      made.push(p);
    }
  } catch (e) {
    closeQuietly(made.flat());
    throw commandFailed(spawnErrorText(spec.path, (e as NodeJS.ErrnoException).code ?? 'EIO'));
  }
  const input = spec.stdin === 'pipe' ? made.shift() : undefined;
  const [out, err] = made;
  let agentEnds = [input?.[1], out?.[0], err?.[0]].filter((fd): fd is number => fd !== undefined);
  const pipes: Pipes = {
    stdio: [input ? input[0] : 'ignore', out ? out[1] : 'ignore', err ? err[1] : 'ignore'],
    childEnds: [input?.[0], out?.[1], err?.[1]].filter((fd): fd is number => fd !== undefined),
    open() {
      agentEnds = [];
      return {
        ...(input ? { stdin: new Socket({ fd: input[1], readable: false, writable: true }) } : {}),
        ...(out ? { stdout: new Socket({ fd: out[0], readable: true, writable: false }) } : {}),
        ...(err ? { stderr: new Socket({ fd: err[0], readable: true, writable: false }) } : {}),
      };
    },
    closeAll() {
      closeQuietly([...pipes.childEnds, ...agentEnds]);
      pipes.childEnds = [];
      agentEnds = [];
    },
  };
  return pipes;
}

/** The first candidate file that executes (see startProgram). */
async function execFirst(spec: ProgramSpec, stdio: StdioOptions): Promise<ChildProcess> {
  const argv = [spec.path, ...spec.args];
  let eacces = false;
  let last = 'ENOENT';
  for (const file of spec.path === '' ? [] : candidates(spec.path, spec.env, process.env['PATH'])) {
    // A file that is not there fails the exec the same way: no process is made for it.
    try {
      statSync(toModUtf8(file));
    } catch (err) {
      last = (err as NodeJS.ErrnoException).code ?? 'ENOENT';
      if (last === 'EACCES') eacces = true;
      if (TRY_NEXT.has(last)) continue;
      break;
    }
    if (file.includes(NUL)) throw cannotPass('path');
    let r = await attempt(file, argv, spec, stdio);
    if ('code' in r && r.code === 'ENOEXEC') r = await attempt(SHELL, [SHELL, file, ...spec.args], spec, stdio);
    if ('child' in r) return r.child;
    last = r.code;
    if (last === 'EACCES') eacces = true;
    if (!TRY_NEXT.has(last)) break;
  }
  throw commandFailed(spawnErrorText(spec.path, eacces && TRY_NEXT.has(last) ? 'EACCES' : last));
}

/**
 * The reference passes U+0000 on as the bytes C0 80; Node takes only strings
 * for a child's argv and environment, and none of them can hold those bytes.
 */
function cannotPass(what: string): QgaError {
  return commandFailed(`the ${what} holds a NUL character, which this agent cannot pass to a program`);
}
