// One guest's part of a run (GuestRun) against a recording scripted agent: steps and typed errors,
// freeze counts, the watchdog, the thaw's proof, the channel lock. No socket, no root.
import { describe, test, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { QuiesceError, type ErrorCode } from '../../../src/errors.js';
import { WATCHDOG_GET_RECORD, WATCHDOG_SET_LIMIT } from '../../../src/guest/capabilities.js';
import { captureLogger } from '../../../src/log/logger.js';
import { GuestRun, WATCHDOG_MARGIN_S } from '../../../src/workflow/guest-run.js';
import { newRunId, plan } from '../../../src/workflow/plan.js';
import { ConcurrentRecordingAgent, infoReply, RecordingAgent, Timeline } from '../../helpers/recording-agent.js';
import type { Step } from '../../helpers/scripted-agent.js';
import { FREEZE_LIST_COMMANDS, healthyScript, scratchDir, testConfig } from '../../helpers/workflow-rig.js';

const scratch = scratchDir('guest-run');
const FREEZE_ALL_COMMANDS = ['guest-fsfreeze-freeze', 'guest-fsfreeze-thaw', 'guest-fsfreeze-status'];

let n = 0;

/** A GuestRun of guest g over a recording agent; closed after the test. */
function rig(
  t: TestContext,
  o: {
    guest?: Record<string, unknown>;
    script?: Record<string, Step[]>;
    delays?: Record<string, number>;
    /** The agent takes concurrent commands, as libvirt's does. */
    concurrent?: boolean;
  } = {},
) {
  const config = testConfig({
    stateDir: scratch.path(`state-${++n}`),
    guests: { g: o.guest ?? {} },
    jobs: { j: { guests: ['g'] } },
  });
  const now = new Date();
  const p = plan(config, 'j', { runId: newRunId(now), now });
  const gp = p.units[0]!.guests[0]!;
  const tl = new Timeline();
  const Agent = o.concurrent ? ConcurrentRecordingAgent : RecordingAgent;
  const agent = new Agent(healthyScript(o.script), {
    name: 'g',
    timeline: tl,
    ...(o.delays ? { delays: o.delays } : {}),
  });
  const log = captureLogger();
  let created = 0;
  const make = () =>
    new GuestRun(
      gp,
      'g',
      log,
      () => {
        created++;
        return agent;
      },
      0,
      p.runId,
    );
  const run = make();
  t.after(() => run.close());
  return { run, make, agent, tl, events: log.events, plan: gp, created: () => created };
}

const lastStep = (run: GuestRun) => run.result.steps.at(-1)!;

describe('steps', () => {
  test('connect and preflight are recorded as ok steps, in order, with a start time and a duration', async (t) => {
    const { run, agent, events } = rig(t);
    await run.connectAndCheck();
    assert.deepEqual(
      run.result.steps.map((s) => [s.name, s.ok]),
      [
        ['connect', true],
        ['preflight', true],
      ],
    );
    for (const s of run.result.steps) {
      assert.ok(!Number.isNaN(Date.parse(s.startedAt)));
      assert.ok(s.durationMs >= 0);
    }
    assert.deepEqual(run.result.errors, []);
    // guest-info proves the agent answers (under the connect timeout) and feeds the preflight: no ping.
    assert.deepEqual(agent.commands(), ['guest-info', 'guest-fsfreeze-status']);
    assert.equal(agent.call('guest-info').timeoutMs, 300, 'the connect timeout');
    assert.equal(agent.call('guest-fsfreeze-status').timeoutMs, 200, 'the command timeout');
    assert.deepEqual(
      events
        .filter((e) => e.kind === 'step-start' || e.kind === 'step-end')
        .map((e) => `${e.kind} ${'step' in e ? e.step : ''}`),
      ['step-start connect', 'step-end connect', 'step-start preflight', 'step-end preflight'],
    );
  });

  test('of an agent that takes concurrent commands, connect asks the preflight’s questions with guest-info', async (t) => {
    const { run, agent } = rig(t, { concurrent: true, delays: { 'guest-info': 30 } });
    await run.connectAndCheck();
    assert.deepEqual(
      run.result.steps.map((s) => [s.name, s.ok]),
      [
        ['connect', true],
        ['preflight', true],
      ],
    );
    // Sent before guest-info's reply (30 ms later), each once: the preflight asks nothing again.
    assert.deepEqual(agent.commands(), ['guest-info', 'guest-fsfreeze-status', 'guest-get-fsinfo']);
    const infoAnswered = agent.call('guest-info').endedAt!;
    for (const c of ['guest-fsfreeze-status', 'guest-get-fsinfo'])
      assert.ok(agent.call(c).startedAt < infoAnswered, `${c} went out before guest-info's reply`);
    assert.equal(agent.call('guest-info').timeoutMs, 300, 'the connect timeout');
    assert.equal(agent.call('guest-fsfreeze-status').timeoutMs, 200, 'the command timeout');
  });

  test('of an agent that takes concurrent commands, a hung guest-info fails connect; the rest is dropped', async (t) => {
    const { run, agent } = rig(t, {
      concurrent: true,
      script: { 'guest-info': [{ hang: true }], 'guest-get-fsinfo': [{ error: 'disabled' }] },
    });
    await assert.rejects(run.connectAndCheck(), (e: unknown) => e instanceof QuiesceError && e.code === 'TIMEOUT');
    assert.deepEqual(
      run.result.steps.map((s) => [s.name, s.ok]),
      [['connect', false]],
    );
    // Asked alongside, answered or failed, and dropped: no preflight step, no unhandled rejection (the
    // test runner fails on one).
    assert.deepEqual(agent.commands(), ['guest-info', 'guest-fsfreeze-status', 'guest-get-fsinfo']);
    assert.equal(agent.call('guest-get-fsinfo').outcome, 'AGENT_ERROR');
  });

  for (const [what, script, step, code, message] of [
    [
      'the agent answers guest-info with an error',
      { 'guest-info': [{ error: 'busy' }] },
      'connect',
      'AGENT_ERROR',
      /guest-info: busy$/,
    ],
    [
      'the channel closes before guest-info’s reply',
      { 'guest-info': [{ lost: true }] },
      'connect',
      'CHANNEL_GONE',
      /closed before the reply/,
    ],
    [
      'guest-info is never answered',
      { 'guest-info': [{ hang: true }] },
      'connect',
      'TIMEOUT',
      /no reply within 300 ms/,
    ],
    [
      'the guest is already frozen',
      { 'guest-fsfreeze-status': [{ reply: 'frozen' }] },
      'preflight',
      'ALREADY_FROZEN',
      /already frozen \(status frozen\)/,
    ],
    [
      'the agent lacks the freeze command',
      { 'guest-info': [infoReply(['guest-fsfreeze-thaw', 'guest-fsfreeze-status'])] },
      'preflight',
      'COMMAND_UNAVAILABLE',
      /has no guest-fsfreeze-freeze-list/,
    ],
    [
      'guest-info replies nonsense',
      { 'guest-info': [{ reply: 'nonsense' }] },
      'preflight',
      'STEP_FAILED',
      /lacks version/,
    ],
  ] as [string, Record<string, Step[]>, string, ErrorCode, RegExp][]) {
    test(`${what}: the ${step} step fails with ${code}, recorded once with its step`, async (t) => {
      const { run, events } = rig(t, { script });
      await assert.rejects(run.connectAndCheck(), (err: unknown) => err instanceof Error && message.test(err.message));
      assert.equal(lastStep(run).name, step);
      assert.equal(lastStep(run).ok, false);
      assert.match(lastStep(run).error ?? '', message);
      assert.equal(run.result.errors.length, 1, JSON.stringify(run.result.errors));
      assert.equal(run.result.errors[0]!.code, code);
      assert.equal(run.result.errors[0]!.step, step);
      assert.match(run.result.errors[0]!.message, new RegExp(`^${step}: `));
      assert.ok(events.some((e) => e.kind === 'step-end' && e.step === step && !e.ok));
      assert.equal(run.freezeAttempted, false);
    });
  }

  test('a failure is recorded once: the same message, or one ending with it, is not added again', (t) => {
    const { run } = rig(t);
    run.addError('STEP_FAILED', 'freeze: EIO', 'freeze');
    run.addError('STEP_FAILED', 'EIO');
    run.addError('STEP_FAILED', 'freeze: EIO');
    run.addError('BUDGET_EXCEEDED', 'frozen too long');
    assert.deepEqual(run.result.errors, [
      { code: 'STEP_FAILED', message: 'freeze: EIO', step: 'freeze' },
      { code: 'BUDGET_EXCEEDED', message: 'frozen too long' },
    ]);
  });

  for (const [what, argv, ok, code] of [
    ['a pre-hook that succeeds makes the backup application-consistent', ['true'], true, undefined],
    [
      'a pre-hook that fails is STEP_FAILED, and the backup is not application-consistent',
      ['false'],
      false,
      'STEP_FAILED',
    ],
  ] as const) {
    test(what, async (t) => {
      const { run } = rig(t, { guest: { hooks: { pre: [argv] } } });
      const done = run.connectAndCheck().then(
        () => true,
        () => false,
      );
      assert.equal(await done, ok);
      assert.equal(run.hooksRan, ok);
      assert.equal(lastStep(run).name, 'pre-hook 1');
      assert.equal(run.result.errors[0]?.code, code);
    });
  }

  test('no pre-hook: the backup is filesystem-consistent only', async (t) => {
    const { run } = rig(t);
    await run.connectAndCheck();
    assert.equal(run.hooksRan, false);
  });

  for (const [what, argv, aborted, code] of [
    ['a snapshot command that succeeds is an ok step with its duration', ['true'], false, undefined],
    ['a snapshot command that fails is STEP_FAILED', ['false'], false, 'STEP_FAILED'],
    ['a snapshot asked to stop before it starts is INTERRUPTED (nothing spawned)', ['true'], true, 'INTERRUPTED'],
  ] as const) {
    test(what, async (t) => {
      const { run } = rig(t, { guest: { snapshot: { provider: 'command', argv } } });
      const signal = aborted ? AbortSignal.abort(new QuiesceError('INTERRUPTED', 'received SIGINT')) : undefined;
      const ok = await run.snapshot(signal, true).then(
        () => true,
        () => false,
      );
      assert.equal(ok, code === undefined);
      assert.equal(lastStep(run).name, 'snapshot');
      assert.equal(run.result.errors[0]?.code, code);
      if (ok) assert.ok(run.result.snapshotMs !== undefined && run.result.snapshotMs >= 0);
    });
  }

  test('an agent command before connecting is CHANNEL_GONE (not connected)', async (t) => {
    const { run } = rig(t);
    await assert.rejects(
      Promise.resolve().then(() => run.exec('guest-ping')),
      (err: unknown) => err instanceof QuiesceError && err.code === 'CHANNEL_GONE' && err.guest === 'g',
    );
  });
});

describe('the channel lock and close()', () => {
  test('a second run of the same guest is refused with LOCKED while the first holds the lock', async (t) => {
    const { run, make, created } = rig(t);
    await run.connectAndCheck();
    const second = make();
    t.after(() => second.close());
    await assert.rejects(
      second.connectAndCheck(),
      (err: unknown) => err instanceof QuiesceError && err.code === 'LOCKED',
    );
    assert.deepEqual(
      second.result.errors.map((e) => [e.code, e.step]),
      [['LOCKED', 'connect']],
    );
    assert.equal(created(), 1, 'the refused run never reached the agent');
  });

  test('close() closes the agent and releases the lock, and a second close() is harmless', async (t) => {
    const { run, make, agent } = rig(t);
    await run.connectAndCheck();
    await run.close();
    assert.equal(agent.closed, true);
    await run.close();
    const next = make();
    t.after(() => next.close());
    await next.connectAndCheck();
    assert.ok(next.result.steps.every((s) => s.ok));
  });

  test('close() of a run that never connected does nothing', async (t) => {
    const { run, agent } = rig(t);
    await run.close();
    assert.equal(agent.closed, false);
  });
});

describe('freeze', () => {
  for (const [what, freeze, reply, code, message] of [
    ['a list frozen in full', ['/a', '/b'], 2, undefined, undefined],
    ['a list frozen in part', ['/a', '/b'], 1, 'FREEZE_INCOMPLETE', /froze 1 of the 2 filesystems/],
    ['a list of which nothing froze', ['/a', '/b'], 0, 'FREEZE_INCOMPLETE', /froze 0 of the 2 filesystems/],
    ['"all", some frozen', 'all', 3, undefined, undefined],
    ['"all", nothing frozen', 'all', 0, 'FREEZE_INCOMPLETE', /froze no filesystem/],
  ] as const) {
    test(`${what} (reply ${reply}): ${code ?? 'ok'}, the count recorded`, async (t) => {
      const command = freeze === 'all' ? 'guest-fsfreeze-freeze' : 'guest-fsfreeze-freeze-list';
      const { run, agent, events } = rig(t, {
        guest: { freeze },
        script: {
          'guest-info': [infoReply(freeze === 'all' ? FREEZE_ALL_COMMANDS : FREEZE_LIST_COMMANDS)],
          [command]: [{ reply }],
        },
      });
      await run.connectAndCheck();
      assert.equal(run.freezeAttempted, false);
      const ok = await run.freeze().then(
        () => true,
        () => false,
      );
      assert.equal(ok, code === undefined);
      assert.equal(run.freezeAttempted, true);
      assert.equal(run.result.frozenFilesystems, reply);
      assert.ok(run.frozenAt !== undefined && run.result.freezeMs !== undefined);
      assert.deepEqual(agent.call(command).args, freeze === 'all' ? undefined : { mountpoints: ['/a', '/b'] });
      assert.equal(agent.call(command).timeoutMs, 1000, 'the freeze timeout');
      assert.ok(events.some((e) => e.kind === 'frozen' && e.filesystems === reply));
      assert.equal(run.result.errors[0]?.code, code);
      if (message) assert.match(run.result.errors[0]!.message, message);
      assert.equal(lastStep(run).name, 'freeze');
    });
  }

  for (const [what, step, code] of [
    ['an agent error', { error: 'EIO' }, 'AGENT_ERROR'],
    ['a lost reply', { lost: true }, 'CHANNEL_GONE'],
    ['no reply within the freeze timeout', { hang: true }, 'TIMEOUT'],
  ] as [string, Step, ErrorCode][]) {
    test(`a freeze that fails with ${what} still counts as attempted (the guard must thaw it), no count recorded`, async (t) => {
      const { run } = rig(t, {
        guest: { timeouts: { freeze: '150ms', thaw: '200ms', command: '200ms' } },
        script: { 'guest-fsfreeze-freeze-list': [step] },
      });
      await run.connectAndCheck();
      await assert.rejects(run.freeze());
      assert.equal(run.freezeAttempted, true);
      assert.equal(run.result.frozenFilesystems, undefined);
      assert.equal(run.frozenAt, undefined);
      assert.deepEqual(
        run.result.errors.map((e) => [e.code, e.step]),
        [[code, 'freeze']],
      );
    });
  }
});

describe('the watchdog', () => {
  for (const [what, enabled, disabled, armed] of [
    ['enabled with its record command (quiesce-agent)', [WATCHDOG_SET_LIMIT, WATCHDOG_GET_RECORD], [], true],
    ['without its record command', [WATCHDOG_SET_LIMIT], [], false],
    ['registered but disabled', [WATCHDOG_GET_RECORD], [WATCHDOG_SET_LIMIT], false],
    ['not advertised (qemu-ga)', [], [], false],
  ] as const) {
    test(`is ${armed ? '' : 'not '}armed when the agent advertises it ${what}`, async (t) => {
      const { run, agent } = rig(t, {
        script: {
          'guest-info': [infoReply([...FREEZE_LIST_COMMANDS, ...enabled], disabled)],
          [WATCHDOG_SET_LIMIT]: [{ reply: {} }],
        },
      });
      await run.connectAndCheck();
      await run.armWatchdog(1500);
      const calls = agent.received.filter((c) => c.command === WATCHDOG_SET_LIMIT);
      if (!armed) assert.deepEqual(calls, []);
      else {
        assert.equal(calls.length, 1);
        assert.deepEqual(calls[0]!.args, { seconds: 2 + WATCHDOG_MARGIN_S }, 'the budget rounded up, plus the margin');
        assert.equal(calls[0]!.timeoutMs, 200);
      }
    });
  }

  test('is not armed, and nothing fails, before the run connected', async (t) => {
    const { run, agent } = rig(t);
    await run.armWatchdog(1000);
    assert.deepEqual(agent.commands(), []);
  });

  test('an agent that refuses the limit fails the arming (the guard stops before the freeze)', async (t) => {
    const { run } = rig(t, {
      script: {
        'guest-info': [infoReply([...FREEZE_LIST_COMMANDS, WATCHDOG_SET_LIMIT, WATCHDOG_GET_RECORD])],
        [WATCHDOG_SET_LIMIT]: [{ error: 'out of range' }],
      },
    });
    await run.connectAndCheck();
    await assert.rejects(run.armWatchdog(1000), /out of range/);
  });
});

describe('thawAndProve', () => {
  for (const [what, script, steps, proven, thawed] of [
    [
      'a thaw of every frozen filesystem, status thawed',
      {},
      [
        ['thaw', true],
        ['prove-thaw', true],
      ],
      true,
      2,
    ],
    [
      'a thaw of fewer than were frozen',
      { 'guest-fsfreeze-thaw': [{ reply: 1 }] },
      [
        ['thaw', true],
        ['prove-thaw', false],
      ],
      false,
      1,
    ],
    [
      'status still frozen after the thaw',
      { 'guest-fsfreeze-status': [{ reply: 'thawed' }, { reply: 'frozen' }] },
      [
        ['thaw', true],
        ['prove-thaw', false],
      ],
      false,
      2,
    ],
    [
      'a thaw the agent refuses every time',
      { 'guest-fsfreeze-thaw': [{ error: 'EIO' }] },
      [['thaw', false]],
      false,
      undefined,
    ],
  ] as [string, Record<string, Step[]>, [string, boolean][], boolean, number | undefined][]) {
    test(`${what}: steps ${steps.map(([s, ok]) => `${s} ${ok ? 'ok' : 'failed'}`).join(', ')}; proven ${proven}`, async (t) => {
      const { run, events } = rig(t, { script });
      await run.connectAndCheck();
      await run.freeze();
      await run.thawAndProve();
      assert.deepEqual(
        run.result.steps.slice(-steps.length).map((s) => [s.name, s.ok]),
        steps,
      );
      assert.equal(run.result.thawProven, proven);
      assert.equal(run.result.thawedFilesystems, thawed);
      assert.ok(run.result.frozenWindowMs !== undefined && run.result.frozenWindowMs >= 0);
      if (proven) assert.deepEqual(run.result.errors, []);
      else
        assert.deepEqual(
          run.result.errors.map((e) => [e.code, e.step]),
          [['THAW_UNPROVEN', steps.at(-1)![0]]],
        );
      const ev = events.find((e) => e.kind === 'thawed');
      assert.ok(ev && ev.kind === 'thawed' && ev.proven === proven && ev.filesystems === (thawed ?? 0));
    });
  }

  test('the frozen window runs from sending the freeze to the thaw’s reply', async (t) => {
    const { run, tl } = rig(t, { delays: { 'guest-fsfreeze-thaw': 60 } });
    await run.connectAndCheck();
    await run.freeze();
    await new Promise((r) => setTimeout(r, 80));
    await run.thawAndProve();
    const expected = tl.at('g:guest-fsfreeze-thaw:done') - tl.at('g:guest-fsfreeze-freeze-list');
    assert.ok(Math.abs(run.result.frozenWindowMs! - expected) < 15, `${run.result.frozenWindowMs} vs ${expected}`);
    assert.ok(run.result.frozenWindowMs! >= 135);
    assert.ok(run.result.thawMs !== undefined && run.result.thawMs >= 55);
  });

  test('never connected: the thaw step fails THAW_UNPROVEN (not connected), no window measured', async (t) => {
    const { run } = rig(t);
    await run.thawAndProve();
    assert.deepEqual(
      run.result.steps.map((s) => [s.name, s.ok]),
      [['thaw', false]],
    );
    assert.equal(run.result.thawProven, false);
    assert.equal(run.result.frozenWindowMs, undefined);
    assert.deepEqual(
      run.result.errors.map((e) => e.code),
      ['THAW_UNPROVEN'],
    );
    assert.match(run.result.errors[0]!.message, /not connected to the agent/);
  });
});

describe('what a step after the snapshot learns of it', () => {
  test('its files, and a repository backup’s id, level and folder, in the environment; nothing before it', async (t) => {
    const { run } = rig(t);
    const out = scratch.path(`env-${++n}`);
    const dump = {
      argv: [
        'sh',
        '-c',
        `printf '%s|%s|%s|%s' "$QUIESCE_BACKUP_ID" "$QUIESCE_BACKUP_LEVEL" "$QUIESCE_BACKUP_DIR" "$QUIESCE_SNAPSHOT_FILES" > ${out}`,
      ],
      timeoutMs: 10_000,
    };
    await run.processStep('pre-hook 1', dump);
    assert.equal(readFileSync(out, 'utf8'), '|||');
    run.result.snapshotFiles = ['/r/vm/C/I/vda.qcow2', '/r/vm/C/I/vdb.qcow2'];
    run.result.backup = {
      repository: '/r',
      id: '20261207T000000Z-0001',
      chain: '20261201T000000Z-0000',
      level: 'incremental',
      parent: '20261201T000000Z-0000',
      reason: 'test',
    };
    await run.processStep('backup', dump);
    assert.equal(
      readFileSync(out, 'utf8'),
      '20261207T000000Z-0001|incremental|/r/g/20261201T000000Z-0000/20261207T000000Z-0001|/r/vm/C/I/vda.qcow2\n/r/vm/C/I/vdb.qcow2',
    );
  });
});
