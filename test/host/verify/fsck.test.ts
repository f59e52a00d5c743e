// Verify kind fsck on real qcow2 chains: ext4 images made with mkfs, corrupted on purpose in a NEW
// backup image on top (qemu-io), never in the original; the repository is never written but for the verdict.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync, spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { captureLogger } from '../../../src/log/logger.js';
import { findPoint, readCatalog } from '../../../src/repository/catalog.js';
import { backupRows } from '../../../src/repository/list.js';
import { writeMetrics } from '../../../src/report/metrics.js';
import { verifyAndRecord, verifyPoint } from '../../../src/verify/index.js';
import { GuestRun, type AgentFactory } from '../../../src/workflow/guest-run.js';
import { plan } from '../../../src/workflow/plan.js';
import type { RunReport } from '../../../src/workflow/results.js';
import { testConfig } from '../../helpers/workflow-rig.js';
import {
  ext4Image,
  fillImage,
  makeBackup,
  makeRepository,
  qemuToolsMissing,
  type MadeBackup,
} from '../../helpers/chain-images.js';

const MiB = 1 << 20;
const GUEST = 'web01';
const missing =
  qemuToolsMissing() ||
  (['mkfs.ext4', 'e2fsck', 'dumpe2fs', 'blkid', 'partx'].find((t) => spawnSync('which', [t]).status !== 0) ?? false);
const FSCK = { kind: 'fsck', timeoutMs: 120_000 } as const;

/** Byte offset of group 0's inode table, from dumpe2fs. */
function inodeTableOffset(raw: string): number {
  const out = execFileSync('dumpe2fs', [raw], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] });
  const block = Number(/^Block size:\s+(\d+)/m.exec(out)![1]);
  const first = Number(/Inode table at (\d+)-/.exec(out)![1]);
  return first * block;
}

const hashes = (repo: string): Map<string, string> => {
  const out = new Map<string, string>();
  const walk = (d: string): void => {
    for (const e of readdirSync(d, { withFileTypes: true }))
      if (e.isDirectory()) walk(join(d, e.name));
      else if (e.name.endsWith('.qcow2'))
        out.set(
          join(d, e.name),
          createHash('sha256')
            .update(readFileSync(join(d, e.name)))
            .digest('hex'),
        );
  };
  walk(repo);
  return out;
};

