import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { JsonParseError, parseTokens, QNum, Tok } from '../../../agent/src/protocol/index.js';

const t = (type: Tok, text: string): { type: Tok; text: string } => ({ type, text });
const L = t(Tok.LCurly, '{');
const R = t(Tok.RCurly, '}');
const LS = t(Tok.LSquare, '[');
const C = t(Tok.Colon, ':');
const S = (s: string): { type: Tok; text: string } => t(Tok.String, `"${s}"`);
const I = (s: string): { type: Tok; text: string } => t(Tok.Integer, s);

function parseError(tokens: { type: Tok; text: string }[]): string {
  try {
    parseTokens(tokens);
  } catch (err) {
    assert.ok(err instanceof JsonParseError);
    return err.message;
  }
  assert.fail('parsed');
}

/**
 * "premature EOI" cannot come out of the byte stream: a message is parsed
 * only once its brackets balance (or go negative), so the parser always has
 * a token left where it needs one. The parser still has the reference's
 * checks; they are exercised here on token lists the streamer never builds.
 */
describe('parser on token lists', () => {
  const eoi: [string, { type: Tok; text: string }[]][] = [
    ['nothing at all', []],
    ['an object with nothing after {', [L]],
    ['an object after a key', [L, S('a')]],
    ['an object after a colon', [L, S('a'), C]],
    ['an object after a value', [L, S('a'), C, I('1')]],
    ['a list with nothing after [', [LS]],
    ['a list after an element', [LS, I('1')]],
  ];
  for (const [what, tokens] of eoi) {
    test(`reports premature EOI for ${what}`, () => {
      assert.equal(parseError(tokens), 'JSON parse error, premature EOI');
    });
  }

  test('the first error wins: an invalid escape in a key beats the key check', () => {
    assert.equal(
      parseError([L, t(Tok.String, '"\\q"'), C, I('1'), R]),
      'JSON parse error, invalid escape sequence in string',
    );
  });

  test('an error in the value of a duplicate key wins over the duplicate (values parse first)', () => {
    assert.equal(
      parseError([L, S('a'), C, I('1'), t(Tok.Comma, ','), S('a'), C, t(Tok.Keyword, 'nope'), R]),
      "JSON parse error, invalid keyword 'nope'",
    );
  });

  test("cuts a long error text to the reference's 1023-byte buffer", () => {
    const word = 'a'.repeat(5000);
    const msg = parseError([t(Tok.Keyword, word)]);
    assert.equal(msg, `JSON parse error, invalid keyword '${'a'.repeat(1023 - "invalid keyword '".length)}`);
  });

  const numbers: [string, Tok, 'int' | 'uint' | 'double', bigint | number][] = [
    ['0', Tok.Integer, 'int', 0n],
    ['-9223372036854775808', Tok.Integer, 'int', -9223372036854775808n],
    ['9223372036854775807', Tok.Integer, 'int', 9223372036854775807n],
    ['9223372036854775808', Tok.Integer, 'uint', 9223372036854775808n],
    ['18446744073709551615', Tok.Integer, 'uint', 18446744073709551615n],
    ['18446744073709551616', Tok.Integer, 'double', 2 ** 64],
    ['-9223372036854775809', Tok.Integer, 'double', -(2 ** 63)],
    ['1.5', Tok.Float, 'double', 1.5],
    ['1e999', Tok.Float, 'double', Infinity],
  ];
  for (const [text, type, kind, value] of numbers) {
    test(`parses ${text} as ${kind}`, () => {
      const v = parseTokens([t(type, text)]);
      assert.ok(v instanceof QNum);
      assert.equal(v.kind, kind);
      assert.equal(v.value, value);
    });
  }
});
