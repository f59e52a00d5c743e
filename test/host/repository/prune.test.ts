import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import fc from 'fast-check';
import type { KeepRules } from '../../../src/config/types.js';
import { captureLogger } from '../../../src/log/logger.js';
import { readCatalog } from '../../../src/repository/catalog.js';
import { bitmapName, guestDir, STALE_BITMAPS } from '../../../src/repository/layout.js';
import { pruneRepository, type RepositoryPrune } from '../../../src/repository/prune.js';
import {
  keepRulesArb,
  scheduleArb,
  scheduleBackups,
  testBackupId,
  writeBackup,
  type BackupSpec,
} from '../../helpers/repository.js';

const rules = (r: Partial<KeepRules>): KeepRules => ({
  keepLast: 0,
  keepDaily: 0,
  keepWeekly: 0,
  keepMonthly: 0,
  ...r,
});
const ROOT = fileURLToPath(new URL('../../../', import.meta.url));

/** Every path under `dir`, sorted: what a run may not change. */
function listing(dir: string): string[] {
  return readdirSync(dir, { recursive: true, encoding: 'utf8' }).sort();
}

/** Daily backups from 2026-11-20: a full, then incrementals, a differential each evening, a new chain on 11-27. */
function nightly(guest: string): BackupSpec[] {
  const takes: { level: 'full' | 'incremental' | 'differential'; time: Date }[] = [];
  for (let d = 20; d <= 30; d++) {
    takes.push({ level: d === 20 || d === 27 ? 'full' : 'incremental', time: new Date(Date.UTC(2026, 10, d, 2)) });
    takes.push({ level: 'differential', time: new Date(Date.UTC(2026, 10, d, 14)) });
  }
  return scheduleBackups(guest, takes);
}
const NOW = new Date('2026-12-01T00:00:00Z');

