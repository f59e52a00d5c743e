/**
 * The argument visitor's struct and uint64 types, as the commands of this
 * family use them (GuestLogicalProcessor, GuestMemoryBlock): the reference's
 * full names ("vcpus[0].logical-id") in every text.
 */
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

const STATE: ArgSpec[] = [
  { name: 'online', type: 'bool' },
  { name: 'can-offline', type: 'bool', optional: true },
];
const VCPUS: ArgSpec[] = [
  {
    name: 'vcpus',
    type: { list: { struct: 'GuestLogicalProcessor', members: [{ name: 'logical-id', type: 'int' }, ...STATE] } },
  },
];
const BLOCKS: ArgSpec[] = [
  {
    name: 'mem-blks',
    type: { list: { struct: 'GuestMemoryBlock', members: [{ name: 'phys-index', type: 'uint64' }, ...STATE] } },
  },
];

function visitError(specs: readonly ArgSpec[], text: string): string {
  try {
    visitArgs(specs, args(text));
  } catch (err) {
    assert.ok(err instanceof QgaError);
    return err.message;
  }
  assert.fail(`accepted ${text}`);
}

describe('struct arguments', () => {
  test('values: structs as plain objects, optional members absent when not given', () => {
    assert.deepEqual(
      visitArgs(
        VCPUS,
        args(
          '{"vcpus": [{"logical-id": 3, "online": false}, {"online": true, "logical-id": -1, "can-offline": true}]}',
        ),
      ),
      {
        vcpus: [
          { 'logical-id': 3n, online: false },
          { 'logical-id': -1n, online: true, 'can-offline': true },
        ],
      },
    );
  });
  for (const [input, message] of [
    ['{"vcpus": 1}', "Invalid parameter type for 'vcpus', expected: array"],
    ['{"vcpus": [1]}', "Invalid parameter type for 'vcpus[0]', expected: object"],
    ['{"vcpus": [{"logical-id": 1, "online": true}, []]}', "Invalid parameter type for 'vcpus[1]', expected: object"],
    ['{"vcpus": [{"online": true}]}', "Parameter 'vcpus[0].logical-id' is missing"],
    ['{"vcpus": [{"logical-id": 1}]}', "Parameter 'vcpus[0].online' is missing"],
    [
      '{"vcpus": [{"logical-id": "1", "online": true}]}',
      "Invalid parameter type for 'vcpus[0].logical-id', expected: integer",
    ],
    [
      '{"vcpus": [{"logical-id": 1, "online": true, "can-offline": 0}]}',
      "Invalid parameter type for 'vcpus[0].can-offline', expected: boolean",
    ],
    ['{"vcpus": [{"logical-id": 1, "online": true, "x": 0}]}', "Parameter 'vcpus[0].x' is unexpected"],
    // Members first, in schema order, then the leftovers: a missing member wins over an unexpected one.
    ['{"vcpus": [{"x": 0, "online": true}]}', "Parameter 'vcpus[0].logical-id' is missing"],
  ] as const) {
    test(input, () => {
      assert.equal(visitError(VCPUS, input), message);
    });
  }
});

describe('uint64 arguments', () => {
  const index = (text: string): unknown =>
    (
      visitArgs(BLOCKS, args(`{"mem-blks": [{"phys-index": ${text}, "online": true}]}`))['mem-blks'] as Record<
        string,
        unknown
      >[]
    )[0]!['phys-index'];
  test('0, INT64_MAX and UINT64_MAX as they are; a negative int64 wraps', () => {
    assert.equal(index('0'), 0n);
    assert.equal(index('9223372036854775807'), 9223372036854775807n);
    assert.equal(index('18446744073709551615'), 18446744073709551615n);
    assert.equal(index('-1'), 18446744073709551615n);
    assert.equal(index('-9223372036854775808'), 9223372036854775808n);
  });
  for (const text of ['1.5', '1e3', '18446744073709551616', '"1"', 'true', 'null']) {
    test(`${text} is no uint64`, () => {
      assert.equal(
        visitError(BLOCKS, `{"mem-blks": [{"phys-index": ${text}, "online": true}]}`),
        "Parameter 'mem-blks[0].phys-index' expects uint64",
      );
    });
  }
});
