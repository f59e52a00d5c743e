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
    assert.equal(await again, 4);
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
