// Prune's config: over backup files (dir + match) or over a repository's restore points, never both.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { ConfigError, resolveConfig } from '../../../src/config/load.js';

const QMP_REPOSITORY = { provider: 'qmp', socket: '/run/a.qmp', repository: '/srv/backups' };
const COMMAND = { provider: 'command', argv: ['true'] };

/** Guest a with this snapshot and prune, in job j. */
const config = (snapshot: Record<string, unknown>, prune: Record<string, unknown>) => ({
  stateDir: '/tmp/q',
  guests: { a: { connector: { type: 'socket', path: '/run/a.sock' }, freeze: 'all', snapshot, prune } },
  jobs: { j: { guests: ['a'] } },
});

function problems(raw: unknown): string[] {
  try {
    resolveConfig(raw, 'f.yaml');
  } catch (err) {
    assert.ok(err instanceof ConfigError, String(err));
    return [...err.problems];
  }
  return [];
}

const bad: [string, Record<string, unknown>, RegExp][] = [
  [
    'dir under a repository',
    config(QMP_REPOSITORY, { dir: '/b', keepLast: 3 }),
    /^guests\.a\.prune: with a repository leave out dir and match \(the rules apply to its restore points\)$/,
  ],
  [
    'match under a repository',
    config(QMP_REPOSITORY, { match: 'a-*', keepLast: 3 }),
    /^guests\.a\.prune: with a repository leave out dir and match/,
  ],
  [
    'neither dir nor a repository',
    config(COMMAND, { keepLast: 3 }),
    /^guests\.a\.prune: set dir and match \(which files are this guest's backups\), or use a repository$/,
  ],
  ['dir without match', config(COMMAND, { dir: '/b', keepLast: 3 }), /^guests\.a\.prune: set dir and match/],
  [
    'a qmp snapshot into files is no repository',
    config({ provider: 'qmp', socket: '/run/a.qmp', target: '/b/{guest}-{disk}.img' }, { keepDaily: 7 }),
    /^guests\.a\.prune: set dir and match/,
  ],
  [
    'rules that keep nothing, repository or not',
    config(QMP_REPOSITORY, { keepLast: 0, keepMonthly: 0 }),
    /^guests\.a\.prune: prune must keep something: set keepLast, keepDaily, keepWeekly or keepMonthly$/,
  ],
  ['a negative count', config(QMP_REPOSITORY, { keepMonthly: -1 }), /^guests\.a\.prune\.keepMonthly: /],
];

for (const [title, raw, re] of bad) {
  test(`prune config is refused: ${title}`, () => {
    const found = problems(raw);
    assert.ok(
      found.some((p) => re.test(p)),
      `expected ${re} in ${JSON.stringify(found)}`,
    );
  });
}

test('prune under a repository resolves with the rules only (dir and match left out), monthly included', () => {
  const c = resolveConfig(config(QMP_REPOSITORY, { keepLast: 2, keepMonthly: 12 }), 'f.yaml');
  assert.deepEqual(c.guests.get('a')!.prune, {
    dir: undefined,
    match: undefined,
    keepLast: 2,
    keepDaily: 0,
    keepWeekly: 0,
    keepMonthly: 12,
  });
});
