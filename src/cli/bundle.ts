// The entry of the installed command's bundle (scripts/bundle-cli.mjs), which cli/loader.ts runs; the
// build runs rehearse() before it saves the dependencies' code caches (scripts/save-code-cache.mjs).
export { start } from './start.js';
export { rehearse } from './rehearse.js';
