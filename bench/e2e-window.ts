/**
 * The frozen window of `quiesce run` with the QMP backup step, in a real TCG
 * guest, against a minimal client doing only freeze-list, blockdev-backup,
 * thaw (bench/minimal-qmp-backup-client.mjs) on the same guest, agent and
 * disk. Both are fresh processes per run, alternate, and start after the same
 * pause (the first freeze after an idle spell pays the guest kernel's RCU
 * grace period: give both sides the same idle spell). Host overhead is
 * compared on the part the host controls, freeze reply → thaw reply
 * (blockdev-backup + thaw + the client's own work), p50 against p50.
 * Then each agent's own freeze and thaw latency, seen from the host (the
 * minimal client's request → reply, after a guest-sync on its fresh
 * connection, as `quiesce run` handshakes first), quiesce-agent against qemu-ga.
 * Each agent has its own guest, booted before any run; the runs of the two
 * guests interleave, so that a slow spell of the host (it drifts by tens of
 * percent over minutes) falls on both agents alike instead of on one.
 * A guest's speed also differs from boot to boot: back to back, one pair of
 * boots measured quiesce-agent's thaw at 0.95x qemu-ga's and the next at 1.34x,
 * each agent's two clients agreeing within each boot. So the runs are split over
 * rounds, each with freshly booted guests; every round's ratio is printed, and
 * the figures are taken over the rounds' samples pooled.
 * Needs root (QEMU, qemu-ga). BENCH_ROUNDS rounds (default 3) of BENCH_N runs per side and agent
 * (default 20), BENCH_AGENTS (default qemu-ga,quiesce), BENCH_PAUSE_MS between runs (default 1000).
 */
import { spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync, unlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { fileURLToPath } from 'node:url';
import type { RunReport } from '../src/workflow/results.js';
import { haveQemuGa, type AgentKind } from '../test/helpers/agents.js';
import { bootGuest, DATA_DEVICE, DATA_NODE, guestUnavailable, type Guest } from '../test/helpers/vm/qemu.js';

const N = Number(process.env['BENCH_N'] ?? 20);
const ROUNDS = Number(process.env['BENCH_ROUNDS'] ?? 3);
const PAUSE_MS = Number(process.env['BENCH_PAUSE_MS'] ?? 1000);
const DISK_MB = 64;
const BIN = fileURLToPath(new URL('../dist/src/bin.js', import.meta.url));
const MINIMAL = fileURLToPath(new URL('./minimal-qmp-backup-client.mjs', import.meta.url));

const pct = (xs: number[], p: number) =>
  [...xs].sort((a, b) => a - b)[Math.min(xs.length - 1, Math.floor((p / 100) * xs.length))]!;
const p50 = (xs: number[]) => pct(xs, 50);
const f = (x: number) => x.toFixed(2);

interface Sample {
  /** Freeze sent → thaw reply. */
  window: number;
  /** Freeze reply → thaw reply: what the host controls. */
  afterFreeze: number;
  freeze: number;
  thaw?: number;
  backup?: number;
}

function minimalRun(g: Guest, dir: string, i: number): Sample {
  const target = join(dir, `minimal-${i}.img`);
  const r = spawnSync(
    process.execPath,
    [MINIMAL, g.qgaSocket, g.qmpSocket, '/data', DATA_NODE, String(DISK_MB * 1024 * 1024), target],
    { encoding: 'utf8', timeout: 120_000 },
  );
  unlinkSync(target);
  if (r.status !== 0) throw new Error(`minimal client failed (${r.status}): ${r.stderr}`);
  const [window, afterFreeze, freeze, backup, thaw] = r.stdout.trim().split(' ').map(Number) as number[];
  return { window: window!, afterFreeze: afterFreeze!, freeze: freeze!, backup: backup!, thaw: thaw! };
}

function quiesceRun(config: string): Sample {
  const flags = (process.env['BENCH_QUIESCE_NODE_FLAGS'] ?? '').split(' ').filter(Boolean);
  const r = spawnSync(process.execPath, [...flags, BIN, 'run', '--config', config, '--json'], {
    encoding: 'utf8',
    timeout: 300_000,
  });
  if (r.status !== 0) throw new Error(`quiesce run failed (${r.status}): ${r.stderr}\n${r.stdout}`);
  const g = (JSON.parse(r.stdout) as RunReport).guests[0]!;
  for (const file of g.snapshotFiles ?? []) unlinkSync(file);
  return {
    window: g.frozenWindowMs!,
    afterFreeze: g.frozenWindowMs! - g.freezeMs!,
    freeze: g.freezeMs!,
    // The report's window breakdown: the snapshot step (QMP transaction round trip) and the thaw round trip.
    backup: g.snapshotMs!,
    thaw: g.thawMs!,
  };
}

const why = guestUnavailable() ?? (haveQemuGa() ? undefined : 'no qemu-ga');
if (why) {
  console.log(`e2e-window: skipped: ${why}`);
  process.exit(0);
}

const dir = mkdtempSync(join(tmpdir(), 'bench-e2e-'));
const kinds = (process.env['BENCH_AGENTS'] ?? 'qemu-ga,quiesce').split(',') as AgentKind[];
interface Side {
  kind: AgentKind;
  guest: Guest;
  config: string;
  minimal: Sample[];
  q: Sample[];
}
/** Every round's samples per agent. */
const rounds: Map<AgentKind, { minimal: Sample[]; q: Sample[] }>[] = [];
const pick = (xs: Sample[], k: keyof Sample) => xs.map((x) => x[k]!);

/** One guest per agent, all booted first: their runs interleave, so a slow spell of the host hits both agents alike. */
async function round(r: number): Promise<void> {
  const sides: Side[] = [];
  try {
    for (const kind of kinds) {
      const guest = await bootGuest({
        agent: kind,
        agentArgs: kind === 'quiesce' ? ['--fsfreeze-include=/data'] : [],
        dataDiskMB: DISK_MB,
      });
      const config = join(dir, `${kind}.json`);
      sides.push({ kind, guest, config, minimal: [], q: [] });
      writeFileSync(
        config,
        JSON.stringify({
          stateDir: join(dir, `${kind}-state-${r}`),
          guests: {
            vm: {
              connector: { type: 'socket', path: guest.qgaSocket },
              freeze: ['/data'],
              snapshot: {
                provider: 'qmp',
                socket: guest.qmpSocket,
                disks: [DATA_NODE],
                target: join(dir, `q-${kind}-{disk}-{runId}.img`),
              },
            },
          },
          jobs: { bench: { guests: ['vm'], budget: '60s' } },
        }),
      );
      // Warm-up, not counted: page cache, the first freeze of the boot.
      minimalRun(guest, dir, -1);
      quiesceRun(config);
    }
    for (let i = 0; i < N; i++) {
      for (const side of sides) {
        await sleep(PAUSE_MS);
        side.minimal.push(minimalRun(side.guest, dir, i));
        await sleep(PAUSE_MS);
        side.q.push(quiesceRun(side.config));
      }
      if ((i + 1) % 10 === 0 && i + 1 < N) console.log(`  round ${r + 1}: ${i + 1}/${N} runs`);
    }
  } finally {
    for (const { guest } of sides) await guest.stop();
  }
  rounds.push(new Map(sides.map((s) => [s.kind, { minimal: s.minimal, q: s.q }])));
  const ref = rounds.at(-1)!.get('qemu-ga');
  const ours = rounds.at(-1)!.get('quiesce');
  if (ref && ours) {
    const ratio = (k: keyof Sample) => f(p50(pick(ours.minimal, k)) / p50(pick(ref.minimal, k)));
    console.log(
      `round ${r + 1}/${ROUNDS}: quiesce-agent / qemu-ga p50 freeze ${ratio('freeze')}x, thaw ${ratio('thaw')}x ` +
        `(thaw ${f(p50(pick(ours.minimal, 'thaw')))} / ${f(p50(pick(ref.minimal, 'thaw')))} ms)`,
    );
  }
}

try {
  console.log(
    `frozen window of freeze-list /data → QMP backup of ${DATA_DEVICE} (${DISK_MB} MB ext4, sync full) → thaw in a TCG guest per agent, ` +
      `${ROUNDS} rounds of freshly booted guests × ${N} runs per side and agent, interleaved, ${PAUSE_MS} ms apart`,
  );
  for (let r = 0; r < ROUNDS; r++) await round(r);
  console.log(`all ${ROUNDS} rounds pooled (${ROUNDS * N} runs per side and agent):`);
  const agentStats = new Map<AgentKind, { freeze: number; thaw: number }>();
  for (const kind of kinds) {
    const minimal = rounds.flatMap((m) => m.get(kind)!.minimal);
    const q = rounds.flatMap((m) => m.get(kind)!.q);
    // Host work between the round trips: the window after the freeze minus what QEMU and the agent took.
    const glue = (xs: Sample[]) => xs.map((x) => x.afterFreeze - x.backup! - x.thaw!);
    const overhead = p50(pick(q, 'afterFreeze')) - p50(pick(minimal, 'afterFreeze'));
    console.log(
      `${kind.padEnd(8)} window p50: minimal ${f(p50(pick(minimal, 'window')))} ms, quiesce ${f(p50(pick(q, 'window')))} ms | ` +
        `freeze reply → thaw reply p50: minimal ${f(p50(pick(minimal, 'afterFreeze')))} ms, quiesce ${f(p50(pick(q, 'afterFreeze')))} ms → host overhead ${f(overhead)} ms (target < 2 ms)`,
    );
    console.log(
      `${kind.padEnd(8)}   of which p50: backup round trip minimal ${f(p50(pick(minimal, 'backup')))} / quiesce ${f(p50(pick(q, 'backup')))} ms, ` +
        `thaw minimal ${f(p50(pick(minimal, 'thaw')))} / quiesce ${f(p50(pick(q, 'thaw')))} ms, ` +
        `host work between them minimal ${f(p50(glue(minimal)))} / quiesce ${f(p50(glue(q)))} ms`,
    );
    const freeze = p50(pick(minimal, 'freeze'));
    const thaw = p50(pick(minimal, 'thaw'));
    agentStats.set(kind, { freeze, thaw });
    console.log(
      `${kind.padEnd(8)} agent latency from the host (minimal client, p50 / p90): freeze ${f(freeze)} / ${f(pct(pick(minimal, 'freeze'), 90))} ms, thaw ${f(thaw)} / ${f(pct(pick(minimal, 'thaw'), 90))} ms`,
    );
  }
  const ref = agentStats.get('qemu-ga');
  const ours = agentStats.get('quiesce');
  if (ref && ours) {
    console.log(
      `quiesce-agent / qemu-ga (pooled): freeze ${f(ours.freeze / ref.freeze)}x, thaw ${f(ours.thaw / ref.thaw)}x (target ≤ 1.2x)`,
    );
  }
} finally {
  rmSync(dir, { recursive: true, force: true });
}
