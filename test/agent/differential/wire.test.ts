/**
 * quiesce-agent against the reference qemu-ga 7.2, side by side: the same
 * bytes to both, the reply lines must be identical. Only guest-sync,
 * guest-sync-delimited, guest-ping, guest-info and guest-nope are ever
 * executed; the reference also has its dangerous commands blocked (pair.ts).
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { AgentPair, DANGEROUS_REFERENCE_COMMANDS, SKIP_NO_QEMU_GA, STRAY_FF_LINE } from './pair.js';

type Input = string | Buffer | readonly (string | Buffer)[];
interface Case {
  title: string;
  input: Input;
  /** Delay between chunks, so each arrives as its own read. */
  gapMs?: number;
  /** What our agent must answer (besides being identical to the reference), when worth pinning. */
  expect?: string[];
  timeoutMs?: number;
}

const ping = '{"execute":"guest-ping"}';
const pingId = (id: string): string => `{"execute":"guest-ping","id":${id}}`;
const sync = (args: string): string => `{"execute":"guest-sync","arguments":${args}}`;
const genErr = (desc: string): string => `{"error": {"class": "GenericError", "desc": ${JSON.stringify(desc)}}}`;
const parseErr = (what: string): string => genErr(`JSON parse error, ${what}`);

const VALID: Case[] = [
  { title: 'guest-ping', input: ping, expect: ['{"return": {}}'] },
  {
    title: 'guest-ping with arguments {}',
    input: '{"execute":"guest-ping","arguments":{}}',
    expect: ['{"return": {}}'],
  },
  { title: 'guest-sync echoes its id', input: sync('{"id":42}'), expect: ['{"return": 42}'] },
  {
    title: 'guest-sync-delimited prefixes its reply with 0xFF',
    input: '{"execute":"guest-sync-delimited","arguments":{"id":7}}',
    expect: ['\xff{"return": 7}'],
  },
  {
    title: 'guest-sync with the smallest int64',
    input: sync('{"id":-9223372036854775808}'),
    expect: ['{"return": -9223372036854775808}'],
  },
  {
    title: 'guest-sync with the largest int64',
    input: sync('{"id":9223372036854775807}'),
    expect: ['{"return": 9223372036854775807}'],
  },
  {
    title: 'a single-quoted request',
    input: "{'execute':'guest-ping','id':'it\"s'}",
    expect: ['{"return": {}, "id": "it\\"s"}'],
  },
  {
    title: 'members in any order',
    input: '{"id":1,"arguments":{"id":2},"execute":"guest-sync"}',
    expect: ['{"return": 2, "id": 1}'],
  },
];

const IDS: Case[] = [
  { title: 'id as a string', input: pingId('"abc"'), expect: ['{"return": {}, "id": "abc"}'] },
  { title: 'id as an int', input: pingId('12345') },
  { title: 'id negative', input: pingId('-5'), expect: ['{"return": {}, "id": -5}'] },
  { title: 'id as a float', input: pingId('1.5') },
  {
    title: 'id 0.1 written with 17 digits',
    input: pingId('0.1'),
    expect: ['{"return": {}, "id": 0.10000000000000001}'],
  },
  {
    title: 'id as the largest uint64',
    input: pingId('18446744073709551615'),
    expect: ['{"return": {}, "id": 18446744073709551615}'],
  },
  {
    title: 'id beyond uint64 becomes a double',
    input: pingId('18446744073709551616'),
    expect: ['{"return": {}, "id": 1.8446744073709552e+19}'],
  },
  { title: 'id 1e999 comes back as inf', input: pingId('1e999'), expect: ['{"return": {}, "id": inf}'] },
  { title: 'id -1e999 comes back as -inf', input: pingId('-1e999') },
  { title: 'id -0 and -0.0', input: [pingId('-0'), pingId('-0.0')] },
  {
    title: 'id tiny and huge doubles',
    input: pingId('[5e-324, 2.5e-310, 1e-5, 1e16, 1e17, 123456789.123456789, -1e300]'),
  },
  {
    title: 'id as an object with many members (QDict order)',
    input: pingId('{"a":1,"b":2,"c":3,"d":4,"e":5,"f":6,"g":7,"h":8,"i":9,"j":10,"k":11,"l":12}'),
  },
  {
    title: 'id as an object with colliding keys',
    input: pingId('{"k10":1,"k11":2,"k12":3,"k13":{"k12":[],"k10":{}}}'),
  },
  { title: 'id as an array', input: pingId('[1,"two",[3],{"four":4},null,true,false]') },
  { title: 'id null', input: pingId('null'), expect: ['{"return": {}, "id": null}'] },
  {
    title: 'id with escapes and non-ASCII',
    input: pingId('"\\"\\\\\\/\\b\\f\\n\\r\\t\\u0001\\u007f\\u00e9\xc3\xa9\\ud83d\\ude00\xf0\x9f\x98\x80"'),
  },
  { title: 'id with \\u0000 and C0 80', input: pingId('["\\u0000", "a\xc0\x80b"]') },
  { title: 'id on an error reply comes first', input: '{"execute":"guest-nope","id":"x"}' },
];

