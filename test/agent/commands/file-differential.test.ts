/**
 * guest-file-* against the reference qemu-ga: every case runs the same
 * requests on both agents, each in a work dir of its own, and compares the
 * reply lines byte for byte and the files left behind (type, mode, content).
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { FilePair, SKIP_NO_QEMU_GA, snapshotDir, type Step } from './file-rig.js';

const MODES = ['r', 'rb', 'w', 'wb', 'a', 'ab', 'r+', 'rb+', 'r+b', 'w+', 'wb+', 'w+b', 'a+', 'ab+', 'a+b'];
const HELLO = 'hello world';
const open = (name: string, mode?: string): Step => [
  'guest-file-open',
  mode === undefined ? { path: `$W/${name}` } : { path: `$W/${name}`, mode },
];
const read = (count?: number): Step => [
  'guest-file-read',
  count === undefined ? { handle: '$H' } : { handle: '$H', count },
];
const write = (b64: string, count?: number): Step => [
  'guest-file-write',
  count === undefined ? { handle: '$H', 'buf-b64': b64 } : { handle: '$H', 'buf-b64': b64, count },
];
const seek = (offset: number | string, whence: unknown): Step => ['guest-file-seek', { handle: '$H', offset, whence }];
const close: Step = ['guest-file-close', { handle: '$H' }];
/** A request written out, for numbers a JavaScript number cannot hold exactly. */
const raw = (execute: string, args: string): Step => ({ raw: `{"execute":"${execute}","arguments":${args}}` });
const flush: Step = ['guest-file-flush', { handle: '$H' }];
const b64 = (s: string): string => Buffer.from(s).toString('base64');
const hello = (dir: string): void => writeFileSync(join(dir, 'hello'), HELLO);

interface Case {
  readonly name: string;
  readonly setup?: (dir: string) => void;
  readonly steps: readonly Step[];
  /** Replies quiesce-agent must give (checked on top of equality with the reference). */
  readonly expect?: readonly (string | RegExp | undefined)[];
}

const err = (desc: string): string => `{"error": {"class": "GenericError", "desc": ${JSON.stringify(desc)}}}`;

