import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, writeFileSync, rmSync, mkdirSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ConfigError, loadConfig, resolveConfig } from '../../../src/config/load.js';
import { parseDuration } from '../../../src/config/duration.js';
import { fillPlaceholders } from '../../../src/config/placeholders.js';

const EXAMPLE = new URL('../../../config/quiesce.config.yaml', import.meta.url).pathname;

const minimal = (extra: Record<string, unknown> = {}) => ({
  stateDir: '/tmp/q',
  guests: {
    a: { connector: { type: 'socket', path: '/run/a.sock' }, snapshot: { provider: 'command', argv: ['true'] } },
  },
  jobs: { j: { guests: ['a'] } },
  ...extra,
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

test('defaults a user expects: budget 10 s, concurrency 4, fail policy, freeze all', () => {
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
        a: { connector: { type: 'socket', path: 'a.sock' }, snapshot: { provider: 'command', argv: ['true'] } },
      },
    },
    /guests\.a\.connector\.path: must be an absolute path/,
  ],
  [
    'unknown connector type',
    { ...minimal(), guests: { a: { connector: { type: 'ssh' }, snapshot: { provider: 'command', argv: ['true'] } } } },
    /guests\.a\.connector\.type: Invalid discriminator value/,
  ],
  [
    'empty snapshot argv',
    { ...minimal(), guests: { a: { connector: { type: 'local' }, snapshot: { provider: 'command', argv: [] } } } },
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
      guests: { a: { connector: { type: 'local' }, snapshot: { provider: 'command', argv: ['cp', '{gest}'] } } },
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