const SHAPE: Case[] = [
  { title: 'a list at top level', input: '[1]', expect: [genErr('QMP input must be a JSON object')] },
  { title: 'scalars at top level', input: '"s" 1 null true 1.5 ' },
  { title: 'no execute', input: '{}', expect: [genErr("QMP input lacks member 'execute'")] },
  { title: 'no execute but an id', input: '{"id":[1]}' },
  { title: 'execute not a string', input: '{"execute":["guest-ping"]}' },
  { title: 'arguments not an object', input: '{"execute":"guest-ping","arguments":[1]}' },
  { title: 'an unexpected member', input: '{"execute":"guest-ping","foo":1}' },
  {
    title: 'three unexpected members (which one is reported)',
    input: '{"execute":"guest-ping","foo":1,"bar":2,"baz":3}',
  },
  { title: 'bad arguments and a bad member together', input: '{"zzz":1,"arguments":1,"execute":2}' },
  {
    title: 'an unknown command',
    input: '{"execute":"guest-nope"}',
    expect: ['{"error": {"class": "CommandNotFound", "desc": "The command guest-nope has not been found"}}'],
  },
  { title: 'an unknown command with arguments', input: '{"execute":"guest-nope","arguments":{"a":1}}' },
];

const ARGS: Case[] = [
  {
    title: 'guest-sync with the id missing',
    input: '{"execute":"guest-sync"}',
    expect: [genErr("Parameter 'id' is missing")],
  },
  { title: 'guest-sync with the id missing in empty arguments', input: sync('{}') },
  { title: 'guest-sync with the id as a string', input: sync('{"id":"1"}') },
  {
    title: 'guest-sync with the id 1.5',
    input: sync('{"id":1.5}'),
    expect: [genErr("Invalid parameter type for 'id', expected: integer")],
  },
  { title: 'guest-sync with the id a boolean', input: sync('{"id":true}') },
  {
    title: 'guest-sync with the id null, a list, an object',
    input: [sync('{"id":null}'), sync('{"id":[]}'), sync('{"id":{}}')],
  },
  { title: 'guest-sync with the id 2^63', input: sync('{"id":9223372036854775808}') },
  { title: 'guest-sync with the id -2^63-1', input: sync('{"id":-9223372036854775809}') },
  {
    title: 'guest-sync with an extra member',
    input: sync('{"id":1,"x":2}'),
    expect: [genErr("Parameter 'x' is unexpected")],
  },
  { title: 'guest-sync with two extra members', input: sync('{"id":1,"x":2,"y":3}') },
  { title: 'guest-sync with colliding extra members', input: sync('{"k12":3,"k10":1,"id":1,"k11":2}') },
  { title: 'guest-sync with a bad id and an extra member', input: sync('{"x":1,"id":"s"}') },
  { title: 'guest-ping with an argument', input: '{"execute":"guest-ping","arguments":{"a":1}}' },
  {
    title: 'guest-sync-delimited with bad arguments gets no 0xFF',
    input: '{"execute":"guest-sync-delimited","arguments":{"id":"7"}}',
    expect: [genErr("Invalid parameter type for 'id', expected: integer")],
  },
  { title: 'guest-info with an argument', input: '{"execute":"guest-info","arguments":{"verbose":true}}' },
];

