import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import {
  encode,
  JsonStreamer,
  MAX_NESTING,
  MAX_TOKEN_COUNT,
  MAX_TOKEN_SIZE,
  type Message,
} from '../../../agent/src/protocol/index.js';

/** Messages as text: `= <value as the agent writes it>` or the error text. */
function messages(...chunks: (string | Buffer)[]): string[] {
  const out: string[] = [];
  const s = new JsonStreamer((m: Message) => out.push(m.ok ? `= ${encode(m.value)}` : m.error));
  for (const c of chunks) s.feed(typeof c === 'string' ? Buffer.from(c, 'latin1') : c);
  return out;
}

const E = (text: string): string => `JSON parse error, ${text}`;

describe('streamer and parser: messages and error texts', () => {
  const cases: [title: string, input: string, expected: string[]][] = [
    ['parses a request', '{"execute":"guest-ping"}', ['= {"execute": "guest-ping"}']],
    ['parses a single-quoted request', "{'execute':'guest-ping'}", ['= {"execute": "guest-ping"}']],
    ['parses several requests in one read', '{"a":1}{"b":2} {"c":3}', ['= {"a": 1}', '= {"b": 2}', '= {"c": 3}']],
    ['ignores CR/LF and blanks between requests', '\r\n{"a":1}\r\n\r\n  {"b":2}\n', ['= {"a": 1}', '= {"b": 2}']],
    ['makes each top-level scalar a message of its own', '1 "x" true ', ['= 1', '= "x"', '= true']],
    ['reports a key that is not a string', '{1:2}', [E('key is not a string in object')]],
    ['reports an array as key as not a string', '{[1]:2}', [E('key is not a string in object')]],
    ['reports a missing colon', '{"a" 1}', [E('missing : in object pair')]],
    ['reports a missing separator in a dict', '{"a":1 "b":2}', [E('expected separator in dict')]],
    ['reports a missing separator in a list', '[1 2]', [E('expected separator in list')]],
    ['reports a missing value', '{"a":}', [E('expecting value')]],
    ['reports a trailing comma in a list as a missing value', '[1,]', [E('expecting value')]],
    ['reports an unknown keyword', 'nul ', [E("invalid keyword 'nul'")]],
    ['reports a duplicate key', '{"a":1,"a":2}', [E('duplicate key')]],
    ['reports a duplicate key written with a different quote', `{"a":1,'a':2}`, [E('duplicate key')]],
    ['reports an invalid escape', '{"a":"\\q"}', [E('invalid escape sequence in string')]],
    ['reports invalid UTF-8 (a lone continuation byte)', '{"a":"\x80"}', [E('invalid UTF-8 sequence in string')]],
    ['reports invalid UTF-8 (an overlong slash)', '{"a":"\xc0\xaf"}', [E('invalid UTF-8 sequence in string')]],
    ['reports invalid UTF-8 (an encoded surrogate)', '{"a":"\xed\xa0\x80"}', [E('invalid UTF-8 sequence in string')]],
    ['reports invalid UTF-8 (a noncharacter)', '{"a":"\xef\xbf\xbf"}', [E('invalid UTF-8 sequence in string')]],
    ['reports invalid UTF-8 (a truncated sequence)', '{"a":"\xe2\x82"}', [E('invalid UTF-8 sequence in string')]],
    ['reports a lone surrogate escape with its text', '"\\ud800"', [E('\\ud800 is not a valid Unicode character')]],
    [
      'reports a surrogate pair with a bad second half with the first half',
      '"\\uD83D\\u0041"',
      [E('\\uD83D is not a valid Unicode character')],
    ],
    ['reports a noncharacter escape', '"\\uFFFE"', [E('\\uFFFE is not a valid Unicode character')]],
    ['reports a short \\u escape with what the token had', '"\\u12"', [E('\\u12" is not a valid Unicode character')]],
    [
      'shows a raw byte in an escape error as U+FFFD',
      '"\\u\x80d83"',
      [E('\\u\uFFFDd83 is not a valid Unicode character')],
    ],
    ['reports a stray byte, then recovers', '@ {"a":1}', [E("stray '@'"), '= {"a": 1}']],
    ['answers garbage} with two errors', 'garbage}', [E("invalid keyword 'garbage'"), E('expecting value')]],
    ['answers {"x": @} with a stray then a missing value', '{"x": @}', [E("stray '@'"), E('expecting value')]],
    ['answers a lone closing bracket with a missing value', ']', [E('expecting value')]],
    ['drops a partial request when a stray byte comes', '{"a":[1,\xff{"b":2}', [E("stray '\uFFFD'"), '= {"b": 2}']],
    ['ends a string token at 0xFF and shows it as U+FFFD', '"ab\xff', [E(`stray '"ab\uFFFD'`)]],
    [
      'ends a string at a TAB (a control character) and recovers at the next control character',
      '"a\tb\x01',
      [E(`stray '"a\t'`), E("stray '\u0001'")],
    ],
    ["stops a stray text at NUL as the reference's %s does", '\x00', [E("stray ''")]],
    ['keeps the UTF-8 of a stray string token', '"\xc3\xa9\x02', [E(`stray '"\u00e9\u0002'`)]],
    ['answers a lone 0xFF with a stray error', '\xff', [E("stray '\uFFFD'")]],
    [
      'recovers at a colon after an error (so a following string is a message)',
      '@x: "s"',
      [E("stray '@'"), E('expecting value'), '= "s"'],
    ],
    [
      'decodes escapes and non-ASCII',
      `"\\"\\\\\\/\\b\\f\\n\\r\\t\\'\\u00e9\xc3\xa9\\ud83d\\ude00"`,
      ['= "\\"\\\\/\\b\\f\\n\\r\\t\'\\u00E9\\u00E9\\uD83D\\uDE00"'],
    ],
    ['decodes \\u0000 and C0 80 alike', '["\\u0000", "\xc0\x80"]', ['= ["\\u0000", "\\u0000"]']],
    [
      'parses int64 bounds as integers',
      '[-9223372036854775808, 9223372036854775807]',
      ['= [-9223372036854775808, 9223372036854775807]'],
    ],
    [
      'parses integers up to 2^64-1 as uint64, beyond as doubles',
      '[18446744073709551615, 18446744073709551616]',
      ['= [18446744073709551615, 1.8446744073709552e+19]'],
    ],
    ['parses -0 as the integer 0 and -0.0 as a negative double', '[-0, -0.0]', ['= [0, -0]']],
    ['parses 1e999 as inf', '[1e999, -1e999]', ['= [inf, -inf]']],
  ];
  for (const [title, input, expected] of cases) {
    test(title, () => {
      assert.deepEqual(messages(input), expected);
    });
  }

  test('gives the same messages whatever byte position the stream is split at', () => {
    const input =
      `{"execute":"guest-sync","arguments":{"id":-9223372036854775808}}\r\n{'execute':'guest-ping','id':"\xc3\xa9"}` +
      `garbage}{"x": @}[1 2]{"a":"\\ud800"}"\\u00e9"`;
    const whole = messages(input);
    assert.equal(whole.length, 9);
    for (let i = 0; i <= input.length; i++) {
      assert.deepEqual(messages(input.slice(0, i), input.slice(i)), whole, `split at ${i}`);
    }
    for (let i = 1; i < input.length; i += 7) {
      for (let j = i + 1; j <= input.length; j += 11) {
        assert.deepEqual(messages(input.slice(0, i), input.slice(i, j), input.slice(j)), whole, `split at ${i}, ${j}`);
      }
    }
    assert.deepEqual(messages(...[...input]), whole);
  });

  test('reset() forgets a partial request (a new client starts clean)', () => {
    const out: Message[] = [];
    const s = new JsonStreamer((m) => out.push(m));
    s.feed(Buffer.from('{"execute":"guest-ping", "id": [1, {"a'));
    s.reset();
    s.feed(Buffer.from('{"b":1}'));
    assert.equal(out.length, 1);
    assert.deepEqual(out[0]!.ok && encode(out[0]!.value), '{"b": 1}');
  });

  test(`accepts nesting ${MAX_NESTING} deep`, () => {
    const input = '['.repeat(MAX_NESTING) + ']'.repeat(MAX_NESTING);
    const out = messages(input);
    assert.equal(out.length, 1);
    assert.ok(out[0]!.startsWith('= [[[['));
  });

  test(`rejects nesting ${MAX_NESTING + 1} deep, then each unmatched closer is a missing value`, () => {
    const out = messages('['.repeat(MAX_NESTING + 1) + ']'.repeat(MAX_NESTING + 1));
    assert.equal(out[0], 'JSON nesting depth limit exceeded');
    assert.equal(out.length, 1 + MAX_NESTING + 1);
    assert.ok(out.slice(1).every((m) => m === E('expecting value')));
  });

  test('counts braces and brackets together for the nesting limit', () => {
    const input = '{"a":['.repeat(MAX_NESTING / 2) + '{';
    assert.deepEqual(messages(input), ['JSON nesting depth limit exceeded']);
  });

  test(`accepts ${MAX_TOKEN_COUNT} tokens in a message and rejects one more`, () => {
    // '[' + n × '1,' + '[]]' is 2n + 4 tokens; '[' + n × '1,' + '1]' is 2n + 3.
    const n = MAX_TOKEN_COUNT / 2 - 2;
    let seen: Message | undefined;
    const s = new JsonStreamer((m) => (seen = m));
    s.feed(Buffer.from(`[${'1,'.repeat(n)}[]]`));
    assert.ok(seen?.ok, 'the array of exactly the limit parses');
    assert.equal((seen.value as unknown[]).length, n + 1);
    assert.deepEqual(messages(`[${'1,'.repeat(n + 1)}1]`), ['JSON token count limit exceeded']);
  });

  test('rejects a message whose tokens add up to more than 64 MiB', () => {
    const mib = 'x'.repeat(1024 * 1024 - 3);
    const parts = [];
    for (let i = 0; i < 64; i++) parts.push(`"${mib}",`);
    const out = messages(`[${parts.join('')}"${mib}"]`);
    assert.equal(out[0], 'JSON token size limit exceeded');
  });

  test('rejects a single token longer than 64 MiB, then lexes what follows afresh', () => {
    const out = messages(Buffer.concat([Buffer.from('"'), Buffer.alloc(MAX_TOKEN_SIZE + 3, 0x61), Buffer.from(' 7 ')]));
    assert.deepEqual(out, ['JSON token size limit exceeded', E("invalid keyword 'aaa'"), '= 7']);
  });
});

