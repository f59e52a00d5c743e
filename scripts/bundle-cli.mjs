// Builds dist/cli/: the installed `quiesce` command (package.json's bin points at dist/cli/bin.js).
// - quiesce.js: the CLI in one CommonJS file bundled by esbuild, from src/cli/bundle.ts. A subcommand's
//   modules are in it but run only when it runs (their import() stays lazy inside the bundle).
// - cosmiconfig.js, execa.js, winston.js, zod.js: the large dependencies that a command loads only
//   when it reads a config file, logs, or runs virsh (half of all the code): each its own file, read
//   only then (src/cli/loader.ts says how each loads).
// - quiesce.cache, cosmiconfig.cache, execa.cache, winston.cache, zod.cache: V8's code for the bundle,
//   all of it, and for what loading those dependencies and a rehearsal of a run's config and log ran
//   (scripts/save-code-cache.mjs). Every file starts with the build's id, and so does each cache: a cache
//   is only used with the file it was made from.
// - bin.js: the loader (src/cli/loader.ts), which runs the bundle from that cache.
// Start-up is mostly loading and compiling code (docs/benchmarks.md, Start-up): one file, read once,
// with its code deserialised instead of compiled.
// An optional output directory (default dist/cli) lets a benchmark build a copy elsewhere.
import { build } from 'esbuild';
import { spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { chmodSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
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
/**
 * cosmiconfig loads an ES module config file (.mjs, or .js in an ES package) with import(), which a file
 * the loader runs from a code cache does not have in Node 20: its two `await import(` go through the
 * loader's instead (src/cli/loader.ts passes it as `__quiesceImport`). Loaded by node's own require (with
 * source maps on), the file keeps import() as node gives it. The build fails if cosmiconfig's code no
 * longer has them, or gets another import().
 */
const IMPORT_THROUGH_LOADER = 'var __quiesceImport=typeof __quiesceImport=="function"?__quiesceImport:s=>import(s);';
const importsThroughLoader = {
  name: 'imports-through-loader',
  setup(b) {
    let replaced = 0;
    b.onStart(() => void (replaced = 0));
    b.onLoad({ filter: /[\\/]cosmiconfig[\\/]dist[\\/][^\\/]+\.js$/ }, (args) => {
      const text = readFileSync(args.path, 'utf8');
      const parts = text.split('await import(');
      replaced += parts.length - 1;
      return { contents: parts.join('await __quiesceImport('), loader: 'js' };
    });
    b.onEnd((result) => {
      if (result.errors.length) return;
      if (replaced !== 2) throw new Error(`cosmiconfig: expected 2 import() calls to route, found ${replaced}`);
      const out = readFileSync(join(outdir, 'cosmiconfig.js'), 'latin1');
      if (out.split('import(').length !== 2) throw new Error('cosmiconfig.js: an import() the loader does not route');
    });
  },
};
const outdir = resolve(process.argv[2] ?? join(root, 'dist', 'cli'));
rmSync(outdir, { recursive: true, force: true });
const id = randomBytes(8).toString('hex');
const common = { bundle: true, platform: 'node', target: 'node20', format: 'cjs', logLevel: 'warning' };
// Less to read and parse: no comments or indentation (some comments are not ASCII, which makes V8 hold a
// whole file as two-byte text). Names stay, so stack traces name their functions; the linked source
// maps give the original lines with NODE_OPTIONS=--enable-source-maps.
const minified = { minifyWhitespace: true, minifySyntax: true, sourcemap: 'linked' };
const VENDORED = ['cosmiconfig', 'execa', 'winston', 'zod'];
const vendored = {
  name: 'vendored',
  setup(b) {
    b.onResolve({ filter: new RegExp(`^(${VENDORED.join('|')})$`) }, (args) => ({
      path: `./${args.path}.js`,
      external: true,
    }));
  },
};
await build({
  ...common,
  entryPoints: [join(root, 'src', 'cli', 'bundle.ts')],
  outfile: join(outdir, 'quiesce.js'),
  // The ES modules' import.meta.url, for the two that locate files (version.ts, connectors/local.ts).
  define: { 'import.meta.url': '__quiesceModuleUrl' },
  banner: {
    js: `// quiesce build ${id}\nconst __quiesceModuleUrl = require('node:url').pathToFileURL(__filename).href;`,
  },
  // import() of node's own modules becomes require(): a script run from a code cache (loader.ts) has no
  // dynamic import without --experimental-vm-modules in Node 20.
  supported: { 'dynamic-import': false },
  ...minified,
  plugins: [vendored],
});
for (const name of VENDORED)
  await build({
    ...common,
    ...minified,
    stdin: { contents: `module.exports = require('${name}');`, resolveDir: root, sourcefile: `${name}.js` },
    banner: { js: `// quiesce build ${id}${name === 'cosmiconfig' ? `\n${IMPORT_THROUGH_LOADER}` : ''}` },
    outfile: join(outdir, `${name}.js`),
    // cosmiconfig imports typescript only to load a .ts config file: it stays a lookup at run time.
    external: ['typescript'],
    plugins: [diagnosticsProductionBuild, ...(name === 'cosmiconfig' ? [importsThroughLoader] : [])],
  });
await build({ ...common, entryPoints: [join(root, 'src', 'cli', 'loader.ts')], outfile: join(outdir, 'bin.js') });
// package.json says "type": "module"; these files are CommonJS.
writeFileSync(join(outdir, 'package.json'), '{ "type": "commonjs" }\n');
chmodSync(join(outdir, 'bin.js'), 0o755);

const r = spawnSync(process.execPath, [join(root, 'scripts', 'save-code-cache.mjs'), outdir], {
  stdio: 'inherit',
});
if (r.status !== 0) throw new Error(`saving the code cache failed (status ${r.status ?? r.signal})`);
