/**
 * How long guest writes block, side by side on one TCG guest under libvirtd (qemu-ga inside, /data on vda):
 *   virsh-quiesce  `virsh snapshot-create-as DOM --disk-only --atomic --quiesce` (libvirt freezes every
 *                  filesystem: in this guest /data alone);
 *   virsh-3line    the 3-line script: `virsh domfsfreeze --mountpoint /data`, `virsh snapshot-create-as
 *                  --disk-only --atomic`, `virsh domfsthaw`;
 *   q-snapshot     `quiesce run` with the libvirt provider, mode snapshot (commit: false, so that it does
 *                  the same work as the two above; every overlay is merged back untimed after each run);
 *   q-backup       `quiesce run` with the libvirt provider, mode backup (backup-begin in the window).
 * The write probe runs in the guest (node, started through guest-exec): a 4 KiB write + fdatasync to /data
 * every 5 ms, printing each one that took ≥ PROBE_MS on the console; a run's blocked time is its longest.
 * Runs interleave (one of each method per round, fresh processes, the same pause before each), so a slow
 * spell of the host falls on all alike. Also: quiesce's connect/preflight/prepare per guest (from its run
 * report) and whole-run wall times (process start → exit).
 * Where a run's wall time goes: the run report's own duration (config loaded, from the executor's start to
 * its end) against the process's wall time, and `node bin.js --version` (the CLI's start-up floor) each round.
 * Every side runs in the environment a nightly job gets from cron or systemd (lib/job-env.ts), not this
 * shell's; where this shell has variables that slow node's start, each round also times `--version` with
 * them, and the report says what they cost.
 * Needs root, libvirtd (started like the tests do) and qemu-ga. BENCH_N rounds (default 6), BENCH_PAUSE_MS,
 * QUIESCE_BIN (the CLI to run; default the installed bundle dist/cli/bin.js).
 */
