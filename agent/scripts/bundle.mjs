// Builds dist/quiesce-agent.mjs: the whole agent in one file that runs with plain `node`, no node_modules.
import { build } from 'esbuild';
import { readFileSync } from 'node:fs';

const pkg = JSON.parse(readFileSync(new URL('../package.json', import.meta.url), 'utf8'));
await build({
  entryPoints: [new URL('../src/cli.ts', import.meta.url).pathname],
  outfile: new URL('../dist/quiesce-agent.mjs', import.meta.url).pathname,
  bundle: true,
  platform: 'node',
  target: 'node20',
  format: 'esm',
  banner: { js: '#!/usr/bin/env node' },
  define: { __QUIESCE_AGENT_VERSION__: JSON.stringify(pkg.version) },
  logLevel: 'warning',
});
