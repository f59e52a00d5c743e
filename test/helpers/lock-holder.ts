// Another process that holds a guest's channel lock, as a stuck or running quiesce would: for tests
// of refusals and of `--force` take-overs. It runs src/guest/lock.ts itself, bundled with esbuild
// into plain JavaScript once per test process, so a holder starts in tens of milliseconds (not the
// second a tsx start-up costs).
import { spawn, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { fileURLToPath } from 'node:url';
import { build } from 'esbuild';
import { processInfo } from '../../src/process/pid.js';

const LOCK_MODULE = fileURLToPath(new URL('../../src/guest/lock.ts', import.meta.url));

let bundled: Promise<string> | undefined;

/** src/guest/lock.ts as one ESM file in a temporary directory (built on first use). */
function lockBundle(): Promise<string> {
  bundled ??= (async () => {
    const dir = mkdtempSync(join(tmpdir(), 'lock-holder-'));
    process.once('exit', () => rmSync(dir, { recursive: true, force: true }));
    const outfile = join(dir, 'lock.mjs');
    await build({
      entryPoints: [LOCK_MODULE],
      bundle: true,
      platform: 'node',
      format: 'esm',
      outfile,
      logLevel: 'error',
    });
    return outfile;
  })();
  return bundled;
}

export interface LockHolderProcess {
  readonly child: ChildProcess;
  readonly pid: number;
  /** Resolves with [exit code, signal] once it exited. */
  readonly exited: Promise<[number | null, NodeJS.Signals | null]>;
  /** Still running (not exited). */
  alive(): boolean;
  /** SIGCONT and SIGKILL, for clean-up (harmless once it is gone). */
  kill(): void;
}

/**
 * Starts a node process that takes the guest lock of `address` (as run
 * `runId`) and holds it until it dies; resolves once it holds it. It uses
 * this process's environment, so QUIESCE_RUN_DIR (and the lock secret in it)
 * is shared. `ignoreTerm`: it survives SIGTERM (a hung run); `stopped`: it is
 * stopped with SIGSTOP once it holds the lock.
 */
export async function startLockHolder(
  address: string,
  o: { runId?: string; ignoreTerm?: boolean; stopped?: boolean } = {},
): Promise<LockHolderProcess> {
  const bundle = await lockBundle();
  const code =
    `${o.ignoreTerm ? "process.on('SIGTERM', () => {});" : ''}` +
    `const m = await import(${JSON.stringify(bundle)});` +
    `await m.acquireGuestLock(${JSON.stringify(address)}, 0, ${JSON.stringify(o.runId ?? 'HOLDER-RUN')});` +
    `process.stdout.write('held\\n');` +
    `setInterval(() => {}, 1000);`;
  const child = spawn(process.execPath, ['--input-type=module', '-e', code], {
    stdio: ['ignore', 'pipe', 'inherit'],
    env: process.env,
  });
  const exited = once(child, 'exit') as Promise<[number | null, NodeJS.Signals | null]>;
  const ready = once(child.stdout!, 'data');
  const first = await Promise.race([ready.then(() => 'held' as const), exited.then(() => 'exited' as const)]);
  if (first === 'exited') throw new Error(`the lock holder for ${address} exited before it held the lock`);
  const pid = child.pid!;
  if (o.stopped) {
    child.kill('SIGSTOP');
    for (let i = 0; i < 200 && processInfo(pid)?.state !== 'T'; i++) await sleep(10);
    if (processInfo(pid)?.state !== 'T') throw new Error(`the lock holder ${pid} did not stop`);
  }
  return {
    child,
    pid,
    exited,
    alive: () => child.exitCode === null && child.signalCode === null,
    kill: () => {
      child.kill('SIGCONT');
      child.kill('SIGKILL');
    },
  };
}
