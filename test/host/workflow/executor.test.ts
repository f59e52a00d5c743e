// The executor against scripted agents: no socket, no root, no filesystem frozen. The integration
// layer (real agents, real loop mounts) is engine-faults.test.ts.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, mkdirSync, mkdtempSync, readdirSync, rmSync, utimesSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { resolveConfig } from '../../../src/config/load.js';
import { forgetLockSecrets } from '../../../src/guest/lock.js';
import { captureLogger } from '../../../src/log/logger.js';
import { WATCHDOG_GET_RECORD, WATCHDOG_SET_LIMIT } from '../../../src/guest/capabilities.js';
import { EXIT } from '../../../src/workflow/exit-code.js';
import { execute } from '../../../src/workflow/executor.js';
import { newRunId, plan } from '../../../src/workflow/plan.js';
import { SignalGuard } from '../../../src/workflow/signals.js';
import { ScriptedAgent, type Step } from '../../helpers/scripted-agent.js';

let dir: string;
const savedRunDir = process.env['QUIESCE_RUN_DIR'];
before(() => {
  dir = mkdtempSync(join(tmpdir(), 'executor-'));
  // A private lock directory: these tests never share locks with a real run.
  process.env['QUIESCE_RUN_DIR'] = join(dir, 'run');
  forgetLockSecrets();
});
after(() => {
  if (savedRunDir === undefined) delete process.env['QUIESCE_RUN_DIR'];
  else process.env['QUIESCE_RUN_DIR'] = savedRunDir;
  forgetLockSecrets();
  rmSync(dir, { recursive: true, force: true });
});

const info = (names: string[]) => ({
  reply: { version: 'scripted', supported_commands: names.map((name) => ({ name, enabled: true })) },
});
const FREEZE_COMMANDS = ['guest-fsfreeze-freeze-list', 'guest-fsfreeze-thaw', 'guest-fsfreeze-status'];

function healthy(over: Record<string, Step[]> = {}): Record<string, Step[]> {
  return {
    'guest-info': [info(FREEZE_COMMANDS)],
    'guest-fsfreeze-status': [{ reply: 'thawed' }],
    'guest-fsfreeze-freeze-list': [{ reply: 2 }],
    'guest-fsfreeze-thaw': [{ reply: 2 }],
    ...over,
  };
}

let n = 0;
async function run(
  guest: Record<string, unknown>,
  script: Record<string, Step[]>,
  opts: {
    onEvent?: (kind: string, e: unknown, signals: SignalGuard) => void;
    budget?: string;
    failurePolicy?: 'fail' | 'crash-consistent';
  } = {},
) {
  const stateDir = join(dir, `state-${++n}`);
  const config = resolveConfig(
    {
      stateDir,
      guests: {
        g: {
          connector: { type: 'socket', path: `/nonexistent/${n}.sock` },
          freeze: ['/a', '/b'],
          snapshot: { provider: 'command', argv: ['true'] },
          timeouts: { thaw: '200ms', command: '200ms' },
          ...guest,
        },
      },
      jobs: {
        j: {
          guests: ['g'],
          ...(opts.budget ? { budget: opts.budget } : {}),
          ...(opts.failurePolicy ? { failurePolicy: opts.failurePolicy } : {}),
        },
      },
    },
    'test',
  );
  const now = new Date();
  const p = plan(config, 'j', { runId: newRunId(now), now });
  const agent = new ScriptedAgent(script);
  const log = captureLogger();
  const signals = new SignalGuard(log);
  const wrapped = Object.assign(
    (e: Parameters<typeof log>[0]) => {
      log(e);
      opts.onEvent?.(e.kind, e, signals);
    },
    { events: log.events },
  );
  const t0 = Date.now();
  const report = await execute(p, { log: wrapped, signals, agentFactory: () => agent });
  const journal = join(stateDir, 'journal');
  return {
    report,
    g: report.guests[0]!,
    agent,
    events: log.events,
    elapsed: Date.now() - t0,
    journalFiles: existsSync(journal) ? readdirSync(journal) : [],
  };
}

