import { Tok } from './lexer.js';
import { INT64_MAX, INT64_MIN, QNum, UINT64_MAX, type QDict, type QObject } from './qobject.js';
import { cStringToText, decodeCodepoint, isValidCodepoint } from './utf8.js';

/** A parse failure; `message` is the reference's full text ("JSON parse error, …"). */
export class JsonParseError extends Error {}

export interface Token {
  type: Tok;
  text: string;
}

/**
 * Recursive-descent parser over one message's tokens, with the reference's
 * error texts. The first error wins, as in the reference.
 */
export function parseTokens(tokens: readonly Token[]): QObject {
  return new Parser(tokens).parseValue();
}

/** `message` is byte text (latin1), as the reference formats it from raw token bytes. */
function fail(message: string): never {
  // The reference formats parser messages into a 1024-byte buffer; its reply
  // then shows the bytes as (modified) UTF-8, an invalid byte as U+FFFD.
  const bytes = Buffer.from(message.slice(0, 1023), 'latin1');
  throw new JsonParseError(`JSON parse error, ${cStringToText(bytes)}`);
}

class Parser {
  private pos = 0;
  constructor(private readonly tokens: readonly Token[]) {}

  private peek(): Token | undefined {
    return this.tokens[this.pos];
  }

  private pop(): Token {
    const t = this.tokens[this.pos++];
    if (!t) fail('premature EOI');
    return t;
  }

  parseValue(): QObject {
    const t = this.peek();
    if (!t) fail('premature EOI');
    switch (t.type) {
      case Tok.LCurly:
        return this.parseObject();
      case Tok.LSquare:
        return this.parseArray();
      case Tok.Integer:
        this.pos++;
        return parseInteger(t.text);
      case Tok.Float:
        this.pos++;
        return new QNum('double', Number(t.text));
      case Tok.String:
        this.pos++;
        return parseString(t.text);
      case Tok.Keyword:
        this.pos++;
        return parseKeyword(t.text);
      default:
        fail('expecting value');
    }
  }

  private parseObject(): QDict {
    this.pos++; // '{'
    const dict: QDict = new Map();
    if (!this.peek()) fail('premature EOI');
    if (this.peek()!.type === Tok.RCurly) {
      this.pos++;
      return dict;
    }
    this.parsePair(dict);
    let t = this.pop();
    while (t.type !== Tok.RCurly) {
      if (t.type !== Tok.Comma) fail('expected separator in dict');
      this.parsePair(dict);
      t = this.pop();
    }
    return dict;
  }

  private parsePair(dict: QDict): void {
    if (!this.peek()) fail('premature EOI');
    const key = this.parseValue();
    if (typeof key !== 'string') fail('key is not a string in object');
    if (this.pop().type !== Tok.Colon) fail('missing : in object pair');
    const value = this.parseValue();
    if (dict.has(key)) fail('duplicate key');
    dict.set(key, value);
  }

  private parseArray(): QObject[] {
    this.pos++; // '['
    const list: QObject[] = [];
    if (!this.peek()) fail('premature EOI');
    if (this.peek()!.type === Tok.RSquare) {
      this.pos++;
      return list;
    }
    list.push(this.parseValue());
    let t = this.pop();
    while (t.type !== Tok.RSquare) {
      if (t.type !== Tok.Comma) fail('expected separator in list');
      list.push(this.parseValue());
      t = this.pop();
    }
    return list;
  }
}

function parseKeyword(text: string): QObject {
  if (text === 'true') return true;
  if (text === 'false') return false;
  if (text === 'null') return null;
  fail(`invalid keyword '${text}'`);
}

function parseInteger(text: string): QNum {
  const v = BigInt(text);
  if (v >= INT64_MIN && v <= INT64_MAX) return new QNum('int', v);
  if (v > 0n && v <= UINT64_MAX) return new QNum('uint', v);
  return new QNum('double', Number(text));
}

const SIMPLE_ESCAPES: Record<string, string> = {
  '"': '"',
  "'": "'",
  '\\': '\\',
  '/': '/',
  b: '\b',
  f: '\f',
  n: '\n',
  r: '\r',
  t: '\t',
};

function hex4(text: string, at: number): number {
  const s = text.slice(at, at + 4);
  return /^[0-9a-fA-F]{4}$/.test(s) ? parseInt(s, 16) : -1;
}

/** A string token (latin1 text of its raw bytes, quotes included) to its value. */
function parseString(text: string): string {
  const quote = text[0]!;
  const end = text.length - 1;
  const body = text.slice(1, end);
  // Plain ASCII without escapes is by far the common case (and base64 payloads).
  if (!/[^\x20-\x7e]|\\/.test(body)) return body;

  let out = '';
  let p = 1;
  const bytes = Buffer.from(text, 'latin1');
  while (p < end && text[p] !== quote) {
    const c = text[p]!;
    if (c === '\\') {
      const beg = p++;
      const e = text[p++]!;
      const simple = SIMPLE_ESCAPES[e];
      if (simple !== undefined) {
        out += simple;
      } else if (e === 'u') {
        let cp = hex4(text, p);
        p += 4;
        if (cp >= 0xd800 && cp <= 0xdbff && text[p] === '\\' && text[p + 1] === 'u') {
          const trailing = hex4(text, p + 2);
          if (trailing >= 0xdc00 && trailing <= 0xdfff) {
            cp = 0x10000 + ((cp & 0x3ff) << 10) + (trailing & 0x3ff);
            p += 6;
          } else {
            cp = -1;
          }
        }
        if (!isValidCodepoint(cp)) {
          // %.*s stops at the token's end (NUL in the reference).
          fail(`${text.slice(beg, Math.min(p, text.length))} is not a valid Unicode character`);
        }
        out += String.fromCodePoint(cp);
      } else {
        fail('invalid escape sequence in string');
      }
    } else {
      const [cp, next] = decodeCodepoint(bytes, p, Math.min(p + 6, bytes.length));
      if (cp < 0) fail('invalid UTF-8 sequence in string');
      out += String.fromCodePoint(cp);
      p = next;
    }
  }
  return out;
}
