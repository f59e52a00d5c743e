import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { JsonStreamer, type QDict } from '../../../agent/src/protocol/index.js';
import { QgaError } from '../../../agent/src/qapi/errors.js';
import type { ArgSpec } from '../../../agent/src/qapi/types.js';
import { visitArgs } from '../../../agent/src/qapi/visit.js';

function args(text: string): QDict {
  let value: QDict | undefined;
  new JsonStreamer((m) => {
    assert.ok(m.ok && m.value instanceof Map, 'test input is an object');
    value = m.value;
  }).feed(Buffer.from(text));
  return value!;
}

function visitError(specs: readonly ArgSpec[], text: string): string {
  try {
    visitArgs(specs, args(text));
  } catch (err) {
    assert.ok(err instanceof QgaError);
    assert.equal(err.errorClass, 'GenericError');
    return err.message;
  }
  assert.fail(`accepted ${text}`);
}

const SYNC: ArgSpec[] = [{ name: 'id', type: 'int' }];
const SEEK: ArgSpec[] = [
  { name: 'handle', type: 'int' },
  { name: 'offset', type: 'int' },
  { name: 'whence', type: { alternate: 'GuestFileWhence', values: ['set', 'cur', 'end'] } },
];
const OPEN: ArgSpec[] = [
  { name: 'path', type: 'str' },
  { name: 'mode', type: 'str', optional: true },
];
const FREEZE_LIST: ArgSpec[] = [{ name: 'mountpoints', type: { list: 'str' }, optional: true }];
const EXEC: ArgSpec[] = [
  { name: 'path', type: 'str' },
  { name: 'arg', type: { list: 'str' }, optional: true },
  { name: 'capture-output', type: 'bool', optional: true },
];
const MODE: ArgSpec[] = [
  { name: 'mode', type: { enum: 'GuestShutdownMode', values: ['halt', 'powerdown', 'reboot'] } },
];
const TIME: ArgSpec[] = [{ name: 'x', type: 'number' }];

