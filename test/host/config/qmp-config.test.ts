import { test } from 'node:test';
import assert from 'node:assert/strict';
import { ConfigError, resolveConfig } from '../../../src/config/load.js';
import { fillExcept, fillPlaceholders } from '../../../src/config/placeholders.js';
import { formatPlan, plan } from '../../../src/workflow/plan.js';

const withSnapshot = (snapshot: Record<string, unknown>) => ({
  stateDir: '/var/lib/q',
  guests: {
    vm1: {
      connector: { type: 'socket', path: '/run/vm1/qga.sock' },
      freeze: ['/data'],
      snapshot,
      timeouts: { command: '7s', connect: '3s' },
    },
  },
  jobs: { nightly: { guests: ['vm1'], budget: '5s' } },
});

test('a qmp snapshot resolves with its defaults (mode backup, all disks, raw) and plans with {disk} left to fill', async () => {
  const c = resolveConfig(
    withSnapshot({ provider: 'qmp', socket: '/run/vm1/qmp.sock', target: '/backup/{guest}-{disk}-{timestamp}.img' }),
    'q.yaml',
  );
  assert.deepEqual(c.guests.get('vm1')!.snapshot, {
    provider: 'qmp',
    socket: '/run/vm1/qmp.sock',
    mode: 'backup',
    disks: 'all',
    target: '/backup/{guest}-{disk}-{timestamp}.img',
    format: 'raw',
    timeoutMs: 3_600_000,
  });
  const now = new Date('2026-11-25T05:47:00Z');
  const p = plan(c, 'nightly', { runId: 'r1', now });
  assert.deepEqual(p.units[0]!.guests[0]!.snapshot, {
    provider: 'qmp',
    socket: '/run/vm1/qmp.sock',
    mode: 'backup',
    disks: 'all',
    target: '/backup/vm1-{disk}-20261125T054700Z.img',
    format: 'raw',
    connectTimeoutMs: 3000,
    commandTimeoutMs: 7000,
    timeoutMs: 3_600_000,
  });
  assert.match(
    await formatPlan(p),
    /snapshot \(qmp\): QMP unix:\/run\/vm1\/qmp\.sock: one transaction of blockdev-backup \(sync full\) of all disks → \/backup\/vm1-\{disk\}-20261125T054700Z\.img \(raw\); the copy finishes after the thaw \(timeout 1h\)/,
  );
});

test('a repository: backup mode, qcow2, level auto; its placeholders filled in the plan, no target', () => {
  const c = resolveConfig(
    withSnapshot({
      provider: 'qmp',
      socket: '/run/vm1/qmp.sock',
      repository: '/srv/backups/{job}',
      fullEvery: { backups: 7, age: '30d' },
    }),
    'q.yaml',
  );
  const s = c.guests.get('vm1')!.snapshot;
  assert.equal(s.provider, 'qmp');
  assert.deepEqual(s.provider === 'qmp' && s.repository, {
    dir: '/srv/backups/{job}',
    level: 'auto',
    fullEvery: { backups: 7, ageMs: 30 * 86_400_000 },
  });
  assert.equal(s.provider === 'qmp' && s.format, 'qcow2');
  assert.equal(s.provider === 'qmp' && s.target, undefined);
  const p = plan(c, 'nightly', { runId: 'r1', now: new Date('2026-11-25T05:47:00Z') });
  const planned = p.units[0]!.guests[0]!.snapshot;
  assert.equal(planned.provider === 'qmp' && planned.repository?.dir, '/srv/backups/nightly');
});

test('snapshot mode defaults to qcow2 overlays; listed disks and a copy timeout are kept', async () => {
  const c = resolveConfig(
    withSnapshot({
      provider: 'qmp',
      socket: '/run/vm1/qmp.sock',
      mode: 'snapshot',
      disks: ['vda', 'data1'],
      target: '/var/lib/overlays/{guest}-{disk}-{date}.qcow2',
      timeout: '10m',
    }),
    'q.yaml',
  );
  const s = c.guests.get('vm1')!.snapshot;
  assert.equal(s.provider, 'qmp');
  assert.deepEqual(s.provider === 'qmp' && [s.mode, s.format, s.disks, s.timeoutMs], [
    'snapshot',
    'qcow2',
    ['vda', 'data1'],
    600_000,
  ]);
  const p = plan(c, 'nightly', { runId: 'r1', now: new Date('2026-11-25T05:47:00Z') });
  assert.match(
    await formatPlan(p),
    /one transaction of blockdev-snapshot-sync of vda, data1 → \/var\/lib\/overlays\/vm1-\{disk\}-2026-11-25\.qcow2 \(qcow2 overlays\)/,
  );
});

