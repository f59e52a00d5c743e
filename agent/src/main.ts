import { spawn } from 'node:child_process';
import { writeFileSync, unlinkSync } from 'node:fs';
import { setFlagsFromString } from 'node:v8';
import { Agent, VERSION } from './agent.js';
import { dumpConfig, parseOptions, UsageError, type AgentConfig } from './config/options.js';
import { usage } from './config/usage.js';
import { device } from './transport/device.js';
import { stdio } from './transport/stdio.js';
import type { Transport } from './transport/transport.js';
import { unixListen } from './transport/unix-listen.js';

/** Set in the re-spawned child when -d asks for a daemon (Node cannot fork). */
const DAEMON_CHILD = 'QUIESCE_AGENT_DAEMON_CHILD';

export async function main(argv: readonly string[]): Promise<void> {
  let parsed: ReturnType<typeof parseOptions>;
  try {
    parsed = parseOptions(argv);
  } catch (err) {
    if (!(err instanceof UsageError)) throw err;
    process.stderr.write(`quiesce-agent: ${err.message}\n`);
    process.exit(2);
  }
  const { action, config } = parsed;
  switch (action) {
    case 'help':
      process.stdout.write(usage());
      return;
    case 'version':
      process.stdout.write(`quiesce-agent ${VERSION}\n`);
      return;
    case 'dump-conf':
      process.stdout.write(dumpConfig(config));
      return;
    case 'list-rpcs': {
      const agent = await Agent.create(config);
      process.stdout.write(
        agent.dispatcher
          .names()
          .map((n) => `${n}\n`)
          .join(''),
      );
      return;
    }
    case 'run':
      break;
  }
  if (config.daemonize && !process.env[DAEMON_CHILD]) {
    daemonize(argv);
    return;
  }
  await run(config);
}

function daemonize(argv: readonly string[]): void {
  const args = argv.filter((a) => a !== '-d' && a !== '--daemonize');
  const child = spawn(process.execPath, [...process.execArgv, process.argv[1]!, ...args], {
    detached: true,
    stdio: 'ignore',
    env: { ...process.env, [DAEMON_CHILD]: '1' },
  });
  child.unref();
}

async function run(config: AgentConfig): Promise<void> {
  // Inline caches from a function's first call. V8 otherwise gives a function its feedback (the
  // caches) only after it has run a while, so what runs once per freeze, the thaw above all, never
  // gets it. Under emulation that cost ~0.8 ms of the frozen window (bench/e2e-window.ts, README).
  setFlagsFromString('--no-lazy-feedback-allocation');
  const agent = await Agent.create(config);
  let transport: Transport | undefined;
  let stopping = false;
  const stop = async (reason: string, code = 0): Promise<void> => {
    if (stopping) return;
    stopping = true;
    agent.log({ kind: 'stopping', reason });
    // Unlike the reference (which ignores SIGTERM/SIGINT while frozen): thaw first, then stop.
    await agent.prepareStop();
    await transport?.close();
    await agent.close();
    if (config.daemonize) removePidfile(config.pidfile);
    process.exit(code);
  };

  switch (config.method) {
    case 'unix-listen':
      transport = unixListen(agent, config.path);
      break;
    case 'virtio-serial':
    case 'isa-serial':
      transport = device(agent, config.path, {
        serial: config.method === 'isa-serial',
        retry: config.retryPath,
        onFatal: (err) => void stop(`error reading channel: ${err.message}`, 1),
      });
      break;
    case 'stdio':
      transport = stdio(agent, () => void stop('end of input'));
      break;
    case 'vsock-listen':
      // Node's net module has no AF_VSOCK sockets and this agent stays free of native code for its transports.
      process.stderr.write('quiesce-agent: vsock-listen is not supported: Node.js has no AF_VSOCK sockets\n');
      process.exit(2);
  }

  // A bug must not end the process with filesystems left frozen (Node's default would just exit).
  const crash = (err: unknown): void => {
    agent.crash(err);
    process.exit(1);
  };
  process.on('uncaughtException', crash);
  process.on('unhandledRejection', crash);
  for (const signal of ['SIGTERM', 'SIGINT'] as const) {
    process.on(signal, () => void stop(`received ${signal}`));
  }
  try {
    await transport.start();
  } catch (err) {
    process.stderr.write(`quiesce-agent: failed to open channel ${config.path}: ${(err as Error).message}\n`);
    process.exit(1);
  }
  // Like the reference: in frozen mode the pidfile waits for the thaw.
  if (config.daemonize) agent.whenThawed(() => writePidfile(config.pidfile));
  agent.log({
    kind: 'started',
    version: VERSION,
    method: config.method,
    path: config.path,
    frozen: agent.context.isFrozen(),
  });
}

function writePidfile(path: string): void {
  try {
    writeFileSync(path, `${process.pid}\n`, { mode: 0o644 });
  } catch (err) {
    process.stderr.write(`quiesce-agent: cannot write pidfile ${path}: ${(err as Error).message}\n`);
  }
}

function removePidfile(path: string): void {
  try {
    unlinkSync(path);
  } catch {
    // Already gone.
  }
}