const cases: Case[] = [
  // One case per open mode: what the mode allows, where reads and writes land, creation and its mode bits.
  ...MODES.map((mode): Case => ({
    name: `mode ${mode}: an existing file and a missing one`,
    setup: hello,
    steps: [
      open('hello', mode),
      seek(0, 1),
      read(4),
      write(b64('XYZ')),
      seek(0, 'cur'),
      read(100),
      seek(0, 'end'),
      close,
      open(`new-${mode.replace('+', 'p')}`, mode),
      write(b64('new data')),
      seek(0, 0),
      read(),
      close,
    ],
  })),
  {
    name: 'invalid open modes are refused before the path is looked at',
    steps: ['z', '', 'rw', 'R', 'r+b+', 'b', 'wx', 'rb+x', ' r'].map((m) => open('nowhere/x', m)),
    expect: [err("invalid file open mode 'z'"), err("invalid file open mode ''")],
  },
  {
    name: 'open errors carry the path, the mode and glibc strerror text',
    setup: (dir) => {
      hello(dir);
      mkdirSync(join(dir, 'sub'));
    },
    steps: [
      open('missing'),
      open('missing/deeper', 'w'),
      open('hello/below', 'r'),
      open('sub', 'w'),
      open('sub', 'a+'),
      ['guest-file-open', { path: '', mode: 'r' }],
      ['guest-file-open', { path: '$W/nul\u0000byte', mode: 'w' }],
      ['guest-file-open', { path: '$W/hello', mode: 'r\u0000' }],
    ],
    expect: [err("failed to open file '$W/missing' (mode: 'r'): No such file or directory")],
  },
  {
    name: 'a directory opens, but reading it fails and writing it is a bad descriptor',
    setup: (dir) => mkdirSync(join(dir, 'sub')),
    steps: [open('sub'), read(), read(0), write(b64('x')), write(''), seek(5, 0), flush, close],
    expect: [
      /^\{"return": \d+\}$/,
      err('failed to read file: Is a directory'),
      '{"return": {"count": 0, "buf-b64": "", "eof": false}}',
    ],
  },
  {
    name: 'reads: default count, exact end (eof only on the next read), short read, count 0',
    setup: (dir) => writeFileSync(join(dir, 'big'), Buffer.alloc(10000, 0x61)),
    steps: [open('big'), read(), read(5000), read(904), read(1), read(0), seek(9990, 0), read(20), read(20), close],
  },
  {
    name: 'read count bounds: -1 and 48 MiB + 1 refused, 48 MiB accepted',
    setup: hello,
    steps: [open('hello'), read(-1), read(50331649), read(50331648), read(-9007199254740991), close],
    expect: [
      undefined,
      err("value '-1' is invalid for argument count"),
      err("value '50331649' is invalid for argument count"),
    ],
  },
  {
    name: 'a write-only handle cannot be read (count 0 still can)',
    steps: [open('out', 'w'), read(10), read(0), write(b64('abc')), read(2), close],
  },
  {
    name: 'a read-only handle cannot be written (an empty write still succeeds)',
    setup: hello,
    steps: [open('hello', 'r'), write(b64('abc')), write(''), write(b64('abc'), 0), read(5), write(b64('Q')), close],
    expect: [undefined, err('failed to write to file: Bad file descriptor')],
  },
  {
    name: 'write count defaults to the decoded length and is bounded by it',
    steps: [
      open('out', 'w+'),
      write(b64('abcdef')),
      write(b64('ghijkl'), 3),
      write(b64('mnopqr'), 6),
      write(b64('abc'), 99),
      write(b64('abc'), -1),
      write(b64('abc'), 0),
      write('', 0),
      write('', 1),
      seek(0, 0),
      read(),
      close,
    ],
    expect: [undefined, undefined, undefined, undefined, err("value '99' is invalid for argument count")],
  },
  {
    name: 'base64: the alphabet, = and newline only',
    steps: [
      open('out', 'w'),
      write('WF a'),
      write('WF-a'),
      write('WF_a'),
      write('QUJD\t'),
      write('QUJD\r\n'),
      write('QUJD\u00e9'),
      write('QUJD\u0000QUJD'),
      write('QUJD\u2028'),
      close,
    ],
    expect: [undefined, err('Base64 data contains invalid characters')],
  },
  {
    name: "base64: GLib's lenient decoding of padding, partial groups and line breaks",
    steps: [
      open('out', 'w+'),
      write('WFl'),
      write('WA'),
      write('W=la'),
      write('WF=a'),
      write('QQ==QQ=='),
      write('===='),
      write('='),
      write('QR=='),
      write('QUJD\nREVG\n'),
      write('\n\n'),
      write('QUJ\nD'),
      write('Q\nU\nJ\nD\n=\n='),
      write(''),
      seek(0, 0),
      read(),
      close,
    ],
  },
  {
    name: 'seek: whence as 0/1/2 or set/cur/end, anything else refused',
    setup: hello,
    steps: [
      open('hello'),
      seek(3, 0),
      seek(2, 1),
      seek(-1, 2),
      seek(1, 'set'),
      seek(1, 'cur'),
      seek(-2, 'end'),
      seek(0, 7),
      seek(0, -1),
      seek(0, 3),
      seek(0, 'middle'),
      seek(0, 'SET'),
      seek(0, true),
      seek(0, 1.5),
      seek(0, null),
      seek(0, [0]),
      raw('guest-file-seek', '{"handle":"$H","offset":0,"whence":9223372036854775807}'),
      close,
    ],
    expect: [undefined, undefined, undefined, undefined, undefined, undefined, undefined, err('invalid whence code 7')],
  },
  {
    name: 'seek: negative positions are EINVAL, past the end is allowed, reads there hit eof, writes leave a hole',
    setup: hello,
    steps: [
      open('hello', 'r+'),
      seek(-1, 0),
      seek(-100, 2),
      seek(-12, 1),
      seek(100, 2),
      read(3),
      seek(20, 0),
      write(b64('END')),
      seek(0, 'cur'),
      seek(0, 'end'),
      raw('guest-file-seek', '{"handle":"$H","offset":-9223372036854775808,"whence":2}'),
      close,
    ],
    expect: [undefined, err('failed to seek file: Invalid argument')],
  },
  {
    name: 'seek: the largest position the filesystem allows, and one past it',
    setup: hello,
    steps: [
      open('hello'),
      seek(17592186040320, 0),
      seek(17592186040321, 0),
      seek(1, 1),
      raw('guest-file-seek', '{"handle":"$H","offset":9223372036854775807,"whence":0}'),
      seek(-1, 1),
      close,
    ],
  },
  {
    name: 'r+: a write after a read lands at the read position, a read after a write continues after it',
    setup: hello,
    steps: [
      open('hello', 'r+'),
      read(2),
      write(b64('_')),
      read(2),
      write(b64('_')),
      seek(0, 1),
      seek(0, 0),
      read(),
      close,
    ],
  },
  {
    name: 'a+: reads start at 0, writes always append and move the position to the end',
    setup: hello,
    steps: [
      open('hello', 'a+'),
      seek(0, 1),
      read(3),
      seek(0, 1),
      write(b64('XYZ')),
      seek(0, 1),
      read(3),
      seek(1, 0),
      write(b64('123')),
      seek(0, 1),
      seek(2, 0),
      read(3),
      close,
    ],
  },
  {
    name: 'a: write-only append, seeking does not move where writes go',
    setup: hello,
    steps: [
      open('hello', 'a'),
      seek(0, 1),
      write(b64('ABC')),
      seek(0, 1),
      seek(0, 0),
      write(b64('DEF')),
      seek(0, 1),
      read(1),
      close,
    ],
  },
  {
    name: 'w+: truncates, reads after a write are at its end, a seek goes back',
    setup: hello,
    steps: [
      open('hello', 'w+'),
      read(2),
      write(b64('ABC')),
      read(2),
      seek(1, 0),
      read(2),
      seek(5, 0),
      write(b64('ABC')),
      close,
    ],
  },
  {
    name: 'flush answers {} and changes nothing visible',
    steps: [open('out', 'w+'), write(b64('data')), flush, flush, seek(0, 0), read(), flush, close],
  },
  {
    name: 'every command refuses unknown handles, including negative ones',
    steps: [
      ['guest-file-read', { handle: 1 }],
      ['guest-file-write', { handle: 999999, 'buf-b64': 'QUJD' }],
      ['guest-file-write', { handle: 999999, 'buf-b64': 'not base64!' }],
      ['guest-file-seek', { handle: -5, offset: 0, whence: 7 }],
      ['guest-file-flush', { handle: 0 }],
      raw('guest-file-close', '{"handle":9223372036854775807}'),
      ['guest-file-read', { handle: 1, count: -1 }],
    ],
    expect: [err("handle '1' has not been found"), err("handle '999999' has not been found")],
  },
  {
    name: 'a closed handle is gone; closing twice fails',
    setup: hello,
    steps: [open('hello'), close, close, read(), seek(0, 0)],
  },
  {
    name: 'handles count up from the persistent counter; failed opens use none up',
    setup: hello,
    steps: [open('hello'), open('missing'), open('hello', 'bad'), open('hello', 'r+'), open('new', 'w'), open('hello')],
  },
  {
    name: 'a pipe without a writer reads as end of file and cannot seek',
    setup: (dir) => execFileSync('mkfifo', [join(dir, 'fifo')]),
    steps: [open('fifo', 'r'), read(10), read(10), seek(0, 1), write(b64('x')), close],
  },
  {
    name: 'a pipe opened r+ with nothing in it: EAGAIN, not a hang',
    setup: (dir) => execFileSync('mkfifo', [join(dir, 'fifo')]),
    steps: [open('fifo', 'r+'), read(10), read(), seek(0, 2), close],
    expect: [undefined, err('failed to read file: Resource temporarily unavailable')],
  },
  {
    name: 'argument checks of the schema',
    steps: [
      ['guest-file-open', {}],
      ['guest-file-open', { path: 5 }],
      ['guest-file-open', { path: '$W/x', mode: 1 }],
      ['guest-file-open', { path: '$W/x', extra: 1 }],
      ['guest-file-read', { handle: '1000' }],
      ['guest-file-read', { handle: 1000, count: '1' }],
      ['guest-file-read', { handle: 1.0 }],
      ['guest-file-write', { handle: 1000 }],
      ['guest-file-write', { handle: 1000, 'buf-b64': 5 }],
      ['guest-file-seek', { handle: 1000, whence: 0 }],
      raw('guest-file-seek', '{"handle":1000,"offset":18446744073709551615,"whence":0}'),
      raw('guest-file-seek', '{"handle":1000,"offset":-9223372036854775809,"whence":0}'),
      ['guest-file-close', {}],
      ['guest-file-flush', { handle: null }],
    ],
  },
  {
    name: 'raw requests: single quotes, escapes in paths and payloads',
    setup: hello,
    steps: [
      { raw: `{'execute':'guest-file-open','arguments':{'path':'$W/hello','mode':'r+'}}` },
      { raw: `{"execute":"guest-file-write","arguments":{"handle":"$H","buf-b64":"QU\\/D"}}` },
      { raw: `{"execute":"guest-file-write","arguments":{"handle":"$H","buf-b64":"QUJ\\u0044"}}` },
      { raw: `{"execute":"guest-file-seek","arguments":{"handle":"$H","offset":0,"whence":"\\u0073et"}}` },
      { raw: `{"execute":"guest-file-read","arguments":{"handle":"$H"},"id":"r1"}` },
      { raw: `{"execute":"guest-file-open","arguments":{"path":"$W/caf\\u00e9","mode":"w"}}` },
    ],
  },
];

