/**
 * Byte-level JSON lexer with the reference agent's exact state machine: which
 * bytes end a token, which are an error, how it recovers after one. Token text
 * is kept as a latin1 string (one char per byte) so the parser sees raw bytes.
 */
export const enum Tok {
  Error = 0,
  LCurly = 100,
  RCurly,
  LSquare,
  RSquare,
  Colon,
  Comma,
  Integer,
  Float,
  Keyword,
  String,
  /** A token that grew past the size limit; the streamer rejects it. */
  Oversize,
}

const enum S {
  Recovery = 1,
  DqEscape,
  Dq,
  SqEscape,
  Sq,
  Zero,
  ExpDigits,
  ExpSign,
  ExpE,
  Mantissa,
  MantissaDigits,
  Digits,
  Sign,
  Keyword,
  Start,
}

const LOOKAHEAD = 0x80;
export const MAX_TOKEN_SIZE = 64 * 1024 * 1024;

const table = buildTable();

function buildTable(): Uint8Array {
  const t = new Uint8Array(256 * 16); // default 0 = error
  // fill(), not a loop: a hot loop at start-up gets optimised on the spot, which
  // alone pulls ~4 MiB of V8's optimising compiler into the idle agent's RSS.
  const set = (state: number, from: number, to: number, next: number): void => {
    t.fill(next, state * 256 + from, state * 256 + to + 1);
  };
  const ch = (s: string): number => s.charCodeAt(0);
  const terminal = (state: number, tok: number): void => set(state, 0, 255, tok | LOOKAHEAD);

  // Recovery skips to a structural character (the six of them, ':' and ','
  // included), a control character other than TAB, or the impossible bytes
  // 0xFE/0xFF, then restarts there.
  set(S.Recovery, 0x00, 0x1f, S.Start | LOOKAHEAD);
  set(S.Recovery, 0x20, 0xfd, S.Recovery);
  set(S.Recovery, 0xfe, 0xff, S.Start | LOOKAHEAD);
  set(S.Recovery, 9, 9, S.Recovery);
  for (const c of '[]{}:,') set(S.Recovery, ch(c), ch(c), S.Start | LOOKAHEAD);

  for (const [str, esc, quote] of [
    [S.Dq, S.DqEscape, '"'],
    [S.Sq, S.SqEscape, "'"],
  ] as const) {
    set(esc, 0x20, 0xfd, str);
    set(str, 0x20, 0xfd, str);
    set(str, ch('\\'), ch('\\'), esc);
    set(str, ch(quote), ch(quote), Tok.String);
  }

  terminal(S.Zero, Tok.Integer);
  set(S.Zero, ch('0'), ch('9'), Tok.Error);
  set(S.Zero, ch('.'), ch('.'), S.Mantissa);

  terminal(S.ExpDigits, Tok.Float);
  set(S.ExpDigits, ch('0'), ch('9'), S.ExpDigits);
  set(S.ExpSign, ch('0'), ch('9'), S.ExpDigits);
  set(S.ExpE, ch('-'), ch('-'), S.ExpSign);
  set(S.ExpE, ch('+'), ch('+'), S.ExpSign);
  set(S.ExpE, ch('0'), ch('9'), S.ExpDigits);

  terminal(S.MantissaDigits, Tok.Float);
  set(S.MantissaDigits, ch('0'), ch('9'), S.MantissaDigits);
  set(S.MantissaDigits, ch('e'), ch('e'), S.ExpE);
  set(S.MantissaDigits, ch('E'), ch('E'), S.ExpE);
  set(S.Mantissa, ch('0'), ch('9'), S.MantissaDigits);

  terminal(S.Digits, Tok.Integer);
  set(S.Digits, ch('0'), ch('9'), S.Digits);
  set(S.Digits, ch('e'), ch('e'), S.ExpE);
  set(S.Digits, ch('E'), ch('E'), S.ExpE);
  set(S.Digits, ch('.'), ch('.'), S.Mantissa);

  set(S.Sign, ch('0'), ch('0'), S.Zero);
  set(S.Sign, ch('1'), ch('9'), S.Digits);

  terminal(S.Keyword, Tok.Keyword);
  set(S.Keyword, ch('a'), ch('z'), S.Keyword);

  set(S.Start, ch('"'), ch('"'), S.Dq);
  set(S.Start, ch("'"), ch("'"), S.Sq);
  set(S.Start, ch('0'), ch('0'), S.Zero);
  set(S.Start, ch('1'), ch('9'), S.Digits);
  set(S.Start, ch('-'), ch('-'), S.Sign);
  set(S.Start, ch('{'), ch('{'), Tok.LCurly);
  set(S.Start, ch('}'), ch('}'), Tok.RCurly);
  set(S.Start, ch('['), ch('['), Tok.LSquare);
  set(S.Start, ch(']'), ch(']'), Tok.RSquare);
  set(S.Start, ch(','), ch(','), Tok.Comma);
  set(S.Start, ch(':'), ch(':'), Tok.Colon);
  set(S.Start, ch('a'), ch('z'), S.Keyword);
  for (const c of ' \t\r\n') set(S.Start, ch(c), ch(c), S.Start);
  return t;
}

