import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, writeFileSync, rmSync, mkdirSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ConfigError, loadConfig, resolveConfig } from '../../../src/config/load.js';
import { DURATION_RANGES, parseCliDuration, parseDuration } from '../../../src/config/duration.js';
import { fillExcept, fillPlaceholders, unknownPlaceholders } from '../../../src/config/placeholders.js';
import { QuiesceError } from '../../../src/errors.js';

const EXAMPLE = new URL('../../../config/quiesce.config.yaml', import.meta.url).pathname;

const minimal = (extra: Record<string, unknown> = {}) => ({
  stateDir: '/tmp/q',
  guests: {
    a: {
      connector: { type: 'socket', path: '/run/a.sock' },
      freeze: 'all',
      snapshot: { provider: 'command', argv: ['true'] },
    },
  },
  jobs: { j: { guests: ['a'] } },
  ...extra,
});

/** A mountpoint that does not exist on this host: a local guest freezing it touches nothing quiesce writes. */
const ABSENT = '/nonexistent-quiesce-test/data';

/** A guest with a command snapshot; `extra` replaces or adds keys. */
const guest = (connector: Record<string, unknown>, extra: Record<string, unknown> = {}) => ({
  connector,
  freeze: connector['type'] === 'local' ? [ABSENT] : 'all',
  snapshot: { provider: 'command', argv: ['true'] },
  ...extra,
});

/** Guests a and b (with the given connectors) in a job j shaped by `job`. */
const pair = (ca: Record<string, unknown>, cb: Record<string, unknown>, job: Record<string, unknown>) => ({
  stateDir: '/tmp/q',
  guests: { a: guest(ca), b: guest(cb) },
  jobs: { j: job },
});

/** minimal() with guest a changed by `extra`. */
const withA = (extra: Record<string, unknown>) => ({
  ...minimal(),
  guests: { a: { ...minimal().guests.a, ...extra } },
});

function problems(raw: unknown, env: NodeJS.ProcessEnv = {}): string[] {
  try {
    resolveConfig(raw, 'f.yaml', env);
  } catch (err) {
    assert.ok(err instanceof ConfigError, String(err));
    assert.equal(err.file, 'f.yaml');
    return [...err.problems];
  }
  return [];
}

test('the annotated example config is valid and fully defaulted', async () => {
  const c = await loadConfig({ file: EXAMPLE, env: { ...process.env } });
  assert.equal(c.source, EXAMPLE);
  assert.deepEqual([...c.jobs.keys()], ['nightly']);
  const web = c.guests.get('web01')!;
  assert.deepEqual(web.freeze, ['/', '/var']);
  assert.equal(web.timeouts.thawMs, 30_000);
  assert.equal(c.jobs.get('nightly')!.budgetMs, 10_000);
  assert.deepEqual(c.jobs.get('nightly')!.groups, [['app01', 'db01']]);
  assert.deepEqual(c.guests.get('db01')!.connector, { kind: 'libvirt', domain: 'db01', uri: 'qemu:///system' });
});

test('defaults a user expects: budget 10 s, concurrency 4, fail policy', () => {
  const c = resolveConfig(minimal(), 'f.yaml', {});
  const j = c.jobs.get('j')!;
  assert.equal(j.budgetMs, 10_000);
  assert.equal(j.concurrency, 4);
  assert.equal(j.failurePolicy, 'fail');
  assert.equal(c.guests.get('a')!.freeze, 'all');
  assert.equal(c.guests.get('a')!.maxReplyBytes, 10 * 1024 * 1024);
});

