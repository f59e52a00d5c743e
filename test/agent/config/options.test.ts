import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import {
  DEFAULT_PIDFILE,
  DEFAULT_STATEDIR,
  DEFAULT_VIRTIO_PATH,
  dumpConfig,
  parseOptions,
  UsageError,
  type AgentConfig,
} from '../../../agent/src/config/options.js';
import { keyFileEscape, keyFileString, parseKeyFile } from '../../../agent/src/config/keyfile.js';

let dir: string;
before(() => {
  dir = mkdtempSync(join(tmpdir(), 'quiesce-config-'));
});
after(() => rmSync(dir, { recursive: true, force: true }));

const noConf = (): NodeJS.ProcessEnv => ({ QGA_CONF: join(dir, 'none.conf') });
let confN = 0;
function conf(text: string): NodeJS.ProcessEnv {
  const path = join(dir, `c${confN++}.conf`);
  writeFileSync(path, text);
  return { QGA_CONF: path };
}

function config(argv: string[], env = noConf()): AgentConfig {
  const r = parseOptions(argv, env);
  assert.equal(r.action, 'run');
  return r.config;
}

function usageError(argv: string[], env = noConf()): string {
  try {
    parseOptions(argv, env);
  } catch (err) {
    assert.ok(err instanceof UsageError, String(err));
    return err.message;
  }
  assert.fail(`accepted ${argv.join(' ')}`);
}

