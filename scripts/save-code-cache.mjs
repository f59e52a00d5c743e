// Saves V8's code for a built bundle (dist/cli/quiesce.js, or DIR/quiesce.js) in its quiesce.cache, the
// bundle compiled whole as src/cli/loader.ts compiles it. Run by scripts/bundle-cli.mjs. V8 takes a cache
// only under the node flags it was made with: bench/startup.ts makes its own copy's cache under the
// flags it measures with.
import { writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

const dir = resolve(process.argv[2] ?? fileURLToPath(new URL('../dist/cli', import.meta.url)));
const { bundleSource, compileBundle, eagerly, CACHE } = createRequire(import.meta.url)(join(dir, 'bin.js'));
const source = bundleSource();
const script = compileBundle(source, { useCache: false });
// The cache starts with the bundle's first line, which names its build.
const firstLine = Buffer.from(source.slice(0, source.indexOf('\n') + 1), 'latin1');
writeFileSync(CACHE, Buffer.concat([firstLine, eagerly(() => script.createCachedData())]));
