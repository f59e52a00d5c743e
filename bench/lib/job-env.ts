// The environment a nightly job runs in, for the benchmarks that time whole processes against a shell
// script: cron gives a job HOME, LOGNAME, SHELL and a short PATH, and systemd a service much the same. An
// interactive shell's variables can change how long a process takes to start, and a job has none of them:
// with NODE_EXTRA_CA_CERTS set, Node 20 reads that file and parses it and its own root certificates
// before any code runs (docs/benchmarks.md, Start-up, says what it costs), though quiesce makes no TLS
// connection.
import { spawnSync } from 'node:child_process';
import { homedir, userInfo } from 'node:os';

export const JOB_ENV: NodeJS.ProcessEnv = {
  PATH: '/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin',
  HOME: homedir(),
  LOGNAME: userInfo().username,
  SHELL: '/bin/sh',
};

/** The variables of this process's environment that change how long node takes to start. */
export const SLOW_START_VARIABLES = ['NODE_EXTRA_CA_CERTS', 'NODE_OPTIONS'].filter((v) => process.env[v]);

/** Wall time (ms) of `node ...args` started with env. */
export function timeNode(args: readonly string[], env: NodeJS.ProcessEnv): number {
  const t0 = performance.now();
  const r = spawnSync(process.execPath, args, { stdio: 'ignore', env });
  if (r.status !== 0) throw new Error(`node ${args.join(' ')} failed (${r.status ?? r.signal})`);
  return performance.now() - t0;
}

/**
 * The report's line on the environment: a job's, and, where this shell has SLOW_START_VARIABLES, what
 * `withShell` says they cost.
 */
export function environmentLine(withShell: () => string): string {
  const job = `environment: a job's (${Object.keys(JOB_ENV).join(', ')})`;
  return SLOW_START_VARIABLES.length
    ? `${job}; this shell's ${SLOW_START_VARIABLES.join(', ')} left out, with which ${withShell()}`
    : `${job}; this shell's has nothing that slows node's start`;
}