test('a healthy guest: frozen, snapshotted, thawed with matching counts, exit 0, no journal left', async () => {
  const { report, g, agent, journalFiles } = await run({}, healthy());
  assert.equal(report.exitCode, EXIT.OK, JSON.stringify(g.errors));
  assert.equal(g.thawProven, true);
  assert.deepEqual(
    agent.calls.filter((c) => c.startsWith('guest-fsfreeze')),
    ['guest-fsfreeze-status', 'guest-fsfreeze-freeze-list', 'guest-fsfreeze-thaw', 'guest-fsfreeze-status'],
  );
  assert.deepEqual(journalFiles, []);
  assert.ok(agent.closed);
});

test("a guest's prune rules run after the thaw: the oldest backup files go, the step is reported", async () => {
  const backups = join(dir, `backups-${n + 1}`);
  mkdirSync(backups);
  const names = ['g-1.img', 'g-2.img', 'g-3.img'];
  names.forEach((name, i) => {
    writeFileSync(join(backups, name), '');
    const t = new Date(Date.now() - (3 - i) * 86_400_000);
    utimesSync(join(backups, name), t, t);
  });
  const { report, g } = await run({ prune: { dir: backups, match: 'g-*.img', keepLast: 1 } }, healthy());
  assert.equal(report.exitCode, EXIT.OK, JSON.stringify(g.errors));
  const steps = g.steps.map((s) => s.name);
  assert.ok(steps.indexOf('prune') > steps.indexOf('thaw'), steps.join(' '));
  assert.equal(g.steps.find((s) => s.name === 'prune')?.ok, true);
  assert.deepEqual(readdirSync(backups), ['g-3.img']);
});

test('the agent froze 1 of the 2 filesystems asked for: exit 3 (incomplete freeze), the thaw proven', async () => {
  const { report, g } = await run(
    {},
    healthy({ 'guest-fsfreeze-freeze-list': [{ reply: 1 }], 'guest-fsfreeze-thaw': [{ reply: 1 }] }),
  );
  assert.equal(g.thawProven, true);
  assert.ok(g.errors.some((e) => e.code === 'FREEZE_INCOMPLETE'));
  assert.equal(report.exitCode, EXIT.FAILED);
});

test('froze 1 of 2, the thaw thawed both (one frozen by another tool): exit 3, proven, warned', async () => {
  const { report, g, events } = await run(
    {},
    healthy({ 'guest-fsfreeze-freeze-list': [{ reply: 1 }], 'guest-fsfreeze-thaw': [{ reply: 2 }] }),
  );
  assert.equal(g.thawProven, true);
  assert.equal(report.exitCode, EXIT.FAILED);
  assert.ok(events.some((e) => e.kind === 'warning' && /another tool/.test(e.message)));
});

test('a thaw that thaws fewer than were frozen: exit 5 whatever else failed', async () => {
  const { report, g } = await run(
    { snapshot: { provider: 'command', argv: ['false'] } },
    healthy({ 'guest-fsfreeze-thaw': [{ reply: 1 }] }),
  );
  assert.equal(g.thawProven, false);
  assert.ok(g.errors.some((e) => e.code === 'STEP_FAILED'));
  assert.equal(report.exitCode, EXIT.THAW_UNPROVEN);
  assert.equal(g.ok, false);
});

test('a lost freeze reply is thawed anyway (the freeze may have happened)', async () => {
  const { report, g, agent } = await run({}, healthy({ 'guest-fsfreeze-freeze-list': [{ lost: true }] }));
  assert.ok(agent.calls.includes('guest-fsfreeze-thaw'));
  assert.equal(report.exitCode, EXIT.FAILED);
  assert.notEqual(g.thawProven, false);
});

