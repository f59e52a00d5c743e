import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import type { KeepRules } from '../../../src/config/types.js';
import { QuiesceError } from '../../../src/errors.js';
import type { Catalog } from '../../../src/repository/catalog.js';
import { bitmapName } from '../../../src/repository/layout.js';
import type { Level } from '../../../src/repository/manifest.js';
import { decideRetention, isoWeek, UNUSABLE_GRACE_MS } from '../../../src/repository/retention.js';
import {
  catalogOf,
  keepRulesArb,
  scheduleArb,
  scheduleBackups,
  testBackupId,
  type BackupSpec,
} from '../../helpers/repository.js';

const REPO = '/repo';
const rules = (r: Partial<KeepRules>): KeepRules => ({
  keepLast: 0,
  keepDaily: 0,
  keepWeekly: 0,
  keepMonthly: 0,
  ...r,
});

// Two chains: A (October–November) and B (from Monday 2026-11-23, ISO week 48).
const SCHEDULE: [string, Level, string][] = [
  ['A0', 'full', '2026-10-05T02:00:00Z'],
  ['A1', 'incremental', '2026-10-20T02:00:00Z'],
  ['A2', 'differential', '2026-11-02T02:00:00Z'],
  ['B0', 'full', '2026-11-23T02:00:00Z'],
  ['B1', 'incremental', '2026-11-30T02:00:00Z'],
  ['B2', 'incremental', '2026-12-01T02:00:00Z'],
  ['B3', 'differential', '2026-12-01T14:00:00Z'],
  ['B4', 'incremental', '2026-12-02T02:00:00Z'],
  ['B5', 'differential', '2026-12-02T14:00:00Z'],
];
const SPECS = scheduleBackups(
  'web',
  SCHEDULE.map(([, level, t]) => ({ level, time: new Date(t) })),
);
/** Test names (A0…B5) ↔ backup ids. */
const ID = Object.fromEntries(SCHEDULE.map(([n], i) => [n, SPECS[i]!.id])) as Record<string, string>;
const NAME = Object.fromEntries(Object.entries(ID).map(([n, id]) => [id, n]));
const NOW = new Date('2026-12-02T16:00:00Z');
const CATALOG = catalogOf(REPO, 'web', SPECS);

/** The decision with backup ids turned back into test names. */
function decideNamed(c: Catalog, r: Partial<KeepRules>) {
  const d = decideRetention(c, rules(r), { now: NOW });
  const named = (s: string) => s.replace(/\d{8}T\d{6}Z-[0-9a-f]{4}/g, (id) => NAME[id] ?? id);
  return {
    keep: Object.fromEntries(d.keep.map((k) => [named(k.id), k.reasons.map(named)])),
    remove: d.remove.map((p) => named(p.id)),
    chains: d.chains.map(named),
    staleBitmaps: d.staleBitmaps.map(named),
    unusable: d.unusable,
  };
}

