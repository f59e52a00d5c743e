import { JsonLexer, MAX_TOKEN_SIZE, Tok } from './lexer.js';
import { JsonParseError, parseTokens, type Token } from './parser.js';
import { isQDict, type QObject } from './qobject.js';
import { cStringToText } from './utf8.js';

export const MAX_TOKEN_COUNT = 2 * 1024 * 1024;
export const MAX_NESTING = 1024;
/** Remembered chunks (see feed): at most this long, and this many (oldest forgotten first). */
const MEMO_CHUNK_MAX = 256;
const MEMO_ENTRIES = 64;

/** `{"execute": "name"}` and nothing else. */
function isBareRequest(value: QObject): boolean {
  return isQDict(value) && value.size === 1 && typeof value.get('execute') === 'string';
}

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
  /** Messages emitted so far, and the last one: what feed() learns a chunk gave. */
  private emitted = 0;
  private last: Message | undefined;
  /** Chunk text → the one message it gave from rest (see feed). */
  private readonly memo = new Map<string, Message>();

  constructor(private readonly emit: (message: Message) => void) {
    this.lexer = new JsonLexer((type, text) => this.onToken(type, text));
  }

  /**
   * Lexes and parses a chunk. A chunk that once took the streamer from rest
   * back to rest with exactly one argument-free request (`{"execute": "…"}`,
   * the thaw above all) is remembered by its bytes: seen again from rest, it
   * gives the same message without being lexed again. That is exact, since
   * lexing and parsing depend on nothing but the state and the bytes, and it
   * saves ~0.2 ms of the thaw's window under emulation, where the lexer runs
   * cold after the idle spell of the freeze. Only argument-free requests are
   * remembered: they come from a short list of commands, while arguments
   * (guest-sync ids, handles, paths) would make every chunk new.
   */
  feed(bytes: Uint8Array): void {
    if (bytes.length > MEMO_CHUNK_MAX || !this.atRest()) return this.lexer.feed(bytes);
    const key = Buffer.from(bytes.buffer, bytes.byteOffset, bytes.length).toString('latin1');
    const known = this.memo.get(key);
    if (known !== undefined) return this.emit(known);
    const before = this.emitted;
    this.lexer.feed(bytes, key);
    const message = this.last;
    if (this.emitted !== before + 1 || !this.atRest() || !message?.ok || !isBareRequest(message.value)) return;
    if (this.memo.size >= MEMO_ENTRIES) this.memo.delete(this.memo.keys().next().value!);
    this.memo.set(key, message);
  }

  /** No partial token or message pending. */
  private atRest(): boolean {
    return this.tokens.length === 0 && this.lexer.atRest();
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
    this.emitted++;
    this.last = message;
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