import { execFileSync, spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { fileURLToPath } from 'node:url';
import type { RunReport } from '../src/workflow/results.js';
import { haveQemuGa } from '../test/helpers/agents.js';
import { defineGuest, ensureLibvirtd, LIBVIRT_URI, libvirtUnavailable, virsh } from '../test/helpers/libvirt.js';
import { environmentLine, JOB_ENV, SLOW_START_VARIABLES, timeNode } from './lib/job-env.js';
import { PROBE, PROBE_LINE, PROBE_STARTED } from './lib/write-probe.js';

const N = Number(process.env['BENCH_N'] ?? 6);
const PAUSE_MS = Number(process.env['BENCH_PAUSE_MS'] ?? 1000);
const BIN = process.env['QUIESCE_BIN'] ?? fileURLToPath(new URL('../dist/cli/bin.js', import.meta.url));

const median = (xs: number[]): number => {
  const s = [...xs].sort((a, b) => a - b);
  return s.length % 2 ? s[(s.length - 1) / 2]! : (s[s.length / 2 - 1]! + s[s.length / 2]!) / 2;
};
const f = (x: number): string => x.toFixed(1);

const why =
  libvirtUnavailable() ??
  (haveQemuGa() ? undefined : 'no qemu-ga') ??
  (existsSync(BIN) ? undefined : `no ${BIN} (npx tsc -b)`);
if (why) {
  console.log(`libvirt-window: skipped: ${why}`);
  process.exit(0);
}

type Method = 'virsh-quiesce' | 'virsh-3line' | 'q-snapshot' | 'q-backup';
const METHODS: Method[] = ['virsh-quiesce', 'virsh-3line', 'q-snapshot', 'q-backup'];

interface Sample {
  blockedMs: number;
  wallMs: number;
  /** quiesce only: connect + preflight, and the provider's set-up. */
  preflightMs?: number;
  connectMs?: number;
  /** quiesce only: the run report's duration (executor start to end); wall minus this is process start-up and exit. */
  runMs?: number;
  prepareMs?: number;
  windowMs?: number;
}

await ensureLibvirtd();
const dir = mkdtempSync(join(tmpdir(), 'bench-libvirt-'));
const guest = await defineGuest({ agent: 'qemu-ga', dataDiskMB: 64 });
const samples = new Map<Method, Sample[]>(METHODS.map((m) => [m, []]));
/** `node bin.js --version`, once a round: the CLI's start-up and exit with no work. */
const startupMs: number[] = [];
/** The same with this shell's environment, where it has SLOW_START_VARIABLES. */
const startupShellMs: number[] = [];
try {
  const dom = guest.name;
  await guest.agentCommand('guest-exec', { path: '/usr/bin/node', arg: ['-e', PROBE] });
  await guest.waitForConsole(PROBE_STARTED, 120_000);
  await sleep(2000);

  const config = (mode: 'snapshot' | 'backup'): string => {
    const file = join(dir, `q-${mode}.json`);
    writeFileSync(
      file,
      JSON.stringify({
        stateDir: join(dir, `state-${mode}`),
        guests: {
          vm: {
            connector: { type: 'libvirt', domain: dom, uri: LIBVIRT_URI },
            freeze: ['/data'],
            snapshot: {
              provider: 'libvirt',
              mode,
              disks: ['vda'],
              target: join(dir, `q-${mode}-{disk}-{runId}.${mode === 'snapshot' ? 'qcow2' : 'img'}`),
              ...(mode === 'snapshot' ? { commit: false } : {}),
            },
          },
        },
        jobs: { bench: { guests: ['vm'], budget: '60s' } },
      }),
    );
    return file;
  };
  const qConfig = { 'q-snapshot': config('snapshot'), 'q-backup': config('backup') };
  const script = join(dir, 'three-lines.sh');
  writeFileSync(
    script,
    `#!/bin/sh\nset -e\nvirsh -c ${LIBVIRT_URI} domfsfreeze "$1" --mountpoint /data >/dev/null\n` +
      `virsh -c ${LIBVIRT_URI} snapshot-create-as "$1" --disk-only --atomic --no-metadata --diskspec "vda,file=$2" >/dev/null || { virsh -c ${LIBVIRT_URI} domfsthaw "$1"; exit 1; }\n` +
      `virsh -c ${LIBVIRT_URI} domfsthaw "$1" >/dev/null\n`,
    { mode: 0o755 },
  );

  /** Back onto data.img after an overlay method (not timed). */
  const mergeBack = async (): Promise<void> => {
    await virsh(['blockcommit', dom, 'vda', '--active', '--shallow', '--pivot', '--wait', '--delete']);
    for (const s of (await virsh(['snapshot-list', dom, '--name'])).split('\n').filter(Boolean))
      await virsh(['snapshot-delete', dom, s, '--metadata']);
  };

  const one = async (m: Method, i: number): Promise<Sample> => {
    const since = guest.consoleOffset();
    const overlay = join(dir, `${m}-${i}.qcow2`);
    const t0 = performance.now();
    let report: RunReport | undefined;
    if (m === 'virsh-quiesce') {
      execFileSync(
        'virsh',
        [
          '-c',
          LIBVIRT_URI,
          'snapshot-create-as',
          dom,
          '--disk-only',
          '--atomic',
          '--quiesce',
          '--no-metadata',
          '--diskspec',
          `vda,file=${overlay}`,
        ],
        { stdio: 'ignore', env: JOB_ENV },
      );
    } else if (m === 'virsh-3line') {
      execFileSync(script, [dom, overlay], { stdio: 'ignore', env: JOB_ENV });
    } else {
      const r = spawnSync(process.execPath, [BIN, 'run', '--config', qConfig[m], '--json'], {
        encoding: 'utf8',
        timeout: 120_000,
        env: JOB_ENV,
      });
      if (r.status !== 0) throw new Error(`quiesce run (${m}) failed (${r.status}): ${r.stderr}\n${r.stdout}`);
      report = JSON.parse(r.stdout) as RunReport;
    }
    const wallMs = performance.now() - t0;
    // The blocked write reports itself once it completes, after the thaw.
    await sleep(500);
    const lines = [...guest.console().slice(since).matchAll(PROBE_LINE)].map((x) => Number(x[2]));
    const s: Sample = { blockedMs: lines.length ? Math.max(...lines) : 0, wallMs };
    if (report) {
      const g = report.guests[0]!;
      const step = (n: string): number => g.steps.find((x) => x.name === n)?.durationMs ?? NaN;
      s.preflightMs = step('connect') + step('preflight');
      s.connectMs = step('connect');
      s.runMs = report.durationMs;
      s.prepareMs = step('snapshot-prepare');
      s.windowMs = g.frozenWindowMs!;
      for (const file of g.snapshotFiles ?? []) if (m === 'q-backup') rmSync(file, { force: true });
    }
    if (m !== 'q-backup') await mergeBack();
    return s;
  };

  // Warm-up: page cache, the first freeze of the boot (not counted).
  for (const m of METHODS) await one(m, -1);
  for (let i = 0; i < N; i++) {
    for (const m of METHODS) {
      await sleep(PAUSE_MS);
      samples.get(m)!.push(await one(m, i));
    }
    startupMs.push(timeNode([BIN, '--version'], JOB_ENV));
    if (SLOW_START_VARIABLES.length) startupShellMs.push(timeNode([BIN, '--version'], process.env));
  }
} finally {
  await guest.destroy();
  rmSync(dir, { recursive: true, force: true });
}

console.log(
  `libvirt-window: ${N} interleaved rounds on one TCG guest (qemu-ga, /data on a 64 MB vda), probe: 4 KiB write + fdatasync every 5 ms`,
);
const med = (m: Method, k: keyof Sample): number => median(samples.get(m)!.map((s) => s[k]!));
for (const m of METHODS) {
  const xs = samples.get(m)!;
  console.log(
    `${m.padEnd(14)} writes blocked median ${f(med(m, 'blockedMs'))} ms (max ${f(Math.max(...xs.map((s) => s.blockedMs)))}), wall median ${f(med(m, 'wallMs'))} ms` +
      (xs[0]!.preflightMs !== undefined
        ? `; connect+preflight ${f(med(m, 'preflightMs'))} ms (connect ${f(med(m, 'connectMs'))}), provider prepare ${f(med(m, 'prepareMs'))} ms, frozen window ${f(med(m, 'windowMs'))} ms, run report ${f(med(m, 'runMs'))} ms of the wall`
        : ''),
  );
}
const ref = med('virsh-quiesce', 'blockedMs');
console.log(
  `writes blocked vs virsh --quiesce: q-snapshot ${(med('q-snapshot', 'blockedMs') / ref).toFixed(2)}x (target ≤ 1.0x), ` +
    `q-backup ${(med('q-backup', 'blockedMs') / ref).toFixed(2)}x (target ≤ 0.8x), 3-line script ${(med('virsh-3line', 'blockedMs') / ref).toFixed(2)}x`,
);
console.log(
  `wall: q-snapshot / 3-line script ${(med('q-snapshot', 'wallMs') / med('virsh-3line', 'wallMs')).toFixed(2)}x (target ≤ 1.5x); ` +
    `q-backup / 3-line ${(med('q-backup', 'wallMs') / med('virsh-3line', 'wallMs')).toFixed(2)}x; ` +
    `preflight (connect+preflight) median ${f(median([...samples.get('q-snapshot')!, ...samples.get('q-backup')!].map((s) => s.preflightMs!)))} ms (target ≤ 20 ms)`,
);
console.log(
  `start-up: \`node bin.js --version\` median ${f(median(startupMs))} ms; q-snapshot wall outside the run report ${f(median(samples.get('q-snapshot')!.map((s) => s.wallMs - s.runMs!)))} ms`,
);
console.log(
  environmentLine(
    () =>
      `\`--version\` takes ${f(median(startupShellMs))} ms (+${f(median(startupShellMs) - median(startupMs))} ms for each node start)`,
  ),
);
