// guest-fsfreeze-* against quiesce-agent processes on real ext4, xfs and btrfs loop mounts of the test's own.
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, rmdirSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { once } from 'node:events';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { GET_FREEZE_RECORD, SET_FREEZE_LIMIT } from '../../../agent/src/commands/fsfreeze.js';
import {
  loopMountSkipReason,
  runIn,
  startWrite,
  type LoopMount,
  useLoopMounts,
  writeCompletes,
} from '../../helpers/loop-mounts.js';
import {
  type Client,
  enabledCommands,
  FREEZE_SAFE,
  frozenText,
  inNs,
  markerOf,
  markerState,
  ours,
  waitFor,
} from './fsfreeze-rig.js';

const SKIP = loopMountSkipReason(['ext4', 'xfs', 'btrfs']);

describe('guest-fsfreeze on loop mounts (quiesce-agent)', { skip: SKIP }, () => {
  const mounts = useLoopMounts(['ext4', 'xfs', 'btrfs']);
  const mnts = (): string[] => mounts.map((m) => m.mnt);
  /** Agents run in the mounts' private namespace. */
  const agent = (include: readonly string[], args: string[] = []) => ours(include, inNs(mounts, { args }));
  /**
   * Freezes `m`, blocks a write on it and sends `signal`; once the agent is
   * gone, checks that the write completed and the marker went, and returns the exit code.
   */
  const signalWhileFrozen = async (c: Client, m: LoopMount, signal: NodeJS.Signals): Promise<unknown> => {
    assert.equal(await c.ok('guest-fsfreeze-freeze'), 1);
    const w = startWrite(m);
    try {
      await sleep(300);
      assert.equal(w.finished(), false);
      const exited = once(c.agent.child, 'exit');
      c.agent.child.kill(signal);
      const [code] = (await Promise.race([exited, sleep(5000).then(() => ['timeout'])])) as [unknown];
      const written = await Promise.race([w.done, sleep(5000).then(() => 'timeout')]);
      assert.equal(written, 0, `${signal}: the blocked write completes`);
      assert.equal(existsSync(markerOf(c.agent.statedir)), false, `${signal}: marker removed`);
      return code;
    } finally {
      w.kill();
    }
  };

  test('freeze-list blocks a write+fsync on ext4, xfs and btrfs until the thaw releases it', async () => {
    const c = await agent(mnts());
    try {
      assert.equal(await c.ok('guest-fsfreeze-freeze-list', { mountpoints: mnts() }), 3);
      const writes = mounts.map((m) => startWrite(m));
      try {
        await sleep(500);
        assert.deepEqual(
          writes.map((w) => w.finished()),
          [false, false, false],
          'no write completes while frozen',
        );
        assert.equal(await c.ok('guest-fsfreeze-status'), 'frozen');
      } finally {
        assert.equal(await c.ok('guest-fsfreeze-thaw'), 3);
      }
      const codes = await Promise.race([Promise.all(writes.map((w) => w.done)), sleep(5000).then(() => 'timeout')]);
      assert.deepEqual(codes, [0, 0, 0], 'every write completes after the thaw');
      assert.equal(await c.ok('guest-fsfreeze-status'), 'thawed');
    } finally {
      await c.close();
    }
  });

  test('a bare freeze touches only the included mounts; frozen mode gates commands like the reference', async () => {
    const c = await agent(mnts());
    try {
      assert.equal(markerState(c.agent.statedir), 'absent');
      assert.equal(await c.ok('guest-fsfreeze-freeze'), 3);
      assert.equal(markerState(c.agent.statedir), 'ok', 'marker: empty, 0600');
      assert.equal(await c.ok('guest-fsfreeze-status'), 'frozen');
      assert.deepEqual(await enabledCommands(c), [...FREEZE_SAFE, GET_FREEZE_RECORD].sort());
      for (const cmd of ['guest-fsfreeze-freeze', 'guest-fsfreeze-freeze-list', 'guest-get-fsinfo', SET_FREEZE_LIMIT]) {
        assert.deepEqual(await c.call(cmd), frozenText(cmd));
      }
      assert.deepEqual(await c.ok(GET_FREEZE_RECORD).then((r) => (r as { frozen: number }).frozen), 3);
      assert.equal(await c.ok('guest-fsfreeze-thaw'), 3);
      assert.equal(await c.ok('guest-fsfreeze-thaw'), 0, 'thaw while thawed');
      // The marker goes AFTER_REPLY_DELAY_MS after the thaw's reply.
      const deadline = Date.now() + 5000;
      while (markerState(c.agent.statedir) !== 'absent' && Date.now() < deadline) await sleep(5);
      assert.equal(markerState(c.agent.statedir), 'absent');
      const enabled = await enabledCommands(c);
      assert.ok(enabled.includes('guest-get-fsinfo') && enabled.includes('guest-fsfreeze-freeze'));
      for (const m of mounts) assert.equal(await writeCompletes(m, 3000), true, m.mnt);
    } finally {
      await c.close();
    }
  });

  test('a listed path that is not a mount, or not included, freezes nothing and leaves the agent thawed', async () => {
    const c = await agent([mounts[0]!.mnt]);
    try {
      assert.equal(await c.ok('guest-fsfreeze-freeze-list', { mountpoints: ['/nonexistent/mnt', mounts[1]!.dir] }), 0);
      assert.equal(await c.ok('guest-fsfreeze-freeze-list', { mountpoints: [mounts[1]!.mnt] }), 0, 'not included');
      assert.equal(await c.ok('guest-fsfreeze-freeze-list', { mountpoints: [] }), 0);
      assert.equal(await c.ok('guest-fsfreeze-status'), 'thawed');
      assert.equal(markerState(c.agent.statedir), 'absent');
      assert.equal(await writeCompletes(mounts[1]!, 3000), true);
      // An empty include list: even a bare freeze freezes nothing.
      const none = await agent([]);
      try {
        assert.equal(await none.ok('guest-fsfreeze-freeze'), 0);
        assert.equal(await none.ok('guest-fsfreeze-status'), 'thawed');
      } finally {
        await none.close();
      }
    } finally {
      await c.close();
    }
  });

  test('a bind mount of a frozen filesystem is skipped (EBUSY, not counted) and one thaw thaws both', async () => {
    const m = mounts[0]!;
    const bind = join(m.dir, 'bind');
    mkdirSync(bind, { recursive: true });
    assert.equal(runIn(m.wrap, 'mount', ['--bind', m.mnt, bind]).status, 0);
    const target = { mnt: bind, wrap: m.wrap };
    try {
      const c = await agent([m.mnt, bind]);
      try {
        assert.equal(await c.ok('guest-fsfreeze-freeze'), 1);
        assert.equal(await writeCompletes(target, 300), false);
        assert.equal(await c.ok('guest-fsfreeze-thaw'), 1);
        assert.equal(await writeCompletes(target, 3000), true);
      } finally {
        await c.close();
      }
    } finally {
      runIn(m.wrap, 'fsfreeze', ['-u', m.mnt]);
      runIn(m.wrap, 'umount', [bind]);
      rmdirSync(bind);
    }
  });

  test('log lines are held in memory while frozen and written after the thaw', async () => {
    const dir = mounts[0]!.dir;
    const logfile = join(dir, 'agent.log');
    const c = await agent([mounts[0]!.mnt], ['-v', '-l', logfile]);
    try {
      await c.ok('guest-ping');
      assert.equal(await c.ok('guest-fsfreeze-freeze'), 1);
      const size = statSync(logfile).size;
      await c.ok('guest-ping');
      await c.ok('guest-fsfreeze-status');
      assert.equal(statSync(logfile).size, size, 'nothing written while frozen');
      await c.ok('guest-fsfreeze-thaw');
      // The held lines go out AFTER_REPLY_DELAY_MS after the thaw's reply (not before it: not in the window).
      const deadline = Date.now() + 5000;
      while (!readFileSync(logfile, 'utf8').includes('thawed 1') && Date.now() < deadline) await sleep(5);
      const text = readFileSync(logfile, 'utf8').slice(size);
      const order = [
        'froze 1 filesystem',
        'running command guest-ping',
        'running command guest-fsfreeze-status',
        'thawed 1',
      ];
      let at = -1;
      for (const needle of order) {
        const i = text.indexOf(needle, at + 1);
        assert.ok(i > at, `"${needle}" after the thaw, in order:\n${text}`);
        at = i;
      }
    } finally {
      await c.close();
    }
  });

  test('SIGTERM while frozen thaws first, then exits (qemu-ga would ignore it)', async () => {
    const m = mounts[1]!;
    const logfile = join(m.dir, 'sigterm.log');
    const c = await agent([m.mnt], ['-l', logfile]);
    try {
      assert.equal(await signalWhileFrozen(c, m, 'SIGTERM'), 0, 'exits by itself, status 0');
      assert.match(
        readFileSync(logfile, 'utf8'),
        /stopping while frozen: thawing first[\s\S]*thawed 1 filesystem\(s\) \(stop\)/,
      );
    } finally {
      await c.close();
    }
  });

  test('an internal error (uncaught exception or rejection) while frozen thaws, logs it and exits 1', async () => {
    // The fault comes from a preloaded script, so the bundle under test is the one that ships.
    const dir = mkdtempSync(join(tmpdir(), 'quiesce-fault-'));
    const preload = join(dir, 'fault.cjs');
    writeFileSync(
      preload,
      "process.on('SIGUSR2', () => process.env.FAULT === 'reject'" +
        " ? void Promise.reject(new Error('injected rejection')) : (() => { throw new Error('injected throw'); })());\n",
    );
    try {
      for (const [fault, text] of [
        ['throw', 'injected throw'],
        ['reject', 'injected rejection'],
      ] as const) {
        const m = mounts[0]!;
        const logfile = join(dir, `${fault}.log`);
        const c = await ours(
          [m.mnt],
          inNs(mounts, { args: ['-l', logfile], env: { NODE_OPTIONS: `--require ${preload}`, FAULT: fault } }),
        );
        try {
          assert.equal(await signalWhileFrozen(c, m, 'SIGUSR2'), 1, `${fault}: exits with status 1`);
          const log = readFileSync(logfile, 'utf8');
          assert.match(
            log,
            /internal error while frozen: thawing before exiting[\s\S]*thawed 1 filesystem\(s\) \(crash\)/,
          );
          assert.match(log, new RegExp(`critical: internal error, exiting: Error: ${text}\\n\\s+at `));
        } finally {
          await c.close();
        }
      }
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  test('through the fsfreeze(8) fallback (no addon) the replies and the effect are the same', async () => {
    const c = await ours(mnts(), inNs(mounts, { env: { QUIESCE_AGENT_NO_ADDON: '1' } }));
    try {
      assert.equal(await c.ok('guest-fsfreeze-freeze'), 3);
      assert.equal(await writeCompletes(mounts[0]!, 300), false);
      assert.equal(await c.ok('guest-fsfreeze-thaw'), 3);
      for (const m of mounts) assert.equal(await writeCompletes(m, 3000), true, m.mnt);
      assert.match(c.agent.stderr(), /using fsfreeze\(8\), the addon is unavailable: QUIESCE_AGENT_NO_ADDON=1/);
    } finally {
      await c.close();
    }
  });

  test('stays frozen until told otherwise (the default limit is 600 s)', async () => {
    const c = await agent([mounts[2]!.mnt]);
    try {
      assert.equal(await c.ok('guest-fsfreeze-freeze'), 1);
      const rec = await c.ok<{ limit: number; 'thaw-deadline': number; start: number }>(GET_FREEZE_RECORD);
      assert.equal(rec.limit, 600);
      assert.ok(Math.abs(rec['thaw-deadline'] - rec.start - 600e9) < 100e6, JSON.stringify(rec));
      assert.equal(await waitFor(async () => (await c.ok('guest-fsfreeze-status')) === 'thawed', 1500), false);
    } finally {
      // Thawed and closed whatever happened above; the thaw's count is checked after.
      const thawed = await c.ok('guest-fsfreeze-thaw').finally(() => c.close());
      assert.equal(thawed, 1);
    }
  });
});
