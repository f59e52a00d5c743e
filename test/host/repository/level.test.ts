import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import type { BackupLevel } from '../../../src/config/types.js';
import type { Catalog, RestorePoint } from '../../../src/repository/catalog.js';
import { bitmapName } from '../../../src/repository/layout.js';
import { chainBase, decideLevel, type BitmapState, type LiveDisk } from '../../../src/repository/level.js';
import type { Level, Manifest } from '../../../src/repository/manifest.js';

const MiB = 1 << 20;
const DAY = 86_400_000;

function point(
  id: string,
  level: Level,
  chain: string,
  parent: string | null,
  time: string,
  lineage: string[],
): RestorePoint {
  const m: Manifest = {
    version: 1,
    id,
    guest: 'vm',
    time,
    level,
    chain,
    parent,
    bitmap: bitmapName(level === 'differential' ? parent! : id),
    reason: 'test',
    disks: [{ name: 'vda', node: 'data0', virtualSize: 64 * MiB, file: 'vda.qcow2', format: 'qcow2', bytesWritten: 1 }],
    consistency: 'filesystem',
    frozenWindowMs: 10,
    quiesceVersion: '0.1.0',
    agentVersion: '7.2.0',
    complete: true,
  };
  return { manifest: m, dir: `/r/vm/${chain}/${id}`, lineage };
}

const F = '20261201T000000Z-0001';
const I1 = '20261202T000000Z-0002';
const D1 = '20261203T000000Z-0003';
const chain: RestorePoint[] = [
  point(F, 'full', F, null, '2026-12-01T00:00:00.000Z', [F]),
  point(I1, 'incremental', F, F, '2026-12-02T00:00:00.000Z', [F, I1]),
  point(D1, 'differential', F, I1, '2026-12-03T00:00:00.000Z', [F, I1, D1]),
];
const catalog = (points: RestorePoint[]): Catalog => ({ repo: '/r', guest: 'vm', points, unusable: [], chains: [F] });

const bm = (name: string, over: Partial<BitmapState> = {}): BitmapState => ({
  name,
  recording: true,
  busy: false,
  persistent: true,
  inconsistent: false,
  count: 3 * MiB,
  ...over,
});
const disk = (bitmaps: BitmapState[], size = 64 * MiB, name = 'vda'): LiveDisk => ({ name, size, bitmaps });

const decide = (
  disks: LiveDisk[],
  o: {
    configured?: BackupLevel;
    points?: RestorePoint[];
    fullEvery?: { backups?: number; ageMs?: number };
    now?: string;
  } = {},
) =>
  decideLevel({
    configured: o.configured ?? 'auto',
    fullEvery: o.fullEvery ?? {},
    now: new Date(o.now ?? '2026-12-04T00:00:00.000Z'),
    catalog: catalog(o.points ?? chain),
    disks,
  });

