import { after, before, describe, test, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { resolveConfig } from '../../../src/config/load.js';
import { execute } from '../../../src/workflow/executor.js';
import { newRunId, plan } from '../../../src/workflow/plan.js';
import { SignalGuard } from '../../../src/workflow/signals.js';
import { Journal } from '../../../src/workflow/journal.js';
import { captureLogger } from '../../../src/log/logger.js';
import type { RunReport } from '../../../src/workflow/results.js';
import { EXIT } from '../../../src/workflow/exit-code.js';
import { haveQemuGa, startAgent, type AgentKind, type RunningAgent } from '../../helpers/agents.js';
import {
  canLoopMount,
  isFrozen,
  makeLoopFs,
  probeWrite,
  removeLoopFs,
  startRootThawGuard,
  type LoopFs,
} from '../../helpers/loop-fs.js';

const skip = !canLoopMount() ? 'needs root for loop mounts' : !haveQemuGa() ? 'needs qemu-ga' : false;

/** The agents the engine is proven against. */
const KINDS: AgentKind[] = ['qemu-ga', 'quiesce'];

/** quiesce-agent may only ever freeze (and thaw) the test's own mount. */
const agentArgs = (kind: AgentKind, fs: LoopFs): string[] =>
  kind === 'quiesce' ? [`--fsfreeze-include=${fs.mnt}`] : [];

for (const kind of KINDS) {
  describe(`engine fault matrix against ${kind}`, { skip }, () => {
    let guard: { stop(): void };
    let fsA: LoopFs;
    let fsB: LoopFs;
    let agentA: RunningAgent;
    let agentB: RunningAgent;
    let stateDir: string;

    before(async () => {
      guard = startRootThawGuard();
      fsA = makeLoopFs('ext4');
      fsB = makeLoopFs('ext4');
      agentA = await startAgent(kind, { args: agentArgs(kind, fsA) });
      agentB = await startAgent(kind, { args: agentArgs(kind, fsB) });
      stateDir = mkdtempSync(join(tmpdir(), 'engine-state-'));
    });
    after(async () => {
      for (const a of [agentA, agentB]) {
        a?.child.kill('SIGCONT');
        await a?.stop();
      }
      for (const f of [fsA, fsB]) if (f) removeLoopFs(f);
      if (stateDir) rmSync(stateDir, { recursive: true, force: true });
      guard?.stop();
    });

    const guest = (agent: RunningAgent, fs: LoopFs, snapshot: string[], extra: Record<string, unknown> = {}) => ({
      connector: { type: 'socket', path: agent.socket },
      freeze: [fs.mnt],
      snapshot: { provider: 'command', argv: snapshot },
      timeouts: { thaw: '2s', freeze: '5s' },
      ...extra,
    });

    async function run(
      raw: Record<string, unknown>,
      job = 'j',
      opts: { onFrozen?: (signals: SignalGuard) => void } = {},
    ) {
      const config = resolveConfig({ stateDir, ...raw }, 'test');
      const log = captureLogger();
      const signals = new SignalGuard(log);
      const now = new Date();
      const p = plan(config, job, { runId: newRunId(now), now });
      const wrapped: typeof log = Object.assign(
        (e: Parameters<typeof log>[0]) => {
          log(e);
          if (e.kind === 'frozen') opts.onFrozen?.(signals);
        },
        { events: log.events },
      );
      const t0 = Date.now();
      const report = await execute(p, { log: wrapped, signals });
      return { report, events: log.events, elapsed: Date.now() - t0 };
    }

    const thawedNow = async (fs: LoopFs) => assert.ok(await probeWrite(fs.mnt, 3000), `${fs.mnt} must be thawed`);
    /** For the closing figures: how long the guest stayed frozen past its budget. */
    const pastBudget = (t: TestContext, windowMs: number, budgetMs: number) =>
      t.diagnostic(
        `frozen past budget: ${Math.max(0, Math.round(windowMs - budgetMs))} ms (window ${windowMs} ms, budget ${budgetMs} ms)`,
      );
    const noJournal = () => assert.equal(new Journal(stateDir).list().records.length, 0);

    function only(r: RunReport) {
      assert.equal(r.guests.length, 1);
      return r.guests[0]!;
    }

    test('happy path: frozen for the snapshot, thaw proven, filesystem consistency', async () => {
      let frozenDuringSnapshot = false;
      const { report } = await run(
        { guests: { a: guest(agentA, fsA, ['sh', '-c', 'sleep 0.3']) }, jobs: { j: { guests: ['a'] } } },
        'j',
        {
          onFrozen: () => {
            void isFrozen(fsA.mnt).then((f) => (frozenDuringSnapshot = f));
          },
        },
      );
      const g = only(report);
      assert.equal(report.exitCode, EXIT.OK, JSON.stringify(g.errors));
      assert.ok(g.ok);
      assert.equal(g.consistency, 'filesystem');
      assert.equal(g.frozenFilesystems, 1);
      assert.equal(g.thawedFilesystems, 1);
      assert.equal(g.thawProven, true);
      assert.ok(g.frozenWindowMs! >= 300 && g.frozenWindowMs! < 5000);
      assert.ok(frozenDuringSnapshot, 'a write was blocked while the snapshot ran');
      await thawedNow(fsA);
      noJournal();
    });

    test('snapshot hanging past the budget is cancelled and the guest thawed within budget + 1 s', async (t) => {
      const { report, events, elapsed } = await run({
        guests: { a: guest(agentA, fsA, ['sleep', '30']) },
        jobs: { j: { guests: ['a'], budget: '1s' } },
      });
      const g = only(report);
      assert.equal(report.exitCode, EXIT.FAILED);
      assert.equal(report.units[0]!.budgetExceeded, true);
      pastBudget(t, g.frozenWindowMs!, 1000);
      assert.ok(g.frozenWindowMs! < 2000, `window ${g.frozenWindowMs}`);
      assert.ok(elapsed < 6000, `run took ${elapsed} ms`);
      assert.equal(g.thawProven, true);
      assert.equal(g.consistency, 'none');
      assert.ok(events.some((e) => e.kind === 'budget-exceeded'));
      await thawedNow(fsA);
      noJournal();
    });

    test('a snapshot command that ignores SIGTERM: thawed at the budget, its group SIGKILLed, run over within budget + grace', async (t) => {
      const pidFile = join(fsA.dir, 'trap.pid');
      const { report, elapsed } = await run({
        guests: {
          a: guest(agentA, fsA, ['sh', '-c', `echo $$ > ${pidFile}; trap "" TERM; sleep 30 & wait; sleep 30`]),
        },
        jobs: { j: { guests: ['a'], budget: '1s' } },
      });
      const g = only(report);
      assert.equal(report.units[0]!.budgetExceeded, true);
      pastBudget(t, g.frozenWindowMs!, 1000);
      assert.ok(g.frozenWindowMs! < 2000, `window ${g.frozenWindowMs}`);
      // 1 s budget + 1.5 s grace before SIGKILL, plus connect and thaw: was 31.7 s before process groups.
      assert.ok(elapsed < 5000, `run took ${elapsed} ms`);
      assert.equal(g.thawProven, true);
      const pid = Number(readFileSync(pidFile, 'utf8'));
      assert.throws(() => process.kill(pid, 0), /ESRCH/, 'the trapping shell is gone');
      await thawedNow(fsA);
      noJournal();
    });

    test('a snapshot command that exits at once leaving a grandchild on stdout ends the window at its exit', async () => {
      const { report, elapsed } = await run({
        guests: { a: guest(agentA, fsA, ['sh', '-c', 'sleep 30 & echo started']) },
        jobs: { j: { guests: ['a'], budget: '10s' } },
      });
      const g = only(report);
      assert.equal(report.exitCode, EXIT.OK, JSON.stringify(g.errors));
      assert.ok(g.frozenWindowMs! < 1500, `window ${g.frozenWindowMs} (was the whole budget)`);
      assert.ok(elapsed < 5000, `run took ${elapsed} ms`);
      await thawedNow(fsA);
    });

    test('a state dir on the filesystem the job freezes: the event loop never blocks on it, the budget holds', async (t) => {
      // The config check refuses this for the local connector; a socket agent on this host is the way past it,
      // and proves the engine's own rule: nothing synchronous on a filesystem while frozen.
      const onFrozenFs = join(fsA.mnt, 'state');
      const t0 = Date.now();
      const config = resolveConfig(
        {
          stateDir: onFrozenFs,
          guests: { a: guest(agentA, fsA, ['sleep', '30']) },
          jobs: { j: { guests: ['a'], budget: '1500ms' } },
        },
        'test',
      );
      const log = captureLogger();
      const now = new Date();
      const report = await execute(plan(config, 'j', { runId: newRunId(now), now }), {
        log,
        signals: new SignalGuard(log),
      });
      const g = only(report);
      assert.equal(report.units[0]!.budgetExceeded, true);
      pastBudget(t, g.frozenWindowMs!, 1500);
      assert.ok(g.frozenWindowMs! < 1500 + 1000, `frozen ${g.frozenWindowMs} ms past a 1.5 s budget (was 32 s)`);
      assert.ok(Date.now() - t0 < 8000, `run took ${Date.now() - t0} ms`);
      assert.equal(g.thawProven, true);
      assert.deepEqual(readdirSync(join(onFrozenFs, 'journal')), [], 'the record went after the proven thaw');
      rmSync(onFrozenFs, { recursive: true, force: true });
      await thawedNow(fsA);
    });

    test('a failing snapshot thaws and fails the guest', async () => {
      const { report } = await run({ guests: { a: guest(agentA, fsA, ['false']) }, jobs: { j: { guests: ['a'] } } });
      const g = only(report);
      assert.equal(report.exitCode, EXIT.FAILED);
      assert.equal(g.thawProven, true);
      assert.match(g.errors.map((e) => e.message).join(' '), /snapshot: false exited with status 1/);
      await thawedNow(fsA);
    });

    test('SIGTERM during the snapshot cancels it, thaws, and exits 143', async () => {
      const { report } = await run(
        { guests: { a: guest(agentA, fsA, ['sleep', '30']) }, jobs: { j: { guests: ['a'], budget: '20s' } } },
        'j',
        { onFrozen: (s) => setTimeout(() => s.trigger('SIGTERM'), 200) },
      );
      const g = only(report);
      assert.equal(report.exitCode, 143);
      assert.equal(report.interruptedBy, 'SIGTERM');
      assert.equal(g.thawProven, true);
      assert.ok(g.frozenWindowMs! < 2000);
      await thawedNow(fsA);
      noJournal();
    });

    test('a mountpoint the guest does not have is caught before freezing', async () => {
      const missing = join(fsA.dir, 'not-a-mount');
      const { report } = await run({
        guests: { a: { ...guest(agentA, fsA, ['true']), freeze: [fsA.mnt, missing] } },
        jobs: { j: { guests: ['a'] } },
      });
      const g = only(report);
      assert.equal(report.exitCode, EXIT.FAILED);
      assert.equal(g.frozenFilesystems, undefined, 'nothing was frozen');
      assert.match(g.errors.map((e) => e.message).join(' '), /not mounted in the guest/);
      await thawedNow(fsA);
    });

    // qemu-ga thaws every mount of its machine; two of them on one kernel thaw each other's filesystems,
    // so a group on one host is only meaningful with quiesce-agent's include list (real guests have their own kernels).
    test(
      'a consistency group freezes both, reports the skew, thaws both',
      {
        skip:
          kind === 'qemu-ga'
            ? 'two qemu-ga on one kernel thaw each other (qemu-ga thaws every mount it sees); quiesce-agent and the TCG e2e cover groups'
            : false,
      },
      async () => {
        const { report, events } = await run({
          guests: { a: guest(agentA, fsA, ['sleep', '0.2']), b: guest(agentB, fsB, ['sleep', '0.2']) },
          jobs: { j: { groups: [['a', 'b']] } },
        });
        assert.equal(report.exitCode, EXIT.OK, JSON.stringify(report.guests.map((g) => g.errors)));
        assert.equal(report.units[0]!.kind, 'group');
        assert.ok(report.units[0]!.skewMs !== undefined && report.units[0]!.skewMs < 1000);
        assert.ok(events.some((e) => e.kind === 'group-frozen'));
        for (const g of report.guests) assert.equal(g.thawProven, true);
        await thawedNow(fsA);
        await thawedNow(fsB);
      },
    );

    test('a group member that cannot be reached means nobody in the group is frozen', async () => {
      const { report } = await run({
        guests: {
          a: guest(agentA, fsA, ['true']),
          b: { ...guest(agentB, fsB, ['true']), connector: { type: 'socket', path: join(fsB.dir, 'nobody.sock') } },
        },
        jobs: { j: { groups: [['a', 'b']] } },
      });
      assert.equal(report.exitCode, EXIT.FAILED);
      for (const g of report.guests) assert.equal(g.frozenFilesystems, undefined);
      await thawedNow(fsA);
    });

    test('crash-consistent policy snapshots an unreachable guest without a freeze and says so', async () => {
      const { report, events } = await run({
        guests: {
          b: { ...guest(agentB, fsB, ['true']), connector: { type: 'socket', path: join(fsB.dir, 'nobody.sock') } },
        },
        jobs: { j: { guests: ['b'], failurePolicy: 'crash-consistent' } },
      });
      const g = only(report);
      assert.equal(g.consistency, 'crash');
      assert.equal(g.thawProven, undefined);
      assert.ok(events.some((e) => e.kind === 'fallback-crash-consistent'));
    });

    test('a guest that is already frozen is refused at preflight and left as found', async () => {
      const { Wire } = await import('../../helpers/wire.js');
      const w = await Wire.open(agentA.socket);
      try {
        assert.deepEqual(await w.call('guest-fsfreeze-freeze-list', { mountpoints: [fsA.mnt] }), { return: 1 });
        w.close();
        const { report } = await run({ guests: { a: guest(agentA, fsA, ['true']) }, jobs: { j: { guests: ['a'] } } });
        assert.equal(report.exitCode, EXIT.FAILED);
        assert.match(
          only(report)
            .errors.map((e) => e.message)
            .join(' '),
          /already frozen/,
        );
      } finally {
        const w2 = await Wire.open(agentA.socket);
        await w2.call('guest-fsfreeze-thaw');
        w2.close();
      }
      await thawedNow(fsA);
    });

    test('an agent that stops answering the thaw: retries, then a failure naming the guest (exit 5)', async () => {
      removeJournal(stateDir);
      const { report, events } = await run(
        { guests: { a: guest(agentA, fsA, ['sleep', '0.2']) }, jobs: { j: { guests: ['a'] } } },
        'j',
        { onFrozen: () => agentA.child.kill('SIGSTOP') },
      );
      agentA.child.kill('SIGCONT');
      try {
        const g = only(report);
        assert.equal(report.exitCode, EXIT.THAW_UNPROVEN);
        assert.equal(g.thawProven, false);
        assert.ok(events.filter((e) => e.kind === 'thaw-retry').length >= 1);
        assert.ok(events.some((e) => e.kind === 'thaw-failed' && e.guest === 'a'));
        // The record stays so that recovery thaws it.
        assert.equal(new Journal(stateDir).list().records.length, 1);
      } finally {
        removeJournal(stateDir);
        const { Wire } = await import('../../helpers/wire.js');
        const w = await Wire.open(agentA.socket);
        await w.exchange('');
        await w.call('guest-fsfreeze-thaw');
        w.close();
      }
      await thawedNow(fsA);
    });

    test('the agent killed while frozen and restarted: the thaw reconnects, thaws and proves it', async () => {
      const statedir = agentA.statedir;
      let restarted: RunningAgent | undefined;
      let restarting: Promise<void> | undefined;
      const { report } = await run(
        { guests: { a: guest(agentA, fsA, ['sleep', '1']) }, jobs: { j: { guests: ['a'] } } },
        'j',
        {
          onFrozen: () => {
            // kill -9 while frozen; the agent's restart finds its frozen marker and comes up in frozen mode.
            restarting = agentA.kill().then(async () => {
              restarted = await startAgent(kind, { statedir, args: agentArgs(kind, fsA) });
            });
          },
        },
      );
      // The engine may reconnect before the test's own start-up probe of the new agent returns.
      await restarting;
      try {
        const g = only(report);
        assert.ok(restarted, 'the agent was restarted');
        assert.equal(report.exitCode, EXIT.OK, JSON.stringify(g.errors));
        assert.equal(g.thawProven, true);
        assert.equal(g.thawedFilesystems, 1);
        // The old process is dead: the count of 1 came from the restarted agent, which came up frozen.
        assert.equal(agentA.child.signalCode, 'SIGKILL');
        await thawedNow(fsA);
      } finally {
        // The restarted agent replaces agentA (same socket and state dir) for the tests that follow.
        if (restarted) {
          const r = restarted;
          const stopRestarted = r.stop.bind(r);
          agentA = {
            ...r,
            stop: async () => {
              await stopRestarted();
              rmSync(statedir, { recursive: true, force: true });
            },
          };
        }
      }
    });

    test('something thawing behind our back makes the thaw count differ: not proven', async () => {
      const { execFileSync } = await import('node:child_process');
      const { report } = await run(
        { guests: { a: guest(agentA, fsA, ['sleep', '0.3']) }, jobs: { j: { guests: ['a'] } } },
        'j',
        { onFrozen: () => setTimeout(() => execFileSync('fsfreeze', ['-u', fsA.mnt]), 50) },
      );
      const g = only(report);
      assert.equal(g.thawProven, false);
      assert.match(
        g.errors.map((e) => e.message).join(' ') + JSON.stringify(g.steps),
        /thawed 0 filesystem\(s\) but 1 were frozen/,
      );
      assert.equal(report.exitCode, EXIT.THAW_UNPROVEN);
      removeJournal(stateDir);
      await thawedNow(fsA);
    });
  });
}

function removeJournal(stateDir: string): void {
  const dir = join(stateDir, 'journal');
  if (existsSync(dir)) for (const f of readdirSync(dir)) rmSync(join(dir, f));
}
