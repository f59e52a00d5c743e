import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { fileURLToPath } from 'node:url';
import { haveQemuGa, startAgent, type RunningAgent } from '../../helpers/agents.js';
import {
  canLoopMount,
  isFrozen,
  makeLoopFs,
  probeWrite,
  removeLoopFs,
  startRootThawGuard,
  type LoopFs,
} from '../../helpers/loop-fs.js';

const BIN = fileURLToPath(new URL('../../../dist/src/bin.js', import.meta.url));

function quiesce(args: string[], opts: { cwd?: string } = {}) {
  const r = spawnSync(process.execPath, [BIN, ...args], { encoding: 'utf8', timeout: 60_000, ...opts });
  return { code: r.status, stdout: r.stdout, stderr: r.stderr };
}

describe(
  'quiesce CLI',
  { skip: !canLoopMount() ? 'needs root for loop mounts' : !haveQemuGa() ? 'needs qemu-ga' : false },
  () => {
    let guard: { stop(): void };
    let fsA: LoopFs;
    let fsB: LoopFs;
    let agentA: RunningAgent;
    let agentB: RunningAgent;
    let dir: string;

    before(async () => {
      guard = startRootThawGuard();
      fsA = makeLoopFs('ext4');
      fsB = makeLoopFs('ext4');
      agentA = await startAgent('qemu-ga');
      agentB = await startAgent('qemu-ga');
      dir = mkdtempSync(join(tmpdir(), 'cli-'));
    });
    after(async () => {
      await agentA?.stop();
      await agentB?.stop();
      for (const f of [fsA, fsB]) if (f) removeLoopFs(f);
      if (dir) rmSync(dir, { recursive: true, force: true });
      guard?.stop();
    });

    /** Writes a config with guests a and b (qemu-ga over unix sockets) and returns its path. */
    function config(name: string, snapshotA: string[], extra: Record<string, unknown> = {}): string {
      const stateDir = join(dir, `${name}-state`);
      const cfg = {
        stateDir,
        metricsFile: join(stateDir, 'quiesce.prom'),
        guests: {
          a: {
            connector: { type: 'socket', path: agentA.socket },
            freeze: [fsA.mnt],
            snapshot: { provider: 'command', argv: snapshotA },
          },
          b: {
            connector: { type: 'socket', path: agentB.socket },
            freeze: [fsB.mnt],
            snapshot: {
              provider: 'command',
              argv: ['cp', '--sparse=always', fsB.image, join(dir, `${name}-b-{timestamp}.img`)],
            },
            verify: {
              argv: [
                'sh',
                '-c',
                'dumpe2fs -h "$1" | grep -q "^Filesystem state: *clean$"',
                'verify',
                join(dir, `${name}-b-{timestamp}.img`),
              ],
            },
          },
        },
        // One at a time: qemu-ga thaws every mount of its machine, and both "guests" share this kernel.
        jobs: { nightly: { guests: ['a', 'b'], budget: '5s', concurrency: 1 } },
        ...extra,
      };
      const file = join(dir, `${name}.json`);
      writeFileSync(file, JSON.stringify(cfg));
      return file;
    }

    test('a bad config exits 2 naming the file and the key path, touching nothing', () => {
      const file = join(dir, 'bad.json');
      writeFileSync(
        file,
        JSON.stringify({
          guests: {
            a: {
              connector: { type: 'socket', path: 'rel.sock' },
              freeze: 'all',
              snapshot: { provider: 'command', argv: ['true'] },
            },
          },
        }),
      );
      const r = quiesce(['run', '--config', file]);
      assert.equal(r.code, 2);
      assert.match(r.stderr, new RegExp(`${file}: guests\\.a\\.connector\\.path: must be an absolute path`));
    });

    test('run backs up two guests, writes the report, last.json and metrics; exit 0', async () => {
      const marker = join(dir, 'ran-argv.txt');
      const file = config('ok', ['sh', '-c', 'printf "%s\\n" "$@" > "$0"', marker, '{guest}', '{job}']);
      const r = quiesce(['run', 'nightly', '--config', file, '--json']);
      assert.equal(r.code, 0, r.stderr + r.stdout);
      const report = JSON.parse(r.stdout) as {
        guests: { guest: string; ok: boolean; consistency: string; thawProven: boolean; frozenWindowMs: number }[];
        runId: string;
      };
      assert.deepEqual(report.guests.map((g) => [g.guest, g.ok, g.consistency, g.thawProven]).sort(), [
        ['a', true, 'filesystem', true],
        ['b', true, 'filesystem', true],
      ]);
      assert.deepEqual(readFileSync(marker, 'utf8').split('\n').filter(Boolean), ['a', 'nightly']);
      const stateDir = join(dir, 'ok-state');
      assert.ok(existsSync(join(stateDir, 'runs', `${report.runId}.json`)));
      assert.equal(
        (JSON.parse(readFileSync(join(stateDir, 'last.json'), 'utf8')) as { runId: string }).runId,
        report.runId,
      );
      const prom = readFileSync(join(stateDir, 'quiesce.prom'), 'utf8');
      assert.match(prom, /^quiesce_last_run_success\{job="nightly",guest="a"\} 1$/m);
      assert.match(prom, /^quiesce_frozen_window_seconds\{job="nightly",guest="b"\} [0-9.]+$/m);
      assert.match(prom, /^quiesce_run_exit_code\{job="nightly"\} 0$/m);
      assert.match(prom, /^# TYPE quiesce_last_success_timestamp_seconds gauge$/m);
      assert.ok(
        readdirSync(dir).some((f) => /^ok-b-\d{8}T\d{6}Z\.img$/.test(f)),
        'the snapshot copy exists',
      );
      assert.ok(await probeWrite(fsA.mnt, 3000));
    });

    test('plan prints the resolved steps that run then executes', () => {
      const file = config('plan', ['echo', '{guest}-{job}']);
      const r = quiesce(['plan', '--config', file]);
      assert.equal(r.code, 0, r.stderr);
      assert.match(r.stdout, /guest a\n {2}1\. connect unix:.*qga\.sock and sync/);
      assert.match(r.stdout, /snapshot \(command\): echo a-nightly \(timeout 5s\)/);
      assert.match(r.stdout, /freeze .*\/mnt \(timeout 60s\) — budget 5s starts/);
      const j = JSON.parse(quiesce(['plan', '--config', file, '--json']).stdout) as {
        units: { guests: { snapshot: { argv: string[] } }[] }[];
      };
      assert.deepEqual(j.units[0]!.guests[0]!.snapshot.argv, ['echo', 'a-nightly']);
    });

    test('a second run of the same job exits 4 while the first holds the lock; --wait queues it', async () => {
      const file = config('lock', ['sleep', '1.5']);
      const first = spawn(process.execPath, [BIN, 'run', '--config', file], { stdio: 'ignore' });
      const firstDone = new Promise<number | null>((r) => first.once('exit', r));
      try {
        await sleep(600);
        const second = quiesce(['run', '--config', file]);
        assert.equal(second.code, 4, second.stderr);
        assert.match(second.stderr, /job nightly is in use by another quiesce process/);
        const third = quiesce(['run', '--config', file, '--wait', '30']);
        assert.equal(third.code, 0, third.stderr);
        assert.equal(await firstDone, 0);
      } finally {
        first.kill('SIGKILL');
      }
    });

    test('kill -9 of quiesce while frozen: the next quiesce command thaws the guest from the journal', async () => {
      const file = config('crash', ['sleep', '60'], { jobs: { nightly: { guests: ['a'], budget: '60s' } } });
      const run = spawn(process.execPath, [BIN, 'run', '--config', file], { stdio: 'ignore' });
      const journal = join(dir, 'crash-state', 'journal');
      try {
        for (
          let i = 0;
          i < 100 && !(existsSync(journal) && readdirSync(journal).length > 0 && (await isFrozen(fsA.mnt)));
          i++
        )
          await sleep(100);
        assert.ok(await isFrozen(fsA.mnt), 'frozen by the run');
        run.kill('SIGKILL');
        await new Promise((r) => run.once('exit', r));
        assert.ok(await isFrozen(fsA.mnt), 'still frozen after the crash');
        const r = quiesce(['recover', '--config', file]);
        assert.equal(r.code, 0, r.stderr);
        assert.match(r.stdout, /a \(run .*\): thawed 1/);
        assert.ok(await probeWrite(fsA.mnt, 3000), 'thawed by recover');
        assert.equal(readdirSync(journal).length, 0);
      } finally {
        run.kill('SIGKILL');
      }
    });

    test('freeze --guest G -- CMD exits with CMD status and thaws', async () => {
      const file = config('hook', ['true']);
      const r = quiesce(['freeze', '--config', file, '--guest', 'a', '--', 'sh', '-c', 'exit 7']);
      assert.equal(r.code, 7, r.stderr);
      assert.ok(await probeWrite(fsA.mnt, 3000));
      const ok = quiesce(['freeze', '--config', file, '--guest', 'b', '--', 'true']);
      assert.equal(ok.code, 0, ok.stderr);
    });

    test('freeze with a command that outlives the budget is cancelled, thawed, exit 3', async () => {
      const file = config('budget', ['true']);
      const t0 = Date.now();
      const r = quiesce(['freeze', '--config', file, '--guest', 'a', '--budget', '1s', '--', 'sleep', '30']);
      assert.equal(r.code, 3, r.stderr);
      assert.ok(Date.now() - t0 < 10_000);
      assert.ok(await probeWrite(fsA.mnt, 3000));
    });

    test('doctor and status report on the guests', () => {
      const file = config('doc', ['true']);
      const d = quiesce(['doctor', '--config', file]);
      assert.equal(d.code, 0, d.stdout + d.stderr);
      assert.match(d.stdout, /ok +a \(unix:.*\): agent 7\.2\.\d+; rtt [0-9.]+ ms; status thawed/);
      const s = quiesce(['status', '--config', file, '--json']);
      assert.equal(s.code, 0, s.stderr);
      const j = JSON.parse(s.stdout) as { guests: { guest: string; status: string }[] };
      assert.deepEqual(
        j.guests.map((g) => g.status),
        ['thawed', 'thawed'],
      );
    });
  },
);
