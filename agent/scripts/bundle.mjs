// Builds dist/quiesce-agent.mjs: the whole agent in one file that runs with plain `node`, no node_modules.
// The FIFREEZE addon (built by scripts/build-native.mjs) is copied next to it; the agent loads it from there.
import { build } from 'esbuild';
import { copyFileSync, existsSync, readFileSync, renameSync, rmSync } from 'node:fs';

const pkg = JSON.parse(readFileSync(new URL('../package.json', import.meta.url), 'utf8'));
await build({
  entryPoints: [new URL('../src/cli.ts', import.meta.url).pathname],
  outfile: new URL('../dist/quiesce-agent.mjs', import.meta.url).pathname,
  bundle: true,
  platform: 'node',
  target: 'node18',
  format: 'esm',
  banner: { js: '#!/usr/bin/env node' },
  define: { __QUIESCE_AGENT_VERSION__: JSON.stringify(pkg.version) },
  logLevel: 'warning',
});

const addon = new URL('../native/build/Release/quiesce_freeze.node', import.meta.url);
const bundled = new URL('../dist/quiesce-freeze.node', import.meta.url);
if (existsSync(addon)) {
  // Never rewrite it in place: running agents have it mapped, and a truncated mapping is SIGBUS for them.
  if (!existsSync(bundled) || !readFileSync(addon).equals(readFileSync(bundled))) {
    const tmp = new URL(`../dist/.quiesce-freeze.node.${process.pid}`, import.meta.url);
    copyFileSync(addon, tmp);
    renameSync(tmp, bundled);
  }
} else {
  rmSync(bundled, { force: true });
  console.warn('quiesce-agent: no FIFREEZE addon built (npm run build:native); the bundle will use fsfreeze(8)');
}
