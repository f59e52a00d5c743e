import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import {
  encode,
  encodeResponse,
  formatDouble,
  qdictOrder,
  QNum,
  quote,
  type QDict,
} from '../../../agent/src/protocol/index.js';

describe('encoder', () => {
  const strings: [title: string, input: string, expected: string][] = [
    ['leaves printable ASCII alone', 'abc XYZ ~!', '"abc XYZ ~!"'],
    ['escapes quote and backslash', 'a"b\\c', '"a\\"b\\\\c"'],
    ['does not escape the solidus', 'a/b', '"a/b"'],
    ['uses short escapes for \\b \\f \\n \\r \\t', '\b\f\n\r\t', '"\\b\\f\\n\\r\\t"'],
    ['writes other control characters as uppercase \\uXXXX', '\x00\x01\x1f', '"\\u0000\\u0001\\u001F"'],
    ['escapes DEL and everything above ASCII', '\x7f\u00e9\u00ff\u0100\uabcd', '"\\u007F\\u00E9\\u00FF\\u0100\\uABCD"'],
    [
      'writes characters beyond the BMP as an uppercase surrogate pair',
      '\u{1f600}\u{10fffd}',
      '"\\uD83D\\uDE00\\uDBFF\\uDFFD"',
    ],
    ['writes a lone surrogate as U+FFFD', '\ud800x\udc00', '"\\uFFFDx\\uFFFD"'],
  ];
  for (const [title, input, expected] of strings) {
    test(`quote ${title}`, () => {
      assert.equal(quote(input), expected);
    });
  }

  const doubles: [number, string][] = [
    [0.1, '0.10000000000000001'],
    [1.5, '1.5'],
    [-2.5, '-2.5'],
    [1e16, '10000000000000000'],
    [1e17, '1e+17'],
    [1e20, '1e+20'],
    [1.5e-5, '1.5e-05'],
    [0.0001, '0.0001'],
    [1e-5, '1.0000000000000001e-05'],
    [-1e300, '-1.0000000000000001e+300'],
    [2.5e-310, '2.5000000000000171e-310'],
    [5e-324, '4.9406564584124654e-324'],
    [Math.PI, '3.1415926535897931'],
    [Number('123456789.123456789'), '123456789.12345679'],
    [1.8446744073709552e19, '1.8446744073709552e+19'],
    [Infinity, 'inf'],
    [-Infinity, '-inf'],
    [NaN, 'nan'],
    [-0, '-0'],
    [0, '0'],
  ];
  for (const [x, text] of doubles) {
    test(`formats the double ${String(x)} as %.17g: ${text}`, () => {
      assert.equal(formatDouble(x), text);
      assert.equal(encode(new QNum('double', x)), text);
    });
  }

  test('writes integers of every kind in full', () => {
    assert.equal(encode(new QNum('int', -9223372036854775808n)), '-9223372036854775808');
    assert.equal(encode(new QNum('uint', 18446744073709551615n)), '18446744073709551615');
    assert.equal(encode(12345678901234567890n), '12345678901234567890');
    assert.equal(encode(42), '42');
  });

  test('writes plain numbers that are integers in full digits, -0 as a double', () => {
    assert.equal(encode(2 ** 53 - 1), '9007199254740991');
    assert.equal(encode(-(2 ** 60)), '-1152921504606846976');
    assert.equal(encode(1e21), '1000000000000000000000');
    assert.equal(encode(-0), '-0');
    assert.equal(encode(0.5), '0.5');
  });

  test('writes lists and empty containers with the reference spacing', () => {
    assert.equal(encode([1, [], {}, [true, false, null]]), '[1, [], {}, [true, false, null]]');
  });

  // Orders observed from qemu-ga 7.2 (see the differential suite).
  const orders: [title: string, keys: string[], expected: string[]][] = [
    ['puts return before id', ['return', 'id'], ['return', 'id']],
    ['puts id before error', ['error', 'id'], ['id', 'error']],
    ['puts class before desc', ['class', 'desc'], ['class', 'desc']],
    ['puts version before supported_commands', ['version', 'supported_commands'], ['version', 'supported_commands']],
    [
      'orders a command entry enabled, name, success-response',
      ['name', 'enabled', 'success-response'],
      ['enabled', 'name', 'success-response'],
    ],
    ['orders a-l as QDict buckets do', [...'abcdefghijkl'], [...'diejafkbglch']],
    [
      'orders request-like keys as QDict buckets do',
      ['execute', 'arguments', 'id', 'return', 'error', 'class', 'desc'],
      ['class', 'execute', 'desc', 'return', 'arguments', 'id', 'error'],
    ],
  ];
  for (const [title, keys, expected] of orders) {
    test(`member order ${title}`, () => {
      assert.deepEqual(qdictOrder(keys), expected);
    });
  }

  test('keeps the reference order when echoing a parsed object', () => {
    const id: QDict = new Map([
      ['a', new QNum('int', 1n)],
      ['b', new QNum('int', 2n)],
      ['c', new QNum('int', 3n)],
    ]);
    assert.equal(encodeResponse({ return: {} }, id), '{"return": {}, "id": {"a": 1, "b": 2, "c": 3}}\n');
  });

  test('puts the newest of members in the same bucket first (k10, k11, k12 collide; observed on qemu-ga)', () => {
    assert.deepEqual(qdictOrder(['k10', 'k11', 'k12']), ['k12', 'k11', 'k10']);
    assert.deepEqual(qdictOrder(['k12', 'k10', 'k11']), ['k11', 'k10', 'k12']);
  });

  test('leaves out members whose value is undefined (absent optional members)', () => {
    assert.equal(encode({ a: 1, b: undefined }), '{"a": 1}');
  });

  test('writes a reply without an id, and the id of every kind in its place', () => {
    assert.equal(encodeResponse({ return: 1 }, undefined), '{"return": 1}\n');
    assert.equal(encodeResponse({ return: 'thawed' }, new QNum('int', 7n)), '{"return": "thawed", "id": 7}\n');
    assert.equal(
      encodeResponse({ error: { class: 'GenericError', desc: 'x' } }, undefined),
      '{"error": {"class": "GenericError", "desc": "x"}}\n',
    );
    assert.equal(encodeResponse({ error: {} }, [null]), '{"id": [null], "error": {}}\n');
  });

  test('writes an error reply with the id echoed', () => {
    assert.equal(
      encodeResponse({ error: { class: 'GenericError', desc: 'x' } }, 'abc'),
      '{"id": "abc", "error": {"class": "GenericError", "desc": "x"}}\n',
    );
  });
});