describe('argument visitor', () => {
  // Texts observed from qemu-ga 7.2 (guest-sync, guest-file-seek, guest-exec).
  const errors: [title: string, specs: ArgSpec[], input: string, expected: string][] = [
    ['reports a missing argument', SYNC, '{}', "Parameter 'id' is missing"],
    ['reports a string for an int', SYNC, '{"id": "1"}', "Invalid parameter type for 'id', expected: integer"],
    ['reports 1.5 for an int', SYNC, '{"id": 1.5}', "Invalid parameter type for 'id', expected: integer"],
    [
      'reports 1.0 for an int (a double, even if whole)',
      SYNC,
      '{"id": 1.0}',
      "Invalid parameter type for 'id', expected: integer",
    ],
    ['reports a boolean for an int', SYNC, '{"id": true}', "Invalid parameter type for 'id', expected: integer"],
    ['reports null for an int', SYNC, '{"id": null}', "Invalid parameter type for 'id', expected: integer"],
    ['reports a list for an int', SYNC, '{"id": []}', "Invalid parameter type for 'id', expected: integer"],
    ['reports an object for an int', SYNC, '{"id": {}}', "Invalid parameter type for 'id', expected: integer"],
    [
      'rejects 9223372036854775808 for an int',
      SYNC,
      '{"id": 9223372036854775808}',
      "Invalid parameter type for 'id', expected: integer",
    ],
    [
      'rejects 2^64-1 for an int',
      SYNC,
      '{"id": 18446744073709551615}',
      "Invalid parameter type for 'id', expected: integer",
    ],
    [
      'rejects -9223372036854775809 for an int',
      SYNC,
      '{"id": -9223372036854775809}',
      "Invalid parameter type for 'id', expected: integer",
    ],
    ['reports an unexpected argument', SYNC, '{"id": 1, "x": 2}', "Parameter 'x' is unexpected"],
    [
      'reports the extra argument the reference meets first',
      SYNC,
      '{"id": 1, "x": 2, "y": 3}',
      "Parameter 'y' is unexpected",
    ],
    ['reports an extra argument on a command without arguments', [], '{"a": 1}', "Parameter 'a' is unexpected"],
    [
      'checks arguments in schema order, before extras',
      SEEK,
      '{"offset": 0, "whence": 1, "zz": 1}',
      "Parameter 'handle' is missing",
    ],
    [
      'reports the first bad argument in schema order',
      SEEK,
      '{"whence": "middle", "offset": 1.5, "handle": "0"}',
      "Invalid parameter type for 'handle', expected: integer",
    ],
    [
      'reports a bad enum value of an alternate',
      SEEK,
      '{"handle": 0, "offset": 0, "whence": "middle"}',
      "Parameter 'whence' does not accept value 'middle'",
    ],
    [
      'reports a boolean for an int-or-enum alternate by the alternate name',
      SEEK,
      '{"handle": 0, "offset": 0, "whence": true}',
      "Invalid parameter type for 'whence', expected: GuestFileWhence",
    ],
    [
      'reports 1.5 for an int-or-enum alternate as not an integer',
      SEEK,
      '{"handle": 0, "offset": 0, "whence": 1.5}',
      "Invalid parameter type for 'whence', expected: integer",
    ],
    [
      'reports a bad value of a plain enum',
      MODE,
      '{"mode": "sleep"}',
      "Parameter 'mode' does not accept value 'sleep'",
    ],
    [
      'reports a number for a plain enum as not a string',
      MODE,
      '{"mode": 1}',
      "Invalid parameter type for 'mode', expected: string",
    ],
    ['reports a number for a string', OPEN, '{"path": 1}', "Invalid parameter type for 'path', expected: string"],
    [
      'reports null for an optional string',
      OPEN,
      '{"path": "/x", "mode": null}',
      "Invalid parameter type for 'mode', expected: string",
    ],
    [
      'reports a string for a list',
      EXEC,
      '{"path": "/bin/true", "arg": "x"}',
      "Invalid parameter type for 'arg', expected: array",
    ],
    [
      'names a bad list element by index',
      FREEZE_LIST,
      '{"mountpoints": [1]}',
      "Invalid parameter type for 'mountpoints[0]', expected: string",
    ],
    [
      'names a later bad list element by its index',
      EXEC,
      '{"path": "/bin/true", "arg": ["a", ["b"]]}',
      "Invalid parameter type for 'arg[1]', expected: string",
    ],
    [
      'reports a number for a boolean',
      EXEC,
      '{"path": "/bin/true", "capture-output": 1}',
      "Invalid parameter type for 'capture-output', expected: boolean",
    ],
    ['reports a string for a number', TIME, '{"x": "1"}', "Invalid parameter type for 'x', expected: number"],
  ];
  for (const [title, specs, input, expected] of errors) {
    test(title, () => {
      assert.equal(visitError(specs, input), expected);
    });
  }

  const accepted: [title: string, specs: ArgSpec[], input: string, expected: Record<string, unknown>][] = [
    ['accepts the smallest int64', SYNC, '{"id": -9223372036854775808}', { id: -9223372036854775808n }],
    ['accepts the largest int64', SYNC, '{"id": 9223372036854775807}', { id: 9223372036854775807n }],
    ['accepts -0 as the int 0', SYNC, '{"id": -0}', { id: 0n }],
    ['leaves an absent optional argument out', OPEN, '{"path": "/x"}', { path: '/x' }],
    [
      'accepts an int for an int-or-enum alternate',
      SEEK,
      '{"handle": 1, "offset": -2, "whence": 2}',
      { handle: 1n, offset: -2n, whence: 2n },
    ],
    [
      'accepts an enum name for an int-or-enum alternate',
      SEEK,
      '{"handle": 1, "offset": 0, "whence": "end"}',
      { handle: 1n, offset: 0n, whence: 'end' },
    ],
    ['accepts a list of strings', FREEZE_LIST, '{"mountpoints": ["/a", "/b"]}', { mountpoints: ['/a', '/b'] }],
    ['accepts an empty list', FREEZE_LIST, '{"mountpoints": []}', { mountpoints: [] }],
    [
      'accepts an int, a double or a uint64 for a number',
      [...TIME, { name: 'y', type: 'number' }, { name: 'z', type: 'number' }],
      '{"x": 1, "y": 1.5, "z": 18446744073709551615}',
      { x: 1, y: 1.5, z: 2 ** 64 },
    ],
  ];
  for (const [title, specs, input, expected] of accepted) {
    test(title, () => {
      assert.deepEqual(visitArgs(specs, args(input)), expected);
    });
  }
});