describe('decideLevel', () => {
  test('the base is the newest full or incremental (a differential is never a parent)', () => {
    assert.equal(chainBase(catalog(chain))?.manifest.id, I1);
    assert.equal(chainBase(catalog([])), undefined);
  });

  test('auto continues the chain from the base, reading its bitmap', () => {
    const d = decide([disk([bm(bitmapName(I1))])]);
    assert.equal(d.level, 'incremental');
    assert.equal(d.parent?.manifest.id, I1);
    assert.equal(d.dirtyBytes, 3 * MiB);
    assert.match(d.reason, new RegExp(`continues chain ${F} from ${I1}`));
  });

  test('differential when configured', () => {
    const d = decide([disk([bm(bitmapName(I1))])], { configured: 'differential' });
    assert.equal(d.level, 'differential');
    assert.equal(d.parent?.manifest.id, I1);
  });

  test('full when configured, whatever the chain', () => {
    assert.equal(decide([disk([bm(bitmapName(I1))])], { configured: 'full' }).level, 'full');
  });

  const broken: [string, LiveDisk[], RegExp][] = [
    ['no chain', [disk([])], /no chain to continue yet/],
    ['bitmap missing', [disk([bm('other')])], /bitmap quiesce-.* is missing on disk vda/],
    ['bitmap inconsistent', [disk([bm(bitmapName(I1), { inconsistent: true })])], /inconsistent/],
    ['bitmap disabled', [disk([bm(bitmapName(I1), { recording: false })])], /disabled/],
    ['disk resized', [disk([bm(bitmapName(I1))], 128 * MiB)], /disk vda was resized \(67108864 → 134217728 bytes\)/],
    ['disk added', [disk([bm(bitmapName(I1))]), disk([], 8 * MiB, 'vdb')], /disk vdb was added since/],
    ['disk removed', [disk([bm(bitmapName(I1))], 64 * MiB, 'vdb')], /disk vdb was added|disk vda .* not backed up/],
  ];
  for (const [what, disks, reason] of broken) {
    test(`${what}: auto takes a full and says why; incremental fails before anything`, () => {
      const points = what === 'no chain' ? [] : chain;
      const d = decide(disks, { points });
      assert.equal(d.level, 'full');
      assert.equal(d.parent, undefined);
      assert.match(d.reason, reason);
      assert.throws(
        () => decide(disks, { points, configured: 'incremental' }),
        (e: Error & { code?: string }) =>
          e.code === 'REPOSITORY' && /cannot take an incremental: .*level auto takes a full then/.test(e.message),
      );
    });
  }

  test('a bitmap busy in another job is an error, not a silent full', () => {
    assert.throws(() => decide([disk([bm(bitmapName(I1), { busy: true })])]), /in use by another job/);
  });

  test('fullEvery: by count of backups in the chain, and by the age of its full', () => {
    const disks = [disk([bm(bitmapName(I1))])];
    assert.equal(decide(disks, { fullEvery: { backups: 4 } }).level, 'incremental');
    const byCount = decide(disks, { fullEvery: { backups: 3 } });
    assert.equal(byCount.level, 'full');
    assert.match(byCount.reason, /has 3 backups \(fullEvery.backups 3\)/);
    assert.equal(decide(disks, { fullEvery: { ageMs: 4 * DAY } }).level, 'incremental');
    const byAge = decide(disks, { fullEvery: { ageMs: 3 * DAY } });
    assert.equal(byAge.level, 'full');
    assert.match(byAge.reason, /is 72h old \(fullEvery.age 72h\)/);
    // Configured levels ignore fullEvery (the config refuses the pair anyway).
    assert.equal(decide(disks, { fullEvery: { backups: 1 }, configured: 'incremental' }).level, 'incremental');
  });
});

describe('change tracking the caller found lost (libvirt: the checkpoint)', () => {
  const input = {
    fullEvery: {},
    now: new Date('2026-12-04T00:00:00Z'),
    catalog: catalog(chain),
    disks: [disk([bm(bitmapName(I1))])],
    untracked: () => `checkpoint ${bitmapName(I1)} is missing in libvirt`,
  };
  test('auto takes a full and says why', () => {
    const d = decideLevel({ ...input, configured: 'auto' });
    assert.equal(d.level, 'full');
    assert.equal(d.reason, `checkpoint ${bitmapName(I1)} is missing in libvirt`);
  });
  test('a configured incremental fails before anything is frozen', () => {
    assert.throws(() => decideLevel({ ...input, configured: 'incremental' }), /cannot take an incremental: checkpoint/);
  });
  test('a disk change is named first', () => {
    const d = decideLevel({ ...input, configured: 'auto', disks: [disk([bm(bitmapName(I1))], 128 * MiB)] });
    assert.match(d.reason, /disk vda was resized/);
  });
  test('undefined: the chain goes on', () => {
    assert.equal(decideLevel({ ...input, configured: 'auto', untracked: () => undefined }).level, 'incremental');
  });
});
