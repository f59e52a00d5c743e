// An agent killed (-9) while frozen, restarted on the same state dir: the frozen-state marker brings the
// next agent up frozen, and its thaw thaws. Both directions with the reference qemu-ga too.
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { haveQemuGa, startAgent } from '../../helpers/agents.js';
import { loopMountSkipReason, useLoopMounts, writeCompletes, type LoopMount } from '../../helpers/loop-mounts.js';
import { GET_FREEZE_RECORD } from '../../../agent/src/commands/fsfreeze.js';
import {
  connect,
  enabledCommands,
  FREEZE_SAFE,
  frozenText,
  inNs,
  markerState,
  ours,
  reference,
  waitFor,
  type Client,
} from './fsfreeze-rig.js';

const SKIP = loopMountSkipReason(['ext4', 'xfs', 'btrfs']);
const SKIP_REF =
  SKIP || (haveQemuGa() ? false : 'needs the reference agent /usr/sbin/qemu-ga (apt-get install qemu-guest-agent)');

/** Every mount blocks a write now (frozen) or lets it through (thawed). */
async function allFrozen(mounts: readonly LoopMount[], frozen: boolean): Promise<void> {
  for (const m of mounts) {
    assert.equal(await writeCompletes(m, frozen ? 300 : 3000), !frozen, `${m.mnt} ${frozen ? 'frozen' : 'thawed'}`);
  }
}

async function close(...clients: (Client | undefined)[]): Promise<void> {
  for (const c of clients) await c?.close();
}

describe('crash while frozen', { skip: SKIP }, () => {
  const mounts = useLoopMounts(['ext4', 'xfs', 'btrfs']);
  const mnts = (): string[] => mounts.map((m) => m.mnt);

  test('quiesce-agent killed -9 while frozen; the next quiesce-agent comes up frozen and thaws', async () => {
    let second: Client | undefined;
    const first = await ours(mnts(), inNs(mounts));
    const statedir = first.agent.statedir;
    try {
      assert.equal(await first.ok('guest-fsfreeze-freeze'), 3);
      await first.agent.kill();
      assert.equal(markerState(statedir), 'ok');
      await allFrozen(mounts, true);

      const logfile = join(statedir, 'after-crash.log');
      second = await ours(mnts(), inNs(mounts, { statedir, args: ['-l', logfile] }));
      assert.equal(await second.ok('guest-fsfreeze-status'), 'frozen');
      assert.deepEqual(await second.call('guest-get-fsinfo'), frozenText('guest-get-fsinfo'));
      assert.deepEqual(await second.call('guest-fsfreeze-freeze'), frozenText('guest-fsfreeze-freeze'));
      assert.deepEqual(await enabledCommands(second), [...FREEZE_SAFE, GET_FREEZE_RECORD].sort());
      assert.equal((await second.ok<{ recovered: boolean }>(GET_FREEZE_RECORD)).recovered, true);
      assert.equal(existsSync(logfile), false, 'logfile creation waits for the thaw');

      assert.equal(await second.ok('guest-fsfreeze-thaw'), 3);
      // Removed once the reply is out (qemu-ga removes it before replying).
      assert.ok(await waitFor(() => markerState(statedir) === 'absent', 2000), 'marker removed after the thaw');
      assert.equal(await second.ok('guest-fsfreeze-status'), 'thawed');
      assert.ok(Array.isArray(await second.ok('guest-get-fsinfo')), 'commands enabled again');
      assert.equal(existsSync(logfile), true, 'logfile created after the thaw');
      await allFrozen(mounts, false);
    } finally {
      await close(first, second);
      rmSync(statedir, { recursive: true, force: true });
    }
  });

  test(
    'quiesce-agent froze and crashed; qemu-ga on that state dir comes up frozen and its thaw thaws',
    { skip: SKIP_REF },
    async () => {
      let second: Client | undefined;
      const first = await ours(mnts(), inNs(mounts));
      const statedir = first.agent.statedir;
      try {
        assert.equal(await first.ok('guest-fsfreeze-freeze-list', { mountpoints: mnts() }), 3);
        await first.agent.kill();
        second = await reference(inNs(mounts, { statedir }));
        assert.equal(await second.ok('guest-fsfreeze-status'), 'frozen');
        assert.deepEqual(await second.call('guest-get-fsinfo'), frozenText('guest-get-fsinfo'));
        // The reference thaws every mount of the machine: at least ours (another test's frozen mount may add to it).
        const n = await second.ok<number>('guest-fsfreeze-thaw');
        assert.ok(n >= 3, `thawed ${n}`);
        assert.equal(markerState(statedir), 'absent');
        assert.equal(await second.ok('guest-fsfreeze-status'), 'thawed');
        await allFrozen(mounts, false);
      } finally {
        await close(first, second);
        rmSync(statedir, { recursive: true, force: true });
      }
    },
  );

  test(
    'qemu-ga froze (freeze-list) and crashed; quiesce-agent on that state dir comes up frozen and thaws the included mounts',
    { skip: SKIP_REF },
    async () => {
      let second: Client | undefined;
      const first = await reference(inNs(mounts));
      const statedir = first.agent.statedir;
      try {
        assert.equal(await first.ok('guest-fsfreeze-freeze-list', { mountpoints: mnts() }), 3);
        assert.equal(markerState(statedir), 'ok');
        await first.agent.kill();
        await allFrozen(mounts, true);
        second = await connect(
          await startAgent('quiesce', inNs(mounts, { statedir, args: [`--fsfreeze-include=${mnts().join(',')}`] })),
        );
        assert.equal(await second.ok('guest-fsfreeze-status'), 'frozen');
        assert.deepEqual(await second.call('guest-get-fsinfo'), frozenText('guest-get-fsinfo'));
        assert.equal(await second.ok('guest-fsfreeze-thaw'), 3, 'thaws what it did not freeze');
        assert.ok(await waitFor(() => markerState(statedir) === 'absent', 2000), 'marker removed after the thaw');
        await allFrozen(mounts, false);
      } finally {
        await close(first, second);
        rmSync(statedir, { recursive: true, force: true });
      }
    },
  );
});
