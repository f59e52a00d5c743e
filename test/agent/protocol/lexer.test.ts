import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { JsonLexer, MAX_TOKEN_SIZE, Tok } from '../../../agent/src/protocol/index.js';

const NAMES: Record<number, string> = {
  [Tok.Error]: 'error',
  [Tok.LCurly]: '{',
  [Tok.RCurly]: '}',
  [Tok.LSquare]: '[',
  [Tok.RSquare]: ']',
  [Tok.Colon]: ':',
  [Tok.Comma]: ',',
  [Tok.Integer]: 'int',
  [Tok.Float]: 'float',
  [Tok.Keyword]: 'keyword',
  [Tok.String]: 'string',
  [Tok.Oversize]: 'oversize',
};

/** Tokens as `type text` (text as latin1, one char per byte). */
function lex(...chunks: (string | Uint8Array)[]): string[] {
  const out: string[] = [];
  const lexer = new JsonLexer((type, text) => out.push(`${NAMES[type]} ${text}`));
  for (const c of chunks) lexer.feed(typeof c === 'string' ? Buffer.from(c, 'latin1') : c);
  return out;
}

describe('lexer', () => {
  const cases: [title: string, input: string, tokens: string[]][] = [
    [
      'splits a request into structural, string and keyword tokens',
      '{"a": [1, true]}',
      ['{ {', 'string "a"', ': :', '[ [', 'int 1', ', ,', 'keyword true', '] ]', '} }'],
    ],
    ['skips space, tab, CR and LF between tokens', ' \t\r\n{ \r\n}\n', ['{ {', '} }']],
    [
      'keeps a single-quoted string with a double quote inside as one token',
      `{'a"b':1}`,
      ['{ {', `string 'a"b'`, ': :', 'int 1', '} }'],
    ],
    ['keeps escapes inside the string token for the parser', '"a\\"b\\\\"', ['string "a\\"b\\\\"']],
    ['lexes integers, negatives and zero', '0 -0 12 -34 ', ['int 0', 'int -0', 'int 12', 'int -34']],
    [
      'lexes fractions and exponents as floats',
      '1.5 -0.25 1e5 2E-3 3.5e+2 ',
      ['float 1.5', 'float -0.25', 'float 1e5', 'float 2E-3', 'float 3.5e+2'],
    ],
    ['ends a keyword at the first byte outside a-z', 'trueX', ['keyword true', 'error X']],
    ['accepts any lower-case word as a keyword (the parser rejects it)', 'garbage ', ['keyword garbage']],
    ['rejects a leading zero followed by a digit, byte included', '01', ['error 01']],
    ['rejects a lone minus at the next byte, consuming it', '-x', ['error -x']],
    ['rejects a dot without digits after it', '1.x', ['error 1.x']],
    ['rejects an exponent without digits', '1ex', ['error 1ex']],
    ['rejects a byte that cannot start a token', '@', ['error @']],
    ['rejects a control character inside a string, with the string so far', '"ab\x01cd"', ['error "ab\x01']],
    ['rejects 0xFF inside a string', '"ab\xffcd"', ['error "ab\xff']],
    ['rejects 0xFE inside a string', '"ab\xfecd"', ['error "ab\xfe']],
    [
      "accepts bytes 0x80-0xFD inside a string (UTF-8 is the parser's business)",
      '"\x80\xc3\xa9\xfd"',
      ['string "\x80\xc3\xa9\xfd"'],
    ],
    ['recovers after an error at the next { } [ ] : or ,', '@abc def{', ['error @', '{ {']],
    ['recovers at a colon', '@x:1 ', ['error @', ': :', 'int 1']],
    ['recovers at a comma', '@x,1 ', ['error @', ', ,', 'int 1']],
    ['recovers at a closing bracket', '@x]', ['error @', '] ]']],
    ['recovers at a control character other than TAB and lexes it afresh', '@x\ny\t"', ['error @', 'keyword y']],
    ['does not recover at TAB or a quote', '@x\t"y"1', ['error @']],
    ['recovers at 0xFF, which is itself an error in the start state', '@x\xff{', ['error @', 'error \xff', '{ {']],
    ['makes 0xFF a token of its own at the start', '\xff', ['error \xff']],
    ['ends a number before 0xFF and then rejects the 0xFF', '12\xff', ['int 12', 'error \xff']],
    ['treats 0xFF after a minus as part of the error', '-\xff', ['error -\xff']],
    ['rejects NUL at the start', '\x00{', ['error \x00', '{ {']],
  ];
  for (const [title, input, tokens] of cases) {
    test(title, () => {
      assert.deepEqual(lex(input), tokens);
    });
  }

  test('gives the same tokens whatever byte position the input is split at', () => {
    const input = `{"execute" : 'guest-sync', "arguments":{"id":-12.5e+3}, "x":[true,null,"\\u00e9\xc3\xa9"]}\r\n@junk,01 "a\x01`;
    const whole = lex(input);
    for (let i = 0; i <= input.length; i++) {
      assert.deepEqual(lex(input.slice(0, i), input.slice(i)), whole, `split at ${i}`);
    }
    // And fed one byte at a time.
    assert.deepEqual(lex(...[...input]), whole);
  });

  test('reset() drops a partial token', () => {
    const out: string[] = [];
    const lexer = new JsonLexer((type, text) => out.push(`${NAMES[type]} ${text}`));
    lexer.feed(Buffer.from('"half a str'));
    lexer.reset();
    lexer.feed(Buffer.from('"new"'));
    assert.deepEqual(out, ['string "new"']);
  });

  test('cuts a token that grows past 64 MiB and restarts lexing after it', () => {
    const body = Buffer.alloc(MAX_TOKEN_SIZE + 10, 0x61);
    const out: [string, number][] = [];
    const lexer = new JsonLexer((type, text) => out.push([NAMES[type]!, text.length]));
    lexer.feed(Buffer.from('"'));
    // In pieces, so the limit is crossed with earlier bytes saved.
    for (let i = 0; i < body.length; i += 7 * 1024 * 1024) lexer.feed(body.subarray(i, i + 7 * 1024 * 1024));
    lexer.feed(Buffer.from('"'));
    // The quote and 64 MiB of 'a' make the oversize token; the 10 'a' left lex as a keyword, then a new string starts.
    assert.deepEqual(out, [
      ['oversize', MAX_TOKEN_SIZE + 1],
      ['keyword', 10],
    ]);
  });

  test('lets a string of exactly 64 MiB bytes including its quotes through as one token', () => {
    const out: [string, number][] = [];
    const lexer = new JsonLexer((type, text) => out.push([NAMES[type]!, text.length]));
    lexer.feed(Buffer.concat([Buffer.from('"'), Buffer.alloc(MAX_TOKEN_SIZE - 2, 0x62), Buffer.from('"')]));
    assert.deepEqual(out, [['string', MAX_TOKEN_SIZE]]);
  });

  test('tokens come out the same from small chunks, a large chunk, a subarray and across chunks', () => {
    const one = '{"execute":"guest-file-open","arguments":{"path":"/tmp/\xe9x","mode":"r"}} [1.5e3, -0, true]';
    const text = one.repeat(Math.ceil(5000 / one.length)); // > 4096 bytes: the large-chunk path
    const expected = lex(...[...text].map((c) => c));
    assert.ok(text.length > 4096 && expected.length > 500);
    assert.deepEqual(lex(text), expected);
    assert.deepEqual(lex(...text.match(/[^]{1,700}/g)!), expected);
    const padded = Buffer.from(`xx${text}yy`, 'latin1');
    assert.deepEqual(lex(padded.subarray(2, padded.length - 2)), expected);
    const view = new Uint8Array(padded.buffer, padded.byteOffset + 2, 800);
    assert.deepEqual(lex(view, Buffer.from(text.slice(800), 'latin1')), expected);
  });
});
