#!/usr/bin/env node
// Runs the single-file bundle when present (what ships into guests), else the compiled sources.
import { existsSync } from 'node:fs';

const bundle = new URL('../dist/quiesce-agent.mjs', import.meta.url);
if (existsSync(bundle)) {
  await import(bundle.href);
} else {
  const { main } = await import('../dist/main.js');
  await main(process.argv.slice(2));
}