describe('command line (getopt_long as qemu-ga uses it)', () => {
  test("defaults are qemu-ga's", () => {
    const c = config([]);
    assert.equal(c.method, 'virtio-serial');
    assert.equal(c.path, DEFAULT_VIRTIO_PATH);
    assert.equal(c.pidfile, DEFAULT_PIDFILE);
    assert.equal(c.statedir, DEFAULT_STATEDIR);
    assert.equal(c.logfile, undefined);
    assert.equal(c.fsfreezeHook, undefined);
    assert.deepEqual([c.verbose, c.daemonize, c.retryPath], [false, false, false]);
    assert.deepEqual(c.blockRpcs, []);
    assert.equal(c.allowRpcs, undefined);
  });

  const forms: [title: string, argv: string[], expected: Partial<AgentConfig>][] = [
    ['a separate value', ['-m', 'unix-listen', '-p', '/s'], { method: 'unix-listen', path: '/s' }],
    ['an attached value', ['-munix-listen', '-p/s'], { method: 'unix-listen', path: '/s' }],
    ['bundled flags', ['-vdr'], { verbose: true, daemonize: true, retryPath: true }],
    [
      'bundled flags ending in one with a value',
      ['-vmunix-listen', '-p', '/s'],
      { verbose: true, method: 'unix-listen' },
    ],
    ['--long=value', ['--method=unix-listen', '--path=/s'], { method: 'unix-listen', path: '/s' }],
    ['--long value', ['--method', 'unix-listen', '--path', '/s'], { method: 'unix-listen', path: '/s' }],
    [
      'an unambiguous abbreviation',
      ['--meth=unix-listen', '--pa', '/s', '--stat=/st', '--r'],
      {
        method: 'unix-listen',
        path: '/s',
        statedir: '/st',
        retryPath: true,
      },
    ],
    ['an abbreviation shared by two names of one flag (--b)', ['--b=x'], { blockRpcs: ['x'] }],
    ['--s as qemu-ga reads it on Linux (statedir)', ['--s=/x'], { statedir: '/x' }],
    ['the old --blacklist name', ['--blacklist=a,b'], { blockRpcs: ['b', 'a'] }],
    ['-F alone: the default hook', ['-F'], { fsfreezeHook: '/etc/qemu/fsfreeze-hook' }],
    ['-F with an attached hook', ['-F/x/hook'], { fsfreezeHook: '/x/hook' }],
    ['--fsfreeze-hook=path', ['--fsfreeze-hook=/y'], { fsfreezeHook: '/y' }],
    [
      "--fs (qemu-ga's abbreviation of --fsfreeze-hook, despite our longer options)",
      ['--fs'],
      {
        fsfreezeHook: '/etc/qemu/fsfreeze-hook',
      },
    ],
    ['the last of repeated values', ['-t', '/a', '-t', '/b', '-p', '/1', '-p', '/2'], { statedir: '/b', path: '/2' }],
    [
      "-b lists reversed and appended, as qemu-ga's split_list",
      ['-b', 'guest-ping,guest-info', '-b', 'guest-sync'],
      {
        blockRpcs: ['guest-info', 'guest-ping', 'guest-sync'],
      },
    ],
    ['-b keeps empty names', ['-b', 'a,,b'], { blockRpcs: ['b', '', 'a'] }],
    ['-b with an empty value adds nothing', ['-b', ''], { blockRpcs: [] }],
    ['-a like -b', ['-a', 'guest-ping,guest-info'], { allowRpcs: ['guest-info', 'guest-ping'] }],
    ['-s and its value, accepted and ignored like qemu-ga on Linux', ['-s', 'install', '-v'], { verbose: true }],
    ['-l and -f with empty values', ['-l', '', '-f', ''], { logfile: '', pidfile: '' }],
    ["isa-serial's default path", ['-m', 'isa-serial'], { method: 'isa-serial', path: '/dev/ttyS0' }],
    ['stdio needs no path', ['-m', 'stdio'], { method: 'stdio', path: '-' }],
  ];
  for (const [title, argv, expected] of forms) {
    test(`reads ${title}`, () => {
      const c = config(argv);
      for (const [k, v] of Object.entries(expected)) assert.deepEqual(c[k as keyof AgentConfig], v, k);
    });
  }

  const actions: [title: string, argv: string[], action: string][] = [
    ['-D', ['-D'], 'dump-conf'],
    ['--dump (abbreviated)', ['--dump'], 'dump-conf'],
    ['-V', ['-V'], 'version'],
    ['-h', ['-h'], 'help'],
    ['--h (abbreviated --help)', ['--h'], 'help'],
    ['-b help', ['-b', 'help'], 'list-rpcs'],
    ['-a help', ['-a', 'help'], 'list-rpcs'],
    ['-V at once, ignoring a bad flag after it (like qemu-ga)', ['-V', '-x'], 'version'],
    ['-h at once, before -D', ['-h', '-D'], 'help'],
    [
      '-b help at once, even without the path unix-listen needs',
      ['-m', 'unix-listen', '-b', 'help', '--nope'],
      'list-rpcs',
    ],
  ];
  for (const [title, argv, action] of actions) {
    test(`acts on ${title}`, () => {
      assert.equal(parseOptions(argv, noConf()).action, action);
    });
  }

  const errors: [title: string, argv: string[], message: string][] = [
    ['an unknown short flag', ['-x'], "invalid option -- 'x'"],
    ['-c (not in qemu-ga 7.2)', ['-c', 'x'], "invalid option -- 'c'"],
    ['an unknown long flag, value included as glibc shows it', ['--nope=1'], "unrecognized option '--nope=1'"],
    ['--service (Windows only)', ['--service=x'], "unrecognized option '--service=x'"],
    [
      "an ambiguous abbreviation, possibilities in qemu-ga's order",
      ['--d'],
      "option '--d' is ambiguous; possibilities: '--dump-conf' '--daemonize'",
    ],
    [
      'another ambiguous abbreviation',
      ['--ver'],
      "option '--ver' is ambiguous; possibilities: '--version' '--verbose'",
    ],
    [
      'an ambiguous abbreviation with a value',
      ['--p=x'],
      "option '--p=x' is ambiguous; possibilities: '--pidfile' '--path'",
    ],
    ['a missing short value', ['-m'], "option requires an argument -- 'm'"],
    ['a missing long value', ['--method'], "option '--method' requires an argument"],
    ['a missing value of an abbreviation, named in full', ['--stat'], "option '--statedir' requires an argument"],
    ['a value given to a flag without one', ['--verbose=1'], "option '--verbose' doesn't allow an argument"],
    [
      'an unknown method',
      ['-m', 'bogus', '-p', 'x'],
      'unsupported channel method/type: bogus (one of virtio-serial, isa-serial, unix-listen, vsock-listen, stdio)',
    ],
    ['unix-listen without a path', ['-m', 'unix-listen'], 'a path is required for method unix-listen (-p)'],
    ['a relative state dir', ['-t', 'rel'], 'statedir must be an absolute path: rel'],
    ['a stray argument (stricter than qemu-ga, which ignores it)', ['-F', '/x'], "unexpected argument '/x'"],
  ];
  for (const [title, argv, message] of errors) {
    test(`rejects ${title}`, () => {
      assert.equal(usageError(argv), message);
    });
  }
});

