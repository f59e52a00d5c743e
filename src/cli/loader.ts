#!/usr/bin/env node
// The installed `quiesce` command (dist/cli/bin.js, CommonJS; scripts/bundle-cli.mjs builds it). It runs
// the CLI's bundle (dist/cli/quiesce.js, one file) compiled whole, every function of it, before anything
// runs: no function is first compiled inside a frozen window. That code comes from V8's code cache that
// the build saved beside it (dist/cli/quiesce.cache, scripts/save-code-cache.mjs): deserialising it
// takes a fraction of what compiling does. A cache from another build, or that this node's V8 refuses
// (another node version, other V8 flags in NODE_OPTIONS), is not used: the bundle is then compiled whole
// at every start, which is slower but runs the same (`npm run build` makes the cache again). Its four
// large dependencies, files of their own, run from code caches of their own (CACHED_DEPENDENCIES).
// With source maps on (NODE_OPTIONS=--enable-source-maps), node's own loader runs the bundle instead,
// compiling functions as they first run: in Node 20 node maps the stack traces of what its loader
// compiled, and not of a vm.Script.
import { readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { join } from 'node:path';
import { setFlagsFromString } from 'node:v8';
import { Script } from 'node:vm';
import type * as Bundle from './bundle.js';

/** The bundle's name (quiesce.js, quiesce.cache): compiled whole. */
export const BUNDLE = 'quiesce';
/**
 * The dependencies with files of their own (scripts/bundle-cli.mjs) that run from a code cache like the
 * bundle, compiled as node would compile them (a function when it first runs), the cache holding what
 * their loading and the build's rehearsal ran (cli/rehearse.ts).
 */
export const CACHED_DEPENDENCIES: readonly string[] = ['cosmiconfig', 'execa', 'winston', 'zod'];

const fileOf = (name: string, ext: 'js' | 'cache'): string => join(__dirname, `${name}.${ext}`);

/**
 * Runs fn with V8's --no-lazy: a script compiled meanwhile is compiled whole. A code cache is made and
 * taken under the same flags, so both happen in here.
 */
export function eagerly<T>(fn: () => T): T {
  setFlagsFromString('--no-lazy');
  try {
    return fn();
  } finally {
    setFlagsFromString('--lazy');
  }
}

/** A file's source: ASCII only (scripts/bundle-cli.mjs), read as one-byte text with no decoding. */
export const sourceOf = (name: string): string => readFileSync(fileOf(name, 'js'), 'latin1');

/** V8's code for source when its cache was made from it (their first lines name the build), else undefined. */
function cachedCode(name: string, source: string): Buffer | undefined {
  let cache: Buffer;
  try {
    cache = readFileSync(fileOf(name, 'cache'));
  } catch {
    return undefined;
  }
  const end = cache.indexOf(10) + 1;
  return end > 0 && source.startsWith(cache.subarray(0, end).toString('latin1')) ? cache.subarray(end) : undefined;
}

/**
 * Node's CommonJS wrapper, with one parameter more: `import()` for the file. A vm.Script has none of its
 * own in Node 20 (short of an experimental flag), so the build points cosmiconfig's, which loads an ES
 * module config file, at this one (scripts/bundle-cli.mjs).
 */
const wrap = (source: string): string =>
  `(function (exports, require, module, __filename, __dirname, __quiesceImport) { ${source}\n});`;
const importFromHere = (specifier: string): Promise<unknown> => import(specifier);

/** A file compiled as this loader runs it, from its code cache when `useCache` and it matches. */
export function compile(name: string, source: string, o: { readonly useCache: boolean }): Script {
  const cachedData = o.useCache ? cachedCode(name, source) : undefined;
  const script = (): Script =>
    new Script(wrap(source), { filename: fileOf(name, 'js'), ...(cachedData ? { cachedData } : {}) });
  return name === BUNDLE ? eagerly(script) : script();
}

const loaded = new Map<string, unknown>();

/** Runs a compiled file as node runs a CommonJS module and returns its exports. */
export function run(name: string, script: Script): unknown {
  const file = fileOf(name, 'js');
  const nodeRequire = createRequire(file);
  // The bundle requires a dependency with a file of its own as `./NAME.js`.
  const req = Object.assign(
    (id: string): unknown => {
      const dependency = /^\.\/([\w-]+)\.js$/.exec(id)?.[1];
      return dependency !== undefined && CACHED_DEPENDENCIES.includes(dependency) ? load(dependency) : nodeRequire(id);
    },
    { resolve: nodeRequire.resolve, cache: nodeRequire.cache },
  );
  const module = { exports: {} as unknown };
  (script.runInThisContext() as (...args: unknown[]) => void)(
    module.exports,
    req,
    module,
    file,
    __dirname,
    importFromHere,
  );
  loaded.set(name, module.exports);
  return module.exports;
}

function load(name: string): unknown {
  return loaded.has(name) ? loaded.get(name) : run(name, compile(name, sourceOf(name), { useCache: true }));
}

if (require.main === module) {
  const bundle = (
    process.sourceMapsEnabled ? createRequire(__filename)(fileOf(BUNDLE, 'js')) : load(BUNDLE)
  ) as typeof Bundle;
  bundle.start(process.argv.slice(2));
}
