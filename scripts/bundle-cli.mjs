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

/**
 * winston traces itself through @dabh/diagnostics, whose development build (picked unless
 * NODE_ENV=production) loads a colour library and builds its conversion tables at every start, for
 * output that only a DEBUG=winston:* setting shows. The bundle takes the package's own production build:
 * the same API, tracing off. (Defining NODE_ENV for the whole bundle would change other code too.)
 */
const diagnosticsProductionBuild = {
  name: 'diagnostics-production-build',
  setup(b) {
    b.onResolve({ filter: /^@dabh\/diagnostics$/ }, (args) =>
      b.resolve('@dabh/diagnostics/node/production.js', { kind: args.kind, resolveDir: args.resolveDir }),
    );
  },
};
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
  // Less to read and parse at every start: no comments or indentation (some comments are not ASCII, which
  // makes V8 hold a whole file as two-byte text). Names stay, so stack traces name their functions; the
  // linked source maps give the original lines with NODE_OPTIONS=--enable-source-maps.
  minifyWhitespace: true,
  minifySyntax: true,
  sourcemap: 'linked',
  plugins: [diagnosticsProductionBuild],
  logLevel: 'warning',
});
chmodSync(join(outdir, 'bin.js'), 0o755);