describe('guest-file-* against qemu-ga', { skip: SKIP_NO_QEMU_GA }, () => {
  let pair: FilePair;
  let root: string;

  before(async () => {
    root = mkdtempSync(join(tmpdir(), 'quiesce-file-diff-'));
    pair = await FilePair.start(root);
  });
  after(async () => {
    await pair?.stop();
    rmSync(root, { recursive: true, force: true });
  });

  test(`there are at least 30 cases (${cases.length})`, () => {
    assert.ok(cases.length >= 30);
  });

  for (const c of cases) {
    test(c.name, async () => {
      const name = c.name.replace(/[^a-z0-9]+/gi, '-').slice(0, 60);
      pair.prepare(name, c.setup);
      const replies = await pair.run(name, c.steps);
      assert.deepEqual(replies.quiesce, replies['qemu-ga']);
      assert.deepEqual(snapshotDir(pair.workDir('quiesce', name)), snapshotDir(pair.workDir('qemu-ga', name)));
      for (const [i, want] of (c.expect ?? []).entries()) {
        if (want === undefined) continue;
        if (typeof want === 'string') assert.equal(replies.quiesce[i], want, `reply ${i}`);
        else assert.match(replies.quiesce[i]!, want, `reply ${i}`);
      }
    });
  }

  test('a 20 MB binary file goes through write and read unchanged, in replies identical to the reference', async () => {
    const data = randomBytes(20 * 1000 * 1000);
    const chunk = 4 * 1024 * 1024;
    const steps: Step[] = [open('blob', 'wb+')];
    for (let off = 0; off < data.length; off += chunk)
      steps.push(write(data.subarray(off, off + chunk).toString('base64')));
    steps.push(flush, seek(0, 'set'), read(48 * 1024 * 1024), read(10), close);
    pair.prepare('blob');
    const replies = await pair.run('blob', steps);
    assert.deepEqual(replies.quiesce, replies['qemu-ga']);
    const readReply = JSON.parse(replies.quiesce[steps.length - 3]!) as {
      return: { count: number; 'buf-b64': string; eof: boolean };
    };
    assert.equal(readReply.return.count, data.length);
    assert.equal(readReply.return.eof, true);
    assert.ok(Buffer.from(readReply.return['buf-b64'], 'base64').equals(data));
    const sha = (p: string): string => createHash('sha256').update(readFileSync(p)).digest('hex');
    const want = createHash('sha256').update(data).digest('hex');
    assert.equal(sha(join(pair.workDir('quiesce', 'blob'), 'blob')), want);
    assert.equal(sha(join(pair.workDir('qemu-ga', 'blob'), 'blob')), want);
  });
});
