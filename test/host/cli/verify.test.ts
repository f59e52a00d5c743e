// `quiesce verify` through the CLI binary on real qcow2 chains (kind fsck), and `quiesce backups` showing the verdict.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import {
  ext4Image,
  fillImage,
  makeBackup,
  makeRepository,
  qemuToolsMissing,
  type MadeBackup,
} from '../../helpers/chain-images.js';

// The built CLI when dist has this command; the source through tsx otherwise.
const DIST = fileURLToPath(new URL('../../../dist/src/bin.js', import.meta.url));
const SRC = fileURLToPath(new URL('../../../src/bin.ts', import.meta.url));
const BIN_ARGS = existsSync(DIST.replace(/bin\.js$/, 'cli/verify.js')) ? [DIST] : ['--import', 'tsx', SRC];

function quiesce(args: string[]): { code: number | null; stdout: string; stderr: string } {
  const r = spawnSync(process.execPath, [...BIN_ARGS, ...args], { encoding: 'utf8', timeout: 120_000 });
  return { code: r.status, stdout: r.stdout, stderr: r.stderr };
}

const missing = qemuToolsMissing() || (spawnSync('which', ['e2fsck']).status !== 0 ? 'needs e2fsck' : false);

describe('quiesce verify (CLI)', { skip: missing }, () => {
  let repo: string;
  let remove: () => Promise<void>;
  let work: string;
  let good: MadeBackup;
  let wiped: MadeBackup;
  let config: string;

  before(async () => {
    ({ repo, remove } = await makeRepository());
    work = await mkdtemp(join(tmpdir(), 'verify-cli-'));
    const raw = join(work, 'fs.raw');
    await ext4Image(raw, 16, { 'a.txt': 'a\n' });
    good = await makeBackup(repo, 'web01', {
      time: new Date('2026-03-01T01:00:00Z'),
      disks: [{ name: 'vda', size: 16 << 20 }],
    });
    await fillImage(good, raw);
    wiped = await makeBackup(repo, 'web01', {
      time: new Date('2026-03-02T01:00:00Z'),
      parent: good,
      writes: [{ disk: 'vda', pattern: 0, offset: 1024, length: 1024 }],
    });
    config = join(work, 'quiesce.config.yaml');
    const guest = (name: string, verify: string) =>
      [
        `    connector: { type: socket, path: /nonexistent/${name}.sock }`,
        `    freeze: all`,
        `    snapshot: { provider: qmp, socket: /nonexistent/q.sock, repository: ${repo} }`,
        `    verify: ${verify}`,
      ].join('\n');
    await writeFile(
      config,
      [
        `stateDir: ${join(work, 'state')}`,
        'guests:',
        '  web01:',
        guest('web01', '{ kind: fsck, timeout: 2m }'),
        '  db01:',
        guest('db01', "{ argv: ['true'] }"),
        'jobs:',
        '  nightly: { guests: [web01, db01] }',
        '',
      ].join('\n'),
    );
  });

  after(async () => {
    await remove();
    await rm(work, { recursive: true, force: true });
  });

  test('the newest point by default, its configured kind: exit 3 when it fails, each check printed', () => {
    const r = quiesce(['-c', config, 'verify', 'web01']);
    assert.equal(r.code, 3, r.stderr);
    assert.match(r.stdout, new RegExp(`^FAILED: fsck of web01 backup ${wiped.id} in [\\d.]+ s$`, 'm'));
    assert.match(r.stdout, /^ {2}FAIL {2}vda: neither a filesystem nor a partition table found \(blkid\)$/m);
  });

  test('--at a good point with --repository and --kind fsck (no config): exit 0; --json gives the result', () => {
    const r = quiesce(['--json', 'verify', 'web01', '--repository', repo, '--kind', 'fsck', '--at', good.id]);
    assert.equal(r.code, 0, r.stderr);
    const j = JSON.parse(r.stdout) as { ok: boolean; kind: string; id: string; checks: { name: string }[] };
    assert.equal(j.ok, true);
    assert.equal(j.kind, 'fsck');
    assert.equal(j.id, good.id);
    assert.deepEqual(
      j.checks.map((c) => c.name),
      ['vda: ext4 (e2fsck -f -n)'],
    );
  });

  test('the verdicts are in the manifests, and quiesce backups shows them', async () => {
    const m = JSON.parse(await readFile(join(good.dir, 'manifest.json'), 'utf8')) as { verified?: { ok: boolean } };
    assert.equal(m.verified?.ok, true);
    const r = quiesce(['backups', 'web01', '--repository', repo]);
    assert.equal(r.code, 0, r.stderr);
    const verified = (id: string) =>
      r.stdout
        .split('\n')
        .find((l) => l.includes(id))
        ?.trim()
        .split(/\s+/)
        .at(-1);
    assert.equal(verified(good.id), 'ok');
    assert.equal(verified(wiped.id), 'failed');
  });

  test('a guest whose verify is a command needs --kind: exit 2 naming the key', () => {
    const r = quiesce(['-c', config, 'verify', 'db01']);
    assert.equal(r.code, 2);
    assert.match(r.stderr, /guests\.db01\.verify is a command .*pass --kind fsck/);
    const boot = quiesce(['-c', config, 'verify', 'db01', '--kind', 'boot']);
    assert.equal(boot.code, 2);
    assert.match(boot.stderr, /--kind boot needs the boot settings/);
  });

  test('an unknown guest: exit 2 naming the guests there are', () => {
    const r = quiesce(['-c', config, 'verify', 'nosuchguest', '--kind', 'fsck']);
    assert.equal(r.code, 2);
    assert.match(r.stderr, /no guest named 'nosuchguest' \(guests: .*db01/);
  });
});
