/**
 * Host overhead inside the frozen window: `quiesce freeze --guest a -- true`
 * against a minimal hand-written client doing only freeze-list, `true`, thaw
 * on the same agent and loop mount. Both are fresh processes per run and
 * measure the window the same way: from sending the freeze to the thaw's
 * reply. (A freeze right after another skips the kernel's RCU grace period,
 * ~30 ms here, so a tight loop would flatter either side.) Needs root.
 */
import { spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { haveQemuGa, startAgent, type AgentKind } from '../test/helpers/agents.js';
import { makeLoopFs, removeLoopFs, startRootThawGuard } from '../test/helpers/loop-fs.js';

const N = Number(process.env['BENCH_N'] ?? 40);
const BIN = fileURLToPath(new URL('../dist/src/bin.js', import.meta.url));
const pct = (xs: number[], p: number) =>
  [...xs].sort((a, b) => a - b)[Math.min(xs.length - 1, Math.floor((p / 100) * xs.length))]!;

const MINIMAL = fileURLToPath(new URL('./minimal-freeze-client.mjs', import.meta.url));

/** The minimal client, a fresh process per run like the CLI, so both pay the same kernel and start-up costs. */
interface Window {
  /** Freeze sent → thaw reply. */
  total: number;
  /** Freeze reply → thaw reply: the part the host controls (command + its own work + the thaw). */
  afterFreeze: number;
}

function minimalWindows(socket: string, mnt: string, n: number): Window[] {
  const out: Window[] = [];
  for (let i = 0; i < n; i++) {
    const r = spawnSync(process.execPath, [MINIMAL, socket, mnt], { encoding: 'utf8' });
    if (r.status !== 0) throw new Error(`minimal client failed: ${r.stderr}`);
    const [total, afterFreeze] = r.stdout.trim().split(' ').map(Number) as [number, number];
    out.push({ total, afterFreeze });
  }
  return out;
}

function quiesceWindows(config: string, n: number): Window[] {
  const out: Window[] = [];
  for (let i = 0; i < n; i++) {
    const r = spawnSync(process.execPath, [BIN, 'freeze', '--config', config, '--guest', 'a', '--json', '--', 'true'], {
      encoding: 'utf8',
    });
    if (r.status !== 0) throw new Error(`quiesce freeze failed (${r.status}): ${r.stderr}`);
    const j = JSON.parse(r.stdout) as { frozenWindowMs: number; freezeMs: number };
    out.push({ total: j.frozenWindowMs, afterFreeze: j.frozenWindowMs - j.freezeMs });
  }
  return out;
}

const guard = startRootThawGuard();
const fs = makeLoopFs('ext4');
const dir = mkdtempSync(join(tmpdir(), 'bench-window-'));
try {
  const kinds: AgentKind[] = ['quiesce', ...(haveQemuGa() ? (['qemu-ga'] as const) : [])];
  console.log(`frozen window of freeze → true → thaw on one ext4 loop mount, ${N} runs each`);
  for (const kind of kinds) {
    let agent;
    try {
      agent = await startAgent(kind, kind === 'quiesce' ? { args: [`--fsfreeze-include=${fs.mnt}`] } : {});
    } catch (err) {
      console.log(`${kind.padEnd(8)} skipped: ${(err as Error).message.split('\n')[0]}`);
      continue;
    }
    try {
      const config = join(dir, `${kind}.json`);
      writeFileSync(
        config,
        JSON.stringify({
          stateDir: join(dir, `${kind}-state`),
          guests: {
            a: {
              connector: { type: 'socket', path: agent.socket },
              freeze: [fs.mnt],
              snapshot: { provider: 'command', argv: ['true'] },
            },
          },
          jobs: { j: { guests: ['a'] } },
        }),
      );
      let minimal: Window[];
      try {
        minimal = minimalWindows(agent.socket, fs.mnt, 3);
      } catch (err) {
        console.log(`${kind.padEnd(8)} skipped: ${(err as Error).message}`);
        continue;
      }
      const q: Window[] = [];
      minimal = [];
      for (let round = 0; round < 4; round++) {
        minimal.push(...minimalWindows(agent.socket, fs.mnt, N / 4));
        q.push(...quiesceWindows(config, N / 4));
      }
      const f = (x: number) => x.toFixed(2);
      const p50 = (ws: Window[], k: keyof Window) =>
        pct(
          ws.map((w) => w[k]),
          50,
        );
      const overhead = p50(q, 'afterFreeze') - p50(minimal, 'afterFreeze');
      console.log(
        `${kind.padEnd(8)} window p50: minimal ${f(p50(minimal, 'total'))} ms, quiesce ${f(p50(q, 'total'))} ms | freeze reply → thaw reply p50: minimal ${f(p50(minimal, 'afterFreeze'))} ms, quiesce ${f(p50(q, 'afterFreeze'))} ms | host overhead in window ${f(overhead)} ms (target < 2 ms)`,
      );
    } finally {
      await agent.stop();
    }
  }
} finally {
  removeLoopFs(fs);
  rmSync(dir, { recursive: true, force: true });
  guard.stop();
}