const PARSE: Case[] = [
  {
    title: 'garbage}',
    input: 'garbage}',
    expect: [parseErr("invalid keyword 'garbage'"), parseErr('expecting value')],
  },
  { title: '{"x": @}', input: '{"x": @}', expect: [parseErr("stray '@'"), parseErr('expecting value')] },
  { title: 'recovery stops at a colon and a comma', input: '@"id": "abc"}, 1' },
  { title: 'key is not a string', input: '{1:2}' },
  { title: 'key is a list', input: '{[1]:2}' },
  { title: 'missing colon', input: '{"a" 1}' },
  { title: 'expected separator in dict', input: '{"a":1 "b":2}' },
  { title: 'expected separator in list', input: '[1 2]' },
  { title: 'expecting value', input: '{"a":}' },
  { title: 'trailing comma', input: '[1,]{"a":1,}' },
  { title: 'invalid keyword', input: '{"a":nul}' },
  { title: 'invalid keyword in upper case is a stray', input: '{"a":True}' },
  { title: 'a very long keyword is cut at the reference buffer', input: `${'k'.repeat(5000)} ` },
  {
    title: 'duplicate key',
    input: '{"execute":"guest-ping","execute":"guest-ping"}',
    expect: [parseErr('duplicate key')],
  },
  { title: 'invalid escape', input: '{"a":"\\q"}', expect: [parseErr('invalid escape sequence in string')] },
  {
    title: 'invalid UTF-8: lone continuation, overlong, surrogate, noncharacter, truncated, 0xFE',
    input: ['"\x80"', '"\xc0\xaf"', '"\xed\xa0\x80"', '"\xef\xbf\xbf"', '"\xe2\x82"', '"\xf4\x90\x80\x80"'],
  },
  { title: '\\uXXXX that is a lone surrogate', input: '"\\ud800"' },
  { title: '\\uXXXX surrogate pair with a bad second half', input: '"\\uD83D\\u0041"' },
  { title: '\\uXXXX noncharacters', input: ['"\\uFFFE"', '"\\uFDD0"', '"\\udbff\\udfff"'] },
  { title: '\\u with too few digits', input: '"\\u12"' },
  { title: '\\u with a raw high byte in it', input: '"\\u\x80d83"' },
  { title: 'stray bytes', input: '@ # $ % ~ `' },
  { title: 'a NUL byte', input: '\x00{"execute":"guest-ping"}' },
  { title: 'control characters and TAB inside a string', input: '"a\x01b" "c\td"' },
  { title: 'bad numbers', input: '01 -x 1.x 1ex -01 .5 +1 ' },
  { title: 'unmatched closers', input: '] } ]}' },
  { title: 'unmatched closers inside a message', input: '{"a":[1}]' },
  { title: '0xFF in the middle of a string token', input: '{"execute":"guest-pi\xffng"}' },
  { title: '0xFF in the middle of a number', input: `{"execute":"guest-ping","id":12\xff34}` },
  { title: '0xFF in the middle of a keyword', input: '[tr\xffue]' },
  { title: '0xFE in a string', input: '"a\xfeb"' },
  { title: '0xFF between two requests', input: `${ping}\xff${ping}` },
  { title: 'a partial request dropped by 0xFF', input: `{"execute":"guest-sync","arguments":{"id":\xff${ping}` },
];

const FRAMING: Case[] = [
  {
    title: 'a request split in two writes',
    input: ['{"execute":"gue', 'st-ping"}'],
    gapMs: 30,
    expect: ['{"return": {}}'],
  },
  {
    title: 'a request split inside a \\u escape and a UTF-8 sequence',
    input: ['{"execute":"guest-ping","id":"\\u00', 'e9\xc3', '\xa9"}'],
    gapMs: 30,
  },
  { title: 'a request sent one byte per write', input: [...'{"execute":"guest-sync","arguments":{"id":3}}'], gapMs: 2 },
  { title: 'three requests merged into one write', input: `${ping}${sync('{"id":1}')}${pingId('"z"')}` },
  { title: 'requests separated by CRLF', input: `\r\n${ping}\r\n${ping}\r\n` },
  { title: 'requests separated by blanks and tabs', input: ` \t${ping} \t ${ping}` },
  { title: 'good, bad, good in one write', input: `${ping}garbage}${sync('{"id":9}')}` },
  {
    title: 'an error in one write and the rest of the stream in the next',
    input: ['{"a":1 "b":', ` 2}${ping}`],
    gapMs: 30,
  },
];

const LIMITS: Case[] = [
  {
    title: 'nesting of exactly 1024 is accepted',
    input: pingId(`${'['.repeat(1023)}${']'.repeat(1023)}`),
  },
  {
    title: 'nesting of 1025 is refused, then every closer is an error',
    input: pingId(`${'['.repeat(1024)}${']'.repeat(1024)}`),
  },
  {
    title: 'token count limit (2 Mi tokens)',
    input: `[${'1,'.repeat(1024 * 1024)}1]`,
    timeoutMs: 60_000,
  },
  {
    title: 'token size limit (a 64 MiB string), then the rest lexes afresh',
    input: Buffer.concat([Buffer.from('"'), Buffer.alloc(64 * 1024 * 1024 + 5, 0x61), Buffer.from(` ${ping}`)]),
    timeoutMs: 60_000,
  },
];

