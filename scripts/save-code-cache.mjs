// Saves V8's code for a built command (dist/cli, or DIR) beside its files, compiled as src/cli/loader.ts
// compiles them: quiesce.cache for the bundle, compiled whole, and NAME.cache for each dependency in
// CACHED_DEPENDENCIES, holding what loading it and the bundle's rehearsal (src/cli/rehearse.ts: the
// example config read, log lines written) ran. Run by scripts/bundle-cli.mjs. V8 takes a cache only
// under the node flags it was made with: bench/startup.ts makes its own copy's caches under the flags it
// measures with.
import { writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

const dir = resolve(process.argv[2] ?? fileURLToPath(new URL('../dist/cli', import.meta.url)));
const loader = createRequire(import.meta.url)(join(dir, 'bin.js'));

/** The cache starts with the file's first line, which names its build. */
function save(name, source, data) {
  const firstLine = Buffer.from(source.slice(0, source.indexOf('\n') + 1), 'latin1');
  writeFileSync(join(dir, `${name}.cache`), Buffer.concat([firstLine, data]));
}

const bundle = loader.sourceOf(loader.BUNDLE);
const script = loader.compile(loader.BUNDLE, bundle, { useCache: false });
save(
  loader.BUNDLE,
  bundle,
  loader.eagerly(() => script.createCachedData()),
);
// Loaded first, so that the bundle's rehearsal runs these very scripts.
const dependencies = loader.CACHED_DEPENDENCIES.map((name) => {
  const source = loader.sourceOf(name);
  const compiled = loader.compile(name, source, { useCache: false });
  loader.run(name, compiled);
  return { name, source, compiled };
});
await loader
  .run(loader.BUNDLE, script)
  .rehearse(fileURLToPath(new URL('../config/quiesce.config.yaml', import.meta.url)));
for (const { name, source, compiled } of dependencies) save(name, source, compiled.createCachedData());
