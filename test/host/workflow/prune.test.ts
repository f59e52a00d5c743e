import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, readdirSync, rmSync, utimesSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { KeepRules } from '../../../src/config/types.js';
import { decide, globToRegExp, prune, type PlannedPrune } from '../../../src/workflow/prune.js';
import { formatPlan, plan } from '../../../src/workflow/plan.js';
import { captureLogger } from '../../../src/log/logger.js';
import { testConfig } from '../../helpers/workflow-rig.js';

const day = (d: string, h = 2) => new Date(`${d}T0${h}:30:00Z`);
const files = [
  { name: 'a-1', mtime: day('2026-11-25') },
  { name: 'a-2', mtime: day('2026-11-24', 3) },
  { name: 'a-3', mtime: day('2026-11-24', 2) },
  { name: 'a-4', mtime: day('2026-11-23') },
  { name: 'a-5', mtime: day('2026-11-16') },
  { name: 'a-6', mtime: day('2026-11-09') },
  { name: 'a-7', mtime: day('2026-10-26') },
];
const rules = (r: Partial<KeepRules>): KeepRules => ({
  keepLast: 0,
  keepDaily: 0,
  keepWeekly: 0,
  keepMonthly: 0,
  ...r,
});

const cases: [string, Partial<KeepRules>, string[]][] = [
  ['keep last 2', { keepLast: 2 }, ['a-1', 'a-2']],
  ['keep daily 3 takes the newest of each of the last three days', { keepDaily: 3 }, ['a-1', 'a-2', 'a-4']],
  ['keep weekly 3 takes the newest of each ISO week', { keepWeekly: 3 }, ['a-1', 'a-5', 'a-6']],
  ['keep monthly 2 takes the newest of each month', { keepMonthly: 2 }, ['a-1', 'a-7']],
  ['rules add up', { keepLast: 1, keepDaily: 2, keepWeekly: 4 }, ['a-1', 'a-2', 'a-5', 'a-6', 'a-7']],
];

for (const [title, r, keep] of cases) {
  test(`retention: ${title}`, () => {
    const d = decide(files, rules(r));
    assert.deepEqual(d.keep.map((k) => k.name).sort(), keep);
    assert.deepEqual(
      [...d.remove].sort(),
      files.map((f) => f.name).filter((n) => !keep.includes(n)),
    );
  });
}

test('a kept file says which rules keep it', () => {
  const d = decide(files, rules({ keepLast: 1, keepWeekly: 2, keepMonthly: 1 }));
  assert.deepEqual(d.keep, [
    { name: 'a-1', reasons: ['last 1', 'weekly 2026-W48', 'monthly 2026-11'] },
    { name: 'a-5', reasons: ['weekly 2026-W47'] },
  ]);
});

test('match patterns are whole-name globs', () => {
  assert.ok(globToRegExp('web01-*.img').test('web01-20261125T023000Z.img'));
  assert.ok(!globToRegExp('web01-*.img').test('web011-x.img.bak'));
  assert.ok(!globToRegExp('a.img').test('aximg'));
});

test('a dry run lists and removes nothing; a real run removes exactly the listed files', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'prune-'));
  try {
    for (const f of files) {
      writeFileSync(join(dir, `${f.name}.img`), 'x');
      utimesSync(join(dir, `${f.name}.img`), f.mtime, f.mtime);
    }
    writeFileSync(join(dir, 'other-guest.img'), 'x');
    const log = captureLogger();
    const p: PlannedPrune = { ...rules({ keepLast: 2 }), dir, match: 'a-*.img', repository: undefined };
    const dry = await prune('a', p, { log, dryRun: true });
    assert.equal(dry.kind, 'files');
    assert.equal(readdirSync(dir).length, 8);
    assert.deepEqual(dry.remove.length, 5);
    const real = await prune('a', p, { log, dryRun: false });
    assert.deepEqual(real.remove, dry.remove);
    assert.deepEqual(readdirSync(dir).sort(), ['a-1.img', 'a-2.img', 'other-guest.img']);
    assert.ok(log.events.some((e) => e.kind === 'prune' && e.dryRun));
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

/** A job with guest `vm` whose qmp snapshot writes into a repository, with prune rules for it. */
function repositoryConfig(prune: Record<string, unknown>) {
  return testConfig({
    stateDir: '/var/tmp/quiesce-prune-test',
    guests: {
      vm: {
        snapshot: { provider: 'qmp', socket: '/run/vm.qmp', repository: '/srv/backups/{job}' },
        prune,
      },
    },
    jobs: { nightly: { guests: ['vm'] } },
  });
}

test('a guest with a repository plans its prune over the repository’s restore points, placeholders filled', async () => {
  const now = new Date('2026-12-02T02:00:00Z');
  const p = plan(repositoryConfig({ keepLast: 3, keepDaily: 7, keepMonthly: 6 }), 'nightly', { runId: 'r', now });
  const g = p.units[0]!.guests[0]!;
  assert.deepEqual(g.prune, {
    keepLast: 3,
    keepDaily: 7,
    keepWeekly: 0,
    keepMonthly: 6,
    dir: undefined,
    match: undefined,
    repository: '/srv/backups/nightly',
  });
  assert.match(
    await formatPlan(p),
    /\d+\. prune restore points in \/srv\/backups\/nightly: keep last 3, daily 7, weekly 0, monthly 6; a kept point keeps its parents\n/,
  );
});

test('a guest with backup files plans its prune over them; monthly shows when set', async () => {
  const c = testConfig({
    stateDir: '/var/tmp/quiesce-prune-test',
    guests: { vm: { prune: { dir: '/b', match: '{guest}-*.img', keepWeekly: 2, keepMonthly: 12 } } },
    jobs: { nightly: { guests: ['vm'] } },
  });
  const p = plan(c, 'nightly', { runId: 'r', now: new Date('2026-12-02T02:00:00Z') });
  assert.equal(p.units[0]!.guests[0]!.prune?.match, 'vm-*.img');
  assert.match(await formatPlan(p), /\d+\. prune \/b\/vm-\*\.img: keep last 0, daily 0, weekly 2, monthly 12\n/);
});
