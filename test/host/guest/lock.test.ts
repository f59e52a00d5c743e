import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { chmodSync, mkdtempSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { acquireGuestLock, forgetLockSecrets, lockDir, LockedError } from '../../../src/guest/lock.js';
import { QuiesceError } from '../../../src/errors.js';

const key = () => `unix:/tmp/lock-test-${process.pid}-${Math.random()}`;

test('a second holder of the same guest lock fails clearly at once', async () => {
  const k = key();
  const first = await acquireGuestLock(k);
  try {
    const err = await acquireGuestLock(k).catch((e: unknown) => e);
    assert.ok(err instanceof QuiesceError);
    assert.equal(err.code, 'LOCKED');
    assert.match(err.message, /in use by another quiesce process/);
  } finally {
    await first.release();
  }
});

test('a waiting holder gets the lock once it is released', async () => {
  const k = key();
  const first = await acquireGuestLock(k);
  setTimeout(() => void first.release(), 150);
  const t0 = Date.now();
  const second = await acquireGuestLock(k, 5000);
  assert.ok(Date.now() - t0 >= 100);
  await second.release();
});

test('different guests do not share a lock', async () => {
  const a = await acquireGuestLock(key());
  const b = await acquireGuestLock(key());
  await a.release();
  await b.release();
});

test('a lock held by a process that is killed is free again (no stale lock)', async () => {
  const k = key();
  const holder = spawn(
    process.execPath,
    [
      '--import',
      'tsx',
      '-e',
      `import('${new URL('../../../src/guest/lock.ts', import.meta.url).pathname}').then(async (m) => { await m.acquireGuestLock(${JSON.stringify(k)}); process.stdout.write('held\\n'); setInterval(() => {}, 1000); });`,
    ],
    { stdio: ['ignore', 'pipe', 'inherit'] },
  );
  try {
    await once(holder.stdout!, 'data');
    const err = await acquireGuestLock(k).catch((e: unknown) => e);
    assert.ok(err instanceof QuiesceError && err.code === 'LOCKED', 'the other process holds it');
    holder.kill('SIGKILL');
    await once(holder, 'exit');
    const lock = await acquireGuestLock(k, 2000);
    await lock.release();
  } finally {
    if (holder.exitCode === null && holder.signalCode === null) holder.kill('SIGKILL');
  }
});

test('a refusal names the holder: pid, command and run', async () => {
  const k = key();
  const first = await acquireGuestLock(k, 0, 'RUN-1');
  try {
    const err = await acquireGuestLock(k).catch((e: unknown) => e);
    assert.ok(err instanceof LockedError);
    assert.equal(err.holder?.pid, process.pid);
    assert.equal(err.holder?.runId, 'RUN-1');
    assert.match(err.message, new RegExp(`pid ${process.pid}: quiesce.*, run RUN-1`));
  } finally {
    await first.release();
  }
});

test('the lock names come from a secret only this user can read (0600 in a 0700 directory)', async () => {
  const lock = await acquireGuestLock(key());
  await lock.release();
  const dir = lockDir();
  assert.equal(statSync(dir).mode & 0o777, 0o700);
  assert.equal(statSync(join(dir, 'secret')).mode & 0o777, 0o600);
  assert.equal(statSync(dir).uid, process.getuid!());
});

test('a lock directory another user could write to is refused, not used', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'lockdir-'));
  chmodSync(dir, 0o777);
  const saved = process.env['QUIESCE_RUN_DIR'];
  process.env['QUIESCE_RUN_DIR'] = dir;
  forgetLockSecrets();
  t.after(() => {
    if (saved === undefined) delete process.env['QUIESCE_RUN_DIR'];
    else process.env['QUIESCE_RUN_DIR'] = saved;
    forgetLockSecrets();
    rmSync(dir, { recursive: true, force: true });
  });
  const err = await acquireGuestLock(key()).catch((e: unknown) => e);
  assert.ok(err instanceof QuiesceError);
  assert.match(err.message, /must be a directory owned by uid \d+ with mode 0700 .*mode 777/);
});
