// The progress sink: the live display (a fake terminal) and the throttled events, without a CLI.
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { progressIntervalFromEnv, ProgressSink, PROGRESS_EVENT_INTERVAL_MS } from '../../../src/cli/progress.js';
import type { LogEvent } from '../../../src/log/events.js';
import { createLogger } from '../../../src/log/logger.js';

const MiB = 1 << 20;

/** A pattern with ESC for the escape character (a regex literal may not hold control characters). */
const ansi = (source: string): RegExp => new RegExp(source.replaceAll('ESC', '\x1b'));
const progress = (guest: string, done: number, total = 100 * MiB): LogEvent => ({
  kind: 'progress',
  guest,
  step: 'snapshot-complete',
  done,
  total,
  rateBytesPerSec: 10 * MiB,
  etaSec: Math.ceil((total - done) / (10 * MiB)),
});

/** A terminal that records what is written to it. */
function terminal(columns = 100) {
  const writes: string[] = [];
  return { writes, columns, write: (s: string) => void writes.push(s) };
}

describe('progress sink off a terminal (events)', () => {
  test('progress events reach the log at most once per interval per guest; everything else always', () => {
    let now = 0;
    const sink = new ProgressSink({ mode: 'events', hold: () => false, now: () => now, intervalMs: 10_000 });
    const admitted: string[] = [];
    for (now = 0; now <= 30_000; now += 1000) {
      for (const g of ['web1', 'db1']) if (sink.admit(progress(g, now))) admitted.push(`${g}@${now}`);
    }
    assert.deepEqual(admitted, [
      'web1@0',
      'db1@0',
      'web1@10000',
      'db1@10000',
      'web1@20000',
      'db1@20000',
      'web1@30000',
      'db1@30000',
    ]);
    assert.equal(sink.admit({ kind: 'step-start', guest: 'web1', step: 'backup' }), true);
    assert.equal(sink.admit({ kind: 'thawed', guest: 'web1', filesystems: 1, frozenWindowMs: 3, proven: true }), true);
  });

  test('--quiet: no progress event at all; other events pass; nothing is drawn', () => {
    const t = terminal();
    const sink = new ProgressSink({ mode: 'off', hold: () => false, stream: t });
    assert.equal(sink.admit(progress('web1', 0)), false);
    assert.equal(sink.admit({ kind: 'step-start', guest: 'web1', step: 'backup' }), true);
    sink.end();
    assert.deepEqual(t.writes, []);
  });

  test('the interval is 10 s unless the test-only variable sets it', () => {
    assert.equal(PROGRESS_EVENT_INTERVAL_MS, 10_000);
    assert.equal(progressIntervalFromEnv({}), 10_000);
    assert.equal(progressIntervalFromEnv({ QUIESCE_PROGRESS_INTERVAL_MS: '250' }), 250);
    assert.equal(progressIntervalFromEnv({ QUIESCE_PROGRESS_INTERVAL_MS: 'soon' }), 10_000);
  });
});

describe('progress sink on a terminal (live display)', () => {
  test('one line per guest with its step, redrawn in place (cursor up, clear to the end)', () => {
    const t = terminal();
    const sink = new ProgressSink({ mode: 'tty', hold: () => false, stream: t });
    assert.equal(sink.admit({ kind: 'step-start', guest: 'web1', step: 'connect' }), true);
    assert.equal(t.writes.at(-1), '\r\x1b[J  web1  connect…\n');
    sink.admit({ kind: 'step-start', guest: 'database', step: 'connect' });
    assert.equal(t.writes.at(-1), '\x1b[1A\r\x1b[J  web1      connect…\n  database  connect…\n');
    assert.equal(sink.admit(progress('web1', 30 * MiB)), false, 'progress goes to the display, not the log');
    assert.deepEqual(sink.lines(), [
      '  web1      snapshot-complete  30 MiB of 100 MiB (30%), 10 MiB/s, ETA 0:07',
      '  database  connect…',
    ]);
    assert.match(t.writes.at(-1)!, ansi(String.raw`^ESC\[2A\rESC\[J {2}web1 {6}snapshot-complete {2}30 MiB`));
    sink.admit({ kind: 'step-end', guest: 'web1', step: 'snapshot-complete', durationMs: 5, ok: true });
    sink.admit({ kind: 'step-end', guest: 'database', step: 'connect', durationMs: 5, ok: false, error: 'x' });
    assert.deepEqual(sink.lines(), ['  web1      snapshot-complete ok', '  database  connect FAILED']);
    sink.admit({ kind: 'run-end', job: 'j', runId: 'r', ok: 1, failed: 1, durationMs: 9, exitCode: 3 });
    assert.equal(t.writes.at(-1), '\x1b[2A\r\x1b[J', 'the run ends with the display taken away');
  });

  test('lines are cut to the terminal width so none wraps', () => {
    const t = terminal(40);
    const sink = new ProgressSink({ mode: 'tty', hold: () => false, stream: t });
    sink.admit(progress('web1', 30 * MiB));
    const [line] = sink.lines();
    assert.equal(line!.length, 39);
    assert.ok(line!.endsWith('…'));
  });

  test('nothing is written while a frozen window is open; the display catches up after', () => {
    const t = terminal();
    let frozen = false;
    const sink = new ProgressSink({ mode: 'tty', hold: () => frozen, stream: t });
    sink.admit({ kind: 'step-start', guest: 'web1', step: 'preflight' });
    const before = t.writes.length;
    frozen = true;
    sink.admit({ kind: 'step-start', guest: 'web1', step: 'freeze' });
    sink.admit({ kind: 'step-start', guest: 'web1', step: 'snapshot' });
    sink.admit(progress('db1', MiB));
    sink.around(() => undefined);
    assert.equal(t.writes.length, before, 'no write inside the window');
    frozen = false;
    sink.resume();
    assert.equal(t.writes.length, before + 1);
    assert.match(
      t.writes.at(-1)!,
      ansi(String.raw`^ESC\[1A\rESC\[J {2}web1 {2}snapshot…\n {2}db1 {3}snapshot-complete`),
    );
  });

  test("the log's lines go above the display: taken away, line written, drawn again", async () => {
    const t = terminal();
    const sink = new ProgressSink({ mode: 'tty', hold: () => false, stream: t });
    const order: string[] = [];
    const logger = createLogger({
      json: false,
      hold: () => false,
      around: (w) => sink.around(() => (order.push('log line'), w())),
    });
    await logger.ready();
    const log = (e: LogEvent) => {
      if (sink.admit(e)) logger(e);
    };
    log({ kind: 'step-start', guest: 'web1', step: 'snapshot' });
    t.writes.length = 0;
    log({ kind: 'step-end', guest: 'web1', step: 'snapshot', durationMs: 2, ok: true });
    // The step-end is drawn, then the log line: display away, line, display back.
    assert.deepEqual(order, ['log line']);
    assert.deepEqual(t.writes.slice(-2), ['\x1b[1A\r\x1b[J', '\r\x1b[J  web1  snapshot ok\n']);
    // A debug event that the logger does not write leaves the display alone.
    t.writes.length = 0;
    log({ kind: 'command-output', guest: 'web1', step: 'backup', stream: 'stdout', text: 'x' });
    assert.deepEqual(t.writes, []);
  });
});