describe('verify fsck (src/verify/fsck.ts) on real chains', { skip: missing }, () => {
  let repo: string;
  let remove: () => Promise<void>;
  let work: string;
  let tmp: string;
  let good: MadeBackup;
  let broken: MadeBackup;
  let wiped: MadeBackup;
  let parted: MadeBackup;
  const log = captureLogger();

  before(async () => {
    ({ repo, remove } = await makeRepository());
    work = mkdtempSync(join(tmpdir(), 'verify-work-'));
    tmp = mkdtempSync(join(tmpdir(), 'verify-tmp-'));
    const raw = join(work, 'fs.raw');
    await ext4Image(raw, 32, { 'hello.txt': 'hello\n' });
    good = await makeBackup(repo, GUEST, {
      time: new Date('2026-03-01T01:00:00Z'),
      disks: [{ name: 'vda', size: 32 * MiB }],
    });
    await fillImage(good, raw);
    // Garbage over group 0's inode table (the root directory's inode among them), in a new incremental.
    broken = await makeBackup(repo, GUEST, {
      time: new Date('2026-03-02T01:00:00Z'),
      parent: good,
      writes: [{ disk: 'vda', pattern: 0xa5, offset: inodeTableOffset(raw), length: 64 * 1024 }],
    });
    // The superblock zeroed: blkid finds no filesystem at all.
    wiped = await makeBackup(repo, GUEST, {
      time: new Date('2026-03-03T01:00:00Z'),
      parent: good,
      writes: [{ disk: 'vda', pattern: 0, offset: 1024, length: 1024 }],
    });
    // A dos partition table: an ext4 partition (1 MiB on) and a swap-typed one with nothing in it.
    const disk = join(work, 'disk.raw');
    const mbr = Buffer.alloc(512);
    mbr[446 + 4] = 0x83;
    mbr.writeUInt32LE(2048, 446 + 8);
    mbr.writeUInt32LE(32768, 446 + 12);
    mbr[462 + 4] = 0x82;
    mbr.writeUInt32LE(34816, 462 + 8);
    mbr.writeUInt32LE(4096, 462 + 12);
    mbr[510] = 0x55;
    mbr[511] = 0xaa;
    writeFileSync(disk, mbr);
    execFileSync('truncate', ['-s', '24M', disk]);
    const part = join(work, 'part.raw');
    await ext4Image(part, 16, { 'hello.txt': 'partitioned\n' });
    execFileSync('dd', [`if=${part}`, `of=${disk}`, 'bs=1M', 'seek=1', 'conv=notrunc,sparse', 'status=none']);
    parted = await makeBackup(repo, 'db01', {
      time: new Date('2026-03-01T02:00:00Z'),
      disks: [{ name: 'vda', size: 24 * MiB }],
    });
    await fillImage(parted, disk);
  });

  after(async () => {
    await remove();
    rmSync(work, { recursive: true, force: true });
    rmSync(tmp, { recursive: true, force: true });
  });

  const point = async (guest: string, id: string) => findPoint(await readCatalog(repo, guest), id);

  test('a good point passes: its ext4 is clean (e2fsck -fn), and nothing is left in the temp folder', async () => {
    const r = await verifyPoint(await point(GUEST, good.id), FSCK, { log, tmpDir: tmp });
    assert.equal(r.ok, true, JSON.stringify(r.checks));
    assert.deepEqual(
      r.checks.map((c) => [c.name, c.ok, c.detail]),
      [['vda: ext4 (e2fsck -f -n)', true, 'clean']],
    );
    assert.deepEqual(readdirSync(tmp), []);
  });

  test('a point whose inode table was overwritten fails: e2fsck finds errors', async () => {
    const r = await verifyPoint(await point(GUEST, broken.id), FSCK, { log, tmpDir: tmp });
    assert.equal(r.ok, false);
    assert.equal(r.checks.length, 1);
    assert.equal(r.checks[0]!.name, 'vda: ext4 (e2fsck -f -n)');
    // 4: errors left uncorrected; 8/12: it could not even go on (the journal inode was hit too).
    assert.match(r.checks[0]!.detail ?? '', /e2fsck exited with status (4|8|12):/);
    assert.deepEqual(readdirSync(tmp), []);
  });

  test('a point whose superblock was zeroed fails: no filesystem and no partition table', async () => {
    const r = await verifyPoint(await point(GUEST, wiped.id), FSCK, { log, tmpDir: tmp });
    assert.equal(r.ok, false);
    assert.deepEqual(
      r.checks.map((c) => [c.name, c.ok]),
      [['vda', false]],
    );
    assert.match(r.checks[0]!.detail!, /neither a filesystem nor a partition table/);
  });

  test('a partitioned disk: each partition is checked, one without a checker is listed as not checked', async () => {
    const r = await verifyPoint(await point('db01', parted.id), FSCK, { log, tmpDir: tmp });
    assert.equal(r.ok, true, JSON.stringify(r.checks));
    assert.deepEqual(
      r.checks.map((c) => [c.name, c.ok]),
      [
        ['vda partition 1: ext4 (e2fsck -f -n)', true],
        ['vda partition 2', true],
      ],
    );
    assert.match(r.checks[1]!.detail!, /not checked: no filesystem \(partition type 0x82\)/);
    assert.deepEqual(readdirSync(tmp), []);
  });

  test('verifying never changes an image of the repository; the verdict lands in the manifest and in quiesce backups', async () => {
    const before = hashes(repo);
    await verifyAndRecord(await point(GUEST, good.id), FSCK, { log, tmpDir: tmp });
    await verifyAndRecord(await point(GUEST, broken.id), FSCK, { log, tmpDir: tmp });
    assert.deepEqual(hashes(repo), before);
    const c = await readCatalog(repo, GUEST);
    assert.equal(c.unusable.length, 0, 'manifests stay valid');
    const rows = new Map(backupRows(c, false).map((r) => [r.id, r.verified]));
    assert.equal(rows.get(good.id), 'ok');
    assert.equal(rows.get(broken.id), 'failed');
    assert.equal(rows.get(wiped.id), null);
    const m = findPoint(c, broken.id).manifest.verified!;
    assert.equal(m.how, 'fsck');
    assert.equal(m.checks?.[0]?.ok, false);
    assert.ok(typeof m.durationMs === 'number');
  });

  test('an abort stops the check at once and removes the temporary files: INTERRUPTED', async () => {
    const ac = new AbortController();
    const p = verifyPoint(await point(GUEST, good.id), FSCK, { log, tmpDir: tmp, signal: ac.signal });
    setTimeout(() => ac.abort(), 30);
    await assert.rejects(p, (err: Error & { code?: string }) => err.code === 'INTERRUPTED');
    assert.deepEqual(readdirSync(tmp), []);
  });

  /** A run's GuestRun for `guest` with verify kind fsck, as if its snapshot step had made backup `id`. */
  const runWith = (guest: string, id: string | undefined, verify: unknown = { kind: 'fsck' }) => {
    const config = testConfig({
      stateDir: tmp,
      guests: { [guest]: { snapshot: { provider: 'qmp', socket: '/nonexistent/q.sock', repository: repo }, verify } },
      jobs: { j: { guests: [guest] } },
    });
    const g = plan(config, 'j', { runId: 'r1', now: new Date() }).units[0]!.guests[0]!;
    const noAgent: AgentFactory = () => {
      throw new Error('not used');
    };
    const run = new GuestRun(g, guest, log, noAgent, 0);
    if (id !== undefined)
      run.result.backup = {
        repository: repo,
        id,
        chain: good.chain,
        level: 'incremental',
        parent: null,
        reason: 'test',
      };
    return { run, g };
  };

  test("a run's verify step of kind fsck verifies the backup the run made: result, report, metrics, manifest", async () => {
    const ok = runWith(GUEST, good.id);
    await ok.run.verify(ok.g.verify!, new AbortController().signal);
    assert.equal(ok.run.result.verify?.kind, 'fsck');
    assert.equal(ok.run.result.verify?.ok, true);
    assert.equal(ok.run.result.verify?.backup, good.id);
    assert.deepEqual(
      ok.run.result.steps.map((s) => [s.name, s.ok]),
      [['verify', true]],
    );
    const bad = runWith(GUEST, broken.id);
    await assert.rejects(
      bad.run.verify(bad.g.verify!, new AbortController().signal),
      /fsck of backup .* failed: vda: ext4/,
    );
    assert.equal(bad.run.result.verify?.ok, false);
    assert.equal(bad.run.result.errors[0]?.step, 'verify');
    const c = await readCatalog(repo, GUEST);
    assert.equal(findPoint(c, broken.id).manifest.verified?.ok, false);
    const at = new Date().toISOString();
    const report: RunReport = {
      runId: 'r1',
      job: 'j',
      configSource: 'test',
      budgetMs: 1000,
      startedAt: at,
      endedAt: at,
      durationMs: 1,
      exitCode: 1,
      recovered: [],
      errors: [],
      units: [],
      guests: [ok.run.result, { ...bad.run.result, guest: 'web02' }],
    };
    const file = join(tmp, 'metrics.prom');
    writeMetrics(file, report);
    const text = readFileSync(file, 'utf8');
    rmSync(file);
    assert.match(text, /^quiesce_verify_success\{job="j",guest="web01",kind="fsck"\} 1$/m);
    assert.match(text, /^quiesce_verify_success\{job="j",guest="web02",kind="fsck"\} 0$/m);
    assert.match(text, /^quiesce_verify_duration_seconds\{job="j",guest="web01",kind="fsck"\} [\d.]+$/m);
  });

  test("a run's verify of kind fsck fails when the run made no backup; a command verify reports kind command", async () => {
    const none = runWith(GUEST, undefined);
    await assert.rejects(
      none.run.verify(none.g.verify!, new AbortController().signal),
      /needs a backup in a repository/,
    );
    // A verify that cannot even run (here: the backup is not in the repository) is a failed verify too.
    const gone = runWith(GUEST, '20200101T000000Z-dead');
    await assert.rejects(gone.run.verify(gone.g.verify!, new AbortController().signal), /20200101T000000Z-dead/);
    assert.equal(gone.run.result.verify?.kind, 'fsck');
    assert.equal(gone.run.result.verify?.ok, false);
    const cmd = runWith(GUEST, undefined, { argv: ['false'] });
    await assert.rejects(cmd.run.verify(cmd.g.verify!, new AbortController().signal));
    assert.equal(cmd.run.result.verify?.kind, 'command');
    assert.equal(cmd.run.result.verify?.ok, false);
  });

  test('a timeout fails the verify (recorded as a failed check), not the caller', async () => {
    const r = await verifyPoint(await point(GUEST, good.id), { kind: 'fsck', timeoutMs: 1 }, { log, tmpDir: tmp });
    assert.equal(r.ok, false);
    assert.equal(r.checks.at(-1)?.name, 'timeout');
    assert.deepEqual(readdirSync(tmp), []);
  });
});