const cases: [string, unknown, RegExp][] = [
  ['unknown top-level key', minimal({ stateDri: '/x' }), /\(top level\): unknown key\(s\) 'stateDri'/],
  [
    'relative socket path',
    {
      ...minimal(),
      guests: {
        a: {
          connector: { type: 'socket', path: 'a.sock' },
          freeze: 'all',
          snapshot: { provider: 'command', argv: ['true'] },
        },
      },
    },
    /guests\.a\.connector\.path: must be an absolute path/,
  ],
  [
    'unknown connector type',
    {
      ...minimal(),
      guests: { a: { connector: { type: 'ssh' }, freeze: 'all', snapshot: { provider: 'command', argv: ['true'] } } },
    },
    /guests\.a\.connector\.type: Invalid discriminator value/,
  ],
  [
    'empty snapshot argv',
    {
      ...minimal(),
      guests: { a: { connector: { type: 'local' }, freeze: [ABSENT], snapshot: { provider: 'command', argv: [] } } },
    },
    /guests\.a\.snapshot\.argv: an argv list needs at least the program/,
  ],
  ['bad duration', minimal({ defaults: { budget: 'soon' } }), /defaults\.budget: not a duration: "soon"/],
  [
    'job naming a missing guest',
    { ...minimal(), jobs: { j: { guests: ['a', 'zz'] } } },
    /jobs\.j\.guests\[1\]: no guest named 'zz'/,
  ],
  [
    'guest in two groups',
    {
      ...minimal(),
      jobs: {
        j: {
          groups: [
            ['a', 'a2'],
            ['a', 'a3'],
          ],
        },
      },
    },
    /jobs\.j\.groups\[1\]: guest 'a' is already in groups\[0\]/,
  ],
  [
    'unknown placeholder',
    {
      ...minimal(),
      guests: {
        a: {
          connector: { type: 'local' },
          freeze: [ABSENT],
          snapshot: { provider: 'command', argv: ['cp', '{gest}'] },
        },
      },
    },
    /guests\.a\.snapshot\.argv\[1\]: unknown placeholder \{gest\}/,
  ],
  [
    'prune that keeps nothing',
    {
      ...minimal(),
      guests: {
        a: {
          connector: { type: 'local' },
          freeze: [ABSENT],
          snapshot: { provider: 'command', argv: ['true'] },
          prune: { dir: '/b', match: 'a-*' },
        },
      },
    },
    /guests\.a\.prune: prune must keep something/,
  ],
  [
    'bad failure policy',
    { ...minimal(), jobs: { j: { guests: ['a'], failurePolicy: 'yolo' } } },
    /jobs\.j\.failurePolicy: Invalid enum value/,
  ],
  ['job without guests', { ...minimal(), jobs: { j: {} } }, /jobs\.j: lists no guests and no groups/],
  [
    'missing environment variable',
    minimal({ metricsFile: '${QUIESCE_TEST_UNSET}' }),
    /metricsFile: environment variable QUIESCE_TEST_UNSET is not set/,
  ],
];

for (const [title, raw, re] of cases) {
  test(`config error names the key path: ${title}`, () => {
    const p = problems(raw);
    assert.ok(
      p.some((x) => re.test(x)),
      `${JSON.stringify(p)} should match ${re}`,
    );
  });
}

test('${ENV} is interpolated and $${ stays literal', () => {
  const c = resolveConfig(
    {
      ...minimal(),
      guests: {
        a: {
          connector: { type: 'libvirt', domain: '${DOM}' },
          freeze: 'all',
          snapshot: { provider: 'command', argv: ['echo', '$${{HOME}}'] },
        },
      },
    },
    'f.yaml',
    { DOM: 'vm7' },
  );
  assert.deepEqual(c.guests.get('a')!.connector, { kind: 'libvirt', domain: 'vm7' });
  const snap = c.guests.get('a')!.snapshot;
  assert.deepEqual(snap.provider === 'command' && snap.argv, ['echo', '${{HOME}}']);
});

