// The checks before a freeze, against a recording scripted agent: what each agent reply means for a
// freeze, and that every problem is collected (doctor shows them all; run stops at the first).
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { AgentError, QuiesceError, type ErrorCode } from '../../../src/errors.js';
import { WATCHDOG_GET_RECORD, WATCHDOG_SET_LIMIT } from '../../../src/guest/capabilities.js';
import { preflight } from '../../../src/workflow/preflight.js';
import { ConcurrentRecordingAgent, infoReply, RecordingAgent } from '../../helpers/recording-agent.js';
import type { Step } from '../../helpers/scripted-agent.js';

const FREEZE = 'guest-fsfreeze-freeze';
const FREEZE_LIST = 'guest-fsfreeze-freeze-list';
const THAW = 'guest-fsfreeze-thaw';
const STATUS = 'guest-fsfreeze-status';
const FSINFO = 'guest-get-fsinfo';
const ALL = [FREEZE, FREEZE_LIST, THAW, STATUS, FSINFO];

const fsinfo = (...mountpoints: string[]): Step => ({
  reply: mountpoints.map((mountpoint) => ({ name: 'vda1', mountpoint, type: 'ext4', disk: [] })),
});

async function check(
  script: Record<string, Step[]>,
  freeze: 'all' | readonly string[] = ['/', '/srv'],
  timeoutMs = 250,
) {
  const agent = new RecordingAgent({ [STATUS]: [{ reply: 'thawed' }], [FSINFO]: [fsinfo('/', '/srv')], ...script });
  const result = await preflight(agent, { guest: 'g', freeze, timeoutMs });
  return { result, agent, codes: result.problems.map((p) => p.code) };
}

