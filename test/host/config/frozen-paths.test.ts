import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { closeSync, mkdirSync, mkdtempSync, openSync, readFileSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { hostProbe, localFreezeProblems, type FilesystemProbe } from '../../../src/config/frozen-paths.js';

// Nothing here freezes anything: the check only compares st_dev of real or described paths.

/** A host described as path → device; stdout/stderr as given. */
function fakeHost(
  devices: Record<string, number>,
  stdio: ReturnType<FilesystemProbe['stdioFiles']> = [],
): FilesystemProbe {
  return { device: (p) => devices[p], stdioFiles: () => stdio };
}

const host = fakeHost({ '/': 1, '/mnt/x': 2, '/mnt/x/state': 2, '/var': 1, '/srv/db': 3 });

const cases: [string, Parameters<typeof localFreezeProblems>[0], FilesystemProbe, RegExp[]][] = [
  [
    'refuses a stateDir inside a frozen mountpoint',
    { guest: 'l', mountpoints: ['/mnt/x'], stateDir: '/mnt/x/state' },
    host,
    [
      /^stateDir: \/mnt\/x\/state is on \/mnt\/x, which guest 'l' \(local\) freezes: the run would block writing its journal while frozen$/,
    ],
  ],
  [
    'refuses a stateDir not created yet, by its nearest existing ancestor',
    { guest: 'l', mountpoints: ['/mnt/x'], stateDir: '/mnt/x/state/new/deeper' },
    host,
    [/^stateDir: \/mnt\/x\/state\/new\/deeper is on \/mnt\/x/],
  ],
  [
    'refuses a path on the filesystem a non-mountpoint directory belongs to (/var on /)',
    { guest: 'l', mountpoints: ['/var'], stateDir: '/state', metricsFile: '/metrics/q.prom' },
    host,
    [
      /^stateDir: \/state is on \/var/,
      /^metricsFile: \/metrics\/q\.prom is on \/var, .* writing its metrics while frozen$/,
    ],
  ],
  [
    'refuses stdout and stderr redirected to files on a frozen filesystem',
    { guest: 'l', mountpoints: ['/srv/db'], stateDir: '/state' },
    fakeHost({ '/': 1, '/srv/db': 3 }, [
      { key: 'stdout', path: '/srv/db/out.log', device: 3 },
      { key: 'stderr', path: '/var/log/err.log', device: 1 },
    ]),
    [
      /^stdout: \/srv\/db\/out\.log is on \/srv\/db, which guest 'l' \(local\) freezes: the run would block writing its stdout/,
    ],
  ],
  [
    'names the first listed mountpoint of a filesystem once',
    { guest: 'l', mountpoints: ['/mnt/x', '/mnt/x/state'], stateDir: '/mnt/x/state' },
    host,
    [/^stateDir: \/mnt\/x\/state is on \/mnt\/x,/],
  ],
  [
    'accepts paths on other filesystems',
    { guest: 'l', mountpoints: ['/srv/db'], stateDir: '/mnt/x/state', metricsFile: '/q.prom' },
    host,
    [],
  ],
  [
    'leaves mountpoints that do not exist here to the preflight',
    { guest: 'l', mountpoints: ['/nowhere'], stateDir: '/mnt/x/state' },
    host,
    [],
  ],
];

for (const [title, input, probe, expected] of cases) {
  test(`local freeze check ${title}`, () => {
    const problems = localFreezeProblems(input, probe);
    assert.equal(problems.length, expected.length, JSON.stringify(problems));
    expected.forEach((re, i) => assert.match(problems[i]!, re));
  });
}

test('on real directories: a temp dir shares its parent filesystem, so its state dir is refused', () => {
  const dir = mkdtempSync(join(tmpdir(), 'frozen-paths-'));
  try {
    mkdirSync(join(dir, 'state'));
    const problems = localFreezeProblems({
      guest: 'l',
      mountpoints: [dir],
      stateDir: join(dir, 'state'),
      metricsFile: join(dir, 'missing', 'q.prom'),
    });
    assert.deepEqual(
      problems.filter((p) => !/^std(out|err):/.test(p)).map((p) => p.split(':')[0]),
      ['stateDir', 'metricsFile'],
    );
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('on real directories: a state dir on another filesystem (/dev/shm, /proc) than the mountpoint is accepted', (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'frozen-paths-'));
  try {
    const others = ['/dev/shm', '/proc'].filter((p) => {
      try {
        return statSync(p).dev !== statSync(dir).dev;
      } catch {
        return false;
      }
    });
    if (others.length === 0) return t.skip('no filesystem here differs from the temp dir');
    for (const other of others) {
      const problems = localFreezeProblems(
        { guest: 'l', mountpoints: [other], stateDir: join(dir, 'state') },
        { ...hostProbe, stdioFiles: () => [] },
      );
      assert.deepEqual(problems, [], other);
    }
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('on a real process: its stdout redirected to a file on the frozen filesystem is refused, read from /proc/self/fd', () => {
  const dir = mkdtempSync(join(tmpdir(), 'frozen-paths-'));
  const out = join(dir, 'out.log');
  const fd = openSync(out, 'w');
  try {
    const module = new URL('../../../src/config/frozen-paths.ts', import.meta.url).href;
    const script = `import(${JSON.stringify(module)}).then((m) => process.stderr.write(JSON.stringify(m.localFreezeProblems({ guest: 'l', mountpoints: [${JSON.stringify(dir)}], stateDir: '/dev/shm/q' }))))`;
    const r = spawnSync(process.execPath, ['--import', 'tsx', '-e', script], {
      stdio: ['ignore', fd, 'pipe'],
      encoding: 'utf8',
      cwd: new URL('../../../', import.meta.url).pathname,
    });
    assert.equal(r.status, 0, r.stderr);
    const problems = JSON.parse(r.stderr) as string[];
    assert.ok(
      problems.includes(
        `stdout: ${out} is on ${dir}, which guest 'l' (local) freezes: the run would block writing its stdout while frozen`,
      ),
      JSON.stringify(problems),
    );
    assert.ok(!problems.some((p) => p.startsWith('stderr:')), 'stderr is a pipe: not checked');
    assert.equal(readFileSync(out, 'utf8'), '');
  } finally {
    closeSync(fd);
    rmSync(dir, { recursive: true, force: true });
  }
});