const bad: [string, Record<string, unknown>, RegExp][] = [
  [
    'a relative socket',
    { provider: 'qmp', socket: 'qmp.sock', target: '/b/{disk}.img' },
    /guests\.vm1\.snapshot\.socket: must be an absolute path/,
  ],
  [
    'no target',
    { provider: 'qmp', socket: '/q.sock' },
    /guests\.vm1\.snapshot\.target: required \(a file per disk\), or give a repository/,
  ],
  [
    'target and repository',
    { provider: 'qmp', socket: '/q.sock', target: '/b/{disk}', repository: '/repo' },
    /guests\.vm1\.snapshot: give target or repository, not both/,
  ],
  [
    'a repository that moves every run',
    { provider: 'qmp', socket: '/q.sock', repository: '/repo/{date}' },
    /guests\.vm1\.snapshot\.repository: \{date\} changes every run/,
  ],
  [
    'a repository in snapshot mode',
    { provider: 'qmp', socket: '/q.sock', repository: '/repo', mode: 'snapshot' },
    /guests\.vm1\.snapshot\.repository: only for mode backup/,
  ],
  [
    'a raw repository',
    { provider: 'qmp', socket: '/q.sock', repository: '/repo', format: 'raw' },
    /guests\.vm1\.snapshot\.format: a repository keeps qcow2 images/,
  ],
  [
    'fullEvery without auto',
    { provider: 'qmp', socket: '/q.sock', repository: '/repo', level: 'full', fullEvery: { backups: 7 } },
    /guests\.vm1\.snapshot\.fullEvery: only with level auto/,
  ],
  [
    'level without a repository',
    { provider: 'qmp', socket: '/q.sock', target: '/b/{disk}', level: 'incremental' },
    /guests\.vm1\.snapshot: level and fullEvery need a repository/,
  ],
  [
    'an empty fullEvery',
    { provider: 'qmp', socket: '/q.sock', repository: '/repo', fullEvery: {} },
    /set backups, age, or both/,
  ],
  [
    'an unknown mode',
    { provider: 'qmp', socket: '/q.sock', mode: 'mirror', target: '/b/{disk}.img' },
    /guests\.vm1\.snapshot\.mode: Invalid enum value\. Expected 'backup' \| 'snapshot', received 'mirror'/,
  ],
  [
    'an unknown key',
    { provider: 'qmp', socket: '/q.sock', target: '/b/{disk}.img', device: 'vda' },
    /guests\.vm1\.snapshot: unknown key\(s\) 'device'/,
  ],
  [
    '{disk} missing with all disks',
    { provider: 'qmp', socket: '/q.sock', target: '/b/{guest}.img' },
    /guests\.vm1\.snapshot\.target: needs \{disk\} when disks is "all"/,
  ],
  [
    '{disk} missing with two disks',
    { provider: 'qmp', socket: '/q.sock', disks: ['vda', 'vdb'], target: '/b/{guest}.img' },
    /guests\.vm1\.snapshot\.target: needs \{disk\} when several disks are listed/,
  ],
  [
    'an unknown placeholder',
    { provider: 'qmp', socket: '/q.sock', target: '/b/{guest}-{dsk}.img' },
    /guests\.vm1\.snapshot\.target: unknown placeholder \{dsk\}/,
  ],
  [
    'a disk listed twice',
    { provider: 'qmp', socket: '/q.sock', disks: ['vda', 'vda'], target: '/b/{disk}.img' },
    /guests\.vm1\.snapshot\.disks: a disk is listed twice/,
  ],
  [
    'a disk name with a slash',
    { provider: 'qmp', socket: '/q.sock', disks: ['/machine/peripheral/vda'], target: '/b/{disk}.img' },
    /guests\.vm1\.snapshot\.disks\[0\]: a node name or device id/,
  ],
  [
    'raw overlays in snapshot mode',
    { provider: 'qmp', socket: '/q.sock', mode: 'snapshot', format: 'raw', target: '/b/{disk}.img' },
    /guests\.vm1\.snapshot\.format: snapshot mode makes qcow2 overlays/,
  ],
  [
    '{disk} in a command provider argv',
    { provider: 'command', argv: ['cp', '{disk}'] },
    /guests\.vm1\.snapshot\.argv\[1\]: unknown placeholder \{disk\}/,
  ],
];

for (const [name, snapshot, re] of bad) {
  test(`config error names the key path: ${name}`, () => {
    assert.throws(
      () => resolveConfig(withSnapshot(snapshot), 'q.yaml'),
      (err: unknown) => err instanceof ConfigError && re.test(err.message) && err.message.startsWith('q.yaml: '),
    );
  });
}

test('fillExcept keeps {disk} and escapes braces so the second fill is exact', () => {
  const values = {
    guest: 'vm1',
    job: 'j',
    runId: 'r',
    timestamp: 'T',
    date: 'D',
    stateDir: '/state/{odd}',
  };
  const t = fillExcept('{stateDir}/{{lit}}-{guest}-{disk}', values, ['disk']);
  assert.equal(t, '/state/{{odd}}/{{lit}}-vm1-{disk}');
  assert.equal(fillPlaceholders(t, { disk: 'vda' }), '/state/{odd}/{lit}-vm1-vda');
});
