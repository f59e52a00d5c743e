import fc from 'fast-check';

/**
 * Valid requests to mutate. Only commands that cannot touch the machine:
 * a mutation of these can reach other byte strings, never another command
 * that does something (it would take many simultaneous edits).
 */
export const SEED_REQUESTS: readonly string[] = [
  '{"execute":"guest-ping"}',
  '{"execute": "guest-ping", "id": "abc"}',
  '{"execute":"guest-sync","arguments":{"id":42}}',
  '{"execute":"guest-sync","arguments":{"id":-9223372036854775808},"id":[1,{"a":null}]}',
  '{"execute":"guest-sync-delimited","arguments":{"id":12345}}',
  "{'execute':'guest-ping','id':'x\\u00e9\\ud83d\\ude00'}",
  '{"execute":"guest-sync","arguments":{"id":1.5}}',
  '{"execute":"guest-ping","id":1e999}',
  '{"execute":"guest-ping","id":18446744073709551615}',
  '{"execute":"guest-ping","id":-0.000012345678901234567}',
  '{"execute":"guest-sync","arguments":{"id":7,"x":true,"y":false}}',
  '{"execute":"guest-nope","arguments":{}}',
  '[{"a":1},"b",[true,false,null]]',
  '{"execute":"guest-ping","arguments":{"b":"\\u0000\\t\\"\\\\\\/"}}',
  '\r\n{"execute":"guest-ping"}\r\n',
];

/** guest-info too: fine in process, but its reply differs between the two agents by design. */
export const SEED_REQUESTS_WITH_INFO: readonly string[] = [...SEED_REQUESTS, '{"execute":"guest-info"}'];

/** Bytes that matter to the lexer: structure, quotes, escapes, the sentinel and invalid UTF-8. */
const SPECIAL_BYTES = [
  0xff, 0xfe, 0x22, 0x27, 0x5c, 0x7b, 0x7d, 0x5b, 0x5d, 0x3a, 0x2c, 0x00, 0x0a, 0x0d, 0x09, 0x20, 0x75, 0x2d, 0x30,
  0x65, 0x2e, 0x80, 0xc0, 0xe2, 0xf0, 0xed,
];

type Mutation =
  | { kind: 'flip'; at: number; byte: number }
  | { kind: 'insert'; at: number; bytes: number[] }
  | { kind: 'delete'; at: number; len: number }
  | { kind: 'truncate'; at: number }
  | { kind: 'duplicate'; at: number; len: number };

const mutationArb: fc.Arbitrary<Mutation> = fc.oneof(
  fc.record({
    kind: fc.constant('flip' as const),
    at: fc.nat(),
    byte: fc.oneof(fc.integer({ min: 0, max: 255 }), fc.constantFrom(...SPECIAL_BYTES)),
  }),
  fc.record({
    kind: fc.constant('insert' as const),
    at: fc.nat(),
    bytes: fc.array(fc.oneof(fc.constantFrom(...SPECIAL_BYTES), fc.integer({ min: 0, max: 255 })), {
      minLength: 1,
      maxLength: 4,
    }),
  }),
  fc.record({ kind: fc.constant('delete' as const), at: fc.nat(), len: fc.integer({ min: 1, max: 8 }) }),
  fc.record({ kind: fc.constant('truncate' as const), at: fc.nat() }),
  fc.record({ kind: fc.constant('duplicate' as const), at: fc.nat(), len: fc.integer({ min: 1, max: 12 }) }),
);

function applyMutation(bytes: number[], m: Mutation): number[] {
  const n = bytes.length;
  const at = n === 0 ? 0 : m.at % (n + 1);
  switch (m.kind) {
    case 'flip':
      if (n === 0) return [m.byte];
      return bytes.map((b, i) => (i === at % n ? m.byte : b));
    case 'insert':
      return [...bytes.slice(0, at), ...m.bytes, ...bytes.slice(at)];
    case 'delete':
      return [...bytes.slice(0, at), ...bytes.slice(at + m.len)];
    case 'truncate':
      return bytes.slice(0, at);
    case 'duplicate':
      return [...bytes.slice(0, at + m.len), ...bytes.slice(at, at + m.len), ...bytes.slice(at + m.len)];
  }
}

/** A base stream with 1–4 mutations applied. */
function mutatedArb(base: fc.Arbitrary<Buffer>): fc.Arbitrary<Buffer> {
  return fc
    .tuple(base, fc.array(mutationArb, { minLength: 1, maxLength: 4 }))
    .map(([buf, ms]) => Buffer.from(ms.reduce(applyMutation, [...buf])));
}