describe('preflight()', () => {
  test('a thawed agent with every command and every listed mountpoint: no problem, the facts reported', async () => {
    const { result, agent } = await check({ 'guest-info': [infoReply(ALL, [], 'qemu-ga 8.2')] });
    assert.deepEqual(result.problems, []);
    assert.equal(result.status, 'thawed');
    assert.deepEqual(result.missingCommands, []);
    assert.deepEqual(result.mountpoints, ['/', '/srv']);
    assert.deepEqual(result.notMounted, []);
    assert.equal(result.watchdog, false);
    assert.equal(result.caps.version, 'qemu-ga 8.2');
    assert.deepEqual(agent.commands(), ['guest-info', STATUS, FSINFO]);
    for (const c of agent.received) assert.equal(c.timeoutMs, 250, `${c.command} gets the timeout asked for`);
  });

  for (const status of ['frozen', 'freezing', 'unknown-state']) {
    test(`status ${status} is ALREADY_FROZEN, the first problem, ahead of the commands a frozen agent disables`, async () => {
      // A frozen reference agent disables its freeze commands (only thaw and status stay enabled).
      const { result, codes } = await check({
        'guest-info': [infoReply([THAW, STATUS, FSINFO], [FREEZE, FREEZE_LIST])],
        [STATUS]: [{ reply: status }],
      });
      assert.deepEqual(codes, ['ALREADY_FROZEN', 'COMMAND_UNAVAILABLE']);
      assert.equal(result.status, status);
      assert.match(result.problems[0]!.message, new RegExp(`already frozen \\(status ${status}\\).*quiesce recover`));
      assert.equal(result.problems[0]!.guest, 'g');
    });
  }

  for (const [freeze, needed, other] of [
    ['all', FREEZE, FREEZE_LIST],
    [['/srv'], FREEZE_LIST, FREEZE],
  ] as const) {
    for (const [how, enabled, disabled, says] of [
      ['lacks', ALL.filter((c) => c !== needed), [], 'has no'],
      ['has disabled', ALL.filter((c) => c !== needed), [needed], 'has disabled'],
    ] as const) {
      test(`freeze ${JSON.stringify(freeze)} needs ${needed}: an agent that ${how} it is COMMAND_UNAVAILABLE; ${other} does not matter`, async () => {
        const { result, codes } = await check({ 'guest-info': [infoReply(enabled, disabled, 'v9')] }, freeze);
        assert.deepEqual(codes, ['COMMAND_UNAVAILABLE']);
        assert.deepEqual(result.missingCommands, [needed]);
        assert.equal(result.problems[0]!.message, `the agent (v9) ${says} ${needed}`);
      });
    }
    test(`freeze ${JSON.stringify(freeze)} does not need ${other}`, async () => {
      const { codes } = await check({ 'guest-info': [infoReply(ALL.filter((c) => c !== other))] }, freeze);
      assert.deepEqual(codes, []);
    });
  }

  test('without the status command: status unknown (never asked), and the missing command is a problem', async () => {
    const { result, agent, codes } = await check({ 'guest-info': [infoReply([FREEZE_LIST, THAW, FSINFO], [STATUS])] });
    assert.equal(result.status, undefined);
    assert.ok(!agent.commands().includes(STATUS), 'a disabled command is not sent');
    assert.deepEqual(codes, ['COMMAND_UNAVAILABLE']);
    assert.deepEqual(result.missingCommands, [STATUS]);
  });

  test('without the thaw command: COMMAND_UNAVAILABLE (a guest that cannot be thawed is never frozen)', async () => {
    const { result } = await check({ 'guest-info': [infoReply([FREEZE_LIST, STATUS, FSINFO])] });
    assert.deepEqual(result.missingCommands, [THAW]);
  });

  for (const [what, freeze, mounted, notMounted] of [
    ['a listed mountpoint the guest lacks', ['/', '/data', '/srv'], ['/', '/srv'], ['/data']],
    ['several listed mountpoints the guest lacks', ['/data', '/logs'], ['/'], ['/data', '/logs']],
    ['every listed mountpoint mounted', ['/srv'], ['/', '/srv'], []],
  ] as const) {
    test(`${what}: ${notMounted.length ? 'CONFIG_MISMATCH naming them' : 'no problem'}`, async () => {
      const { result, codes } = await check({ 'guest-info': [infoReply(ALL)], [FSINFO]: [fsinfo(...mounted)] }, freeze);
      assert.deepEqual(result.notMounted, notMounted);
      assert.deepEqual(result.mountpoints, mounted);
      if (notMounted.length) {
        assert.deepEqual(codes, ['CONFIG_MISMATCH']);
        assert.equal(result.problems[0]!.message, `not mounted in the guest: ${notMounted.join(', ')}`);
      } else assert.deepEqual(codes, []);
    });
  }

  test('freeze "all" checks no mountpoint, but still reports them', async () => {
    const { result, codes } = await check({ 'guest-info': [infoReply(ALL)], [FSINFO]: [fsinfo('/')] }, 'all');
    assert.deepEqual(codes, []);
    assert.deepEqual(result.mountpoints, ['/']);
    assert.deepEqual(result.notMounted, []);
  });

  test('without guest-get-fsinfo the mountpoints are unknown and not checked (never sent)', async () => {
    const { result, agent, codes } = await check({ 'guest-info': [infoReply([FREEZE_LIST, THAW, STATUS])] }, ['/nope']);
    assert.equal(result.mountpoints, undefined);
    assert.deepEqual(result.notMounted, []);
    assert.deepEqual(codes, []);
    assert.ok(!agent.commands().includes(FSINFO));
  });

  test('every problem is collected, the most telling first: frozen, then commands, then mountpoints', async () => {
    const { result, codes } = await check(
      {
        'guest-info': [infoReply([STATUS, FSINFO], [FREEZE_LIST])],
        [STATUS]: [{ reply: 'frozen' }],
        [FSINFO]: [fsinfo('/')],
      },
      ['/', '/gone'],
    );
    assert.deepEqual(codes, [
      'ALREADY_FROZEN',
      'COMMAND_UNAVAILABLE',
      'COMMAND_UNAVAILABLE',
      'CONFIG_MISMATCH',
    ] as ErrorCode[]);
    assert.deepEqual(result.missingCommands, [FREEZE_LIST, THAW]);
    assert.deepEqual(result.notMounted, ['/gone']);
    for (const p of result.problems) {
      assert.ok(p instanceof QuiesceError);
      assert.equal(p.guest, 'g');
    }
  });

  for (const [what, enabled, disabled, watchdog] of [
    ['both watchdog commands', [WATCHDOG_SET_LIMIT, WATCHDOG_GET_RECORD], [], true],
    ['the limit command alone', [WATCHDOG_SET_LIMIT], [], false],
    ['the limit command disabled', [WATCHDOG_GET_RECORD], [WATCHDOG_SET_LIMIT], false],
  ] as const) {
    test(`reports the watchdog ${watchdog ? 'present' : 'absent'} for an agent with ${what}`, async () => {
      const { result } = await check({ 'guest-info': [infoReply([...ALL, ...enabled], disabled)] });
      assert.equal(result.watchdog, watchdog);
    });
  }

  for (const [what, info, expected] of [
    [
      'an agent error',
      { error: 'not allowed' },
      (e: unknown) => e instanceof AgentError && /guest-info: not allowed/.test(e.message),
    ],
    ['a reply without supported_commands', { reply: { version: '1' } }, (e: unknown) => e instanceof TypeError],
    ['no reply in time', { hang: true }, (e: unknown) => e instanceof QuiesceError && e.code === 'TIMEOUT'],
  ] as [string, Step, (e: unknown) => boolean][]) {
    test(`guest-info failing with ${what} rejects: nothing is known, nothing else is asked`, async () => {
      const agent = new RecordingAgent({ 'guest-info': [info] });
      await assert.rejects(preflight(agent, { guest: 'g', freeze: 'all', timeoutMs: 100 }), expected);
      assert.deepEqual(agent.commands(), ['guest-info']);
    });
  }

  test('an agent that takes concurrent commands gets all three at once; answers of disabled commands are dropped', async () => {
    // What guest-info's call had come to when each later command was sent.
    let infoOutcome: unknown = 'not sent';
    const mk = (script: Record<string, Step[]>): ConcurrentRecordingAgent => {
      const a: ConcurrentRecordingAgent = new ConcurrentRecordingAgent(script, {
        delays: { 'guest-info': 30 },
        before: (c) => {
          if (c === FSINFO) infoOutcome = a.call('guest-info').outcome;
        },
      });
      return a;
    };
    const agent = mk({
      'guest-info': [infoReply(ALL, [], 'qemu-ga 8.2')],
      [STATUS]: [{ reply: 'thawed' }],
      [FSINFO]: [fsinfo('/', '/srv')],
    });
    const result = await preflight(agent, { guest: 'g', freeze: ['/', '/srv'], timeoutMs: 250 });
    assert.deepEqual(result.problems, []);
    assert.deepEqual(result.mountpoints, ['/', '/srv']);
    assert.deepEqual(agent.commands(), ['guest-info', STATUS, FSINFO]);
    assert.equal(infoOutcome, undefined, "guest-get-fsinfo went out before guest-info's reply came back");
    // A frozen agent: fsinfo disabled, its speculative error dropped; the same problems as one by one.
    const frozen = mk({
      'guest-info': [infoReply([THAW, STATUS], [FREEZE, FREEZE_LIST, FSINFO])],
      [STATUS]: [{ reply: 'frozen' }],
      [FSINFO]: [{ error: 'the command has been disabled' }],
    });
    const r = await preflight(frozen, { guest: 'g', freeze: ['/'], timeoutMs: 250 });
    assert.deepEqual(
      r.problems.map((p) => p.code),
      ['ALREADY_FROZEN', 'COMMAND_UNAVAILABLE'],
    );
    assert.equal(r.mountpoints, undefined);
  });
});