test('a hung freeze is bounded by the budget and thawed', async () => {
  const { report, g, elapsed, agent } = await run(
    { timeouts: { freeze: '10s', thaw: '200ms', command: '200ms' } },
    healthy({ 'guest-fsfreeze-freeze-list': [{ hang: true }] }),
    { budget: '300ms' },
  );
  assert.ok(agent.calls.includes('guest-fsfreeze-thaw'));
  assert.equal(g.ok, false);
  assert.notEqual(report.exitCode, EXIT.OK);
  // The freeze request itself waits for its own timeout; the thaw is what the budget guarantees.
  assert.ok(elapsed < 10_000 + 3000, `${elapsed} ms`);
});

for (const [how, freeze, budget] of [
  ['failed (an agent error)', { error: 'failed to freeze /a: Device or resource busy' }, undefined],
  ['hung (until the budget)', { hang: true }, '300ms'],
] as const)
  test(`a freeze that ${how} after a good preflight, failurePolicy crash-consistent: thawed, then a snapshot without a freeze, recorded crash, never exit 0`, async () => {
    const { report, g, agent, events } = await run(
      { timeouts: { freeze: '10s', thaw: '200ms', command: '200ms' } },
      healthy({ 'guest-fsfreeze-freeze-list': [freeze] }),
      { failurePolicy: 'crash-consistent', ...(budget ? { budget } : {}) },
    );
    const calls = agent.calls.filter((c) => c.startsWith('guest-fsfreeze'));
    assert.ok(calls.indexOf('guest-fsfreeze-thaw') > calls.indexOf('guest-fsfreeze-freeze-list'), calls.join(' '));
    const snapshot = g.steps.find((s) => s.name === 'snapshot');
    assert.equal(snapshot?.ok, true, 'the snapshot was taken');
    const thaw = events.findIndex((e) => e.kind === 'thawed');
    const fallback = events.findIndex((e) => e.kind === 'fallback-crash-consistent');
    assert.ok(fallback > thaw && thaw >= 0, `thawed at event ${thaw}, the fallback at ${fallback}`);
    assert.equal(g.consistency, 'crash');
    assert.equal(g.ok, false);
    assert.ok(
      g.errors.some((e) => e.step === 'freeze' || /budget|freeze/i.test(e.message)),
      JSON.stringify(g.errors),
    );
    assert.notEqual(report.exitCode, EXIT.OK);
  });

test('quiesce-agent hung arming its watchdog (after a good preflight), crash-consistent: no freeze sent, a snapshot recorded crash', async () => {
  const names = [...FREEZE_COMMANDS, WATCHDOG_SET_LIMIT, WATCHDOG_GET_RECORD];
  const { report, g, agent, events } = await run(
    {},
    healthy({ 'guest-info': [info(names)], [WATCHDOG_SET_LIMIT]: [{ hang: true }] }),
    { failurePolicy: 'crash-consistent' },
  );
  assert.ok(agent.calls.includes(WATCHDOG_SET_LIMIT));
  assert.ok(!agent.calls.includes('guest-fsfreeze-freeze-list'), 'no freeze sent');
  assert.equal(g.steps.find((s) => s.name === 'snapshot')?.ok, true);
  assert.ok(events.some((e) => e.kind === 'fallback-crash-consistent'));
  assert.equal(g.consistency, 'crash');
  assert.notEqual(report.exitCode, EXIT.OK);
});

test('a freeze that failed, failurePolicy fail: no snapshot at all', async () => {
  const { g } = await run({}, healthy({ 'guest-fsfreeze-freeze-list': [{ error: 'busy' }] }));
  assert.equal(
    g.steps.find((s) => s.name === 'snapshot'),
    undefined,
  );
  assert.equal(g.consistency, 'none');
});

test('an already frozen guest is refused in preflight: never frozen again, nothing thawed', async () => {
  const { report, g, agent } = await run({}, healthy({ 'guest-fsfreeze-status': [{ reply: 'frozen' }] }));
  assert.ok(g.errors.some((e) => e.code === 'ALREADY_FROZEN'));
  assert.ok(!agent.calls.includes('guest-fsfreeze-freeze-list'));
  assert.ok(!agent.calls.includes('guest-fsfreeze-thaw'));
  assert.equal(report.exitCode, EXIT.FAILED);
});

