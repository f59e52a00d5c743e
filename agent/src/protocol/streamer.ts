import { JsonLexer, MAX_TOKEN_SIZE, Tok } from './lexer.js';
import { JsonParseError, parseTokens, type Token } from './parser.js';
import type { QObject } from './qobject.js';
import { cStringToText } from './utf8.js';

export const MAX_TOKEN_COUNT = 2 * 1024 * 1024;
export const MAX_NESTING = 1024;

/** One complete message from the stream: a value, or the reference's error text. */
export type Message = { ok: true; value: QObject } | { ok: false; error: string };

/**
 * Splits a byte stream into messages the way the reference agent does: a
 * message ends when its brackets balance (or go negative), errors reset the
 * collected tokens, and the limits on size, token count and nesting apply.
 */
export class JsonStreamer {
  private readonly lexer: JsonLexer;
  private tokens: Token[] = [];
  private braces = 0;
  private brackets = 0;
  private size = 0;

  constructor(private readonly emit: (message: Message) => void) {
    this.lexer = new JsonLexer((type, text) => this.onToken(type, text));
  }

  feed(bytes: Uint8Array): void {
    this.lexer.feed(bytes);
  }

  /** Forgets everything pending (used when a new client connects). */
  reset(): void {
    this.lexer.reset();
    this.clear();
  }

  private onToken(type: Tok, text: string): void {
    switch (type) {
      case Tok.LCurly:
        this.braces++;
        break;
      case Tok.RCurly:
        this.braces--;
        break;
      case Tok.LSquare:
        this.brackets++;
        break;
      case Tok.RSquare:
        this.brackets--;
        break;
      case Tok.Error:
        return this.finish({
          ok: false,
          error: `JSON parse error, stray '${cStringToText(Buffer.from(text, 'latin1'))}'`,
        });
      default:
        break;
    }
    if (this.size + text.length + 1 > MAX_TOKEN_SIZE) {
      return this.finish({ ok: false, error: 'JSON token size limit exceeded' });
    }
    if (this.tokens.length + 1 > MAX_TOKEN_COUNT) {
      return this.finish({ ok: false, error: 'JSON token count limit exceeded' });
    }
    if (this.braces + this.brackets > MAX_NESTING) {
      return this.finish({ ok: false, error: 'JSON nesting depth limit exceeded' });
    }
    this.tokens.push({ type, text });
    this.size += text.length;
    if ((this.braces > 0 || this.brackets > 0) && this.braces >= 0 && this.brackets >= 0) return;

    let message: Message;
    try {
      message = { ok: true, value: parseTokens(this.tokens) };
    } catch (err) {
      if (!(err instanceof JsonParseError)) throw err;
      message = { ok: false, error: err.message };
    }
    this.finish(message);
  }

  private finish(message: Message): void {
    this.clear();
    this.emit(message);
  }

  private clear(): void {
    this.tokens = [];
    this.braces = 0;
    this.brackets = 0;
    this.size = 0;
  }
}