describe('config file (GLib key file, [general])', () => {
  const keys: [title: string, text: string, argv: string[], expected: Partial<AgentConfig>][] = [
    [
      'every key',
      '[general]\ndaemon=true\nmethod=unix-listen\npath=/q.sock\nlogfile=/l\npidfile=/p\nfsfreeze-hook=/h\nstatedir=/st\nverbose=1\nretry-path=true\nblock-rpcs=guest-ping,guest-info\n',
      [],
      {
        daemonize: true,
        method: 'unix-listen',
        path: '/q.sock',
        logfile: '/l',
        pidfile: '/p',
        fsfreezeHook: '/h',
        statedir: '/st',
        verbose: true,
        retryPath: true,
        blockRpcs: ['guest-info', 'guest-ping'],
      },
    ],
    [
      'the command line winning',
      '[general]\nmethod=isa-serial\nverbose=true\n',
      ['-m', 'unix-listen', '-p', '/s'],
      { method: 'unix-listen', verbose: true },
    ],
    ['block-rpcs then -b, appended', '[general]\nblock-rpcs=a,b\n', ['-b', 'c'], { blockRpcs: ['b', 'a', 'c'] }],
    [
      'block-rpcs with ; as part of a name (a plain string, not a list)',
      '[general]\nblock-rpcs=guest-ping;guest-info\n',
      [],
      { blockRpcs: ['guest-ping;guest-info'] },
    ],
    ['allow-rpcs', '[general]\nallow-rpcs=guest-ping\n', [], { allowRpcs: ['guest-ping'] }],
    [
      'false and 0, with trailing blanks',
      '[general]\ndaemon=false \nverbose=0\t\n',
      [],
      { daemonize: false, verbose: false },
    ],
    ['blanks around = and before keys', '  # comment\n[general]  \n\tpath\t=  /z\n', [], { path: '/z' }],
    ['a value keeps its trailing blanks', '[general]\npath=/z  \n', [], { path: '/z  ' }],
    ['escapes in values', '[general]\npath=\\s\\tx\\\\y\\n\n', [], { path: ' \tx\\y\n' }],
    ['CRLF line ends', '[general]\r\npath=/crlf\r\n', [], { path: '/crlf' }],
    ['the last of repeated keys', '[general]\npath=/a\npath=/b\n', [], { path: '/b' }],
    ['a repeated group', '[general]\npath=/a\n[general]\nstatedir=/s\n', [], { path: '/a', statedir: '/s' }],
    [
      'other groups and unknown keys ignored',
      '[other]\nmethod=isa-serial\n[general]\nfoo=\\q\n',
      [],
      { method: 'virtio-serial' },
    ],
    ['an empty block-rpcs', '[general]\nblock-rpcs=\n', [], { blockRpcs: [] }],
  ];
  for (const [title, text, argv, expected] of keys) {
    test(`reads ${title}`, () => {
      const c = config(argv, conf(text));
      for (const [k, v] of Object.entries(expected)) assert.deepEqual(c[k as keyof AgentConfig], v, k);
    });
  }

  const bad: [title: string, text: string, detail: string][] = [
    [
      'a line that is no key, group or comment',
      '[general]\ngarbage\n',
      'Key file contains line “garbage” which is not a key-value pair, group, or comment',
    ],
    ['an empty key', '[general]\n=x\n', 'Key file contains line “=x” which is not a key-value pair, group, or comment'],
    ['a key before any group', 'x=1\n[general]\n', 'Key file does not start with a group'],
    [
      'a boolean that is not true/false/1/0',
      '[general]\ndaemon=yes\n',
      'Key file contains key “daemon” which has a value that cannot be interpreted.',
    ],
    [
      'a boolean in capitals',
      '[general]\nverbose=TRUE\n',
      'Key file contains key “verbose” which has a value that cannot be interpreted.',
    ],
    [
      'an empty boolean',
      '[general]\nretry-path=\n',
      'Key file contains key “retry-path” which has a value that cannot be interpreted.',
    ],
    [
      'an unknown escape in a string',
      '[general]\npath=a\\qb\n',
      'Key file contains key “path” which has a value that cannot be interpreted.',
    ],
    [
      'a trailing backslash',
      '[general]\npath=x\\\n',
      'Key file contains key “path” which has a value that cannot be interpreted.',
    ],
    [
      'an escaped comma in block-rpcs',
      '[general]\nblock-rpcs=a,b\\,c\n',
      'Key file contains key “block-rpcs” which has a value that cannot be interpreted.',
    ],
  ];
  for (const [title, text, detail] of bad) {
    test(`rejects ${title}, naming the file`, () => {
      const env = conf(text);
      assert.equal(usageError([], env), `error loading configuration from path: ${env['QGA_CONF']}, ${detail}`);
    });
  }

  test('a missing config file is not an error', () => {
    assert.equal(config([], { QGA_CONF: join(dir, 'missing.conf') }).method, 'virtio-serial');
  });

  test('an unreadable config file (a directory) is an error naming it', () => {
    assert.match(usageError([], { QGA_CONF: dir }), /^error loading configuration from path: .*, EISDIR/);
  });
});