test('a journal that cannot be written stops the freeze: nothing frozen, exit 3, JOURNAL error', async () => {
  const stateDir = join(dir, 'state-is-a-file');
  const { writeFileSync } = await import('node:fs');
  writeFileSync(stateDir, 'not a directory');
  const config = resolveConfig(
    {
      stateDir,
      guests: {
        g: {
          connector: { type: 'socket', path: '/nonexistent/j.sock' },
          freeze: ['/a', '/b'],
          snapshot: { provider: 'command', argv: ['true'] },
        },
      },
      jobs: { j: { guests: ['g'] } },
    },
    'test',
  );
  const now = new Date();
  const agent = new ScriptedAgent(healthy());
  const log = captureLogger();
  const report = await execute(plan(config, 'j', { runId: newRunId(now), now }), {
    log,
    signals: new SignalGuard(log),
    agentFactory: () => agent,
  });
  const g = report.guests[0]!;
  assert.ok(
    g.errors.some((e) => e.code === 'JOURNAL'),
    JSON.stringify(g.errors),
  );
  assert.ok(!agent.calls.includes('guest-fsfreeze-freeze-list'));
  assert.equal(report.exitCode, EXIT.FAILED);
});

for (const [sig, code] of [
  ['SIGTERM', 143],
  ['SIGINT', 130],
  ['SIGHUP', 129],
] as const) {
  test(`${sig} during the backup stops its process group at once; verify never starts; exit ${code}`, async () => {
    let signalledAt = 0;
    const { report, g, events } = await run(
      {
        backup: { argv: ['sh', '-c', 'sleep 30 & sleep 30'] },
        verify: { argv: ['true'] },
      },
      healthy(),
      {
        onEvent: (kind, e, signals) => {
          if (kind === 'step-start' && (e as { step: string }).step === 'backup')
            setTimeout(() => {
              signalledAt = Date.now();
              signals.trigger(sig);
            }, 200);
        },
      },
    );
    const after = Date.now() - signalledAt;
    assert.ok(after < 3000, `ended ${after} ms after the signal`);
    assert.equal(report.exitCode, code);
    assert.equal(report.interruptedBy, sig);
    assert.equal(g.ok, false);
    assert.ok(
      g.errors.some((e) => e.code === 'INTERRUPTED' && e.step === 'backup'),
      JSON.stringify(g.errors),
    );
    assert.ok(!events.some((e) => e.kind === 'step-start' && e.step === 'verify'), 'verify did not start');
  });
}

test('a signal during verify: interrupted, and the steps after it do not start', async () => {
  const { report, g, events } = await run(
    {
      verify: { argv: ['sleep', '30'] },
      hooks: { post: [['true']] },
    },
    healthy(),
    {
      onEvent: (kind, e, signals) => {
        if (kind === 'step-start' && (e as { step: string }).step === 'verify')
          setTimeout(() => signals.trigger('SIGTERM'), 100);
      },
    },
  );
  assert.equal(report.exitCode, 143);
  assert.ok(g.errors.some((e) => e.code === 'INTERRUPTED' && e.step === 'verify'));
  assert.ok(!events.some((e) => e.kind === 'step-start' && e.step === 'post-hook 1'));
});

test('a signal while frozen thaws at once and reports the guest interrupted', async () => {
  let signalledAt = 0;
  const { report, g } = await run({ snapshot: { provider: 'command', argv: ['sleep', '30'] } }, healthy(), {
    onEvent: (kind, _e, signals) => {
      if (kind === 'frozen') {
        signalledAt = Date.now();
        signals.trigger('SIGINT');
      }
    },
  });
  assert.ok(Date.now() - signalledAt < 3000);
  assert.equal(g.thawProven, true);
  assert.equal(report.exitCode, 130);
  assert.equal(g.ok, false);
  assert.ok(
    g.errors.some((e) => e.code === 'INTERRUPTED'),
    JSON.stringify(g.errors),
  );
});
