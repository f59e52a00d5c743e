import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, readdirSync, rmSync, utimesSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { decide, globToRegExp, prune } from '../../../src/workflow/prune.js';
import { captureLogger } from '../../../src/log/logger.js';

const day = (d: string, h = 2) => new Date(`${d}T0${h}:30:00Z`);
const files = [
  { name: 'a-1', mtime: day('2026-11-25') },
  { name: 'a-2', mtime: day('2026-11-24', 3) },
  { name: 'a-3', mtime: day('2026-11-24', 2) },
  { name: 'a-4', mtime: day('2026-11-23') },
  { name: 'a-5', mtime: day('2026-11-16') },
  { name: 'a-6', mtime: day('2026-11-09') },
  { name: 'a-7', mtime: day('2026-11-02') },
];

const cases: [string, { keepLast: number; keepDaily: number; keepWeekly: number }, string[]][] = [
  ['keep last 2', { keepLast: 2, keepDaily: 0, keepWeekly: 0 }, ['a-1', 'a-2']],
  [
    'keep daily 3 takes the newest of each of the last three days',
    { keepLast: 0, keepDaily: 3, keepWeekly: 0 },
    ['a-1', 'a-2', 'a-4'],
  ],
  [
    'keep weekly 3 takes the newest of each ISO week',
    { keepLast: 0, keepDaily: 0, keepWeekly: 3 },
    ['a-1', 'a-5', 'a-6'],
  ],
  ['rules add up', { keepLast: 1, keepDaily: 2, keepWeekly: 4 }, ['a-1', 'a-2', 'a-5', 'a-6', 'a-7']],
];

for (const [title, rules, keep] of cases) {
  test(`retention: ${title}`, () => {
    const d = decide(files, rules);
    assert.deepEqual([...d.keep].sort(), keep);
    assert.deepEqual(
      [...d.remove].sort(),
      files.map((f) => f.name).filter((n) => !keep.includes(n)),
    );
  });
}

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
    const rules = { dir, match: 'a-*.img', keepLast: 2, keepDaily: 0, keepWeekly: 0, keepMonthly: 0 };
    const dry = await prune('a', rules, { log, dryRun: true });
    assert.equal(readdirSync(dir).length, 8);
    assert.deepEqual(dry.remove.length, 5);
    const real = await prune('a', rules, { log, dryRun: false });
    assert.deepEqual(real.remove, dry.remove);
    assert.deepEqual(readdirSync(dir).sort(), ['a-1.img', 'a-2.img', 'other-guest.img']);
    assert.ok(log.events.some((e) => e.kind === 'prune' && e.dryRun));
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