describe('pruneRepository', () => {
  let dir: string;
  let repo: string;
  let specs: BackupSpec[];
  const failed = (s: Partial<BackupSpec> & { id: string }): BackupSpec => ({
    guest: 'web',
    level: 'incremental',
    chain: specs.at(-1)!.chain,
    parent: specs.at(-2)!.id,
    ...s,
  });

  before(() => {
    dir = mkdtempSync(join(tmpdir(), 'repo-prune-'));
  });
  after(() => rmSync(dir, { recursive: true, force: true }));

  /** A fresh repository with the nightly schedule of guest web. */
  function fresh(name: string): void {
    repo = join(dir, name);
    specs = nightly('web');
    for (const s of specs) writeBackup(repo, s);
  }

  test('a dry run decides and changes nothing', async () => {
    fresh('dry');
    writeBackup(repo, failed({ id: testBackupId(new Date('2026-11-28T03:00:00Z'), 0x900), complete: false }));
    const beforeRun = listing(repo);
    const log = captureLogger();
    const d = await pruneRepository(repo, 'web', rules({ keepLast: 2 }), { log, dryRun: true, now: NOW });
    assert.deepEqual(listing(repo), beforeRun);
    assert.equal(d.dryRun, true);
    assert.ok(d.remove.length > 0 && d.unusable.some((u) => u.remove));
    assert.ok(d.bytesFreed > 0, 'counted from the folders to remove');
    assert.ok(log.events.some((e) => e.kind === 'prune' && e.dryRun && e.removed.length > 0));
  });

  test('a real run removes exactly the decided folders and emptied chains; the kept ones stay restore points', async () => {
    fresh('real');
    const d = await pruneRepository(repo, 'web', rules({ keepLast: 1, keepDaily: 2 }), {
      log: captureLogger(),
      dryRun: false,
      now: NOW,
    });
    const older = specs[0]!.chain;
    assert.deepEqual(d.chains, [older], 'the first chain has nothing kept');
    assert.ok(!existsSync(join(guestDir(repo, 'web'), older)));
    for (const p of d.remove) assert.ok(!existsSync(p.dir), `${p.id} is gone`);
    const c = await readCatalog(repo, 'web');
    assert.deepEqual(
      c.points.map((p) => p.manifest.id).reverse(),
      d.keep.map((k) => k.id),
    );
    assert.deepEqual(c.unusable, []);
  });

  test('unusable folders go once older than 24 hours; younger ones and their chain stay', async () => {
    fresh('unusable');
    const old = failed({ id: testBackupId(new Date('2026-11-29T03:00:00Z'), 0x901), manifest: false });
    const young = failed({ id: testBackupId(new Date(NOW.getTime() - 3_600_000), 0x902), manifest: false });
    for (const s of [old, young]) writeBackup(repo, s);
    const d = await pruneRepository(repo, 'web', rules({ keepLast: 1 }), {
      log: captureLogger(),
      dryRun: false,
      now: NOW,
    });
    assert.deepEqual(
      d.unusable.map((u) => [u.id, u.remove]),
      [
        [young.id, false],
        [old.id, true],
      ],
    );
    const c = await readCatalog(repo, 'web');
    assert.deepEqual(
      c.unusable.map((u) => u.id),
      [young.id],
    );
  });

  test('stale bitmaps are merged into the guest’s list, each once, sorted; the kept ones’ are never listed', async () => {
    fresh('bitmaps');
    const file = join(guestDir(repo, 'web'), STALE_BITMAPS);
    writeFileSync(file, JSON.stringify(['quiesce-left-from-before', bitmapName(specs[0]!.id)]));
    const d = await pruneRepository(repo, 'web', rules({ keepLast: 1 }), {
      log: captureLogger(),
      dryRun: false,
      now: NOW,
    });
    const listed = JSON.parse(readFileSync(file, 'utf8')) as string[];
    const removedOwners = d.remove.filter((p) => p.level !== 'differential').map((p) => bitmapName(p.id));
    assert.deepEqual(listed, [...new Set(['quiesce-left-from-before', ...removedOwners])].sort());
    for (const k of d.keep.filter((k) => k.level !== 'differential'))
      assert.ok(!listed.includes(bitmapName(k.id)), `${k.id}'s bitmap is kept`);
    assert.deepEqual(
      readdirSync(guestDir(repo, 'web')).filter((n) => n.includes('tmp')),
      [],
      'no temp file left',
    );
  });

  test('a stale-bitmaps file that is not a list of names stops the prune before anything is removed', async () => {
    fresh('bad-list');
    writeFileSync(join(guestDir(repo, 'web'), STALE_BITMAPS), '{"not": "a list"}');
    const beforeRun = listing(repo);
    await assert.rejects(
      pruneRepository(repo, 'web', rules({ keepLast: 1 }), { log: captureLogger(), dryRun: false, now: NOW }),
      (e: Error & { code?: string }) => e.code === 'REPOSITORY',
    );
    assert.deepEqual(listing(repo), beforeRun);
  });

  test('a chain folder something else appeared in stays, with a warning', async () => {
    fresh('busy-chain');
    writeFileSync(join(guestDir(repo, 'web'), specs[0]!.chain, 'note.txt'), 'hands off');
    const log = captureLogger();
    await pruneRepository(repo, 'web', rules({ keepLast: 1 }), { log, dryRun: false, now: NOW });
    assert.deepEqual(readdirSync(join(guestDir(repo, 'web'), specs[0]!.chain)), ['note.txt']);
    assert.ok(log.events.some((e) => e.kind === 'warning' && e.message.includes('left')));
  });

  test('property: after a prune, re-reading finds exactly the kept points, all restorable, nothing unusable', async () => {
    let n = 0;
    await fc.assert(
      fc.asyncProperty(scheduleArb, keepRulesArb, fc.array(fc.nat(), { maxLength: 3 }), async (takes, r, fails) => {
        const at = join(dir, `prop-${n++}`);
        try {
          const all = scheduleBackups('g', takes).map((s, i) =>
            fails.some((f) => i > 0 && f % takes.length === i) ? { ...s, complete: false } : s,
          );
          for (const s of all) writeBackup(at, s);
          const newest = (await readCatalog(at, 'g')).points.at(-1);
          const now = new Date(takes.at(-1)!.time.getTime() + 2 * 86_400_000);
          const d: RepositoryPrune = await pruneRepository(at, 'g', r, { log: captureLogger(), dryRun: false, now });
          const c = await readCatalog(at, 'g');
          assert.deepEqual(c.points.map((p) => p.manifest.id).sort(), d.keep.map((k) => k.id).sort());
          assert.deepEqual(c.unusable, []);
          assert.deepEqual(c.chains, [...new Set(d.keep.map((k) => k.chain))].sort());
          assert.equal(d.keep[0]?.id, newest?.manifest.id, 'the newest restore point is kept');
          const stale = join(guestDir(at, 'g'), STALE_BITMAPS);
          assert.deepEqual(existsSync(stale) ? JSON.parse(readFileSync(stale, 'utf8')) : [], [...d.staleBitmaps]);
        } finally {
          rmSync(at, { recursive: true, force: true });
        }
      }),
      { numRuns: 40 },
    );
  });
});