test('a config file is found by search, and a broken one is reported with its path', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'cfg-'));
  try {
    mkdirSync(join(dir, 'sub'));
    writeFileSync(join(dir, 'quiesce.config.json'), JSON.stringify(minimal()));
    const c = await loadConfig({ cwd: join(dir, 'sub') });
    assert.equal(c.source, join(dir, 'quiesce.config.json'));
    writeFileSync(join(dir, 'bad.yaml'), 'guests: [unclosed\n');
    await assert.rejects(
      loadConfig({ file: join(dir, 'bad.yaml') }),
      (e: unknown) => e instanceof ConfigError && e.message.startsWith(join(dir, 'bad.yaml')),
    );
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('durations and placeholders', () => {
  assert.equal(parseDuration(10), 10_000);
  assert.equal(parseDuration('500ms'), 500);
  assert.equal(parseDuration('2m'), 120_000);
  assert.equal(parseDuration('1.5s'), 1500);
  assert.equal(parseDuration('-1s'), undefined);
  const v = { guest: 'g', job: 'j', runId: 'r', timestamp: 't', date: 'd', stateDir: '/s' };
  assert.equal(fillPlaceholders('{guest}-{timestamp}.img', v), 'g-t.img');
  assert.equal(fillPlaceholders('{{literal}}', v), '{literal}');
});

/** The ConfigError's whole message (file: problem; problem…), or '' when the config is accepted. */
function message(raw: unknown): string {
  try {
    resolveConfig(raw, 'f.yaml', {});
  } catch (err) {
    assert.ok(err instanceof ConfigError, String(err));
    assert.equal(err.code, 'CONFIG');
    return err.message;
  }
  return '';
}

const sock = (path: string) => ({ type: 'socket', path });

// One row per check, before any guest is touched: [behaviour, config, key path + reason].
const refused: [string, unknown, RegExp][] = [
  // 1. Mountpoints
  [
    'a mountpoint listed twice in freeze (also with a trailing slash)',
    withA({ freeze: ['/var', '/data', '/var/'] }),
    /guests\.a\.freeze\[2\]: \/var\/ is listed twice \(first at freeze\[0\]\)/,
  ],
  // 2. Durations: in range per key
  [
    'a zero budget',
    { ...minimal(), jobs: { j: { guests: ['a'], budget: 0 } } },
    /jobs\.j\.budget: must be between 1ms and 24h \(got 0\)/,
  ],
  [
    'a budget of 1e300 seconds',
    { ...minimal(), jobs: { j: { guests: ['a'], budget: 1e300 } } },
    /jobs\.j\.budget: must be between 1ms and 24h \(got 1e\+300\)/,
  ],
  [
    'a budget of "1000h"',
    { ...minimal(), jobs: { j: { guests: ['a'], budget: '1000h' } } },
    /jobs\.j\.budget: must be between 1ms and 24h \(got "1000h"\)/,
  ],
  [
    'a negative default budget',
    minimal({ defaults: { budget: '-5s' } }),
    /defaults\.budget: must be between 1ms and 24h \(got "-5s"\)/,
  ],
  [
    'a budget that rounds to 0 ms',
    minimal({ defaults: { budget: '0.0001s' } }),
    /defaults\.budget: must be between 1ms and 24h \(got "0\.0001s"\)/,
  ],
  [
    'a budget of Infinity',
    minimal({ defaults: { budget: Infinity } }),
    /defaults\.budget: must be between 1ms and 24h \(got Infinity\)/,
  ],
  [
    'a budget of "NaN"',
    minimal({ defaults: { budget: 'NaN' } }),
    /defaults\.budget: not a duration: "NaN" \(use seconds/,
  ],
  ['a budget of true', minimal({ defaults: { budget: true } }), /defaults\.budget: not a duration: true/],
  [
    'a connect timeout over 24h',
    withA({ timeouts: { connect: '25h' } }),
    /guests\.a\.timeouts\.connect: must be between 1ms and 24h \(got "25h"\)/,
  ],
  [
    'a command timeout of 0',
    minimal({ defaults: { timeouts: { command: 0 } } }),
    /defaults\.timeouts\.command: must be between 1ms and 24h \(got 0\)/,
  ],
  [
    'a step timeout over 7 days',
    withA({ timeouts: { step: '8d' } }),
    /guests\.a\.timeouts\.step: must be between 1ms and 7d \(got "8d"\)/,
  ],
  [
    "a backup step's timeout over 7 days",
    withA({ backup: { argv: ['true'], timeout: '200h' } }),
    /guests\.a\.backup\.timeout: must be between 1ms and 7d \(got "200h"\)/,
  ],
  [
    "a verify step's timeout of 0",
    withA({ verify: { argv: ['true'], timeout: 0 } }),
    /guests\.a\.verify\.timeout: must be between 1ms and 7d \(got 0\)/,
  ],
  [
    "a snapshot's timeout past setTimeout's limit",
    withA({ snapshot: { provider: 'command', argv: ['true'], timeout: '30d' } }),
    /guests\.a\.snapshot\.timeout: must be between 1ms and 7d \(got "30d"\)/,
  ],
  ['a lockWait over 24h', minimal({ lockWait: '2d' }), /lockWait: must be between 0s and 24h \(got "2d"\)/],
  ['a negative lockWait', minimal({ lockWait: -1 }), /lockWait: must be between 0s and 24h \(got -1\)/],
  // 3. Freeze and thaw timeouts
  [
    'a freeze timeout of 0',
    withA({ timeouts: { freeze: 0 } }),
    /guests\.a\.timeouts\.freeze: must be between 1ms and 24h \(got 0\)/,
  ],
  [
    'a thaw timeout of 0',
    minimal({ defaults: { timeouts: { thaw: '0s' } } }),
    /defaults\.timeouts\.thaw: must be between 1ms and 24h \(got "0s"\)/,
  ],
  // 4. One agent address, two guests of a job
  [
    'two solo guests on one socket path (spelled differently)',
    pair(sock('/run/a.sock'), sock('/run//a.sock'), { guests: ['a', 'b'] }),
    /jobs\.j\.guests\[1\]: guests 'a' and 'b' share one agent address \(unix:\/run\/\/a\.sock\): one agent is one machine/,
  ],
  [
    'a group of two guests on one tcp host:port',
    pair(
      { type: 'tcp', host: '192.0.2.1', port: 4444 },
      { type: 'tcp', host: '192.0.2.1', port: 4444 },
      { groups: [['a', 'b']] },
    ),
    /jobs\.j\.groups\[0\]\[1\]: guests 'a' and 'b' share one agent address \(tcp:192\.0\.2\.1:4444\)/,
  ],
  [
    'a solo guest and a group member on one libvirt domain',
    {
      ...pair(
        { type: 'libvirt', domain: 'vm', uri: 'qemu:///system' },
        { type: 'libvirt', domain: 'vm', uri: 'qemu:///system' },
        {
          guests: ['a'],
          groups: [['b', 'c']],
        },
      ),
      guests: {
        a: guest({ type: 'libvirt', domain: 'vm', uri: 'qemu:///system' }),
        b: guest({ type: 'libvirt', domain: 'vm', uri: 'qemu:///system' }),
        c: guest(sock('/run/c.sock')),
      },
    },
    /jobs\.j\.groups\[0\]\[0\]: guests 'a' and 'b' share one agent address \(libvirt:qemu:\/\/\/system\/vm\)/,
  ],
  [
    'two local guests',
    pair({ type: 'local' }, { type: 'local', agentArgs: ['-v'] }, { guests: ['a', 'b'] }),
    /jobs\.j\.guests\[1\]: guests 'a' and 'b' share one agent address \(local\)/,
  ],
  // 5. A guest listed twice
  [
    'a guest listed alone and in a group',
    { ...pair(sock('/run/a.sock'), sock('/run/b.sock'), { guests: ['a'], groups: [['a', 'b']] }) },
    /jobs\.j\.guests\[0\]: guest 'a' is also in groups\[0\]: list it alone or in a group, not both/,
  ],
  [
    'a guest listed twice in guests',
    { ...minimal(), jobs: { j: { guests: ['a', 'a'] } } },
    /jobs\.j\.guests\[1\]: guest 'a' is listed twice \(first at guests\[0\]\)/,
  ],
  // 6. Placeholders with digits or underscores
  [
    'an unknown placeholder with a digit',
    withA({ snapshot: { provider: 'command', argv: ['cp', '{nope1}'] } }),
    /guests\.a\.snapshot\.argv\[1\]: unknown placeholder \{nope1\}/,
  ],
  [
    'an unknown placeholder with an underscore',
    withA({ backup: { argv: ['cp', '/x/{run_id}.img'] } }),
    /guests\.a\.backup\.argv\[1\]: unknown placeholder \{run_id\}/,
  ],
  // 8. freeze is required; "all" is refused for the host quiesce runs on
  [
    'a guest without a freeze key',
    {
      ...minimal(),
      guests: { a: { connector: sock('/run/a.sock'), snapshot: { provider: 'command', argv: ['true'] } } },
    },
    /guests\.a\.freeze: required: list the mountpoints to freeze, or "all"/,
  ],
  ['an empty freeze list', withA({ freeze: [] }), /guests\.a\.freeze: list at least one mountpoint, or say "all"/],
  [
    'a freeze that is neither "all" nor a list',
    withA({ freeze: 'everything' }),
    /guests\.a\.freeze: must be "all" or a list of absolute mountpoints \(got "everything"\)/,
  ],
  [
    'freeze all on a local connector',
    { ...minimal(), guests: { a: { ...guest({ type: 'local' }), freeze: 'all' } } },
    /guests\.a\.freeze: "all" is refused for a local connector: it would freeze every filesystem of this host, its root included/,
  ],
];

for (const [title, raw, re] of refused) {
  test(`refused before any guest is touched: ${title}`, () => {
    const m = message(raw);
    assert.match(m, /^f\.yaml: /);
    assert.match(m, re);
  });
}

test('braces around anything but a name stay literal: {print $1}, {}, {1..3}', () => {
  for (const t of ['{print $1}', '{}', '{1..3}', '{ guest }']) assert.deepEqual(unknownPlaceholders(t), [], t);
  assert.deepEqual(unknownPlaceholders('{nope1}-{a_b}-{guest}'), ['nope1', 'a_b']);
  const v = { guest: 'g', job: 'j', runId: 'r', timestamp: 't', date: 'd', stateDir: '/s' };
  assert.equal(fillPlaceholders('{print $1} {guest}', v), '{print $1} g');
  // Both fillers see the same tokens: an unknown name stays for the validator to report.
  assert.equal(fillExcept('{guest}-{disk}-{x_1}', v, ['disk']), 'g-{disk}-{x_1}');
  assert.equal(fillPlaceholders(fillExcept('{guest}-{disk}', v, ['disk']), { disk: 'vda' }), 'g-vda');
  assert.equal(fillPlaceholders('{constructor}', v), '{constructor}');
});

test('the same job may list guests on different addresses, and one address may serve two jobs', () => {
  const c = resolveConfig(
    {
      stateDir: '/tmp/q',
      guests: { a: guest(sock('/run/a.sock')), b: guest(sock('/run/b.sock')), a2: guest(sock('/run/a.sock')) },
      jobs: { j: { guests: ['a', 'b'] }, k: { guests: ['a2'] } },
    },
    'f.yaml',
    {},
  );
  assert.deepEqual(c.jobs.get('j')!.guests, ['a', 'b']);
});

test('durations at the edges of their ranges are accepted', () => {
  const c = resolveConfig(
    withA({ timeouts: { connect: '1ms', thaw: '24h', step: '7d' }, backup: { argv: ['true'], timeout: '168h' } }),
    'f.yaml',
    {},
  );
  const a = c.guests.get('a')!;
  assert.equal(a.timeouts.connectMs, 1);
  assert.equal(a.timeouts.thawMs, 86_400_000);
  assert.equal(a.backup!.timeoutMs, 7 * 86_400_000);
  assert.equal(resolveConfig(minimal({ lockWait: 0 }), 'f.yaml', {}).lockWaitMs, 0);
});

// 9. A local guest must not freeze where quiesce writes (real directories; nothing is frozen).
test('a local guest freezing the filesystem of stateDir or metricsFile is refused, naming both', () => {
  const dir = mkdtempSync(join(tmpdir(), 'cfg-local-'));
  try {
    const raw = {
      stateDir: join(dir, 'state', 'not-yet'),
      metricsFile: join(dir, 'q.prom'),
      guests: { l: { ...guest({ type: 'local' }), freeze: [dir] } },
      jobs: { j: { guests: ['l'] } },
    };
    const m = message(raw);
    assert.ok(
      m.includes(
        `stateDir: ${join(dir, 'state', 'not-yet')} is on ${dir}, which guest 'l' (local) freezes: the run would block writing its journal while frozen`,
      ),
      m,
    );
    assert.ok(m.includes(`metricsFile: ${join(dir, 'q.prom')} is on ${dir}, which guest 'l' (local) freezes`), m);
    // /proc is another filesystem than the temp dir here: nothing to refuse.
    assert.equal(message({ ...raw, guests: { l: { ...guest({ type: 'local' }), freeze: ['/proc'] } } }), '');
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

// 7. Syntax errors: line, column and the parser's reason.
test('a YAML or JSON syntax error or a duplicate YAML key names the file, line, column and reason', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'cfg-syntax-'));
  const files: [string, string, RegExp][] = [
    [
      'unclosed.yaml',
      'guests: [unclosed\n',
      /: line 2, column 1: unexpected end of the stream within a flow collection$/,
    ],
    [
      'dup.yaml',
      'stateDir: /a\nguests: {}\nstateDir: /b\n',
      /: line 3, column 1: duplicated mapping key \("stateDir: \/b"\)$/,
    ],
    ['indent.yaml', 'guests:\n  a: 1\n   b: 2\n', /: line 3, column 5: bad indentation of a mapping entry/],
    ['comma.json', '{\n  "guests": {"a": 1,}\n}\n', /: line 2, column 21: Expected double-quoted property name$/],
    ['short.json', '{"guests": {}\n', /: line 2, column 1: Expected ',' or '}' after property value$/],
  ];
  try {
    for (const [name, text, re] of files) {
      const file = join(dir, name);
      writeFileSync(file, text);
      await assert.rejects(loadConfig({ file }), (e: unknown) => {
        assert.ok(e instanceof ConfigError, String(e));
        assert.equal(e.code, 'CONFIG');
        assert.equal(e.file, file);
        assert.ok(e.message.startsWith(`${file}: line `), e.message);
        assert.match(e.message, re);
        return true;
      });
    }
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

// 10. The CLI's --wait and --budget.
test('command-line durations: seconds or "30s"/"2m", refused with the flag named', () => {
  assert.equal(parseCliDuration('--wait', '30', DURATION_RANGES.lockWait), 30_000);
  assert.equal(parseCliDuration('--wait', '2m', DURATION_RANGES.lockWait), 120_000);
  assert.equal(parseCliDuration('--wait', '0', DURATION_RANGES.lockWait), 0);
  assert.equal(parseCliDuration('--budget', '1.5s', DURATION_RANGES.budget), 1500);
  const rows: [string, string, string, RegExp][] = [
    [
      '--wait',
      'abc',
      'lockWait',
      /^--wait: not a duration: "abc" \(use seconds or "500ms", "10s", "2m", "1h", "7d"\)$/,
    ],
    ['--wait', '-5', 'lockWait', /^--wait: must be between 0s and 24h \(got "-5"\)$/],
    ['--wait', '', 'lockWait', /^--wait: not a duration: ""/],
    ['--budget', '0', 'budget', /^--budget: must be between 1ms and 24h \(got "0"\)$/],
    ['--budget', '1000h', 'budget', /^--budget: must be between 1ms and 24h \(got "1000h"\)$/],
  ];
  for (const [flag, text, range, re] of rows) {
    assert.throws(
      () => parseCliDuration(flag, text, DURATION_RANGES[range as keyof typeof DURATION_RANGES]),
      (e: unknown) => e instanceof QuiesceError && e.code === 'CONFIG' && re.test(e.message),
      `${flag} ${text}`,
    );
  }
});

test('parseDuration is a pure parser: any finite non-negative amount, days included', () => {
  assert.equal(parseDuration(1e300), 1e303);
  assert.equal(parseDuration('7d'), 7 * 86_400_000);
  assert.equal(parseDuration(`${'9'.repeat(400)}s`), undefined);
  assert.equal(parseDuration(Number.NaN), undefined);
  assert.equal(parseDuration(-1), undefined);
});
