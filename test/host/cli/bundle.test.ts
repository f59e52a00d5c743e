// The installed command is the esbuild bundle (package.json's bin: dist/cli/bin.js, scripts/bundle-cli.mjs),
// run from its code cache, while the other CLI tests run tsc's dist/src/bin.js: the bundle must load every
// lazy part the same way.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import { once } from 'node:events';
import { cpSync, existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { cliCopyUnderFlags } from '../../helpers/code-cache.js';

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
    /** A config of one guest `g` behind a socket in dir (nobody listens on it), in job `j`. */
    const oneGuest = (socket: string, mountpoint: string) => ({
      stateDir: join(dir, 'state'),
      guests: {
        g: {
          connector: { type: 'socket', path: join(dir, socket) },
          freeze: [mountpoint],
          snapshot: { provider: 'command', argv: ['true'] },
        },
      },
      jobs: { j: { guests: ['g'] } },
    });
    /** The same config as YAML text: guest `g` behind `socket` in dir, freezing /data, in job `nightly`. */
    const oneGuestYaml = (socket: string) =>
      [
        `stateDir: ${join(dir, 'state')}`,
        'guests:',
        '  g:',
        `    connector: { type: socket, path: ${join(dir, socket)} }`,
        '    freeze: [/data]',
        "    snapshot: { provider: command, argv: ['true'] }",
        'jobs:',
        '  nightly: { guests: [g] }',
      ].join('\n');
    after(() => rmSync(dir, { recursive: true, force: true }));

    test("the files are ASCII, with source maps, and winston's tracing is its production build", () => {
      const files = readdirSync(join(ROOT, 'dist', 'cli'));
      const code = files.filter((f) => f.endsWith('.js'));
      assert.deepEqual(code.sort(), ['bin.js', 'cosmiconfig.js', 'execa.js', 'quiesce.js', 'winston.js', 'zod.js']);
      for (const f of code) {
        // A non-ASCII byte anywhere makes V8 hold the whole file as two-byte text (and loader.ts reads
        // quiesce.js as latin1).
        const at = readFileSync(join(ROOT, 'dist', 'cli', f)).findIndex((b) => b > 0x7f);
        assert.equal(at, -1, `${f} has a non-ASCII byte at ${at}`);
        if (f !== 'bin.js') assert.ok(files.includes(`${f}.map`), `${f} has no source map`);
      }
      // @dabh/diagnostics' development build loads a colour library (colorspace) at every start.
      const winston = readFileSync(join(ROOT, 'dist', 'cli', 'winston.js'), 'latin1');
      assert.doesNotMatch(winston, /colorspace/);
      assert.match(winston, /winston/);
      // The large dependencies are not in the file every command reads: it requires their own files.
      const bundle = readFileSync(join(ROOT, 'dist', 'cli', 'quiesce.js'), 'latin1');
      for (const name of ['cosmiconfig', 'execa', 'winston', 'zod'])
        assert.ok(bundle.includes(`require("./${name}.js")`), name);
      assert.doesNotMatch(bundle, /"node_modules\/(cosmiconfig|js-yaml|winston|logform|zod|execa)\//);
    });

    /**
     * Whether V8 took each file's code cache in the command in cliDir: false taken, true refused,
     * 'none' none used.
     */
    const cacheRefused = (cliDir: string): Record<string, boolean | string> => {
      const r = spawnSync(
        process.execPath,
        [
          '-e',
          `const l = require(${JSON.stringify(join(cliDir, 'bin.js'))});
           const out = {};
           for (const name of [l.BUNDLE, ...l.CACHED_DEPENDENCIES])
             out[name] = l.compile(name, l.sourceOf(name), { useCache: true }).cachedDataRejected ?? 'none';
           process.stdout.write(JSON.stringify(out));`,
        ],
        { encoding: 'utf8' },
      );
      assert.equal(r.status, 0, r.stderr);
      return JSON.parse(r.stdout) as Record<string, boolean | string>;
    };

    test("V8 takes the build's code caches", () => {
      assert.deepEqual(cacheRefused(join(ROOT, 'dist', 'cli')), {
        quiesce: false,
        cosmiconfig: false,
        execa: false,
        winston: false,
        zod: false,
      });
    });

    test('a cache from another build, or none, is not used, and the command still runs', () => {
      const copy = join(dir, 'cli');
      cpSync(join(ROOT, 'dist', 'cli'), copy, { recursive: true });
      const cache = readFileSync(join(copy, 'quiesce.cache'));
      // Another build's id on the first line: the same length, so only the id tells them apart.
      const other = Buffer.from(cache);
      other[other.indexOf(10) - 1] = other[other.indexOf(10) - 1] === 0x30 ? 0x31 : 0x30;
      writeFileSync(join(copy, 'quiesce.cache'), other);
      assert.equal(cacheRefused(copy)['quiesce'], 'none');
      const version = spawnSync(process.execPath, [join(copy, 'bin.js'), '--version'], { encoding: 'utf8' });
      assert.equal(version.status, 0, version.stderr);
      rmSync(join(copy, 'quiesce.cache'));
      rmSync(join(copy, 'winston.cache'));
      assert.deepEqual(cacheRefused(copy), {
        quiesce: 'none',
        cosmiconfig: false,
        execa: false,
        winston: 'none',
        zod: false,
      });
      const freeze = spawnSync(process.execPath, [join(copy, 'bin.js'), 'freeze', '--local', '--', 'true'], {
        encoding: 'utf8',
      });
      assert.equal(freeze.status, 2, freeze.stderr);
      assert.match(freeze.stderr, /--local needs --mountpoint/);
    });

    test("a run reads its YAML config and logs with no function of cosmiconfig, zod or winston compiled: the build's rehearsal is in their caches", () => {
      const logfile = join(dir, 'v8.log');
      const flags = ['--log-function-events', `--logfile=${logfile}`, '--no-logfile-per-isolate'];
      const copy = cliCopyUnderFlags(join(ROOT, 'dist', 'cli'), dir, flags);
      assert.equal(copy.stderr, '', "the rehearsal's log lines stay out of the build's output");
      const config = join(dir, 'events.yaml');
      writeFileSync(config, oneGuestYaml('nobody.sock'));
      const r = spawnSync(process.execPath, [...flags, copy.bin, 'run', '--config', config], {
        encoding: 'utf8',
      });
      assert.equal(r.status, 3, r.stderr);
      assert.match(r.stderr, /"kind":"step-end"/, 'winston wrote the JSON lines');
      // function,<event>,<script id>,...; script-details,<script id>,<file>: parse and compile events, by file.
      const lines = readFileSync(logfile, 'utf8')
        .split('\n')
        .map((l) => l.split(','));
      const files = new Map(lines.filter((l) => l[0] === 'script-details').map((l) => [l[1], l[2] ?? '']));
      const compiled = new Map<string, number>();
      for (const l of lines) {
        if (l[0] !== 'function' || !/parse|interpreter|compile/.test(l[1] ?? '')) continue;
        const file = /[\w-]+\.js$/.exec(files.get(l[2] ?? '') ?? '')?.[0];
        if (file) compiled.set(file, (compiled.get(file) ?? 0) + 1);
      }
      for (const file of ['cosmiconfig.js', 'zod.js', 'winston.js', 'quiesce.js'])
        assert.equal(compiled.get(file) ?? 0, 0, `${file}: ${compiled.get(file)} functions compiled`);
      assert.ok(
        files.size > 0 && [...files.values()].some((f) => f.endsWith('cosmiconfig.js')),
        'the log names the files',
      );
    });

    test("with source maps on, node's own loader runs the bundle (it maps the traces of what it loads)", () => {
      const run = (args: string[]) =>
        spawnSync(process.execPath, [...args, BUNDLE, 'freeze', '--local', '--', 'true'], {
          encoding: 'utf8',
          env: { ...process.env, NODE_DEBUG: 'module' },
        });
      const loadsBundle = /: load "[^"]*dist\/cli\/quiesce\.js" for module/;
      const mapped = run(['--enable-source-maps']);
      assert.equal(mapped.status, 2, mapped.stderr);
      assert.match(mapped.stderr, /--local needs --mountpoint/);
      assert.match(mapped.stderr, loadsBundle);
      const cached = run([]);
      assert.equal(cached.status, 2, cached.stderr);
      assert.doesNotMatch(cached.stderr, loadsBundle);
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
      writeFileSync(config, oneGuestYaml('a.sock'));
      const r = quiesce(['plan', '--config', config]);
      assert.equal(r.code, 0, r.stderr);
      assert.match(r.stdout, /freeze \/data/);
      assert.match(r.stdout, /snapshot \(command\): true/);
    });

    test("plan loads an ES module config (cosmiconfig imports it: through the loader's import, or node's with source maps on)", () => {
      const config = join(dir, 'quiesce.config.mjs');
      writeFileSync(config, `export default ${JSON.stringify(oneGuest('b.sock', '/srv'))};\n`);
      for (const flags of [[], ['--enable-source-maps']]) {
        const r = spawnSync(process.execPath, [...flags, BUNDLE, 'plan', '--config', config], { encoding: 'utf8' });
        assert.equal(r.status, 0, r.stderr);
        assert.match(r.stdout, /freeze \/srv/);
        assert.equal(r.stderr, '', 'no warning');
      }
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
      writeFileSync(config, JSON.stringify(oneGuest('none.sock', '/data')));
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
