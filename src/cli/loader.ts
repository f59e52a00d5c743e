#!/usr/bin/env node
// The installed `quiesce` command (dist/cli/bin.js, CommonJS; scripts/bundle-cli.mjs builds it). It runs
// the CLI's bundle (dist/cli/quiesce.js, one file) compiled whole, every function of it, before anything
// runs: no function is first compiled inside a frozen window. That code comes from V8's code cache that
// the build saved beside it (dist/cli/quiesce.cache, scripts/save-code-cache.mjs): deserialising it
// takes a fraction of what compiling does. A cache from another build, or that this node's V8 refuses
// (another node version, other V8 flags in NODE_OPTIONS), is not used: the bundle is then compiled whole
// at every start, which is slower but runs the same (`npm run build` makes the cache again).
// With source maps on (NODE_OPTIONS=--enable-source-maps), node's own loader runs the bundle instead,
// compiling functions as they first run: in Node 20 node maps the stack traces of what its loader
// compiled, and not of a vm.Script.
import { readFileSync } from 'node:fs';
import { createRequire, wrap } from 'node:module';
import { join } from 'node:path';
import { setFlagsFromString } from 'node:v8';
import { Script } from 'node:vm';
import type * as Bundle from './bundle.js';

export const BUNDLE = join(__dirname, 'quiesce.js');
export const CACHE = join(__dirname, 'quiesce.cache');

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

/** The bundle's source: ASCII only (scripts/bundle-cli.mjs), read as one-byte text with no decoding. */
export const bundleSource = (): string => readFileSync(BUNDLE, 'latin1');

/** V8's code for source when the cache was made from it (their first lines name the build), else undefined. */
function cachedCode(source: string): Buffer | undefined {
  let cache: Buffer;
  try {
    cache = readFileSync(CACHE);
  } catch {
    return undefined;
  }
  const end = cache.indexOf(10) + 1;
  return end > 0 && source.startsWith(cache.subarray(0, end).toString('latin1')) ? cache.subarray(end) : undefined;
}

/** The bundle compiled whole, from the build's code cache when `useCache` and it matches. */
export function compileBundle(source: string, o: { readonly useCache: boolean }): Script {
  const cachedData = o.useCache ? cachedCode(source) : undefined;
  return eagerly(() => new Script(wrap(source), { filename: BUNDLE, ...(cachedData ? { cachedData } : {}) }));
}

/** Runs a compiled bundle as node runs a CommonJS module, and returns its exports. */
export function runBundle(script: Script): typeof Bundle {
  const module = { exports: {} as typeof Bundle };
  (script.runInThisContext() as (...args: unknown[]) => void)(
    module.exports,
    createRequire(BUNDLE),
    module,
    BUNDLE,
    __dirname,
  );
  return module.exports;
}

if (require.main === module) {
  const bundle = process.sourceMapsEnabled
    ? (createRequire(__filename)(BUNDLE) as typeof Bundle)
    : runBundle(compileBundle(bundleSource(), { useCache: true }));
  bundle.start(process.argv.slice(2));
}
