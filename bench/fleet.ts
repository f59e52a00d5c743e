/**
 * A fleet run: 1000 guests (null agents in unix-listen mode that freeze
 * nothing, all in one child process), concurrency 64, through the real engine
 * (plan → execute: journal, lock, connect, preflight, freeze, snapshot `true`,
 * thaw, prove). Prints orchestration time per guest (wall time / guests), the
 * time per step, and the host's peak RSS. Targets: ≤ 5 ms per guest, ≤ 250 MB.
 * Side by side, the same process spawns `true` as many times on its own: each
 * guest's snapshot command is a child process, and what a spawn costs the
 * event loop is the machine's (fork under a VM), not quiesce's; the line
 * "quiesce's own" is the run minus that floor, round by round (run, floor,
 * run, floor…), in wall time and in this process's CPU time (less swayed by
 * other load on the machine). FLEET_GUESTS, FLEET_CONCURRENCY and
 * FLEET_ROUNDS (default 3) override the size.
 */
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { resolveConfig } from '../src/config/load.js';
import { execute } from '../src/workflow/executor.js';
import { newRunId, plan } from '../src/workflow/plan.js';
import { SignalGuard } from '../src/workflow/signals.js';
import { captureLogger } from '../src/log/logger.js';

const GUESTS = Number(process.env['FLEET_GUESTS'] ?? 1000);
const CONCURRENCY = Number(process.env['FLEET_CONCURRENCY'] ?? 64);
const ROUNDS = Number(process.env['FLEET_ROUNDS'] ?? 3);

const dir = mkdtempSync(join(tmpdir(), 'fleet-'));
const agents = spawn(
  process.execPath,
  ['--import', 'tsx', fileURLToPath(new URL('./fleet/null-agents.ts', import.meta.url)), dir, String(GUESTS)],
  {
    stdio: ['ignore', 'pipe', 'inherit'],
  },
);
try {
  await once(agents.stdout!, 'data');
  const guests: Record<string, unknown> = {};
  for (let i = 0; i < GUESTS; i++) {
    guests[`g${i}`] = {
      connector: { type: 'socket', path: join(dir, `agent-${i}.sock`) },
      freeze: ['/data'],
      snapshot: { provider: 'command', argv: ['true'] },
    };
  }
  const config = resolveConfig(
    {
      stateDir: join(dir, 'state'),
      guests,
      jobs: { fleet: { guests: Object.keys(guests), concurrency: CONCURRENCY } },
    },
    'fleet',
  );
  const runs: { wallMs: number; cpuMs: number; rssMb: number; ok: number; steps: Map<string, number> }[] = [];
  const floors: { wallMs: number; cpuMs: number }[] = [];
  const cpuMs = (): number => {
    const u = process.cpuUsage();
    return (u.user + u.system) / 1000;
  };
  // The run and the floor alternate round by round, so that a busy spell of the machine falls on both.
  for (let round = 0; round < ROUNDS; round++) {
    const log = captureLogger();
    const now = new Date();
    const p = plan(config, 'fleet', { runId: newRunId(now), now });
    const c0 = cpuMs();
    const t0 = performance.now();
    const report = await execute(p, { log, signals: new SignalGuard(log) });
    const wallMs = performance.now() - t0;
    const cpu = cpuMs() - c0;
    const hwm = Number(/VmHWM:\s+(\d+) kB/.exec(readFileSync('/proc/self/status', 'utf8'))![1]) / 1024;
    const steps = new Map<string, number>();
    for (const g of report.guests) for (const s of g.steps) steps.set(s.name, (steps.get(s.name) ?? 0) + s.durationMs);
    runs.push({ wallMs, cpuMs: cpu, rssMb: hwm, ok: report.guests.filter((g) => g.ok).length, steps });
    const failed = new Map<string, number>();
    for (const g of report.guests)
      for (const e of g.ok ? [] : g.errors) failed.set(e.code, (failed.get(e.code) ?? 0) + 1);
    if (failed.size) console.log(`round ${round + 1}: errors ${[...failed].map(([c, n]) => `${c} ×${n}`).join(', ')}`);
    // The floor: the same number of `true` spawns, as many at a time as the run had guests in flight.
    const f0 = cpuMs();
    const s0 = performance.now();
    let next = 0;
    await Promise.all(
      Array.from({ length: CONCURRENCY }, async () => {
        while (next++ < GUESTS) {
          const c = spawn('true', [], { stdio: 'ignore', detached: true });
          await once(c, 'exit');
        }
      }),
    );
    floors.push({ wallMs: performance.now() - s0, cpuMs: cpuMs() - f0 });
  }
  const per = (ms: number): string => (ms / GUESTS).toFixed(2);
  for (const [i, r] of runs.entries()) {
    const f = floors[i]!;
    console.log(
      `round ${i + 1}: ${r.ok}/${GUESTS} ok in ${r.wallMs.toFixed(0)} ms → ${per(r.wallMs)} ms per guest (CPU ${per(r.cpuMs)} ms); spawning \`true\` alone ${per(f.wallMs)} ms (CPU ${per(f.cpuMs)} ms) → quiesce's own ${per(r.wallMs - f.wallMs)} ms (CPU ${per(r.cpuMs - f.cpuMs)} ms); peak RSS ${r.rssMb.toFixed(0)} MB`,
    );
    // Each step's latency, averaged over guests: with many guests in flight it includes waiting for the loop.
    console.log(
      `  step latency per guest: ${[...r.steps].map(([k, v]) => `${k} ${(v / GUESTS).toFixed(1)} ms`).join(', ')}`,
    );
  }
  const own = runs.map((r, i) => r.wallMs - floors[i]!.wallMs).sort((a, b) => a - b);
  const ownCpu = runs.map((r, i) => r.cpuMs - floors[i]!.cpuMs).sort((a, b) => a - b);
  const best = runs.reduce((a, b) => (a.wallMs < b.wallMs ? a : b));
  console.log(
    `fleet: ${GUESTS} guests, concurrency ${CONCURRENCY}: ${per(best.wallMs)} ms per guest in all (best of ${ROUNDS}), peak RSS ${Math.max(...runs.map((r) => r.rssMb)).toFixed(0)} MB (target ≤ 250 MB)`,
  );
  console.log(
    `quiesce's own part (the run minus the spawns alone, round by round): median ${per(own[Math.floor(own.length / 2)]!)} ms per guest (${per(own[0]!)}–${per(own.at(-1)!)}), CPU median ${per(ownCpu[Math.floor(ownCpu.length / 2)]!)} ms (${per(ownCpu[0]!)}–${per(ownCpu.at(-1)!)}) (target ≤ 5 ms)`,
  );
  if (runs.some((r) => r.ok !== GUESTS)) process.exitCode = 1;
} finally {
  agents.kill('SIGTERM');
  rmSync(dir, { recursive: true, force: true });
}
