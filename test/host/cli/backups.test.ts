// `quiesce backups` and `quiesce restore` end to end through the CLI binary, on real qcow2 chains.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdir, readdir, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { makeBackup, makeRepository, qemuToolsMissing, type MadeBackup } from '../../helpers/chain-images.js';

// The built CLI as the other CLI tests use it (npm test builds first); the source through tsx when
// dist predates these commands.
const DIST = fileURLToPath(new URL('../../../dist/src/bin.js', import.meta.url));
const SRC = fileURLToPath(new URL('../../../src/bin.ts', import.meta.url));
const BIN_ARGS = existsSync(DIST.replace(/bin\.js$/, 'cli/progress.js')) ? [DIST] : ['--import', 'tsx', SRC];

interface Result {
  code: number | null;
  stdout: string;
  stderr: string;
}

function quiesce(args: string[]): Result {
  const r = spawnSync(process.execPath, [...BIN_ARGS, ...args], { encoding: 'utf8', timeout: 60_000 });
  return { code: r.status, stdout: r.stdout, stderr: r.stderr };
}

const MiB = 1 << 20;

/** A pattern with ESC for the escape character (a regex literal may not hold control characters). */
const ansi = (source: string): RegExp => new RegExp(source.replaceAll('ESC', '\x1b'));
const havePty = spawnSync('python3', ['-c', 'import pty']).status === 0;

