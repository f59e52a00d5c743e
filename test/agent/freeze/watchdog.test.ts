// The freeze watchdog's timer: disarmed at once as far as anyone can observe, though cleared after the turn.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { setTimeout as sleep } from 'node:timers/promises';
import { FreezeWatchdog } from '../../../agent/src/freeze/watchdog.js';

test('a disarmed watchdog never fires and shows no deadline', async () => {
  const w = new FreezeWatchdog();
  let fired = 0;
  w.arm(0.03, () => fired++);
  assert.ok(w.expiresAt !== undefined);
  w.disarm();
  assert.equal(w.expiresAt, undefined);
  await sleep(100);
  assert.equal(fired, 0);
});

test('arming again in the same turn replaces the first timer', async () => {
  const w = new FreezeWatchdog();
  const fired: string[] = [];
  w.arm(0.03, () => fired.push('first'));
  w.arm(0.06, () => fired.push('second'));
  await sleep(150);
  assert.deepEqual(fired, ['second']);
  assert.equal(w.expiresAt, undefined, 'no deadline once fired');
});

test('arm(0) leaves it disarmed', async () => {
  const w = new FreezeWatchdog();
  let fired = 0;
  w.arm(0.03, () => fired++);
  w.arm(0, () => fired++);
  assert.equal(w.expiresAt, undefined);
  await sleep(100);
  assert.equal(fired, 0);
});
