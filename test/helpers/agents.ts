import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { fileURLToPath } from 'node:url';

/** The single-file agent bundle, what ships into guests. Built by `npm run build`. */
export const AGENT_BUNDLE = fileURLToPath(new URL('../../agent/dist/quiesce-agent.mjs', import.meta.url));
export const QEMU_GA = '/usr/sbin/qemu-ga';

export function haveQemuGa(): boolean {
  return existsSync(QEMU_GA);
}

export function isRoot(): boolean {
  return process.getuid?.() === 0;
}

export type AgentKind = 'quiesce' | 'qemu-ga';

/** A running agent in unix-listen mode on a socket in its own temporary state dir. */
export interface RunningAgent {
  readonly kind: AgentKind;
  readonly socket: string;
  readonly statedir: string;
  readonly child: ChildProcess;
  /** Everything it wrote to stderr so far. */
  stderr(): string;
  /** Stops it (SIGTERM, then SIGKILL) and waits for the exit. */
  stop(): Promise<void>;
  /** SIGKILL and wait; the state dir stays for a restart. */
  kill(): Promise<void>;
}

export interface StartOptions {
  /** Reuse a state dir (restart after a crash). */
  statedir?: string | undefined;
  /** Extra command-line flags. */
  args?: readonly string[] | undefined;
  env?: NodeJS.ProcessEnv | undefined;
  /** A command the agent's command line is appended to (`unshare …`, `nsenter …`); it must exec the agent in place. */
  wrap?: readonly string[] | undefined;
}

/**
 * Starts quiesce-agent or the reference qemu-ga with `-m unix-listen` and waits
 * until the socket accepts. The caller stops it (in an `after` hook).
 */
export async function startAgent(kind: AgentKind, opts: StartOptions = {}): Promise<RunningAgent> {
  const statedir = opts.statedir ?? mkdtempSync(join(tmpdir(), `${kind}-`));
  const socket = join(statedir, 'qga.sock');
  const common = ['-m', 'unix-listen', '-p', socket, '-t', statedir, '-f', join(statedir, 'pid'), ...(opts.args ?? [])];
  const [agentCmd, agentArgs] = kind === 'quiesce' ? [process.execPath, [AGENT_BUNDLE, ...common]] : [QEMU_GA, common];
  const [cmd, ...args] = [...(opts.wrap ?? []), agentCmd, ...agentArgs];
  const child = spawn(cmd!, args, {
    stdio: ['ignore', 'ignore', 'pipe'],
    env: { QGA_CONF: join(statedir, 'no-such.conf'), PATH: process.env['PATH'], ...opts.env },
  });
  let err = '';
  child.stderr!.on('data', (d: Buffer) => (err += d.toString()));
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  const agent: RunningAgent = {
    kind,
    socket,
    statedir,
    child,
    stderr: () => err,
    stop: async () => {
      if (child.exitCode === null && child.signalCode === null) {
        child.kill('SIGTERM');
        const t = setTimeout(() => child.kill('SIGKILL'), 3000);
        await exited;
        clearTimeout(t);
      }
      if (!opts.statedir) rmSync(statedir, { recursive: true, force: true });
    },
    kill: async () => {
      if (child.exitCode === null && child.signalCode === null) {
        child.kill('SIGKILL');
        await exited;
      }
    },
  };
  for (let i = 0; i < 200; i++) {
    if (child.exitCode !== null) throw new Error(`${kind} exited at start: ${err}`);
    if (existsSync(socket) && canConnect(socket)) return agent;
    await sleep(25);
  }
  await agent.stop();
  throw new Error(`${kind} did not listen on ${socket}: ${err}`);
}

function canConnect(socket: string): boolean {
  // A synchronous probe keeps the helper simple; python3 is on every test machine.
  const r = spawnSync('python3', [
    '-c',
    `import socket;s=socket.socket(socket.AF_UNIX);s.connect(${JSON.stringify(socket)});s.close()`,
  ]);
  return r.status === 0;
}