describe('quiesce prune (CLI, through tsx)', () => {
  let dir: string;
  let cfg: string;
  let repo: string;

  before(() => {
    dir = mkdtempSync(join(tmpdir(), 'cli-prune-'));
    repo = join(dir, 'repo');
    for (const s of nightly('vm')) writeBackup(repo, s);
    mkdirSync(join(dir, 'state'));
    cfg = join(dir, 'quiesce.config.json');
    writeFileSync(
      cfg,
      JSON.stringify({
        stateDir: join(dir, 'state'),
        guests: {
          vm: {
            connector: { type: 'socket', path: join(dir, 'vm.sock') },
            freeze: ['/data'],
            snapshot: { provider: 'qmp', socket: join(dir, 'vm.qmp'), repository: repo },
            prune: { keepLast: 1, keepDaily: 2 },
          },
        },
        jobs: { nightly: { guests: ['vm'] } },
      }),
    );
  });
  after(() => rmSync(dir, { recursive: true, force: true }));

  function quiesce(args: string[]) {
    const r = spawnSync(process.execPath, ['--import', 'tsx', join(ROOT, 'src/bin.ts'), '-c', cfg, ...args], {
      cwd: ROOT,
      encoding: 'utf8',
      timeout: 60_000,
    });
    return { code: r.status, stdout: r.stdout, stderr: r.stderr };
  }

  test('--dry-run lists what is kept and why, and what would go; nothing changes', () => {
    const beforeRun = listing(repo);
    const r = quiesce(['prune', '--dry-run']);
    assert.equal(r.code, 0, r.stderr);
    const lines = r.stdout.trimEnd().split('\n');
    assert.equal(lines[0], `vm: restore points in ${repo}`);
    // The newest is the evening differential of 11-30; the 11-29 one is the newest of its day.
    assert.match(
      lines[1]!,
      /^ {2}keep 20261130T140000Z-\w{4} \(differential, 2026-11-30T14:00:00\.000Z\): last 1, daily 2026-11-30$/,
    );
    assert.match(r.stdout, /\n {2}keep 20261129T140000Z-\w{4} \(differential, [^)]+\): daily 2026-11-29\n/);
    assert.match(r.stdout, /\n {2}keep 20261127T020000Z-\w{4} \(full, [^)]+\): needed by 20261130T140000Z-\w{4}\n/);
    assert.match(r.stdout, /\n {2}would remove 20261128T140000Z-\w{4} \(differential, [^)]+\)\n/);
    assert.match(r.stdout, /\n {2}would remove chain 20261120T020000Z-\w{4} \(nothing in it is kept\)\n/);
    assert.match(r.stdout, /\n {2}bitmaps for the next backup to remove from QEMU: quiesce-20261120T020000Z-\w{4}, /);
    assert.match(r.stdout, /\n {2}would free \d/);
    assert.deepEqual(listing(repo), beforeRun);
  });

  test('--json prints the decision objects', () => {
    const r = quiesce(['--json', 'prune', '--dry-run']);
    assert.equal(r.code, 0, r.stderr);
    const [d] = JSON.parse(r.stdout) as RepositoryPrune[];
    assert.equal(d!.kind, 'repository');
    assert.equal(d!.guest, 'vm');
    assert.equal(d!.dryRun, true);
    assert.deepEqual(d!.keep[0]!.reasons, ['last 1', 'daily 2026-11-30']);
    assert.ok(d!.remove.length > 0);
  });
});
