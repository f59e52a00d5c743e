import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { setTimeout as sleep } from 'node:timers/promises';
import { SerialQueue } from '../../agent/src/serial-queue.js';

describe('serial queue', () => {
  test('a task with nothing ahead starts in the caller turn; others wait their turn, in order', async () => {
    const q = new SerialQueue();
    const log: string[] = [];
    const slow = q.run(async () => {
      log.push('slow start');
      await sleep(50);
      log.push('slow end');
      return 1;
    });
    assert.deepEqual(log, ['slow start'], 'started before run() returned');
    const quick = q.run(() => {
      log.push('quick');
      return 2;
    });
    assert.deepEqual(log, ['slow start'], 'queued behind the running task');
    assert.deepEqual(await Promise.all([slow, quick]), [1, 2]);
    assert.deepEqual(log, ['slow start', 'slow end', 'quick']);
    const again = q.run(() => log.push('idle again'));
    assert.equal(log.at(-1), 'idle again', 'idle again: starts at once');
    assert.equal(again, 4, 'a synchronous task with nothing ahead: its result, not a promise');
  });

  test('with nothing ahead a synchronous task answers in the caller turn, throw included', () => {
    const q = new SerialQueue();
    assert.equal(
      q.run(() => 'now'),
      'now',
    );
    assert.throws(
      () =>
        q.run(() => {
          throw new Error('sync boom');
        }),
      /sync boom/,
    );
    assert.equal(
      q.run(() => 'after a throw'),
      'after a throw',
      'a throw does not leave the queue busy',
    );
  });

  test('once a running task settles, a task started from its continuation runs at once', async () => {
    const q = new SerialQueue();
    const first = q.run(async () => {
      await sleep(5);
      return 1;
    });
    assert.ok(first instanceof Promise, 'an asynchronous task gives its promise');
    let inTurn: unknown;
    await first.then(() => {
      inTurn = q.run(() => 'sync again');
    });
    assert.equal(inTurn, 'sync again', 'not a promise: the finished task no longer counts');
    const rejected = q.run(() => Promise.reject(new Error('late boom')));
    await assert.rejects(rejected as Promise<never>, /late boom/);
    assert.equal(
      q.run(() => 'after a rejection'),
      'after a rejection',
    );
  });

  test('a failing task rejects its own promise only; idle() waits for everything queued', async () => {
    const q = new SerialQueue();
    const failed = q.run(async () => {
      await sleep(10);
      throw new Error('boom');
    });
    const thrown = q.run(() => {
      throw new Error('sync boom');
    });
    let last = false;
    const after = q.run(async () => {
      await sleep(10);
      last = true;
      return 'ok';
    });
    await q.idle();
    assert.equal(last, true);
    await assert.rejects(failed, /boom/);
    await assert.rejects(thrown, /sync boom/);
    assert.equal(await after, 'ok');
  });
});