describe('key file helpers', () => {
  const escapes: [string, string][] = [
    ['plain', 'plain'],
    [' x', '\\sx'],
    ['  x ', '\\s\\sx '],
    ['\tx', '\\tx'],
    ['a b', 'a b'],
    ['a\nb', 'a\\nb'],
    ['\n x', '\\n\\sx'],
    ['a\rb', 'a\\rb'],
    ['a\\b', 'a\\\\b'],
    ['\\ x', '\\\\ x'],
  ];
  for (const [value, written] of escapes) {
    test(`writes ${JSON.stringify(value)} as ${JSON.stringify(written)} and reads it back`, () => {
      assert.equal(keyFileEscape(value), written);
      const [k, v] = [...parseKeyFile(`[g]\nk=${written}\n`).get('g')!][0]!;
      assert.equal(k, 'k');
      // A value's leading blanks only survive escaped, which is why they are written that way.
      assert.equal(keyFileString(v, k), value);
    });
  }
});

describe('dumpConfig (-D)', () => {
  test("prints qemu-ga's keys in qemu-ga's order", () => {
    const c = config([
      '-m',
      'unix-listen',
      '-p',
      '/s',
      '-l',
      '/l',
      '-f',
      '/p',
      '-F',
      '-t',
      '/t',
      '-v',
      '-r',
      '-d',
      '-b',
      'a,b',
      '-b',
      'c',
    ]);
    assert.equal(
      dumpConfig(c),
      '[general]\ndaemon=true\nmethod=unix-listen\npath=/s\nlogfile=/l\npidfile=/p\nfsfreeze-hook=/etc/qemu/fsfreeze-hook\n' +
        'statedir=/t\nverbose=true\nretry-path=true\nblock-rpcs=b,a,c\n',
    );
  });

  test('escapes values as GLib writes them', () => {
    const c = config(['-p', ' a\nb\\', '-b', ' x']);
    assert.match(dumpConfig(c), /^path=\\sa\\nb\\\\$/m);
    assert.match(dumpConfig(c), /^block-rpcs=\\sx$/m);
  });

  test('prints allow-rpcs only when -a was given', () => {
    assert.doesNotMatch(dumpConfig(config([])), /allow-rpcs/);
    assert.match(dumpConfig(config(['-a', 'guest-ping,guest-info'])), /^allow-rpcs=guest-info,guest-ping$/m);
  });
});
