// Provider libvirt in the config: it takes the domain and URI from a libvirt connector (a config error
// naming the key otherwise), defaults (backup, all disks, raw, commit true), and what is refused.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { ConfigError, resolveConfig } from '../../../../src/config/load.js';
import { planSnapshot } from '../../../../src/snapshot/index.js';

const guest = (connector: Record<string, unknown>, snapshot: Record<string, unknown>) => ({
  stateDir: '/tmp/q',
  guests: { g: { connector, freeze: ['/data'], snapshot: { provider: 'libvirt', ...snapshot } } },
});
const LV = { type: 'libvirt', domain: 'db01', uri: 'qemu+ssh://root@kvm1/system' };

test('defaults: backup mode, all disks, raw; domain and URI from the connector; the plan fills all but {disk}', () => {
  const c = resolveConfig(guest(LV, { target: '/b/{guest}-{disk}.img' }), 't');
  const s = c.guests.get('g')!.snapshot;
  assert.deepEqual(s, {
    provider: 'libvirt',
    uri: 'qemu+ssh://root@kvm1/system',
    domain: 'db01',
    mode: 'backup',
    disks: 'all',
    target: '/b/{guest}-{disk}.img',
    format: 'raw',
    commit: true,
    timeoutMs: 3_600_000,
  });
  const values = { guest: 'g', job: 'j', runId: 'r', timestamp: 't', date: 'd', stateDir: '/s' };
  const p = planSnapshot(s, values, { budgetMs: 10_000, timeouts: c.guests.get('g')!.timeouts });
  assert.equal(p.provider === 'libvirt' && p.target, '/b/g-{disk}.img');
});

const refused: [string, Record<string, unknown>, Record<string, unknown>, RegExp][] = [
  [
    'a socket connector',
    { type: 'socket', path: '/run/a.sock' },
    { target: '/b/{disk}' },
    /guests\.g\.snapshot\.provider: libvirt takes the domain and URI from a libvirt connector, but connector\.type is socket/,
  ],
  [
    'commit in backup mode',
    LV,
    { target: '/b/{disk}', commit: false },
    /guests\.g\.snapshot\.commit: only for mode snapshot/,
  ],
  [
    'raw overlays',
    LV,
    { mode: 'snapshot', format: 'raw', target: '/b/{disk}' },
    /guests\.g\.snapshot\.format: snapshot mode makes qcow2/,
  ],
  ['all disks to one file', LV, { target: '/b/one.img' }, /guests\.g\.snapshot\.target: needs \{disk\}/],
  ['an unknown key', LV, { target: '/b/{disk}', socket: '/x' }, /unknown key\(s\) 'socket'/],
];
for (const [what, connector, snapshot, message] of refused) {
  test(`refused: ${what}`, () => {
    assert.throws(
      () => resolveConfig(guest(connector, snapshot), 't'),
      (e: ConfigError) => message.test(e.message),
    );
  });
}

test('snapshot mode: qcow2 overlays, commit as configured', () => {
  const c = resolveConfig(
    guest(LV, { mode: 'snapshot', commit: false, disks: ['vda'], target: '/o/{disk}.qcow2' }),
    't',
  );
  const s = c.guests.get('g')!.snapshot;
  assert.ok(s.provider === 'libvirt');
  assert.equal(s.format, 'qcow2');
  assert.equal(s.commit, false);
});

test('a repository: backup mode, qcow2, level auto, no target; prune without dir/match reads it; the plan fills its placeholders', () => {
  const c = resolveConfig(
    {
      stateDir: '/tmp/q',
      guests: {
        g: {
          connector: LV,
          freeze: ['/data'],
          snapshot: { provider: 'libvirt', repository: '/srv/repo/{job}', fullEvery: { backups: 7 } },
          prune: { keepLast: 3 },
          verify: { kind: 'fsck' },
        },
      },
      jobs: { nightly: { guests: ['g'] } },
    },
    't',
  );
  const s = c.guests.get('g')!.snapshot;
  assert.ok(s.provider === 'libvirt');
  assert.equal(s.mode, 'backup');
  assert.equal(s.format, 'qcow2');
  assert.equal(s.target, undefined);
  assert.deepEqual(s.repository, { dir: '/srv/repo/{job}', level: 'auto', fullEvery: { backups: 7 } });
  assert.deepEqual(c.guests.get('g')!.prune, {
    dir: undefined,
    match: undefined,
    keepLast: 3,
    keepDaily: 0,
    keepWeekly: 0,
    keepMonthly: 0,
  });
  const values = { guest: 'g', job: 'nightly', runId: 'r', timestamp: 't', date: 'd', stateDir: '/s' };
  const p = planSnapshot(s, values, { budgetMs: 10_000, timeouts: c.guests.get('g')!.timeouts });
  assert.equal(p.provider === 'libvirt' && p.repository?.dir, '/srv/repo/nightly');
});

const refusedRepository: [string, Record<string, unknown>, RegExp][] = [
  [
    'target and repository',
    { target: '/b/{disk}', repository: '/repo' },
    /snapshot: give target or repository, not both/,
  ],
  [
    'a repository in snapshot mode',
    { repository: '/repo', mode: 'snapshot' },
    /snapshot\.repository: only for mode backup/,
  ],
  ['a raw repository', { repository: '/repo', format: 'raw' }, /snapshot\.format: a repository keeps qcow2 images/],
  [
    'a repository that moves every run',
    { repository: '/repo/{runId}' },
    /snapshot\.repository: \{runId\} changes every run/,
  ],
  [
    'level without a repository',
    { target: '/b/{disk}', level: 'full' },
    /snapshot: level and fullEvery need a repository/,
  ],
  [
    'fullEvery with level full',
    { repository: '/r', level: 'full', fullEvery: { age: '7d' } },
    /fullEvery: only with level auto/,
  ],
];
for (const [what, snapshot, message] of refusedRepository) {
  test(`refused: ${what}`, () => {
    assert.throws(
      () => resolveConfig(guest(LV, snapshot), 't'),
      (e: ConfigError) => message.test(e.message),
    );
  });
}
