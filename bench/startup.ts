/**
 * Start-up of the CLI against bare node, in one run: every case is a fresh
 * process (spawnSync, wall time from spawn to exit), the cases interleave
 * round by round (the order rotates) so that a slow spell of the machine falls
 * on all of them alike, and each prints its median, p90 and the ratio of its
 * median to `node -e 0`'s.
 *   node -e 0                       bare node
 *   quiesce --version               commander and the version module
 *   quiesce freeze --help           every subcommand declared, none loaded
 *   quiesce freeze --local -- true  the freeze path's start-up: parse, load and
 *                                   compile everything a freeze runs (the
 *                                   in-window code eagerly), check the options;
 *                                   it stops at the usage check (no
 *                                   --mountpoint), just before the real run
 *                                   first touches the system (state dir, agent)
 * As root, also a real `quiesce freeze --local --mountpoint M -- true` on a
 * loop mount of its own (the only filesystem it freezes), in a mount namespace
 * of its own (another process's qemu-ga thaws every mount it sees; this
 * process runs there through nsenter, exec'd in place): its wall time, and
 * that minus the steps spent on the agent (connect: spawning quiesce-agent
 * and its start-up; preflight; the frozen window; the thaw proof). The rest is
 * the host process's own time, plus the watchdog round trip, the warm-up spawn
 * and the wait for the agent to exit, which the report does not break out.
 * As root it then counts V8's compile events inside the frozen window of a
 * real freeze (--log-function-events): the in-window code must be compiled
 * before the freeze (src/cli/load-command.ts).
 * Targets: --version and the freeze start-up ≤ 1.5x node -e 0.
 * Every process runs in the environment a nightly job gets from cron or systemd (lib/job-env.ts), not this
 * shell's; where this shell has variables that slow node's start, the report says what they cost.
 * BENCH_N rounds (default 20); BENCH_BIN: the bin to measure (default the bundle dist/cli/bin.js, else
 * dist/src/bin.js);
 * BENCH_COMPARE: another build's bin.js, measured alongside (e.g. a copy of dist/ from before a change).
 */
import { spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import {
  createLoopMount,
  destroyLoopMount,
  loopMountSkipReason,
  startMountNamespace,
  startRootThawGuard,
  type LoopMount,
  type MountNamespace,
} from '../test/helpers/loop-mounts.js';
import { cliCopyUnderFlags } from '../test/helpers/code-cache.js';
import { environmentLine, JOB_ENV, timeNode } from './lib/job-env.js';

const N = Number(process.env['BENCH_N'] ?? 20);
// The installed command (package.json's bin: the bundle), else tsc's output.
const BUNDLE = fileURLToPath(new URL('../dist/cli/bin.js', import.meta.url));
const BIN =
  process.env['BENCH_BIN'] ??
  (existsSync(BUNDLE) ? BUNDLE : fileURLToPath(new URL('../dist/src/bin.js', import.meta.url)));
const COMPARE = process.env['BENCH_COMPARE'];

const pct = (xs: readonly number[], p: number) =>
  [...xs].sort((a, b) => a - b)[Math.min(xs.length - 1, Math.floor((p / 100) * xs.length))]!;
const f = (x: number) => x.toFixed(1);

interface Case {
  readonly name: string;
  readonly argv: readonly string[];
  /** Checks the process did what the case says; returns the part of its time spent outside the agent, if known. */
  readonly check: (status: number | null, stdout: string, stderr: string, wallMs: number) => number | undefined;
  readonly wall: number[];
  /** CPU time (user + system) of the process and what it waited for: less swayed by other load than wall time. */
  readonly cpu: number[];
  readonly host: number[];
}

/** CPU time of this process's waited-for children so far (/proc/self/stat cutime + cstime), in ms; undefined off Linux. */
function childrenCpuMs(): number | undefined {
  try {
    const stat = readFileSync('/proc/self/stat', 'utf8');
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    // Clock ticks of 10 ms (USER_HZ 100).
    return (Number(fields[13]) + Number(fields[14])) * 10;
  } catch {
    return undefined;
  }
}

function expectStatus(want: number, stderrHas?: string): Case['check'] {
  return (status, _stdout, stderr) => {
    if (status !== want || (stderrHas !== undefined && !stderr.includes(stderrHas)))
      throw new Error(`exited ${status} (want ${want})${stderr ? `: ${stderr.trim()}` : ''}`);
    return undefined;
  };
}

interface Full {
  readonly config: string;
  readonly mnt: string;
  readonly wrap: readonly string[];
}

function cases(label: string, bin: string, full: Full | undefined): Case[] {
  const c = (name: string, args: readonly string[], check: Case['check'], wrap: readonly string[] = []): Case => ({
    name: `${label}${name}`,
    argv: [...wrap, process.execPath, bin, ...args],
    check,
    wall: [],
    cpu: [],
    host: [],
  });
  const out = [
    c('quiesce --version', ['--version'], expectStatus(0)),
    c('quiesce freeze --help', ['freeze', '--help'], expectStatus(0)),
    c(
      'quiesce freeze --local -- true (start-up)',
      ['freeze', '--local', '--', 'true'],
      expectStatus(2, '--mountpoint'),
    ),
  ];
  if (full) {
    out.push(
      c(
        'quiesce freeze --local --mountpoint M -- true',
        ['freeze', '--config', full.config, '--local', '--mountpoint', full.mnt, '--json', '--', 'true'],
        (status, stdout, stderr, wallMs) => {
          if (status !== 0) throw new Error(`exited ${status}: ${stderr.trim()}`);
          const r = JSON.parse(stdout) as {
            frozenWindowMs: number;
            steps: { name: string; durationMs: number }[];
          };
          const agentSteps = r.steps
            .filter((s) => ['connect', 'preflight', 'prove-thaw'].includes(s.name))
            .reduce((sum, s) => sum + s.durationMs, 0);
          return wallMs - agentSteps - r.frozenWindowMs;
        },
        full.wrap,
      ),
    );
  }
  return out;
}

function runOnce(k: Case, record: boolean): void {
  const [file, ...args] = k.argv;
  const cpu0 = childrenCpuMs();
  const t0 = performance.now();
  const r = spawnSync(file!, args, { encoding: 'utf8', timeout: 60_000, env: JOB_ENV });
  const wallMs = performance.now() - t0;
  const cpu1 = childrenCpuMs();
  if (r.error) throw r.error;
  let host: number | undefined;
  try {
    host = k.check(r.status, r.stdout, r.stderr, wallMs);
  } catch (err) {
    throw new Error(`${k.name}: ${(err as Error).message}`);
  }
  if (!record) return;
  k.wall.push(wallMs);
  if (cpu0 !== undefined && cpu1 !== undefined) k.cpu.push(cpu1 - cpu0);
  if (host !== undefined) k.host.push(host);
}

/**
 * The warm-up's check: a real freeze under V8's --log-function-events, and the
 * compile events (parse, bytecode) logged between the first runs of the
 * freeze (`doFreeze`) and of the thaw (`thawAndProve`). Code first compiled
 * there lengthens the window. V8 takes a code cache only under the flags it
 * was made with, and this one adds a flag: a bundle with a code cache
 * (src/cli/loader.ts) is measured as a copy whose cache is made again under
 * exactly these flags (scripts/save-code-cache.mjs), as the build makes it.
 */
function compiledInWindow(bin: string, full: Full, dir: string): { events: number; ms: number } {
  const logfile = join(dir, 'v8.log');
  const flags = ['--log-function-events', `--logfile=${logfile}`, '--no-logfile-per-isolate'];
  if (existsSync(join(dirname(bin), 'quiesce.cache'))) bin = cliCopyUnderFlags(dirname(bin), dir, flags).bin;
  const [file, ...args] = [
    ...full.wrap,
    process.execPath,
    ...flags,
    bin,
    'freeze',
    '--config',
    full.config,
    '--local',
    '--mountpoint',
    full.mnt,
    '--',
    'true',
  ];
  const r = spawnSync(file!, args, { encoding: 'utf8', timeout: 60_000, env: JOB_ENV });
  if (r.status !== 0) throw new Error(`freeze under --log-function-events exited ${r.status}: ${r.stderr}`);
  // function,<event>,<script>,<start>,<end>,<duration ms>,<timestamp µs>,<name>
  const events = readFileSync(logfile, 'utf8')
    .split('\n')
    .map((l) => l.split(','))
    .filter((l) => l[0] === 'function');
  const firstRun = (name: string): number => {
    const e = events.find((l) => l[1] === 'first-execution' && l[7] === name);
    if (!e) throw new Error(`${name} never ran`);
    return Number(e[6]);
  };
  const from = firstRun('doFreeze');
  const to = firstRun('thawAndProve');
  const inside = events.filter((l) => l[1] !== 'first-execution' && Number(l[6]) > from && Number(l[6]) < to);
  return { events: inside.length, ms: inside.reduce((sum, l) => sum + Number(l[5]), 0) };
}

let ns: MountNamespace | undefined;
let mount: LoopMount | undefined;
let guard: { stop(): void } | undefined;
const dir = mkdtempSync(join(tmpdir(), 'bench-startup-'));
try {
  let full: Full | undefined;
  const skip = loopMountSkipReason();
  if (!skip) {
    guard = startRootThawGuard();
    ns = startMountNamespace();
    mount = createLoopMount('ext4', ns);
    const config = join(dir, 'config.json');
    // A state dir of its own (the journal is written there), off the frozen mount.
    writeFileSync(config, JSON.stringify({ stateDir: join(dir, 'state'), guests: {} }));
    full = { config, mnt: mount.mnt, wrap: ns.wrap };
  }
  const node: Case = {
    name: 'node -e 0',
    argv: [process.execPath, '-e', '0'],
    check: expectStatus(0),
    wall: [],
    cpu: [],
    host: [],
  };
  const all = [node, ...cases('', BIN, full), ...(COMPARE ? cases('compare: ', COMPARE, full) : [])];
  console.log(
    `start-up, wall time per process, ${N} rounds interleaved${skip ? ` (no real freeze: ${skip})` : ''}; bin ${BIN}${COMPARE ? `, compare ${COMPARE}` : ''}`,
  );
  // Warm-up, not counted: page cache, the first spawn.
  for (const k of all) runOnce(k, false);
  for (let round = 0; round < N; round++) {
    const shift = round % all.length;
    for (const k of [...all.slice(shift), ...all.slice(0, shift)]) runOnce(k, true);
  }
  const base = pct(node.wall, 50);
  const cpuBase = node.cpu.length ? pct(node.cpu, 50) : undefined;
  const width = Math.max(...all.map((k) => k.name.length));
  for (const k of all) {
    const p50 = pct(k.wall, 50);
    let line = `${k.name.padEnd(width)}  p50 ${f(p50).padStart(6)} ms  p90 ${f(pct(k.wall, 90)).padStart(6)} ms  ratio to node ${(p50 / base).toFixed(2)}x`;
    if (cpuBase)
      line += ` | cpu p50 ${f(pct(k.cpu, 50)).padStart(6)} ms, ratio ${(pct(k.cpu, 50) / cpuBase).toFixed(2)}x`;
    if (k.host.length) {
      const h = pct(k.host, 50);
      line += ` | outside the agent's steps p50 ${f(h)} ms, ratio ${(h / base).toFixed(2)}x`;
    }
    console.log(line);
  }
  console.log('target: quiesce --version and the freeze start-up ≤ 1.50x node -e 0');
  console.log(
    environmentLine(() => {
      const shell = Array.from({ length: 9 }, () => timeNode(['-e', '0'], process.env));
      return `node -e 0 takes ${f(pct(shell, 50))} ms`;
    }),
  );
  if (full) {
    for (const bin of [BIN, ...(COMPARE ? [COMPARE] : [])]) {
      const counts = Array.from({ length: 3 }, () => compiledInWindow(bin, full, dir));
      console.log(
        `${bin}: V8 compile events inside the frozen window (doFreeze → thawAndProve), 3 runs: ${counts.map((c) => `${c.events} (${c.ms.toFixed(2)} ms)`).join(', ')}`,
      );
    }
  }
} finally {
  if (mount) destroyLoopMount(mount);
  ns?.stop();
  guard?.stop();
  rmSync(dir, { recursive: true, force: true });
}
