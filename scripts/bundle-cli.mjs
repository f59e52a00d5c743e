// Builds dist/cli/: the `quiesce` command as ES modules bundled by esbuild (package.json's bin points at
// dist/cli/bin.js). Start-up is mostly module loading: one file per chunk instead of a few hundred modules
// found and read one by one. Code splitting keeps the lazy loads of src/cli/load-command.ts: a subcommand's
// chunk loads when it runs, and the freeze path's chunks load while V8 compiles eagerly (see there).
// An optional output directory (default dist/cli) lets a benchmark build a copy elsewhere.
import { build } from 'esbuild';
import { chmodSync, rmSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = fileURLToPath(new URL('..', import.meta.url));
const outdir = resolve(process.argv[2] ?? join(root, 'dist', 'cli'));
rmSync(outdir, { recursive: true, force: true });
await build({
  entryPoints: [join(root, 'src', 'bin.ts')],
  outdir,
  bundle: true,
  splitting: true,
  platform: 'node',
  target: 'node20',
  format: 'esm',
  // The CommonJS dependencies (winston, cosmiconfig) call require(); an ES module has none of its own.
  banner: {
    js: "import { createRequire as __quiesceRequire } from 'node:module'; const require = __quiesceRequire(import.meta.url);",
  },
  // cosmiconfig requires typescript only to load a .ts config file: it stays a lookup at run time.
  external: ['typescript'],
  logLevel: 'warning',
});
chmodSync(join(outdir, 'bin.js'), 0o755);
