import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import {
  formatEta,
  formatProgress,
  formatSize,
  progressReporter,
  RateMeter,
  Throttle,
} from '../../../src/log/progress.js';
import { captureLogger } from '../../../src/log/logger.js';
import { describe as describeEvent } from '../../../src/log/events.js';

const MiB = 1 << 20;

describe('rate meter', () => {
  test('no rate from one sample, nor from samples closer than half a second', () => {
    const m = new RateMeter();
    assert.deepEqual(m.add(0, 100 * MiB, 0), { rateBytesPerSec: null, etaSec: null });
    assert.deepEqual(m.add(MiB, 100 * MiB, 400), { rateBytesPerSec: null, etaSec: null });
  });

  test('rate is bytes over time since the first sample; ETA is what is left at that rate, rounded up', () => {
    const m = new RateMeter();
    m.add(0, 100 * MiB, 1000);
    assert.deepEqual(m.add(10 * MiB, 100 * MiB, 2000), { rateBytesPerSec: 10 * MiB, etaSec: 9 });
    assert.deepEqual(m.add(25 * MiB, 100 * MiB, 3000), { rateBytesPerSec: 12.5 * MiB, etaSec: 6 });
  });

  test('a sliding window: a stall shows within it, an old burst drops out of it', () => {
    const m = new RateMeter(4000);
    m.add(0, 1000 * MiB, 0);
    m.add(100 * MiB, 1000 * MiB, 1000); // a burst
    for (let t = 2000; t <= 5000; t += 1000) m.add(100 * MiB, 1000 * MiB, t); // then a stall
    // The window keeps the sample at its start (t=1000): nothing copied since.
    assert.deepEqual(m.add(100 * MiB, 1000 * MiB, 6000), { rateBytesPerSec: 0, etaSec: null });
    // Copying again: 4 MiB in the last 4 s.
    m.add(101 * MiB, 1000 * MiB, 7000);
    m.add(102 * MiB, 1000 * MiB, 8000);
    m.add(103 * MiB, 1000 * MiB, 9000);
    const r = m.add(104 * MiB, 1000 * MiB, 10_000);
    assert.equal(r.rateBytesPerSec, MiB);
    assert.equal(r.etaSec, 896);
  });

  test('done going down (the next disk, a restarted copy) starts over; done equal to total has ETA 0', () => {
    const m = new RateMeter();
    m.add(50, 100, 0);
    m.add(80, 100, 1000);
    assert.deepEqual(m.add(10, 100, 2000), { rateBytesPerSec: null, etaSec: null });
    assert.deepEqual(m.add(100, 100, 3000), { rateBytesPerSec: 90, etaSec: 0 });
    assert.deepEqual(new RateMeter().add(5, 5, 0), { rateBytesPerSec: null, etaSec: 0 });
  });
});

describe('throttle', () => {
  test('lets a key through at once, then at most once per interval; keys are independent', () => {
    let now = 0;
    const t = new Throttle(10_000, () => now);
    assert.equal(t.take('web1'), true);
    now = 1000;
    assert.equal(t.take('web1'), false);
    assert.equal(t.take('db1'), true);
    now = 9999;
    assert.equal(t.take('web1'), false);
    now = 10_000;
    assert.equal(t.take('web1'), true);
    now = 10_500;
    assert.equal(t.take('db1'), false, "db1's interval started at 1000");
    now = 11_000;
    assert.equal(t.take('db1'), true);
    assert.equal(t.take('web1'), false);
    t.forget('web1');
    assert.equal(t.take('web1'), true);
  });

  test('samples every second for a minute: one per 10 s gets through', () => {
    let now = 0;
    const t = new Throttle(10_000, () => now);
    const passed: number[] = [];
    for (now = 0; now <= 60_000; now += 1000) if (t.take('g')) passed.push(now);
    assert.deepEqual(passed, [0, 10_000, 20_000, 30_000, 40_000, 50_000, 60_000]);
  });
});

describe('progress reporter and formatting', () => {
  test('logs every sample as a progress event with the rate and ETA so far', () => {
    let now = 0;
    const log = captureLogger();
    const report = progressReporter(log, 'web1', 'snapshot-complete', () => now);
    report(0, 100 * MiB);
    now = 2000;
    report(20 * MiB, 100 * MiB);
    now = 3000;
    report(30 * MiB, 100 * MiB, 'restore vdb (2/2)');
    assert.deepEqual(log.events, [
      {
        kind: 'progress',
        guest: 'web1',
        step: 'snapshot-complete',
        done: 0,
        total: 100 * MiB,
        rateBytesPerSec: null,
        etaSec: null,
      },
      {
        kind: 'progress',
        guest: 'web1',
        step: 'snapshot-complete',
        done: 20 * MiB,
        total: 100 * MiB,
        rateBytesPerSec: 10 * MiB,
        etaSec: 8,
      },
      {
        kind: 'progress',
        guest: 'web1',
        step: 'restore vdb (2/2)',
        done: 30 * MiB,
        total: 100 * MiB,
        rateBytesPerSec: 10 * MiB,
        etaSec: 7,
      },
    ]);
  });

  test('sizes, ETAs and the progress text read well', () => {
    assert.equal(formatSize(512), '512 B');
    assert.equal(formatSize(1536 * MiB), '1.5 GiB');
    assert.equal(formatSize(120 * MiB), '120 MiB');
    assert.equal(formatEta(24), '0:24');
    assert.equal(formatEta(3725), '1:02:05');
    assert.equal(
      formatProgress({ done: 1536 * MiB, total: 4096 * MiB, rateBytesPerSec: 120 * MiB, etaSec: 22 }),
      '1.5 GiB of 4.0 GiB (37%), 120 MiB/s, ETA 0:22',
    );
    assert.equal(
      formatProgress({ done: 0, total: 8 * MiB, rateBytesPerSec: null, etaSec: null }),
      '0 B of 8.0 MiB (0%)',
    );
    assert.equal(
      describeEvent({
        kind: 'progress',
        guest: 'web1',
        step: 'restore',
        done: 8 * MiB,
        total: 8 * MiB,
        rateBytesPerSec: 4 * MiB,
        etaSec: 0,
      }),
      'web1: restore: 8.0 MiB of 8.0 MiB (100%), 4.0 MiB/s',
    );
  });
});
