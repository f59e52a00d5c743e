// Freeze/thaw hooks around real freezes of the test's own loop mounts, and the failing-hook replies
// compared with the reference's (its freeze hook fails before it could freeze anything).
import { describe, test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { chmodSync, existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { haveQemuGa } from '../../helpers/agents.js';
import { loopMountSkipReason, useLoopMounts, writeCompletes } from '../../helpers/loop-mounts.js';
import { inNs, markerState, ours, reference, type Client, type Reply } from './fsfreeze-rig.js';

const SKIP = loopMountSkipReason(['ext4', 'xfs']);
const SKIP_REF =
  SKIP || (haveQemuGa() ? false : 'needs the reference agent /usr/sbin/qemu-ga (apt-get install qemu-guest-agent)');

let dir: string;
before(() => (dir = mkdtempSync(join(tmpdir(), 'quiesce-hook-proc-'))));
after(() => rmSync(dir, { recursive: true, force: true }));

function script(path: string, body: string): string {
  writeFileSync(path, `#!/bin/sh\n${body}\n`);
  chmodSync(path, 0o755);
  return path;
}

const lines = (file: string): string[] => (existsSync(file) ? readFileSync(file, 'utf8').trim().split('\n') : []);

describe('fsfreeze hooks around real freezes', { skip: SKIP }, () => {
  const mounts = useLoopMounts(['ext4', 'xfs']);
  const mnts = (): string[] => mounts.map((m) => m.mnt);

  test('a hook directory runs in name order before the freeze and in reverse after the thaw', async () => {
    const hookdir = join(dir, 'order.d');
    const trace = join(dir, 'order.trace');
    mkdirSync(hookdir);
    // Each script proves where it runs: its write to the first mount completes (never frozen while hooks run).
    for (const name of ['10-db', '20-app', '30-cache']) {
      script(
        join(hookdir, name),
        `timeout 5 dd if=/dev/zero of=${mounts[0]!.mnt}/${name}-$1 bs=4096 count=1 conv=fsync status=none && echo "${name} $1 wrote" >> ${trace}`,
      );
    }
    const c = await ours(mnts(), inNs(mounts, { args: [`-F${hookdir}`] }));
    try {
      assert.equal(await c.ok('guest-fsfreeze-freeze'), 2);
      assert.deepEqual(lines(trace), ['10-db freeze wrote', '20-app freeze wrote', '30-cache freeze wrote']);
      assert.equal(await c.ok('guest-fsfreeze-thaw'), 2);
      assert.deepEqual(lines(trace).slice(3), ['30-cache thaw wrote', '20-app thaw wrote', '10-db thaw wrote']);
    } finally {
      await c.close();
    }
  });

  test('a hung freeze hook is killed at its timeout and nothing stays frozen; the started hooks get their thaw', async () => {
    const hookdir = join(dir, 'hang.d');
    const trace = join(dir, 'hang.trace');
    mkdirSync(hookdir);
    script(join(hookdir, '10-ok'), `echo "10-ok $1" >> ${trace}`);
    script(join(hookdir, '20-hangs'), `echo "20-hangs $1" >> ${trace}; [ "$1" = thaw ] || sleep 600`);
    script(join(hookdir, '30-never'), `echo "30-never $1" >> ${trace}`);
    const c = await ours(mnts(), inNs(mounts, { args: [`-F${hookdir}`, '--fsfreeze-hook-timeout=1'] }));
    try {
      const t0 = Date.now();
      const r = await c.call('guest-fsfreeze-freeze-list', { mountpoints: mnts() });
      const took = Date.now() - t0;
      assert.deepEqual(r, {
        error: {
          class: 'GenericError',
          desc: `fsfreeze hook has timed out after 1 s and was killed (${join(hookdir, '20-hangs')})`,
        },
      });
      assert.ok(took >= 950 && took < 4000, `${took} ms`);
      assert.equal(await c.ok('guest-fsfreeze-status'), 'thawed');
      assert.equal(markerState(c.agent.statedir), 'absent');
      for (const m of mounts) assert.equal(await writeCompletes(m, 3000), true, `${m.mnt} writable`);
      assert.deepEqual(lines(trace), ['10-ok freeze', '20-hangs freeze', '20-hangs thaw', '10-ok thaw']);
    } finally {
      await c.close();
    }
  });

  test('hook output reaches the agent log', async () => {
    const hook = script(join(dir, 'talker'), 'echo "hello from the $1 hook"; echo "and stderr" >&2');
    const logfile = join(dir, 'talker.log');
    const c = await ours(mnts(), inNs(mounts, { args: [`-F${hook}`, '-l', logfile] }));
    try {
      assert.equal(await c.ok('guest-fsfreeze-freeze-list', { mountpoints: [mounts[0]!.mnt] }), 1);
      assert.equal(await c.ok('guest-fsfreeze-thaw'), 1);
    } finally {
      await c.close();
    }
    const log = readFileSync(logfile, 'utf8');
    assert.match(log, new RegExp(`fsfreeze hook ${hook} freeze: hello from the freeze hook`));
    assert.match(log, new RegExp(`fsfreeze hook ${hook} thaw: hello from the thaw hook`));
    assert.match(log, new RegExp(`fsfreeze hook ${hook} freeze: and stderr`));
  });
});

describe('failing hooks: same replies as qemu-ga', { skip: SKIP_REF }, () => {
  const mounts = useLoopMounts(['ext4']);

  /** Runs `fn` against each agent with the same hook and returns both replies. */
  async function both(
    hook: string,
    fn: (c: Client) => Promise<Reply>,
  ): Promise<{ ours: Reply; ref: Reply; clients: Client[] }> {
    const a = await ours([mounts[0]!.mnt], inNs(mounts, { args: [`-F${hook}`] }));
    const b = await reference(inNs(mounts, { args: [`-F${hook}`] })).catch(async (err: unknown) => {
      await a.close();
      throw err;
    });
    return { ours: await fn(a), ref: await fn(b), clients: [a, b] };
  }

  test('a failing freeze hook: the reference text, nothing frozen, no marker, on both agents', async () => {
    const hook = script(join(dir, 'fails-on-freeze'), '[ "$1" = freeze ] && exit 3; exit 0');
    const r = await both(hook, (c) => c.call('guest-fsfreeze-freeze-list', { mountpoints: [mounts[0]!.mnt] }));
    try {
      assert.deepEqual(r.ours, { error: { class: 'GenericError', desc: 'fsfreeze hook has failed with status 3' } });
      assert.deepEqual(r.ours, r.ref);
      for (const c of r.clients) {
        assert.equal(await c.ok('guest-fsfreeze-status'), 'thawed', c.agent.kind);
        assert.equal(markerState(c.agent.statedir), 'absent', c.agent.kind);
      }
      assert.equal(await writeCompletes(mounts[0]!, 3000), true);
    } finally {
      for (const c of r.clients) await c.close();
    }
  });

  test('a missing hook: the reference\'s "can\'t access" text', async () => {
    const hook = join(dir, 'no-such-hook');
    const r = await both(hook, (c) => c.call('guest-fsfreeze-freeze-list', { mountpoints: [mounts[0]!.mnt] }));
    try {
      assert.deepEqual(r.ours, {
        error: { class: 'GenericError', desc: `can't access fsfreeze hook '${hook}': No such file or directory` },
      });
      assert.deepEqual(r.ours, r.ref);
    } finally {
      for (const c of r.clients) await c.close();
    }
  });

  test('a failing thaw hook: the thaw is the hook error, yet everything is thawed, on both agents', async () => {
    const hook = script(join(dir, 'fails-on-thaw'), '[ "$1" = thaw ] && exit 1; exit 0');
    const r = await both(hook, async (c) => {
      assert.equal(await c.ok('guest-fsfreeze-freeze-list', { mountpoints: [mounts[0]!.mnt] }), 1);
      // The reference's thaw thaws every mount of the machine; ours only the included one.
      return c.call('guest-fsfreeze-thaw');
    });
    try {
      assert.deepEqual(r.ours, { error: { class: 'GenericError', desc: 'fsfreeze hook has failed with status 1' } });
      assert.deepEqual(r.ours, r.ref);
      for (const c of r.clients) assert.equal(await c.ok('guest-fsfreeze-status'), 'thawed', c.agent.kind);
      assert.equal(await writeCompletes(mounts[0]!, 3000), true);
    } finally {
      for (const c of r.clients) await c.close();
    }
  });
});
