/**
 * The frozen window of an incremental against a full, as an operator sees it:
 * a real TCG guest (each agent in turn) with a qcow2 data disk and the writer
 * running, `quiesce run` alternating between a job that takes a full every
 * time (level full, one repository) and one that takes incrementals (level
 * auto, another repository), interleaved; the report's frozenWindowMs and
 * snapshot step per run. Target: incremental ≤ 1.1× full (the bitmap work is
 * staged before the freeze).
 *
 *   node --import tsx bench/chain-window.ts     (BENCH_N pairs per agent, default 10; needs the build: dist/)
 */
import { spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { RunReport } from '../src/workflow/results.js';
import type { AgentKind } from '../test/helpers/agents.js';
import { bootGuest, DATA_DEVICE } from '../test/helpers/vm/qemu.js';
import { WRITER_ARG } from '../test/helpers/vm/writer.js';

const BIN = fileURLToPath(new URL('../dist/src/bin.js', import.meta.url));
const N = Number(process.env['BENCH_N'] ?? 10);
const median = (xs: number[]): number => {
  const s = [...xs].sort((a, b) => a - b);
  return s.length % 2 ? s[(s.length - 1) / 2]! : (s[s.length / 2 - 1]! + s[s.length / 2]!) / 2;
};

async function measure(kind: AgentKind): Promise<void> {
  const dir = mkdtempSync(join(tmpdir(), 'quiesce-bench-window-'));
  const guest = await bootGuest({
    agent: kind,
    agentArgs: kind === 'quiesce' ? ['--fsfreeze-include=/data'] : [],
    kernelArgs: [WRITER_ARG],
    dataDiskMB: 64,
    dataFormat: 'qcow2',
  });
  try {
    const config = (name: string, level: string): string => {
      const file = join(dir, `${name}.json`);
      writeFileSync(
        file,
        JSON.stringify({
          stateDir: join(dir, `${name}-state`),
          guests: {
            vm: {
              connector: { type: 'socket', path: guest.qgaSocket },
              freeze: ['/data'],
              snapshot: {
                provider: 'qmp',
                socket: guest.qmpSocket,
                disks: [DATA_DEVICE],
                repository: join(dir, `${name}-repo`),
                level,
              },
              timeouts: { freeze: '60s', thaw: '30s', command: '30s' },
            },
          },
          jobs: { bench: { guests: ['vm'], budget: '60s' } },
        }),
      );
      return file;
    };
    const full = config('full', 'full');
    const inc = config('inc', 'auto');
    const run = (file: string): { window: number; snapshot: number; level: string } => {
      const r = spawnSync(process.execPath, [BIN, 'run', '--config', file, '--json'], { encoding: 'utf8' });
      if (r.status !== 0) throw new Error(`quiesce run: exit ${r.status}\n${r.stderr}`);
      const g = (JSON.parse(r.stdout) as RunReport).guests[0]!;
      return { window: g.frozenWindowMs!, snapshot: g.snapshotMs!, level: g.backup!.level };
    };
    run(inc); // the chain's full
    const f: { window: number; snapshot: number }[] = [];
    const i: { window: number; snapshot: number }[] = [];
    for (let n = 0; n < N; n++) {
      f.push(run(full));
      const r = run(inc);
      if (r.level !== 'incremental') throw new Error(`expected an incremental, got ${r.level}`);
      i.push(r);
    }
    const w = (xs: { window: number }[]) => median(xs.map((x) => x.window));
    const s = (xs: { snapshot: number }[]) => median(xs.map((x) => x.snapshot));
    console.log(
      `${kind}: frozen window incremental ${w(i).toFixed(1)} ms vs full ${w(f).toFixed(1)} ms (medians of ${N}) = ${(w(i) / w(f)).toFixed(2)}× (target ≤ 1.1×); the snapshot step inside it ${s(i).toFixed(1)} vs ${s(f).toFixed(1)} ms`,
    );
    console.log(
      `  windows: full [${f.map((x) => x.window.toFixed(0)).join(' ')}] incremental [${i.map((x) => x.window.toFixed(0)).join(' ')}]`,
    );
  } finally {
    await guest.stop();
    rmSync(dir, { recursive: true, force: true });
  }
}

for (const kind of ['quiesce', 'qemu-ga'] as AgentKind[]) await measure(kind);
