/** One captured output stream: what is kept, when it counts as truncated, when it is closed. */
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { PassThrough } from 'node:stream';
import { setImmediate as tick } from 'node:timers/promises';
import { EXEC_MAX_OUTPUT, OutputCapture } from '../../../agent/src/exec/capture.js';

async function capture(chunks: readonly string[], limit: number): Promise<OutputCapture> {
  const stream = new PassThrough();
  let closed = 0;
  const c = new OutputCapture(stream, limit, () => closed++);
  for (const chunk of chunks) stream.write(chunk);
  assert.equal(c.closed, false);
  stream.end();
  while (!c.closed) await tick();
  assert.equal(closed, 1);
  return c;
}

describe('OutputCapture', () => {
  test("the reference's limit: 16 MiB per stream", () => {
    assert.equal(EXEC_MAX_OUTPUT, 16 * 1024 * 1024);
  });

  const cases: [name: string, chunks: string[], kept: string, truncated: boolean][] = [
    ['nothing', [], '', false],
    ['under the limit', ['ab', 'c'], 'abc', false],
    ['exactly the limit', ['abcd', 'ef'], 'abcdef', false],
    ['over the limit within one chunk', ['abcdefg'], 'abcdef', true],
    ['over the limit in a later chunk', ['abcdef', 'g'], 'abcdef', true],
    ['over the limit across chunks', ['abcd', 'efgh', 'ij'], 'abcdef', true],
  ];
  for (const [name, chunks, kept, truncated] of cases) {
    test(`${name}: keeps ${JSON.stringify(kept)}, truncated ${truncated}`, async () => {
      const c = await capture(chunks, 6);
      assert.equal(c.data().toString(), kept);
      assert.equal(c.length, kept.length);
      assert.equal(c.truncated, truncated);
      // Asking twice gives the same bytes.
      assert.equal(c.data().toString(), kept);
    });
  }

  test('a read error closes the capture like end of file', async () => {
    const stream = new PassThrough();
    const c = new OutputCapture(stream, 6);
    stream.write('ab');
    await tick();
    stream.destroy(new Error('EIO'));
    while (!c.closed) await tick();
    assert.equal(c.data().toString(), 'ab');
  });
});