/** Random bytes biased towards the ones the lexer cares about. */
const randomArb: fc.Arbitrary<Buffer> = fc
  .array(
    fc.oneof(fc.constantFrom(...SPECIAL_BYTES), fc.integer({ min: 0x20, max: 0x7e }), fc.integer({ min: 0, max: 255 })),
    {
      maxLength: 64,
    },
  )
  .map((a) => Buffer.from(a));

/**
 * Byte streams for the fuzzers: mutated requests, random bytes, and
 * concatenations of several of them (requests merged into one read).
 */
export function streamArb(seeds: readonly string[]): fc.Arbitrary<Buffer> {
  const seed = fc.constantFrom(...seeds).map((s) => Buffer.from(s, 'latin1'));
  const one = fc.oneof(
    { weight: 3, arbitrary: mutatedArb(seed) },
    { weight: 1, arbitrary: randomArb },
    { weight: 1, arbitrary: seed },
    { weight: 1, arbitrary: randomIdRequestArb },
    { weight: 1, arbitrary: mutatedArb(randomIdRequestArb) },
  );
  return fc.array(one, { minLength: 1, maxLength: 3 }).map((parts) => Buffer.concat(parts));
}

/** A stream cut into 1–4 chunks at arbitrary positions (separate reads). */
export function chunkedStreamArb(seeds: readonly string[]): fc.Arbitrary<Buffer[]> {
  return fc.tuple(streamArb(seeds), fc.array(fc.nat(), { maxLength: 3 })).map(([buf, cuts]) => {
    const points = [...new Set(cuts.map((c) => (buf.length === 0 ? 0 : c % buf.length)))].sort((a, b) => a - b);
    const chunks: Buffer[] = [];
    let prev = 0;
    for (const p of points) {
      chunks.push(buf.subarray(prev, p));
      prev = p;
    }
    chunks.push(buf.subarray(prev));
    return chunks.filter((c) => c.length > 0);
  });
}

/** JSON text (UTF-8 bytes) of a random value: keys and strings with escapes and non-ASCII, numbers of every shape. */
const jsonTextArb: fc.Arbitrary<string> = fc.letrec<{ value: string }>((tie) => ({
  value: fc.oneof(
    { depthSize: 'small', withCrossShrink: true },
    fc.constantFrom('true', 'false', 'null'),
    numberTextArb(),
    stringTextArb(),
    fc.array(tie('value'), { maxLength: 4 }).map((xs) => `[${xs.join(',')}]`),
    fc
      .uniqueArray(fc.tuple(stringTextArb(), tie('value')), { maxLength: 12, selector: ([k]) => k })
      .map((kvs) => `{${kvs.map(([k, v]) => `${k}:${v}`).join(', ')}}`),
  ),
})).value;

function numberTextArb(): fc.Arbitrary<string> {
  return fc.oneof(
    fc.integer().map(String),
    fc.bigInt({ min: -(1n << 70n), max: 1n << 70n }).map(String),
    fc.double({ noNaN: true, noDefaultInfinity: true }).map((d) => (Number.isInteger(d) ? `${d}.0` : String(d))),
    fc.double({ noNaN: true, noDefaultInfinity: true }).map((d) => d.toExponential()),
    fc.tuple(fc.integer({ min: 0, max: 999 }), fc.integer({ min: -400, max: 400 })).map(([m, e]) => `${m}e${e}`),
    fc.constantFrom('-0', '-0.0', '0.1', '1e999', '-1e999', '1E+2', '5e-324', '2.2250738585072014e-308'),
  );
}

function stringTextArb(): fc.Arbitrary<string> {
  const plain = (a: fc.Arbitrary<string>): fc.Arbitrary<string> =>
    a.map((t) => [...t].map((c) => (c < ' ' || c === '"' || c === '\\' ? ' ' : c)).join(''));
  const piece = fc.oneof(
    plain(fc.string({ maxLength: 6 })),
    plain(fc.string({ unit: 'grapheme', maxLength: 3 })),
    fc.integer({ min: 0, max: 0xffff }).map((n) => `\\u${n.toString(16).padStart(4, '0')}`),
    fc.constantFrom('\\"', '\\\\', '\\/', '\\b', '\\f', '\\n', '\\r', '\\t', "\\'", '\\ud83d\\ude00', '\\uD800\\uDC00'),
  );
  return fc
    .array(piece, { maxLength: 4 })
    .map((ps) => ps.join(''))
    .map((body) => `"${Buffer.from(body, 'utf8').toString('latin1')}"`);
}

/** A request whose id is a random JSON value: the id comes back in the reply, through the encoder. */
export const randomIdRequestArb: fc.Arbitrary<Buffer> = fc
  .tuple(jsonTextArb, fc.constantFrom('guest-ping', 'guest-nope', 'guest-sync'))
  .map(([id, execute]) => Buffer.from(`{"execute":"${execute}","id":${id}}`, 'latin1'));
