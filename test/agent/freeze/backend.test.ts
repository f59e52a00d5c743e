// The FIFREEZE/FITHAW backends: the N-API addon and the fsfreeze(8) fallback, on a loop mount of the test's own.
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { dirname, join } from 'node:path';
import {
  addonCandidates,
  ADDON_BUNDLED_NAME,
  fsfreezeBackend,
  loadFreezeBackend,
} from '../../../agent/src/freeze/ioctl.js';
import { readMounts } from '../../../agent/src/freeze/mounts.js';
import { AGENT_BUNDLE } from '../../helpers/agents.js';
import { loopMountSkipReason, useLoopMounts, writeCompletes } from '../../helpers/loop-mounts.js';

describe('freeze backend selection', () => {
  test('the addon built at install is what the agent uses here', () => {
    const backend = loadFreezeBackend();
    assert.equal(backend.name, 'addon', backend.fallbackReason);
  });

  test('the bundle has the addon next to it and says which backend it uses', () => {
    assert.ok(existsSync(join(dirname(AGENT_BUNDLE), ADDON_BUNDLED_NAME)), 'quiesce-freeze.node next to the bundle');
    const run = (env: NodeJS.ProcessEnv) =>
      spawnSync(process.execPath, [AGENT_BUNDLE, '-m', 'stdio', '-v', '-t', '/tmp', '--fsfreeze-include='], {
        input: '{"execute":"guest-ping"}',
        encoding: 'utf8',
        env: { PATH: process.env['PATH'], QGA_CONF: '/nonexistent.conf', ...env },
      });
    const withAddon = run({});
    assert.equal(withAddon.stdout, '{"return": {}}\n');
    assert.match(withAddon.stderr, /fsfreeze: FIFREEZE\/FITHAW through the addon/);
    const without = run({ QUIESCE_AGENT_NO_ADDON: '1' });
    assert.equal(without.stdout, '{"return": {}}\n');
    assert.match(
      without.stderr,
      /warning: fsfreeze: using fsfreeze\(8\), the addon is unavailable: QUIESCE_AGENT_NO_ADDON=1/,
    );
  });

  test('falls back to fsfreeze(8) when no addon file loads, saying why', () => {
    const backend = loadFreezeBackend(['/nonexistent/quiesce-freeze.node', '/etc/hostname']);
    assert.equal(backend.name, 'fsfreeze(8)');
    assert.match(backend.fallbackReason ?? '', /\/etc\/hostname: /);
    assert.equal(loadFreezeBackend(['/nonexistent/x.node']).fallbackReason, `no ${ADDON_BUNDLED_NAME} found`);
  });

  test('looks next to itself first, then in the source tree build', () => {
    const c = addonCandidates('/opt/agent/dist/quiesce-agent.mjs');
    assert.deepEqual(c.slice(-2), [
      '/opt/agent/dist/quiesce-freeze.node',
      '/opt/native/build/Release/quiesce_freeze.node',
    ]);
  });

  test('a mount that cannot be opened is an open failure with the glibc text', () => {
    for (const backend of [loadFreezeBackend(), fsfreezeBackend('test')]) {
      assert.deepEqual(backend.freeze('/nonexistent/mnt'), {
        ok: false,
        stage: 'open',
        code: 'ENOENT',
        text: 'No such file or directory',
      });
      assert.equal(backend.thaw('/nonexistent/mnt'), undefined, backend.name);
    }
  });
});

const SKIP = loopMountSkipReason(['ext4']);

/**
 * This suite calls FIFREEZE from the test process itself, so its mount lives in
 * this process's namespace. A FIFREEZE on a directory that is not a mount point
 * would freeze the filesystem holding it (/): refuse unless the path is a loop
 * mount in this process's mount table.
 */
function ownLoopMount(path: string): string {
  const m = readMounts().find((x) => x.dir === path);
  if (!m || !m.source.startsWith('/dev/loop')) throw new Error(`refusing to freeze ${path}: not a loop mount here`);
  return path;
}

describe('FIFREEZE/FITHAW on a loop mount', { skip: SKIP }, () => {
  const mounts = useLoopMounts(['ext4'], { isolated: false });
  for (const backend of [loadFreezeBackend(), fsfreezeBackend('test')]) {
    test(`${backend.name}: freeze blocks writes, a second freeze is EBUSY, thaw repeats until it fails`, async () => {
      const m = mounts[0]!;
      const mnt = ownLoopMount(m.mnt);
      assert.equal(await writeCompletes(m, 3000), true, 'writable before');
      assert.deepEqual(backend.freeze(mnt), { ok: true });
      let thawed: number | undefined;
      try {
        assert.equal(await writeCompletes(m, 400), false, 'a write blocks while frozen');
        assert.deepEqual(backend.freeze(mnt), {
          ok: false,
          stage: 'ioctl',
          code: 'EBUSY',
          text: 'Device or resource busy',
        });
      } finally {
        thawed = backend.thaw(mnt);
      }
      assert.equal(thawed, 1);
      assert.equal(backend.thaw(mnt), 0, 'nothing left to thaw');
      assert.equal(await writeCompletes(m, 3000), true, 'writable after');
    });
  }

  test('the safety check refuses a directory that is not a mount point', () => {
    assert.throws(() => ownLoopMount(mounts[0]!.dir), /refusing to freeze/);
  });
});