describe('retention by restore point', () => {
  test('the schedule makes the chains it says (differentials never a parent)', () => {
    const parent = (n: string) => NAME[SPECS.find((s) => s.id === ID[n])!.parent ?? ''];
    assert.deepEqual(['A1', 'A2', 'B1', 'B2', 'B3', 'B4', 'B5'].map(parent), [
      'A0',
      'A1',
      'B0',
      'B1',
      'B2',
      'B2',
      'B4',
    ]);
  });

  test('keep last 2: the two newest, and every backup they read', () => {
    const d = decideNamed(CATALOG, { keepLast: 2 });
    assert.deepEqual(d.keep, {
      B5: ['last 1'],
      B4: ['last 2'],
      B2: ['needed by B5'],
      B1: ['needed by B5'],
      B0: ['needed by B5'],
    });
    assert.deepEqual(d.remove, ['B3', 'A2', 'A1', 'A0']);
    assert.deepEqual(d.chains, ['A0']);
    assert.deepEqual(d.staleBitmaps, [`quiesce-A0`, `quiesce-A1`]);
  });

  test('keep daily 3: the newest of each of the last three days that have one', () => {
    const d = decideNamed(CATALOG, { keepDaily: 3 });
    assert.deepEqual(d.keep, {
      B5: ['daily 2026-12-02'],
      B4: ['needed by B5'],
      B3: ['daily 2026-12-01'],
      B2: ['needed by B5'],
      B1: ['daily 2026-11-30'],
      B0: ['needed by B5'],
    });
    assert.deepEqual(d.remove, ['A2', 'A1', 'A0']);
  });

  test('keep weekly 3: the newest of each ISO week; an old differential keeps its chain', () => {
    const d = decideNamed(CATALOG, { keepWeekly: 3 });
    assert.deepEqual(d.keep, {
      B5: ['weekly 2026-W49'],
      B4: ['needed by B5'],
      B2: ['needed by B5'],
      B1: ['needed by B5'],
      B0: ['weekly 2026-W48'],
      A2: ['weekly 2026-W45'],
      A1: ['needed by A2'],
      A0: ['needed by A2'],
    });
    assert.deepEqual(d.remove, ['B3']);
    assert.deepEqual(d.chains, []);
    assert.deepEqual(d.staleBitmaps, [], 'a removed differential owns no bitmap');
  });

  test('keep monthly 3: the newest of each month; a differential in between goes, its bitmap stays', () => {
    const d = decideNamed(CATALOG, { keepMonthly: 3 });
    assert.deepEqual(Object.keys(d.keep), ['B5', 'B4', 'B2', 'B1', 'B0', 'A1', 'A0']);
    assert.deepEqual(d.keep['B1'], ['monthly 2026-11']);
    assert.deepEqual(d.keep['A1'], ['monthly 2026-10']);
    assert.deepEqual(d.keep['A0'], ['needed by A1']);
    assert.deepEqual(d.remove, ['B3', 'A2']);
    assert.deepEqual(d.staleBitmaps, []);
  });

  test('rules add up, and a point several rules select says so', () => {
    const d = decideNamed(CATALOG, { keepLast: 1, keepDaily: 1, keepWeekly: 1, keepMonthly: 1 });
    assert.deepEqual(d.keep['B5'], ['last 1', 'daily 2026-12-02', 'weekly 2026-W49', 'monthly 2026-12']);
  });

  test('a bitmap a kept point still uses is never stale (also when a chain shares one bitmap)', () => {
    const specs = scheduleBackups(
      'web',
      [
        ['full', '2026-09-29T02:00:00Z'],
        ['incremental', '2026-09-30T02:00:00Z'],
        ['incremental', '2026-10-01T02:00:00Z'],
        ['full', '2026-10-02T02:00:00Z'],
      ].map(([level, t]) => ({ level: level as Level, time: new Date(t!) })),
    ).map((s) => ({ ...s, bitmap: bitmapName(s.chain) }));
    const d = decideRetention(catalogOf(REPO, 'web', specs), rules({ keepMonthly: 2 }), { now: NOW });
    assert.deepEqual(
      d.remove.map((p) => p.id),
      [specs[2]!.id],
    );
    assert.deepEqual(d.staleBitmaps, []);
  });

  test('ISO weeks: Monday starts one; the first days of January can belong to the year before', () => {
    assert.equal(isoWeek(new Date('2026-11-29T23:59:59Z')), '2026-W48');
    assert.equal(isoWeek(new Date('2026-11-30T00:00:00Z')), '2026-W49');
    assert.equal(isoWeek(new Date('2027-01-03T12:00:00Z')), '2026-W53');
    assert.equal(isoWeek(new Date('2027-01-04T00:00:00Z')), '2027-W01');
  });

  test('rules that keep nothing are refused', () => {
    assert.throws(
      () => decideRetention(CATALOG, rules({}), { now: NOW }),
      (e: unknown) => e instanceof QuiesceError && e.code === 'CONFIG',
    );
  });

  test('an empty repository keeps and removes nothing', () => {
    const d = decideRetention(catalogOf(REPO, 'web', []), rules({ keepLast: 1 }), { now: NOW });
    assert.deepEqual(d, { keep: [], remove: [], unusable: [], chains: [], staleBitmaps: [] });
  });

  describe('unusable folders', () => {
    const at = (ms: number) => new Date(NOW.getTime() - ms);
    const oldFailed: BackupSpec = {
      guest: 'web',
      id: testBackupId(new Date('2026-11-25T02:00:00Z'), 0x100),
      level: 'incremental',
      chain: ID['B0']!,
      parent: ID['B0']!,
      complete: false,
      error: 'copy failed',
    };
    const youngUnfinished: BackupSpec = {
      guest: 'web',
      id: testBackupId(at(3_600_000), 0x101),
      level: 'incremental',
      chain: ID['B0']!,
      parent: ID['B4']!,
      manifest: false,
    };
    const youngFull = testBackupId(at(2 * 3_600_000), 0x102);
    const youngChain: BackupSpec = {
      guest: 'web',
      id: youngFull,
      level: 'full',
      chain: youngFull,
      parent: null,
      manifest: false,
    };
    const oldOrphanChain = testBackupId(new Date('2026-09-01T02:00:00Z'), 0x103);
    const orphan: BackupSpec = {
      guest: 'web',
      id: testBackupId(new Date('2026-09-02T02:00:00Z'), 0x104),
      level: 'incremental',
      chain: oldOrphanChain,
      parent: oldOrphanChain,
    };
    const catalog = catalogOf(REPO, 'web', [...SPECS, oldFailed, youngUnfinished, youngChain, orphan]);

    test('go once older than 24 hours, with their reason; younger ones (a run may be writing) stay', () => {
      const d = decideRetention(catalog, rules({ keepLast: 1 }), { now: NOW });
      assert.deepEqual(
        d.unusable.map((u) => [u.id, u.remove, u.why]),
        [
          [youngUnfinished.id, false, 'no manifest (unfinished, or its run died)'],
          [youngFull, false, 'no manifest (unfinished, or its run died)'],
          [oldFailed.id, true, 'incomplete'],
          [orphan.id, true, `its parent ${oldOrphanChain} is not a restore point`],
        ],
      );
      assert.ok(d.chains.includes(oldOrphanChain), 'the orphan’s chain goes with it');
      assert.ok(!d.chains.includes(youngFull), 'a chain a run is writing stays');
    });

    test('the grace time is strict: exactly 24 hours old stays', () => {
      const justNow = new Date(new Date(oldFailed.time ?? '2026-11-25T02:00:00Z').getTime() + UNUSABLE_GRACE_MS);
      const d = decideRetention(catalog, rules({ keepLast: 1 }), { now: justNow });
      assert.equal(d.unusable.find((u) => u.id === oldFailed.id)?.remove, false);
    });

    test('stale bitmaps: a removed failed run’s own, never one a folder left in place may use', () => {
      const d = decideRetention(catalog, rules({ keepLast: 1 }), { now: NOW });
      assert.ok(d.staleBitmaps.includes(bitmapName(oldFailed.id)));
      assert.ok(d.staleBitmaps.includes(bitmapName(orphan.id)));
      assert.ok(d.staleBitmaps.includes(bitmapName(oldOrphanChain)), 'the empty chain’s full');
      for (const young of [youngUnfinished.id, youngFull]) assert.ok(!d.staleBitmaps.includes(bitmapName(young)));
      assert.ok(!d.staleBitmaps.includes(bitmapName(ID['B4']!)), 'the base of the next incremental');
    });

    test('an empty chain folder goes once its id is older than 24 hours', () => {
      const empty = (id: string): Catalog => ({ ...CATALOG, chains: [...CATALOG.chains, id].sort() });
      const old = testBackupId(at(UNUSABLE_GRACE_MS + 1000), 0x105);
      const young = testBackupId(at(60_000), 0x106);
      assert.ok(decideRetention(empty(old), rules({ keepLast: 9 }), { now: NOW }).chains.includes(old));
      assert.ok(!decideRetention(empty(young), rules({ keepLast: 9 }), { now: NOW }).chains.includes(young));
    });
  });
});