describe('quiesce backups / restore (CLI)', { skip: qemuToolsMissing() }, () => {
  let base: string;
  let remove: () => Promise<void>;
  let repo: string;
  let full: MadeBackup;
  let inc1: MadeBackup;
  let inc2: MadeBackup;
  let unfinished: MadeBackup;
  let config: string;

  before(async () => {
    ({ repo: base, remove } = await makeRepository());
    // The config's repository is BASE/{job}: job nightly is the only one with web1.
    repo = join(base, 'nightly');
    full = await makeBackup(repo, 'web1', {
      time: new Date('2026-03-01T01:00:00Z'),
      disks: [{ name: 'vda', size: 8 * MiB }],
      writes: [{ disk: 'vda', pattern: 0x41, offset: 0, length: 2 * MiB }],
      manifest: { verified: { ok: true, at: '2026-03-01T01:05:00Z', how: 'fsck' } },
    });
    inc1 = await makeBackup(repo, 'web1', {
      time: new Date('2026-03-02T01:00:00Z'),
      parent: full,
      writes: [{ disk: 'vda', pattern: 0x42, offset: 4 * MiB, length: MiB }],
      manifest: { verified: { ok: false, at: '2026-03-02T01:05:00Z', how: 'fsck' } },
    });
    inc2 = await makeBackup(repo, 'web1', { time: new Date('2026-03-03T01:00:00Z'), parent: inc1 });
    // An unfinished one: not a restore point.
    unfinished = await makeBackup(repo, 'web1', {
      time: new Date('2026-03-04T01:00:00Z'),
      parent: inc2,
      manifest: false,
    });
    config = join(base, 'quiesce.json');
    await writeFile(config, JSON.stringify(configWith({ nightly: { guests: ['web1', 'db'] } })));
  });
  after(async () => {
    await remove?.();
  });

  function configWith(jobs: Record<string, unknown>) {
    return {
      stateDir: join(base, 'state'),
      guests: {
        web1: {
          connector: { type: 'socket', path: '/run/web1/qga.sock' },
          freeze: ['/data'],
          snapshot: { provider: 'qmp', socket: '/run/web1/qmp.sock', repository: join(base, '{job}') },
        },
        db: {
          connector: { type: 'socket', path: '/run/db/qga.sock' },
          freeze: ['/data'],
          snapshot: { provider: 'command', argv: ['true'] },
        },
      },
      jobs,
    };
  }

  test('backups prints an aligned table, newest last, from --repository without a config', () => {
    const r = quiesce(['backups', 'web1', '--repository', repo]);
    assert.equal(r.code, 0, r.stderr);
    const lines = r.stdout.trimEnd().split('\n');
    assert.match(lines[0]!, /^GUEST +ID +TIME +LEVEL +CHAIN +DISKS +BYTES +CONSISTENCY +VERIFIED$/);
    assert.equal(lines.length, 4);
    assert.ok(lines[1]!.includes(full.id) && lines[3]!.includes(inc2.id), r.stdout);
    assert.match(lines[1]!, /full .* vda 8 MiB .* filesystem +ok$/);
    assert.match(lines[2]!, /incremental .* failed$/);
    assert.match(lines[3]!, /incremental .* -$/);
    // Columns line up: every row's ID starts where the header's does.
    const at = lines[0]!.indexOf('ID');
    for (const l of lines.slice(1)) assert.match(l.slice(at), /^\d{8}T/);
  });

  test('backups --json from the config fills {job} from the only job with the guest', () => {
    const r = quiesce(['backups', 'web1', '--config', config, '--json']);
    assert.equal(r.code, 0, r.stderr);
    const rows = JSON.parse(r.stdout) as Record<string, unknown>[];
    assert.deepEqual(
      rows.map((x) => x['id']),
      [full.id, inc1.id, inc2.id],
    );
    assert.deepEqual(rows[0], {
      guest: 'web1',
      id: full.id,
      time: '2026-03-01T01:00:00.000Z',
      level: 'full',
      chain: full.id,
      parent: null,
      disks: [{ name: 'vda', virtualSize: 8 * MiB }],
      bytes: full.manifest.disks[0]!.bytesWritten,
      consistency: 'filesystem',
      verified: 'ok',
      usable: true,
      repository: repo,
    });
  });

  test('backups without GUEST lists every guest with a repository; --all adds unusable folders and why', () => {
    const r = quiesce(['backups', '--config', config, '--all']);
    assert.equal(r.code, 0, r.stderr);
    const lines = r.stdout.trimEnd().split('\n');
    assert.match(lines[0]!, / STATUS$/);
    assert.equal(lines.length, 5);
    assert.match(lines[4]!, /^web1 .* UNUSABLE: no manifest/);
    assert.ok(!r.stdout.includes('db '), 'db has no repository');
  });

  test('config errors exit 2 (a guest without repository, {job} ambiguous, no GUEST for --repository); a missing --repository 3', async () => {
    let r = quiesce(['backups', 'db', '--config', config]);
    assert.equal(r.code, 2);
    assert.match(r.stderr, /guest 'db' has no repository .*pass --repository DIR/);

    const two = join(base, 'two-jobs.json');
    await writeFile(two, JSON.stringify(configWith({ nightly: { guests: ['web1'] }, weekly: { guests: ['web1'] } })));
    r = quiesce(['backups', 'web1', '--config', two]);
    assert.equal(r.code, 2);
    assert.match(r.stderr, /uses \{job\}, and the guest is in jobs nightly, weekly: pass --job JOB/);
    r = quiesce(['backups', 'web1', '--config', two, '--job', 'nightly', '--json']);
    assert.equal(r.code, 0, r.stderr);
    assert.equal((JSON.parse(r.stdout) as unknown[]).length, 3);

    r = quiesce(['backups', 'web1', '--repository', join(base, 'typo')]);
    assert.equal(r.code, 3);
    assert.match(r.stderr, /--repository .*typo: no such folder/);

    r = quiesce(['backups', '--repository', repo]);
    assert.equal(r.code, 2);
    assert.match(r.stderr, /needs a GUEST \(.* holds web1\)/);
  });

  test('restore writes the newest point as raw, reads it back, and prints what it wrote', async () => {
    const to = join(base, 'out-newest');
    const r = quiesce(['restore', 'web1', '--to', to, '--config', config]);
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, new RegExp(`restored web1 backup ${inc2.id} \\(incremental, .*3 backups read`));
    assert.match(r.stdout, /vda\.raw +raw +8 MiB/);
    assert.match(r.stdout, /equal to the backup/);
    // Off a terminal no progress line: `progress` log events at most (one per 10 s).
    const lines = r.stderr.split('\n').filter(Boolean);
    assert.ok(lines.length <= 1, r.stderr);
    for (const l of lines) assert.equal((JSON.parse(l) as { kind: string }).kind, 'progress');
    assert.doesNotMatch(r.stderr, /\r/);
    assert.ok((await readFile(join(to, 'vda.raw'))).equals(inc2.expected.get('vda')!));
  });

  test('restore --at ID --format qcow2 --json; a second restore there refuses and changes nothing', async () => {
    const to = join(base, 'out-at');
    let r = quiesce([
      'restore',
      'web1',
      '--to',
      to,
      '--repository',
      repo,
      '--at',
      full.id,
      '--format',
      'qcow2',
      '--json',
    ]);
    assert.equal(r.code, 0, r.stderr);
    const out = JSON.parse(r.stdout) as { id: string; disks: { path: string; format: string }[]; lineage: string[] };
    assert.equal(out.id, full.id);
    assert.deepEqual(out.lineage, [full.id]);
    assert.deepEqual(
      out.disks.map((d) => [d.path, d.format]),
      [[join(to, 'vda.qcow2'), 'qcow2']],
    );
    const before = await readFile(join(to, 'vda.qcow2'));

    r = quiesce(['restore', 'web1', '--to', to, '--repository', repo, '--format', 'qcow2']);
    assert.equal(r.code, 3);
    assert.match(r.stderr, new RegExp(`${join(to, 'vda.qcow2')} exists: a restore never overwrites`));
    assert.deepEqual(await readdir(to), ['vda.qcow2']);
    assert.ok((await readFile(join(to, 'vda.qcow2'))).equals(before));
  });

  test('restore --at a time picks the newest point at or before it', async () => {
    const to = join(base, 'out-time');
    const r = quiesce(['restore', 'web1', '--to', to, '--repository', repo, '--at', '2026-03-02T23:00:00Z']);
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, new RegExp(`backup ${inc1.id}`));
    assert.ok((await readFile(join(to, 'vda.raw'))).equals(inc1.expected.get('vda')!));
  });

  test('bad input exits 2 and writes nothing: --format, --at, unknown guest, missing --to', async () => {
    const to = join(base, 'out-bad');
    const cases: [string[], RegExp][] = [
      [['--format', 'vmdk'], /argument 'vmdk' is invalid\. Allowed choices are raw, qcow2/],
      [['--at', 'yesterday-ish'], /--at "yesterday-ish": give a backup id or a time/],
    ];
    for (const [extra, message] of cases) {
      const r = quiesce(['restore', 'web1', '--to', to, '--repository', repo, ...extra]);
      assert.equal(r.code, 2, r.stderr);
      assert.match(r.stderr + r.stdout, message);
      await assert.rejects(readdir(to), { code: 'ENOENT' });
    }
    let r = quiesce(['restore', 'nope', '--to', to, '--config', config]);
    assert.equal(r.code, 2);
    assert.match(r.stderr, /no guest named 'nope'/);
    r = quiesce(['restore', 'web1', '--repository', repo]);
    assert.equal(r.code, 2);
    assert.match(r.stderr, /required option '--to <dir>'/);
    r = quiesce(['restore', 'web1', '--to', to, '--repository', repo, '--at', unfinished.id]);
    assert.equal(r.code, 3);
    assert.match(r.stderr, new RegExp(`backup ${unfinished.id} of web1 is not a restore point: no manifest`));
    await assert.rejects(readdir(to), { code: 'ENOENT' });
  });

  test(
    'on a terminal, restore shows a progress line on stderr (and --quiet hides it)',
    { skip: !havePty && 'needs python3' },
    async () => {
      const ptyRun = (to: string, extra: string[]) =>
        new Promise<string>((done) => {
          const child = spawn('python3', [
            '-c',
            'import pty, sys; sys.exit(pty.spawn(sys.argv[1:]) >> 8)',
            process.execPath,
            ...BIN_ARGS,
            'restore',
            'web1',
            '--to',
            to,
            '--repository',
            repo,
            ...extra,
          ]);
          let out = '';
          child.stdout.on('data', (c: Buffer) => (out += c.toString()));
          child.on('close', () => done(out));
        });
      const shown = await ptyRun(join(base, 'out-pty'), []);
      assert.match(shown, ansi(String.raw`\rESC\[J {2}web1 {2}restore vda \(1/1\) {2}[\d.]+ [KM]?i?B of 8\.0 MiB`));
      assert.match(shown, /restored web1 backup/);
      const quiet = await ptyRun(join(base, 'out-pty-quiet'), ['--quiet']);
      assert.doesNotMatch(quiet, /restore vda/);
      assert.ok(!quiet.includes('\x1b['), 'no display with --quiet');
      assert.match(quiet, /restored web1 backup/);
    },
  );

  test('restore prints a warning when the point failed its verify step', async () => {
    await mkdir(join(base, 'out-warn'));
    const r = quiesce(['restore', 'web1', '--to', join(base, 'out-warn'), '--repository', repo, '--at', inc1.id]);
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, /warning: this backup FAILED its verify step \(fsck/);
  });
});
