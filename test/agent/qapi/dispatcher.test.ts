import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { encodeResponse, JsonStreamer, type JsonOut, type QObject } from '../../../agent/src/protocol/index.js';
import { Dispatcher, type Outcome } from '../../../agent/src/qapi/dispatcher.js';
import { QgaError } from '../../../agent/src/qapi/errors.js';
import type { CommandDef } from '../../../agent/src/qapi/types.js';
import { InProcessAgent } from '../../helpers/in-process-agent.js';

function parse(text: string): QObject {
  let value: QObject | undefined;
  new JsonStreamer((m) => {
    assert.ok(m.ok, 'test input parses');
    value = m.value;
  }).feed(Buffer.from(text));
  assert.notEqual(value, undefined);
  return value!;
}

const ran: string[] = [];
const COMMANDS: CommandDef[] = [
  { name: 'x-sync', args: [{ name: 'id', type: 'int' }], freezeSafe: true, run: (a) => a['id'] as bigint },
  { name: 'x-ping', freezeSafe: true, run: () => undefined },
  { name: 'x-open', args: [{ name: 'path', type: 'str' }], run: (a) => (ran.push(`open ${String(a['path'])}`), 1000) },
  { name: 'x-halt', successResponse: false, run: () => void ran.push('halt') },
  {
    name: 'x-fail',
    run: () => {
      throw new QgaError('failed to open file', 'GenericError');
    },
  },
  {
    name: 'x-bug',
    run: () => {
      throw new TypeError('cannot read properties of undefined');
    },
  },
];

/** The reply line a dispatcher gives, or null for none. */
async function reply(d: Dispatcher, text: string): Promise<string | null> {
  const outcome = await d.dispatch(parse(text), async (c, args) => (await c.run(args, undefined as never)) as JsonOut);
  return outcome === null ? null : encodeResponse(outcome.reply, outcome.id).trimEnd();
}

const err = (desc: string, id?: string): string =>
  `{${id === undefined ? '' : `"id": ${id}, `}"error": {"class": "GenericError", "desc": ${JSON.stringify(desc)}}}`;
const notFound = (desc: string, id?: string): string =>
  `{${id === undefined ? '' : `"id": ${id}, `}"error": {"class": "CommandNotFound", "desc": ${JSON.stringify(desc)}}}`;

describe('dispatcher: request shape', () => {
  const d = new Dispatcher(COMMANDS);
  const cases: [title: string, request: string, expected: string][] = [
    ['rejects a top-level value that is not an object', '[1]', err('QMP input must be a JSON object')],
    ['rejects a string at top level', '"guest-ping"', err('QMP input must be a JSON object')],
    ['requires execute', '{}', err("QMP input lacks member 'execute'")],
    ['requires execute even with an id, and echoes the id', '{"id": 7}', err("QMP input lacks member 'execute'", '7')],
    ['requires execute to be a string', '{"execute": 1}', err("QMP input member 'execute' must be a string")],
    [
      'requires arguments to be an object',
      '{"execute": "x-ping", "arguments": []}',
      err("QMP input member 'arguments' must be an object"),
    ],
    ['rejects an unknown member', '{"execute": "x-ping", "foo": 1}', err("QMP input member 'foo' is unexpected")],
    [
      'reports the member the reference meets first among several problems',
      '{"execute": "x-ping", "foo": 1, "bar": 2, "baz": 3}',
      err("QMP input member 'baz' is unexpected"),
    ],
    [
      'checks members before looking the command up',
      '{"execute": "guest-nope", "arguments": 1}',
      err("QMP input member 'arguments' must be an object"),
    ],
    ['answers an unknown command', '{"execute": "guest-nope"}', notFound('The command guest-nope has not been found')],
    ['echoes an id on success after the return', '{"execute": "x-ping", "id": "abc"}', '{"return": {}, "id": "abc"}'],
    [
      'echoes any id value verbatim',
      '{"execute": "x-ping", "id": [1, {"a": null}, 1.5]}',
      '{"return": {}, "id": [1, {"a": null}, 1.5]}',
    ],
    ['answers {} for a command without a return value', '{"execute": "x-ping"}', '{"return": {}}'],
    ['returns the command value', '{"execute": "x-sync", "arguments": {"id": -5}}', '{"return": -5}'],
    ['passes a command error through', '{"execute": "x-fail", "id": 1}', err('failed to open file', '1')],
    [
      'turns a bug in a command into an error reply instead of a crash',
      '{"execute": "x-bug"}',
      err('cannot read properties of undefined'),
    ],
  ];
  for (const [title, request, expected] of cases) {
    test(title, async () => {
      assert.equal(await reply(d, request), expected);
    });
  }

  test('sends no reply when a success-response false command succeeds', async () => {
    ran.length = 0;
    assert.equal(await reply(d, '{"execute": "x-halt", "id": 1}'), null);
    assert.deepEqual(ran, ['halt']);
  });

  test('still replies when a success-response false command has bad arguments', async () => {
    ran.length = 0;
    assert.equal(await reply(d, '{"execute": "x-halt", "arguments": {"a": 1}}'), err("Parameter 'a' is unexpected"));
    assert.deepEqual(ran, []);
  });
});

