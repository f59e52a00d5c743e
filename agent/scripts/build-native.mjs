// Builds the FIFREEZE/FITHAW addon (native/) with node-gyp, the one npm ships.
// Skips the build when the addon is newer than its sources. A failed build is a
// warning, not an error: the agent then freezes through fsfreeze(8) and logs so.
// QUIESCE_REQUIRE_NATIVE=1 turns the warning into a failure (CI).
import { spawnSync } from 'node:child_process';
import { existsSync, statSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const native = fileURLToPath(new URL('../native/', import.meta.url));
const addon = join(native, 'build', 'Release', 'quiesce_freeze.node');
const sources = ['binding.gyp', 'quiesce_freeze.c'].map((f) => join(native, f));

const newest = Math.max(...sources.map((f) => statSync(f).mtimeMs));
if (existsSync(addon) && statSync(addon).mtimeMs >= newest) process.exit(0);

/** node-gyp as npm runs it for install scripts: on PATH inside npm, else npm's own copy. */
function nodeGyp() {
  const npmCli = process.env['npm_execpath'];
  const candidates = [
    npmCli && join(dirname(npmCli), '..', 'node_modules', 'node-gyp', 'bin', 'node-gyp.js'),
    join(
      dirname(process.execPath),
      '..',
      'lib',
      'node_modules',
      'npm',
      'node_modules',
      'node-gyp',
      'bin',
      'node-gyp.js',
    ),
  ].filter(Boolean);
  for (const c of candidates) if (existsSync(c)) return [process.execPath, [c]];
  try {
    return [process.execPath, [createRequire(import.meta.url).resolve('node-gyp/bin/node-gyp.js')]];
  } catch {
    return ['node-gyp', []];
  }
}

/** Headers installed with this node (distribution packages ship them): no download needed. */
function nodedir() {
  if (process.env['npm_config_nodedir']) return [];
  const prefix = join(dirname(process.execPath), '..');
  return existsSync(join(prefix, 'include', 'node', 'node_api.h')) ? [`--nodedir=${prefix}`] : [];
}

const [cmd, pre] = nodeGyp();
const r = spawnSync(cmd, [...pre, 'rebuild', '--loglevel=warn', '--directory', native, ...nodedir()], {
  stdio: ['ignore', 'ignore', 'inherit'],
});
if (r.status !== 0) {
  const why = r.error ? r.error.message : `node-gyp exited with status ${r.status}`;
  process.stderr.write(
    `quiesce-agent: could not build the FIFREEZE addon (${why}); the agent will use fsfreeze(8) instead\n`,
  );
  process.exit(process.env['QUIESCE_REQUIRE_NATIVE'] === '1' ? 1 : 0);
}
