// The checks of a verify by boot, against a fake agent: what each check asks and how it judges the replies.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import type { BootChecks } from '../../../src/config/types.js';
import { AgentError } from '../../../src/errors.js';
import type { GuestAgent } from '../../../src/guest/types.js';
import { runBootChecks } from '../../../src/verify/checks.js';

type Handler = (args: Record<string, unknown> | undefined) => unknown;

/** An agent answering from a table; records each command. */
function fakeAgent(table: Record<string, Handler>): GuestAgent & { calls: string[] } {
  const calls: string[] = [];
  return {
    address: 'fake',
    calls,
    execute: (command, args) => {
      calls.push(command);
      const h = table[command];
      if (!h) return Promise.reject(new Error(`${command}: not faked`));
      try {
        return Promise.resolve(h(args));
      } catch (err) {
        return Promise.reject(err as Error);
      }
    },
    close: () => Promise.resolve(),
  };
}

const checks = (c: Partial<BootChecks>): BootChecks => ({ mountpoints: [], files: [], commands: [], ...c });
const soon = () => ({ deadline: performance.now() + 10_000 });

test('mountpoints: found ones pass with their type and device, missing ones fail listing what is mounted', async () => {
  const agent = fakeAgent({
    'guest-get-fsinfo': () => [
      { name: 'vda', mountpoint: '/data', type: 'ext4' },
      { name: 'vdb1', mountpoint: '/', type: 'xfs' },
    ],
  });
  const r = await runBootChecks(agent, checks({ mountpoints: ['/data/', '/', '/srv'] }), soon());
  assert.deepEqual(r, [
    { name: 'guest-get-fsinfo', ok: true, detail: '2 filesystem(s)' },
    { name: 'mountpoint /data/', ok: true, detail: 'ext4 on vda' },
    { name: 'mountpoint /', ok: true, detail: 'xfs on vdb1' },
    { name: 'mountpoint /srv', ok: false, detail: 'not mounted (mounted: /data, /)' },
  ]);
  assert.deepEqual(agent.calls, ['guest-get-fsinfo'], 'asked once for all mountpoints');
});

test('mountpoints: guest-get-fsinfo failing fails it and every mountpoint', async () => {
  const agent = fakeAgent({
    'guest-get-fsinfo': () => {
      throw new AgentError('guest-get-fsinfo', 'CommandNotFound', 'Command guest-get-fsinfo has been disabled');
    },
  });
  const r = await runBootChecks(agent, checks({ mountpoints: ['/data'] }), soon());
  assert.deepEqual(
    r.map((c) => [c.name, c.ok]),
    [
      ['guest-get-fsinfo', false],
      ['mountpoint /data', false],
    ],
  );
  assert.match(r[0]!.detail!, /disabled/);
});

test('files: read in chunks until eof, hashed, compared; the handle is closed even when a read fails', async () => {
  const content = Buffer.alloc(2.5 * (1 << 20), 7);
  let pos = 0;
  const closed: unknown[] = [];
  const agent = fakeAgent({
    'guest-file-open': (a) => (a?.['path'] === '/data/f' ? 42 : 43),
    'guest-file-read': (a) => {
      if (a?.['handle'] === 43) throw new AgentError('guest-file-read', 'GenericError', 'read failed');
      const n = a?.['count'] as number;
      const chunk = content.subarray(pos, pos + n);
      pos += chunk.length;
      return { count: chunk.length, 'buf-b64': chunk.toString('base64'), eof: pos >= content.length };
    },
    'guest-file-close': (a) => void closed.push(a?.['handle']),
  });
  const sha = createHash('sha256').update(content).digest('hex');
  const r = await runBootChecks(
    agent,
    checks({
      files: [
        { path: '/data/f', sha256: sha.toUpperCase() },
        { path: '/data/g', sha256: sha },
      ],
    }),
    soon(),
  );
  assert.deepEqual(r[0], { name: 'file /data/f', ok: true, detail: `sha256 matches (${content.length} bytes)` });
  assert.equal(r[1]!.ok, false);
  assert.match(r[1]!.detail!, /read failed/);
  assert.deepEqual(closed, [42, 43]);
  assert.equal(agent.calls.filter((c) => c === 'guest-file-read').length, 4, '3 chunks of 1 MiB + the failed one');
});

test('files: a different content fails with the hash found', async () => {
  const agent = fakeAgent({
    'guest-file-open': () => 1,
    'guest-file-read': () => ({ count: 2, 'buf-b64': Buffer.from('hi').toString('base64'), eof: true }),
    'guest-file-close': () => undefined,
  });
  const r = await runBootChecks(agent, checks({ files: [{ path: '/f', sha256: '0'.repeat(64) }] }), soon());
  const hi = createHash('sha256').update('hi').digest('hex');
  assert.deepEqual(r, [{ name: 'file /f', ok: false, detail: `sha256 ${hi} (2 bytes), expected ${'0'.repeat(64)}` }]);
});

test('commands: guest-exec, then guest-exec-status until exited; exit 0 passes, others fail with their stderr', async () => {
  const polls = new Map<number, number>();
  const agent = fakeAgent({
    'guest-exec': (a) => ({ pid: (a?.['arg'] as string[]).length }),
    'guest-exec-status': (a) => {
      const pid = a?.['pid'] as number;
      const n = (polls.get(pid) ?? 0) + 1;
      polls.set(pid, n);
      if (n < 3) return { exited: false };
      return pid === 0
        ? { exited: true, exitcode: 0 }
        : pid === 1
          ? { exited: true, exitcode: 2, 'err-data': Buffer.from('no such unit\n').toString('base64') }
          : { exited: true, signal: 9 };
    },
  });
  const r = await runBootChecks(agent, checks({ commands: [['true'], ['check', 'x'], ['a', 'b', 'c']] }), soon());
  assert.deepEqual(r, [
    { name: 'command true', ok: true, detail: 'exit 0' },
    { name: 'command check x', ok: false, detail: 'exit 2: no such unit' },
    { name: 'command a b c', ok: false, detail: 'killed by signal 9' },
  ]);
});

test('a command still running at the deadline fails; checks after the deadline fail without asking the agent', async () => {
  const agent = fakeAgent({ 'guest-exec': () => ({ pid: 1 }), 'guest-exec-status': () => ({ exited: false }) });
  const r = await runBootChecks(agent, checks({ commands: [['sleep', '100']], mountpoints: [] }), {
    deadline: performance.now() + 300,
  });
  assert.deepEqual(r, [
    { name: 'command sleep 100', ok: false, detail: 'still running when the verify timeout ran out' },
  ]);
  const late = await runBootChecks(agent, checks({ files: [{ path: '/f', sha256: '0'.repeat(64) }] }), {
    deadline: performance.now() - 1,
  });
  assert.deepEqual(late, [{ name: 'file /f', ok: false, detail: 'the verify timeout ran out' }]);
});

test('an abort is not a failed check: it is thrown', async () => {
  const ac = new AbortController();
  ac.abort(new Error('stop'));
  const agent = fakeAgent({ 'guest-get-fsinfo': () => [] });
  await assert.rejects(runBootChecks(agent, checks({ mountpoints: ['/'] }), { ...soon(), signal: ac.signal }), /stop/);
});
