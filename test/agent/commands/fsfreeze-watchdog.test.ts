// The freeze watchdog (an extension): a freeze nobody thaws is thawed by the agent after its limit.
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { rmSync } from 'node:fs';
import { setTimeout as sleep } from 'node:timers/promises';
import { GET_FREEZE_RECORD, SET_FREEZE_LIMIT } from '../../../agent/src/commands/fsfreeze.js';
import { loopMountSkipReason, useLoopMounts, writeCompletes } from '../../helpers/loop-mounts.js';
import { inNs, markerState, ours, waitFor, type Client } from './fsfreeze-rig.js';

const SKIP = loopMountSkipReason(['ext4']);

interface Record {
  start: number;
  end?: number;
  limit: number;
  'thaw-deadline'?: number;
  'auto-thawed': boolean;
  frozen?: number;
  thawed?: number;
  mountpoints: string[];
  recovered: boolean;
}

const status = (c: Client) => c.ok<string>('guest-fsfreeze-status');

describe('freeze watchdog', { skip: SKIP }, () => {
  const mounts = useLoopMounts(['ext4']);
  const mnt = (): string => mounts[0]!.mnt;

  test('frozen with a 2 s limit and no thaw: thawed on its own within 3 s, and the record says so', async () => {
    const c = await ours([mnt()], inNs(mounts, { args: ['--fsfreeze-limit=2'] }));
    try {
      const t0 = Date.now();
      assert.equal(await c.ok('guest-fsfreeze-freeze-list', { mountpoints: [mnt()] }), 1);
      const during = await c.ok<Record>(GET_FREEZE_RECORD);
      assert.equal(during.end, undefined);
      assert.equal(during['auto-thawed'], false);
      assert.ok(during['thaw-deadline']! - during.start >= 2e9, JSON.stringify(during));
      await sleep(1500);
      assert.equal(await status(c), 'frozen', 'still frozen at 1.5 s');
      assert.equal(await writeCompletes(mounts[0]!, 200), false);
      assert.equal(
        await waitFor(async () => (await status(c)) === 'thawed', 3000 - (Date.now() - t0)),
        true,
        'thawed by 3 s',
      );
      assert.ok(Date.now() - t0 < 3200);
      assert.equal(markerState(c.agent.statedir), 'absent');
      assert.equal(await writeCompletes(mounts[0]!, 3000), true);
      const rec = await c.ok<Record>(GET_FREEZE_RECORD);
      assert.equal(rec['auto-thawed'], true);
      assert.equal(rec.limit, 2);
      assert.equal(rec.frozen, 1);
      assert.equal(rec.thawed, 1);
      assert.deepEqual(rec.mountpoints, [mnt()]);
      assert.equal(rec.recovered, false);
      const window = (rec.end! - rec.start) / 1e6;
      assert.ok(window >= 2000 && window < 2600, `frozen ${window} ms`);
      assert.equal(rec['thaw-deadline'], undefined);
      // A thaw after the watchdog's is a plain thaw of nothing.
      assert.equal(await c.ok('guest-fsfreeze-thaw'), 0);
    } finally {
      await c.close();
    }
  });

  test('set-freeze-limit applies to the next freeze only; bad values are refused', async () => {
    const c = await ours([mnt()], inNs(mounts));
    try {
      assert.deepEqual(await c.call(GET_FREEZE_RECORD), {
        error: { class: 'GenericError', desc: 'no freeze has been recorded since the agent started' },
      });
      for (const seconds of [0, -1, 2147484]) {
        assert.deepEqual(await c.call(SET_FREEZE_LIMIT, { seconds }), {
          error: { class: 'GenericError', desc: "Parameter 'seconds' expects a number of seconds from 1 to 2147483" },
        });
      }
      assert.deepEqual(await c.call(SET_FREEZE_LIMIT, {}), {
        error: { class: 'GenericError', desc: "Parameter 'seconds' is missing" },
      });
      assert.deepEqual(await c.ok(SET_FREEZE_LIMIT, { seconds: 1 }), {});
      assert.equal(await c.ok('guest-fsfreeze-freeze'), 1);
      assert.equal(await waitFor(async () => (await status(c)) === 'thawed', 2500), true, 'thawed after 1 s');
      assert.equal((await c.ok<Record>(GET_FREEZE_RECORD))['auto-thawed'], true);
      // The next freeze is back to the configured 600 s.
      assert.equal(await c.ok('guest-fsfreeze-freeze'), 1);
      assert.equal((await c.ok<Record>(GET_FREEZE_RECORD)).limit, 600);
      await sleep(1500);
      assert.equal(await status(c), 'frozen');
      assert.equal(await c.ok('guest-fsfreeze-thaw'), 1);
      assert.equal((await c.ok<Record>(GET_FREEZE_RECORD))['auto-thawed'], false);
    } finally {
      await c.close();
    }
  });

  test('--fsfreeze-limit=0 disables the watchdog', async () => {
    const c = await ours([mnt()], inNs(mounts, { args: ['--fsfreeze-limit=0'] }));
    try {
      assert.equal(await c.ok('guest-fsfreeze-freeze'), 1);
      const rec = await c.ok<Record>(GET_FREEZE_RECORD);
      assert.equal(rec.limit, 0);
      assert.equal(rec['thaw-deadline'], undefined);
    } finally {
      // Thawed and closed whatever happened above; the thaw's count is checked after.
      const thawed = await c.ok('guest-fsfreeze-thaw').finally(() => c.close());
      assert.equal(thawed, 1);
    }
  });

  test('after a crash while frozen the restarted agent applies the limit from its start', async () => {
    const first = await ours([mnt()], inNs(mounts));
    const statedir = first.agent.statedir;
    let second: Client | undefined;
    try {
      assert.equal(await first.ok('guest-fsfreeze-freeze'), 1);
      await first.agent.kill();
      second = await ours([mnt()], inNs(mounts, { statedir, args: ['--fsfreeze-limit=2'] }));
      assert.equal(await status(second), 'frozen');
      assert.equal(await waitFor(async () => (await status(second!)) === 'thawed', 3500), true);
      const rec = await second.ok<Record>(GET_FREEZE_RECORD);
      assert.equal(rec.recovered, true);
      assert.equal(rec['auto-thawed'], true);
      assert.equal(rec.thawed, 1);
      assert.equal(rec.frozen, undefined);
      assert.equal(markerState(statedir), 'absent');
      assert.equal(await writeCompletes(mounts[0]!, 3000), true);
    } finally {
      await first.close();
      await second?.close();
      rmSync(statedir, { recursive: true, force: true });
    }
  });
});
