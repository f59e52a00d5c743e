import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { atoi, lines, scan, strtol, strtoul } from '../../../agent/src/system/c-parse.js';

describe('libc parsing as the reference runs it', () => {
  test('scan counts conversions like sscanf, -1 when the input ends before the first', () => {
    assert.deepEqual(scan('', ['s', 'lu']), { count: -1, values: [] });
    assert.deepEqual(scan('  \t ', ['s']), { count: -1, values: [] });
    assert.deepEqual(scan('cpu0 1 2', ['s', 'lu', 'lu', 'lu']), { count: 3, values: ['cpu0', 1n, 2n] });
    assert.deepEqual(scan('cpu0 12x 3', ['s', 'lu', 'lu']), { count: 2, values: ['cpu0', 12n] });
    assert.deepEqual(scan('x -', ['s', 'lu']), { count: 1, values: ['x'] });
  });

  test('%lu wraps negatives and clamps overflow at ULONG_MAX; %u keeps the low 32 bits', () => {
    assert.deepEqual(scan('-1 18446744073709551616 +7', ['lu', 'lu', 'lu']).values, [
      18446744073709551615n,
      18446744073709551615n,
      7n,
    ]);
    assert.deepEqual(scan('4294967297 -1', ['u', 'u']).values, [1n, 4294967295n]);
  });

  test('strtoul, strtol (base 10 and 16) and atoi', () => {
    assert.equal(strtoul('42abc'), 42n);
    assert.equal(strtoul('abc'), 0n);
    assert.equal(strtoul(' -1'), 18446744073709551615n);
    assert.equal(strtol('8000000\n', 16), 0x8000000n);
    assert.equal(strtol('0x10', 16), 16n);
    assert.equal(strtol('0xg', 16), 0n);
    assert.equal(strtol('99999999999999999999'), 9223372036854775807n);
    assert.equal(strtol('-99999999999999999999'), -9223372036854775808n);
    assert.equal(atoi('4294967295'), -1);
    assert.equal(atoi('12'), 12);
  });

  test('lines like getline(): the last one without a newline too', () => {
    assert.deepEqual(lines('a\nb\n'), ['a', 'b']);
    assert.deepEqual(lines('a\n\nb'), ['a', '', 'b']);
    assert.deepEqual(lines(''), []);
  });
});
