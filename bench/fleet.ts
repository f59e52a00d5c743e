/**
 * A fleet run: 1000 guests (null agents in unix-listen mode that freeze
 * nothing, all in one child process), concurrency 64, through the real engine
 * (plan → execute: journal, lock, connect, preflight, freeze, snapshot `true`,
 * thaw, prove). Prints orchestration time per guest (wall time / guests), the
 * time per step, and the host's peak RSS. Targets: ≤ 5 ms per guest, ≤ 250 MB.
 * Side by side, the same process spawns `true` as many times on its own: each
 * guest's snapshot command is a child process, and what a spawn costs the
 * event loop is the machine's (fork under a VM), not quiesce's; the line
 * "quiesce's own" is the run minus that floor. FLEET_GUESTS and
 * FLEET_CONCURRENCY override the size.
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
  const runs: { wallMs: number; rssMb: number; ok: number; steps: Map<string, number> }[] = [];
  for (let round = 0; round < 3; round++) {
    const log = captureLogger();
    const now = new Date();
    const p = plan(config, 'fleet', { runId: newRunId(now), now });
    const t0 = performance.now();
    const report = await execute(p, { log, signals: new SignalGuard(log) });
    const wallMs = performance.now() - t0;
    const hwm = Number(/VmHWM:\s+(\d+) kB/.exec(readFileSync('/proc/self/status', 'utf8'))![1]) / 1024;
    const steps = new Map<string, number>();
    for (const g of report.guests) for (const s of g.steps) steps.set(s.name, (steps.get(s.name) ?? 0) + s.durationMs);
    runs.push({ wallMs, rssMb: hwm, ok: report.guests.filter((g) => g.ok).length, steps });
  }
  // The floor: the same number of `true` spawns, as many at a time as the run had guests in flight.
  const spawnFloor: number[] = [];
  for (let round = 0; round < 3; round++) {
    const t0 = performance.now();
    let next = 0;
    await Promise.all(
      Array.from({ length: CONCURRENCY }, async () => {
        while (next++ < GUESTS) {
          const c = spawn('true', [], { stdio: 'ignore', detached: true });
          await once(c, 'exit');
        }
      }),
    );
    spawnFloor.push((performance.now() - t0) / GUESTS);
  }
  const floor = Math.min(...spawnFloor);
  const best = runs.reduce((a, b) => (a.wallMs < b.wallMs ? a : b));
  for (const [i, r] of runs.entries()) {
    console.log(
      `round ${i + 1}: ${r.ok}/${GUESTS} ok in ${r.wallMs.toFixed(0)} ms → ${(r.wallMs / GUESTS).toFixed(2)} ms per guest; peak RSS ${r.rssMb.toFixed(0)} MB`,
    );
    // Each step's latency, averaged over guests: with many guests in flight it includes waiting for the loop.
    console.log(
      `  step latency per guest: ${[...r.steps].map(([k, v]) => `${k} ${(v / GUESTS).toFixed(1)} ms`).join(', ')}`,
    );
  }
  console.log(
    `fleet: ${GUESTS} guests, concurrency ${CONCURRENCY}: orchestration ${(best.wallMs / GUESTS).toFixed(2)} ms per guest (target ≤ 5 ms), peak RSS ${Math.max(...runs.map((r) => r.rssMb)).toFixed(0)} MB (target ≤ 250 MB)`,
  );
  console.log(
    `spawning \`true\` alone: ${floor.toFixed(2)} ms per spawn (best of 3) → quiesce's own ${(best.wallMs / GUESTS - floor).toFixed(2)} ms per guest (${(best.wallMs / GUESTS / floor).toFixed(2)}x the bare spawns)`,
  );
  if (runs.some((r) => r.ok !== GUESTS)) process.exitCode = 1;
} finally {
  agents.kill('SIGTERM');
  rmSync(dir, { recursive: true, force: true });
}
