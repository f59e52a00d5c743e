import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import type { LogEvent } from '../../../src/log/events.js';
import { createLogger } from '../../../src/log/logger.js';

/** Runs `fn` with stderr's writes captured (winston's Console transport writes there). */
async function captureStderr(fn: (lines: readonly string[]) => Promise<void>): Promise<string[]> {
  const lines: string[] = [];
  const write = process.stderr.write.bind(process.stderr);
  process.stderr.write = ((chunk: string | Uint8Array) => {
    lines.push(String(chunk));
    return true;
  }) as typeof process.stderr.write;
  try {
    await fn(lines);
  } finally {
    process.stderr.write = write;
  }
  return lines;
}

const frozen = (n: number): LogEvent => ({ kind: 'frozen', guest: `g${n}`, filesystems: 1, freezeMs: 1 });

describe('createLogger', () => {
  test('events before winston has loaded wait, then are written in order', async () => {
    const captured: LogEvent[] = [];
    const lines = await captureStderr(async (written) => {
      const log = createLogger({ json: true, capture: captured });
      log(frozen(1));
      log(frozen(2));
      assert.equal(written.length, 0);
      await log.ready();
      log(frozen(3));
    });
    assert.equal(captured.length, 3);
    const guests = lines.map((l) => (JSON.parse(l) as { guest: string }).guest);
    assert.deepEqual(guests, ['g1', 'g2', 'g3']);
  });

  test('while held (a frozen window), nothing is written, even once winston is ready', async () => {
    let hold = true;
    const lines = await captureStderr(async (written) => {
      const log = createLogger({ json: true, hold: () => hold });
      await log.ready();
      log(frozen(1));
      log(frozen(2));
      await new Promise((r) => setImmediate(r));
      assert.equal(written.length, 0);
      hold = false;
      log.flush();
    });
    assert.equal(lines.length, 2);
  });

  test('ready() loads winston once and writes nothing by itself', async () => {
    const lines = await captureStderr(async () => {
      const log = createLogger({ json: true });
      const a = log.ready();
      assert.equal(log.ready(), a);
      await a;
    });
    assert.deepEqual(lines, []);
  });
});