describe('dispatcher: disabled commands', () => {
  test('answers a command blocked with -b as disabled, without a reason, and does not run it', async () => {
    ran.length = 0;
    const d = new Dispatcher(COMMANDS, new Set(['x-open']));
    assert.equal(
      await reply(d, '{"execute": "x-open", "arguments": {"path": "/x"}}'),
      notFound('Command x-open has been disabled'),
    );
    assert.deepEqual(ran, []);
  });

  test('checks -b before the arguments', async () => {
    const d = new Dispatcher(COMMANDS, new Set(['x-open']));
    assert.equal(
      await reply(d, '{"execute": "x-open", "arguments": {"bad": 1}}'),
      notFound('Command x-open has been disabled'),
    );
  });

  test('ignores names in -b that are not commands', async () => {
    const d = new Dispatcher(COMMANDS, new Set(['guest-nope', '']));
    assert.equal(await reply(d, '{"execute": "x-ping"}'), '{"return": {}}');
    assert.equal(await reply(d, '{"execute": "guest-nope"}'), notFound('The command guest-nope has not been found'));
  });

  test('answers a command outside the -a allow list as disabled', async () => {
    const d = new Dispatcher(COMMANDS, new Set(), new Set(['x-ping']));
    assert.equal(await reply(d, '{"execute": "x-ping"}'), '{"return": {}}');
    assert.equal(
      await reply(d, '{"execute": "x-sync", "arguments": {"id": 1}}'),
      notFound('Command x-sync has been disabled'),
    );
  });

  test('lets -b win over -a', async () => {
    const d = new Dispatcher(COMMANDS, new Set(['x-ping']), new Set(['x-ping']));
    assert.equal(await reply(d, '{"execute": "x-ping"}'), notFound('Command x-ping has been disabled'));
  });

  test('disables all but the freeze-safe commands while frozen, with the reason', async () => {
    const d = new Dispatcher(COMMANDS);
    d.setFrozen(true);
    assert.equal(
      await reply(d, '{"execute": "x-open", "arguments": {"path": "/x"}}'),
      notFound('Command x-open has been disabled: the agent is in frozen state'),
    );
    assert.equal(await reply(d, '{"execute": "x-sync", "arguments": {"id": 3}}'), '{"return": 3}');
    assert.equal(await reply(d, '{"execute": "x-ping"}'), '{"return": {}}');
    d.setFrozen(false);
    assert.equal(await reply(d, '{"execute": "x-open", "arguments": {"path": "/x"}}'), '{"return": 1000}');
  });

  test('gives a blocked command the frozen reason during a freeze and keeps it after the thaw, as the reference does', async () => {
    const d = new Dispatcher(COMMANDS, new Set(['x-open']));
    d.setFrozen(true);
    const frozenText = notFound('Command x-open has been disabled: the agent is in frozen state');
    assert.equal(await reply(d, '{"execute": "x-open", "arguments": {"path": "/x"}}'), frozenText);
    d.setFrozen(false);
    assert.equal(await reply(d, '{"execute": "x-open", "arguments": {"path": "/x"}}'), frozenText);
  });

  test('when starting frozen, a blocked command is disabled without a reason (observed on qemu-ga with the marker present)', async () => {
    const d = new Dispatcher(COMMANDS, new Set(['x-open']));
    d.setFrozen(true, true);
    assert.equal(
      await reply(d, '{"execute": "x-open", "arguments": {"path": "/x"}}'),
      notFound('Command x-open has been disabled'),
    );
    assert.equal(
      await reply(d, '{"execute": "x-fail"}'),
      notFound('Command x-fail has been disabled: the agent is in frozen state'),
    );
    d.setFrozen(false);
    assert.equal(
      await reply(d, '{"execute": "x-open", "arguments": {"path": "/x"}}'),
      notFound('Command x-open has been disabled'),
    );
    assert.equal(await reply(d, '{"execute": "x-fail"}'), err('failed to open file'));
  });

  test('setting the same frozen state twice changes nothing', async () => {
    const d = new Dispatcher(COMMANDS);
    d.setFrozen(false);
    assert.equal(await reply(d, '{"execute": "x-fail"}'), err('failed to open file'));
    d.setFrozen(true);
    d.setFrozen(true);
    d.setFrozen(false);
    assert.equal(await reply(d, '{"execute": "x-fail"}'), err('failed to open file'));
  });

  test('info lists every command newest first with enabled and success-response', () => {
    const d = new Dispatcher(COMMANDS, new Set(['x-open']));
    d.setFrozen(true);
    assert.deepEqual(d.info(), [
      { name: 'x-bug', enabled: false, successResponse: true },
      { name: 'x-fail', enabled: false, successResponse: true },
      { name: 'x-halt', enabled: false, successResponse: false },
      { name: 'x-open', enabled: false, successResponse: true },
      { name: 'x-ping', enabled: true, successResponse: true },
      { name: 'x-sync', enabled: true, successResponse: true },
    ]);
  });

  test('refuses to register a command twice', () => {
    assert.throws(() => new Dispatcher([COMMANDS[0]!, COMMANDS[0]!]), /registered twice/);
  });
});

