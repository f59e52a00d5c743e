// The entry of the installed command's bundle (scripts/bundle-cli.mjs), which cli/loader.ts runs.
export { start } from './start.js';
