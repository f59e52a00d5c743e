import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { acquireGuestLock } from '../../../src/guest/lock.js';
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