describe('guest-info from the real agent', () => {
  let agent: InProcessAgent;
  before(async () => {
    agent = await InProcessAgent.create({ allowRpcs: undefined, blockRpcs: ['guest-ping'] });
  });
  after(async () => {
    await agent?.close();
  });

  test('lists every registered command once, newest first, in the reference shape', async () => {
    const [line] = await agent.lines('{"execute":"guest-info"}');
    const names = agent.agent.dispatcher.names();
    // The reference's schema has 'success-response': false on these (no reply on success).
    const noReply = new Set(['guest-shutdown', 'guest-suspend-disk', 'guest-suspend-ram', 'guest-suspend-hybrid']);
    const entries = names
      .reverse()
      .map(
        (n) =>
          `{"enabled": ${n !== 'guest-ping' && n !== 'guest-get-devices'}, "name": "${n}", "success-response": ${!noReply.has(n)}}`,
      );
    assert.equal(
      line,
      `{"return": {"version": "${agent.agent.context.version}", "supported_commands": [${entries.join(', ')}]}}`,
    );
    for (const n of ['guest-sync-delimited', 'guest-sync', 'guest-ping', 'guest-info']) assert.ok(names.includes(n));
  });

  test('answers guest-sync-delimited with a 0xFF-prefixed reply and guest-sync without', async () => {
    assert.equal(
      await agent.run(
        '{"execute":"guest-sync-delimited","arguments":{"id":5}}{"execute":"guest-sync","arguments":{"id":6}}',
      ),
      '\xff{"return": 5}\n{"return": 6}\n',
    );
  });

  test('does not prefix a guest-sync-delimited reply whose arguments fail', async () => {
    assert.equal(
      await agent.run('{"execute":"guest-sync-delimited","arguments":{"id":"5"}}'),
      `${err("Invalid parameter type for 'id', expected: integer")}\n`,
    );
  });

  test('answers a blocked guest-ping as disabled', async () => {
    assert.deepEqual(await agent.lines('{"execute":"guest-ping"}'), [notFound('Command guest-ping has been disabled')]);
  });
});

describe('dispatcher: synchronous and asynchronous commands', () => {
  const d = new Dispatcher(COMMANDS);
  const direct = (c: CommandDef, args: Record<string, unknown>) => c.run(args, undefined as never);
  const line = (o: Outcome) => (o === null ? null : encodeResponse(o.reply, o.id).trimEnd());
  const later = async (c: CommandDef, args: Record<string, unknown>) =>
    (await c.run(args, undefined as never)) as JsonOut;

  test('a command that answers synchronously gives its outcome synchronously, error or not', () => {
    const ok = d.dispatch(parse('{"execute": "x-sync", "arguments": {"id": 5}, "id": 1}'), direct);
    assert.ok(!(ok instanceof Promise));
    assert.equal(line(ok), '{"return": 5, "id": 1}');
    const failed = d.dispatch(parse('{"execute": "x-fail"}'), direct);
    assert.ok(!(failed instanceof Promise));
    assert.deepEqual(failed?.reply, { error: { class: 'GenericError', desc: 'failed to open file' } });
    assert.equal(d.dispatch(parse('{"execute": "x-halt"}'), direct), null);
  });

  test('an asynchronous command gives a promise of the same outcome, a rejection as its error', async () => {
    const ok = d.dispatch(parse('{"execute": "x-sync", "arguments": {"id": 5}, "id": 1}'), later);
    assert.ok(ok instanceof Promise);
    assert.equal(line(await ok), '{"return": 5, "id": 1}');
    const failed = d.dispatch(parse('{"execute": "x-bug", "id": 2}'), later);
    assert.ok(failed instanceof Promise);
    assert.equal(line(await failed), err('cannot read properties of undefined', '2'));
    assert.equal(await d.dispatch(parse('{"execute": "x-halt"}'), later), null);
  });
});