/** Bytes that keep a string token going without any state change. */
const plainStringByte = new Uint8Array(256);
plainStringByte.fill(1, 0x20, 0xfe);
plainStringByte[0x22] = 0;
plainStringByte[0x27] = 0;
plainStringByte[0x5c] = 0;

/** Chunks up to this size are converted to text once and their tokens sliced from it (see take). */
const CHUNK_TEXT_MAX = 4096;

export type TokenSink = (type: Tok, text: string) => void;

export class JsonLexer {
  private state: number = S.Start;
  /** Token bytes from earlier chunks. */
  private saved: Buffer[] = [];
  private savedLen = 0;
  /** The latin1 text of the chunk being fed, once a token needs it (one conversion per chunk). */
  private chunkText: string | undefined;

  constructor(private readonly sink: TokenSink) {}

  /** Drops any partial token, as a new connection or a 0xFF reset would. */
  reset(): void {
    this.state = S.Start;
    this.saved = [];
    this.savedLen = 0;
  }

  /** In its initial state: no partial token. */
  atRest(): boolean {
    return this.state === S.Start && this.savedLen === 0;
  }

  /** `text`: the chunk's latin1 text, when the caller has made it already. */
  feed(buf: Uint8Array, text?: string): void {
    this.chunkText = text;
    const n = buf.length;
    let i = 0;
    let start = 0; // first byte of the current token in this chunk
    while (i < n) {
      const state = this.state;
      if (state === S.Dq || state === S.Sq) {
        // Fast path through string bodies, bounded by the token size limit.
        const limit = Math.min(n, start + (MAX_TOKEN_SIZE + 1 - this.savedLen));
        let j = i;
        while (j < limit && plainStringByte[buf[j]!] === 1) j++;
        if (state === S.Sq) while (j < limit && (plainStringByte[buf[j]!] === 1 || buf[j] === 0x22)) j++;
        i = j;
        if (this.savedLen + (i - start) > MAX_TOKEN_SIZE) {
          this.emitOversize(buf, start, i);
          start = i;
          continue;
        }
        if (i >= n) break;
      }
      const c = buf[i]!;
      const entry = table[state * 256 + c]!;
      const next = entry & ~LOOKAHEAD;
      const consumed = (entry & LOOKAHEAD) === 0;
      if (consumed) i++;
      if (next >= Tok.LCurly) {
        this.sink(next as Tok, this.take(buf, start, i));
        this.state = S.Start;
        start = i;
      } else if (next === S.Start) {
        this.state = S.Start;
        this.dropSaved();
        start = i;
      } else if (next === Tok.Error) {
        this.sink(Tok.Error, this.take(buf, start, i));
        this.state = S.Recovery;
        start = i;
      } else if (next === S.Recovery) {
        this.state = S.Recovery;
        start = i;
      } else {
        this.state = next;
        if (this.savedLen + (i - start) > MAX_TOKEN_SIZE) {
          this.emitOversize(buf, start, i);
          start = i;
        }
      }
    }
    if (start < n && this.state !== S.Start && this.state !== S.Recovery) {
      const part = Buffer.from(buf.subarray(start, n));
      this.saved.push(part);
      this.savedLen += part.length;
    }
    this.chunkText = undefined; // tokens sliced from it may keep it alive, the lexer does not
  }

  private emitOversize(buf: Uint8Array, start: number, end: number): void {
    this.sink(Tok.Oversize, this.take(buf, start, end));
    this.state = S.Start;
  }

  private take(buf: Uint8Array, start: number, end: number): string {
    // The common case: the whole token is in a small chunk (a request). Slicing the chunk's text
    // is a string operation; a Buffer toString per token is a call into C++, ~20 us each under
    // emulation. A slice may keep the chunk's text alive (a path kept in the file table, say),
    // hence small chunks only.
    if (this.savedLen === 0 && buf.length <= CHUNK_TEXT_MAX) {
      this.chunkText ??= Buffer.from(buf.buffer, buf.byteOffset, buf.length).toString('latin1');
      return this.chunkText.slice(start, end);
    }
    const tail = Buffer.from(buf.buffer, buf.byteOffset + start, end - start);
    if (this.savedLen === 0) return tail.toString('latin1');
    const all = Buffer.concat([...this.saved, tail]);
    this.dropSaved();
    return all.toString('latin1');
  }

  private dropSaved(): void {
    if (this.savedLen > 0) {
      this.saved = [];
      this.savedLen = 0;
    }
  }
}