function runCases(getPair: () => AgentPair, cases: readonly Case[]): void {
  for (const c of cases) {
    test(c.title, { timeout: c.timeoutMs ?? 20_000 }, async () => {
      const { ours, ref } = await getPair().exchange(
        c.input as Buffer | string | readonly (Buffer | string)[],
        c.gapMs ?? 0,
      );
      // The last line answers the 0xFF before the sync (it may also end a token left open).
      assert.match(ours.at(-1) ?? '', /stray '.*\\uFFFD'/);
      assert.deepEqual(ours, ref);
      if (c.expect) assert.deepEqual(ours.slice(0, -1), c.expect);
    });
  }
}

describe('differential: quiesce-agent and qemu-ga give identical replies', { skip: SKIP_NO_QEMU_GA }, () => {
  let pair: AgentPair;
  before(async () => {
    pair = await AgentPair.start();
  });
  after(async () => {
    await pair?.stop();
  });
  const get = (): AgentPair => pair;

  describe('valid requests', () => runCases(get, VALID));
  describe('id variants', () => runCases(get, IDS));
  describe('request shape', () => runCases(get, SHAPE));
  describe('argument errors', () => runCases(get, ARGS));
  describe('parse errors', () => runCases(get, PARSE));
  describe('framing', () => runCases(get, FRAMING));
  describe('limits', () => runCases(get, LIMITS));

  /** Both guest-info replies, checked for the reference shape, and the entries of the commands both have. */
  async function guestInfo(): Promise<{ ours: string[]; ref: string[] }> {
    const { ours, ref } = await pair.exchange('{"execute":"guest-info"}');
    assert.equal(ours.length, 2);
    assert.equal(ref.length, 2);
    assert.deepEqual(ours.at(-1), STRAY_FF_LINE);
    const entry = /^\{"enabled": (true|false), "name": "[^"]+", "success-response": (true|false)\}$/;
    const shape = (line: string): { version: string; entries: string[] } => {
      const m = /^\{"return": \{"version": "([^"]*)", "supported_commands": \[(.*)\]\}\}$/.exec(line);
      assert.ok(m, `guest-info reply shape: ${line.slice(0, 120)}`);
      const entries = m[2]!.split(/(?<=\}), (?=\{)/);
      for (const e of entries) assert.match(e, entry);
      return { version: m[1]!, entries };
    };
    const o = shape(ours[0]!);
    const r = shape(ref[0]!);
    assert.match(o.version, /^\d+\.\d+\.\d+/);
    // Commands blocked on the reference for safety are left out: there the flags differ on purpose.
    const nameOf = (e: string): string => /"name": "([^"]+)"/.exec(e)![1]!;
    const shared = (a: string[], b: string[]): string[] => {
      const names = new Set(b.map(nameOf));
      return a.filter((e) => names.has(nameOf(e)) && !DANGEROUS_REFERENCE_COMMANDS.includes(nameOf(e)));
    };
    const oursShared = shared(o.entries, r.entries);
    assert.ok(oursShared.length >= 4, 'sync, sync-delimited, ping and info are shared');
    return { ours: oursShared, ref: shared(r.entries, o.entries) };
  }

  test('guest-info: the reference shape, and the commands both have listed with the same flags', async () => {
    const { ours, ref } = await guestInfo();
    assert.deepEqual([...ours].sort(), [...ref].sort());
  });

  test('guest-info: the commands both have in the reference order (newest registration first, schema order)', async () => {
    const { ours, ref } = await guestInfo();
    assert.deepEqual(ours, ref);
  });

  test('both agents are still running after all of it', () => {
    assert.deepEqual(pair.alive(), { ours: true, ref: true });
  });
});

describe('differential: commands blocked with -b', { skip: SKIP_NO_QEMU_GA }, () => {
  let pair: AgentPair;
  before(async () => {
    pair = await AgentPair.start(['-b', 'guest-ping,guest-info', '-b', 'guest-sync']);
  });
  after(async () => {
    await pair?.stop();
  });
  const get = (): AgentPair => pair;

  runCases(get, [
    {
      title: 'a blocked guest-ping is disabled',
      input: ping,
      expect: ['{"error": {"class": "CommandNotFound", "desc": "Command guest-ping has been disabled"}}'],
    },
    { title: 'a blocked command with an id', input: pingId('[1]') },
    { title: 'a blocked command with bad arguments is still just disabled', input: sync('{"id":"x","y":1}') },
    { title: 'a blocked guest-info', input: '{"execute":"guest-info"}' },
    { title: 'request shape errors come before the block', input: '{"execute":"guest-ping","arguments":1}' },
    { title: 'guest-sync-delimited stays available', input: '{"execute":"guest-sync-delimited","arguments":{"id":1}}' },
  ]);
});
