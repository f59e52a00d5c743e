import { spawn } from 'node:child_process';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import type { ByteChannel } from '../channel.js';
import { streamChannel } from './stream-channel.js';

/** The single-file agent bundle of the installed quiesce-agent package. */
export function agentBundlePath(): string {
  const pkg = createRequire(import.meta.url).resolve('quiesce-agent/package.json');
  return join(dirname(pkg), 'dist', 'quiesce-agent.mjs');
}

/**
 * Spawns quiesce-agent in stdio mode to act on this machine itself (bare
 * metal, CI runners). `args` are extra agent flags, e.g. `--fsfreeze-include=/mnt/data`.
 */
export async function openLocal(
  args: readonly string[] = [],
  opts: { env?: NodeJS.ProcessEnv; onStderr?: (line: string) => void } = {},
): Promise<ByteChannel> {
  const child = spawn(process.execPath, [agentBundlePath(), '-m', 'stdio', ...args], {
    stdio: ['pipe', 'pipe', 'pipe'],
    env: opts.env ?? process.env,
  });
  // The agent's own log lines become the host's log events (one stream, JSON when it should be).
  let pending = '';
  child.stderr.setEncoding('utf8');
  child.stderr.on('data', (d: string) => {
    const lines = (pending + d).split('\n');
    pending = lines.pop()!;
    for (const line of lines) if (line) opts.onStderr?.(line);
  });
  await new Promise<void>((resolve, reject) => {
    child.once('spawn', resolve);
    child.once('error', reject);
  });
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  return streamChannel(child.stdout, child.stdin, async () => {
    // EOF on stdin makes the agent finish what it is doing and exit.
    child.stdin.end();
    const t = setTimeout(() => child.kill('SIGTERM'), 5000);
    await exited;
    clearTimeout(t);
  });
}
