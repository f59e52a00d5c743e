// The installed command is the esbuild bundle (package.json's bin: dist/cli/bin.js, scripts/bundle-cli.mjs),
// while the other CLI tests run tsc's dist/src/bin.js: the bundle must load every lazy part the same way.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import { once } from 'node:events';
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';

const ROOT = fileURLToPath(new URL('../../../', import.meta.url));
const BUNDLE = join(ROOT, 'dist', 'cli', 'bin.js');
const pkg = JSON.parse(readFileSync(join(ROOT, 'package.json'), 'utf8')) as {
  version: string;
  bin: Record<string, string>;
};

function quiesce(args: string[]) {
  const r = spawnSync(process.execPath, [BUNDLE, ...args], { encoding: 'utf8', timeout: 60_000 });
  return { code: r.status, stdout: r.stdout, stderr: r.stderr };
}

test("package.json's bin is the bundle", () => {
  assert.equal(join(ROOT, pkg.bin['quiesce']!), BUNDLE);
});

test(
  'a reader that closed the pipe (quiesce --help | head) ends the output quietly: no EPIPE stack, status 0',
  { skip: existsSync(BUNDLE) ? false : 'dist/cli/bin.js is not built (npm run build)' },
  async () => {
    const child = spawn(process.execPath, [BUNDLE, '--help'], { stdio: ['ignore', 'pipe', 'pipe'] });
    // The read end closes before the command writes a byte: its write meets EPIPE.
    child.stdout.destroy();
    let stderr = '';
    child.stderr.on('data', (b: Buffer) => (stderr += b.toString()));
    const [status] = (await once(child, 'close')) as [number | null];
    assert.doesNotMatch(stderr, /EPIPE|Unhandled 'error' event/);
    assert.equal(status, 0);
  },
);

describe(
  'the bundled CLI',
  { skip: existsSync(BUNDLE) ? false : 'dist/cli/bin.js is not built (npm run build)' },
  () => {
    let dir: string;
    before(() => (dir = mkdtempSync(join(tmpdir(), 'bundle-'))));
    after(() => rmSync(dir, { recursive: true, force: true }));

    test("the chunks are ASCII, with source maps, and winston's tracing is its production build", () => {
      const files = readdirSync(join(ROOT, 'dist', 'cli'));
      const chunks = files.filter((f) => f.endsWith('.js'));
      assert.ok(chunks.length > 10, `${chunks.length} chunks`);
      for (const f of chunks) {
        // A non-ASCII byte anywhere makes V8 hold the whole file as two-byte text.
        const at = readFileSync(join(ROOT, 'dist', 'cli', f)).findIndex((b) => b > 0x7f);
        assert.equal(at, -1, `${f} has a non-ASCII byte at ${at}`);
        assert.ok(files.includes(`${f}.map`), `${f} has no source map`);
      }
      // @dabh/diagnostics' development build loads a colour library (colorspace) at every start.
      const all = chunks.map((f) => readFileSync(join(ROOT, 'dist', 'cli', f), 'latin1')).join('\n');
      assert.doesNotMatch(all, /colorspace/);
      assert.match(all, /winston/);
    });

    test('--version prints the package version', () => {
      const r = quiesce(['--version']);
      assert.equal(r.code, 0, r.stderr);
      assert.equal(r.stdout.trim(), pkg.version);
    });

    test('freeze --local without --mountpoint is refused before anything is touched (exit 2)', () => {
      const r = quiesce(['freeze', '--local', '--', 'true']);
      assert.equal(r.code, 2);
      assert.match(r.stderr, /--local needs --mountpoint/);
    });

    test('plan loads a YAML config (cosmiconfig, zod) and prints the steps', () => {
      const config = join(dir, 'quiesce.config.yaml');
      writeFileSync(
        config,
        [
          `stateDir: ${join(dir, 'state')}`,
          'guests:',
          '  a:',
          `    connector: { type: socket, path: ${join(dir, 'a.sock')} }`,
          '    freeze: [/data]',
          "    snapshot: { provider: command, argv: ['true'] }",
          'jobs:',
          '  nightly: { guests: [a] }',
        ].join('\n'),
      );
      const r = quiesce(['plan', '--config', config]);
      assert.equal(r.code, 0, r.stderr);
      assert.match(r.stdout, /freeze \/data/);
      assert.match(r.stdout, /snapshot \(command\): true/);
    });

    test('a config error names the key and exits 2', () => {
      const config = join(dir, 'bad.json');
      writeFileSync(config, JSON.stringify({ stateDir: 5, guests: {} }));
      const r = quiesce(['plan', '--config', config]);
      assert.equal(r.code, 2);
      assert.match(r.stderr, /stateDir/);
    });

    test('run logs JSON lines through winston (loaded on the first event) and reports the failed connect', () => {
      const config = join(dir, 'run.json');
      writeFileSync(
        config,
        JSON.stringify({
          stateDir: join(dir, 'state'),
          guests: {
            a: {
              connector: { type: 'socket', path: join(dir, 'none.sock') },
              freeze: ['/data'],
              snapshot: { provider: 'command', argv: ['true'] },
            },
          },
          jobs: { j: { guests: ['a'] } },
        }),
      );
      const r = quiesce(['run', '--config', config]);
      assert.equal(r.code, 3, r.stderr);
      const events = r.stderr
        .split('\n')
        .filter(Boolean)
        .map((l) => JSON.parse(l) as { kind?: string; step?: string; ok?: boolean });
      assert.ok(events.some((e) => e.kind === 'step-end' && e.step === 'connect' && e.ok === false));
    });
  },
);