describe('streamer: remembered argument-free requests', () => {
  test('a chunk that was one bare request gives the remembered message; others are parsed afresh', () => {
    const out: Message[] = [];
    const s = new JsonStreamer((m) => out.push(m));
    const thaw = Buffer.from('{"execute":"guest-fsfreeze-thaw"}\n');
    s.feed(thaw);
    s.feed(Buffer.from(thaw));
    assert.equal(out.length, 2);
    assert.equal(out[1], out[0], 'the same message, not parsed again');
    const sync = Buffer.from('{"execute":"guest-sync","arguments":{"id":1}}');
    s.feed(sync);
    s.feed(sync);
    assert.notEqual(out[3], out[2], 'a request with arguments is not remembered');
    assert.deepEqual(out[3], out[2]);
  });

  test('gives the messages a fresh streamer gives, chunk by chunk, from rest or not', () => {
    const chunks = [
      '{"execute":"guest-ping"}',
      '{"execute":"guest-ping"}\n',
      '{"execute":"guest-ping"}{"execute":',
      '"guest-ping"}',
      '{"execute":"guest-ping"}',
      ' {"execute":"guest-ping"}',
      '{"execute":"guest-ping","execute":"guest-info"}',
      '{"execute":"guest-ping"}',
      '}',
      '{"execute":"guest-ping"}',
      '{"execute":"guest-ping"}[',
      '{"execute":"guest-ping"}',
      ']{"execute":"guest-ping"}',
      '"{"execute":"guest-ping"}',
      '"',
      '{"execute":"guest-ping"}',
    ];
    const once = messages(...chunks);
    assert.equal(once.length, 25);
    // The second pass meets every chunk again: remembered ones come from the memo, in the same states.
    assert.deepEqual(messages(...chunks, ...chunks), [...once, ...once]);
    assert.deepEqual(messages(chunks.join('')), once, 'as one chunk');
  });
});
