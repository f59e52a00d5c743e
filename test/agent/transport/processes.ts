import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { AGENT_BUNDLE } from '../../helpers/agents.js';

/** A child process whose output is collected, stopped by pid in `stop()`. */
export interface Proc {
  readonly child: ChildProcess;
  stdout(): Buffer;
  stderr(): string;
  /** Resolves with the exit code (or the signal name). */
  readonly exited: Promise<number | string>;
  running(): boolean;
  /** SIGTERM, then SIGKILL after 3 s; resolves when it is gone. */
  stop(): Promise<void>;
}

export function spawnProc(cmd: string, args: readonly string[], env: NodeJS.ProcessEnv = {}): Proc {
  const child = spawn(cmd, args, { stdio: ['pipe', 'pipe', 'pipe'], env: { PATH: process.env['PATH'], ...env } });
  let out = Buffer.alloc(0);
  let err = '';
  child.stdout!.on('data', (d: Buffer) => (out = Buffer.concat([out, d])));
  child.stderr!.on('data', (d: Buffer) => (err += d.toString()));
  child.stdin!.on('error', () => undefined);
  const exited = new Promise<number | string>((resolve) =>
    child.once('exit', (code, signal) => resolve(code ?? signal ?? 'unknown')),
  );
  const running = (): boolean => child.exitCode === null && child.signalCode === null;
  return {
    child,
    stdout: () => out,
    stderr: () => err,
    exited,
    running,
    stop: async () => {
      if (!running()) return;
      child.kill('SIGTERM');
      const t = setTimeout(() => child.kill('SIGKILL'), 3000);
      await exited;
      clearTimeout(t);
    },
  };
}

/** The agent bundle with the given flags, reading no config file unless QGA_CONF is given. */
export function spawnAgentBundle(args: readonly string[], env: NodeJS.ProcessEnv = {}): Proc {
  return spawnProc(process.execPath, [AGENT_BUNDLE, ...args], { QGA_CONF: '/nonexistent/qemu-ga.conf', ...env });
}

/** Waits until `check()` is true, polling; throws with `what` after `timeoutMs`. */
export async function waitFor(check: () => boolean, what: string, timeoutMs = 5000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!check()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

export function tempDir(prefix: string): { path: string; remove(): void } {
  const path = mkdtempSync(join(tmpdir(), prefix));
  return { path, remove: () => rmSync(path, { recursive: true, force: true }) };
}

/**
 * A pseudo-terminal standing in for a virtio-serial or ISA serial port:
 * python3 holds the master (and the slave open, in raw mode, so the master
 * never sees EIO) and relays the master to its stdin/stdout. The agent opens
 * the slave, through `link` once `expose()` made it.
 */
const PTY_RELAY = `
import os, sys, tty, select
m, s = os.openpty()
tty.setraw(s)
sys.stderr.write(os.ttyname(s) + "\\n"); sys.stderr.flush()
while True:
    r, _, _ = select.select([0, m], [], [])
    if 0 in r:
        d = os.read(0, 65536)
        if not d:
            break
        os.write(m, d)
    if m in r:
        try:
            d = os.read(m, 65536)
        except OSError:
            continue
        os.write(1, d)
`;

export interface PtyRelay {
  readonly proc: Proc;
  /** The slave device, e.g. /dev/pts/7. */
  readonly slave: string;
  /** Bytes to the agent (through the master). */
  send(bytes: Buffer | string): void;
  /** Everything the agent wrote so far. */
  received(): Buffer;
  stop(): Promise<void>;
}

export async function startPtyRelay(): Promise<PtyRelay> {
  const proc = spawnProc('python3', ['-c', PTY_RELAY]);
  await waitFor(() => proc.stderr().includes('\n') || !proc.running(), 'the pty relay');
  const slave = proc.stderr().split('\n')[0]!;
  if (!slave.startsWith('/dev/')) {
    await proc.stop();
    throw new Error(`pty relay failed: ${proc.stderr()}`);
  }
  return {
    proc,
    slave,
    send: (bytes) => void proc.child.stdin!.write(typeof bytes === 'string' ? Buffer.from(bytes, 'latin1') : bytes),
    received: () => proc.stdout(),
    stop: async () => {
      proc.child.stdin!.end();
      await Promise.race([proc.exited, new Promise((r) => setTimeout(r, 1000))]);
      await proc.stop();
    },
  };
}