// ---------------------------------------------------------------------------------------------
// Properties over random schedules and rules.

/** What the rules select, computed plainly: group by period, newest per group, newest N groups. */
function oracle(specs: readonly BackupSpec[], r: KeepRules): Set<string> {
  const newestFirst = [...specs].reverse();
  const out = new Set(newestFirst.slice(0, r.keepLast).map((s) => s.id));
  const periods: [number, (d: Date) => string][] = [
    [r.keepDaily, (d) => d.toISOString().slice(0, 10)],
    [r.keepWeekly, isoWeek],
    [r.keepMonthly, (d) => d.toISOString().slice(0, 7)],
  ];
  for (const [n, key] of periods) {
    const newestOf = new Map<string, string>();
    for (const s of newestFirst) {
      const k = key(new Date(s.time!));
      if (!newestOf.has(k)) newestOf.set(k, s.id);
    }
    for (const id of [...newestOf.values()].slice(0, n)) out.add(id);
  }
  return out;
}

test('property: the rules’ picks are kept, with everything they read, and nothing else', () => {
  fc.assert(
    fc.property(scheduleArb, keepRulesArb, (takes, r) => {
      const specs = scheduleBackups('g', takes);
      const catalog = catalogOf(REPO, 'g', specs);
      const d = decideRetention(catalog, r, { now: new Date(takes.at(-1)!.time.getTime() + 86_400_000) });
      const kept = new Set(d.keep.map((k) => k.id));
      const lineage = new Map(catalog.points.map((p) => [p.manifest.id, p.lineage]));
      const picked = oracle(specs, r);
      for (const id of picked) assert.ok(kept.has(id), `${id} is selected by a rule`);
      for (const id of kept) for (const a of lineage.get(id)!) assert.ok(kept.has(a), `${id} reads ${a}`);
      assert.ok(kept.has(specs.at(-1)!.id), 'the newest is kept');
      // Minimal: exactly the picks and their ancestors.
      assert.deepEqual(kept, new Set([...picked].flatMap((id) => lineage.get(id)!)));
      assert.deepEqual(new Set([...kept, ...d.remove.map((p) => p.id)]), new Set(specs.map((s) => s.id)));
      const keptChains = new Set(d.keep.map((k) => k.chain));
      assert.deepEqual(new Set(d.chains), new Set(catalog.chains.filter((c) => !keptChains.has(c))));
      const inUse = new Set(d.keep.map((k) => catalog.points.find((p) => p.manifest.id === k.id)!.manifest.bitmap));
      for (const b of d.staleBitmaps) assert.ok(!inUse.has(b), `${b} is read by a kept point`);
    }),
    { numRuns: 300 },
  );
});
