import { after, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { COMMIT_FAILED, HandleCounter, parseCounter } from '../../../agent/src/file/handle-counter.js';

const root = mkdtempSync(join(tmpdir(), 'quiesce-counter-'));
after(() => rmSync(root, { recursive: true, force: true }));

const values: [string, bigint][] = [
  ['1000', 1000n],
  [' 12 ', 12n],
  ['12 trailing words', 12n],
  ['+12', 12n],
  ['0', 0n],
  ['abc', 0n],
  ['12x', 0n],
  ['0x10', 0n],
  ['', 0n],
  ['-5', 0n],
  ['9223372036854775807', 9223372036854775807n],
  ['9223372036854775808', 0n],
];
for (const [text, want] of values) {
  test(`fd_counter=${JSON.stringify(text)} reads as ${want}`, () => {
    assert.equal(parseCounter(text), want);
  });
}

test('no state file: handles start at 1000 and each take saves the next one', () => {
  const dir = mkdtempSync(join(root, 'fresh-'));
  const c = new HandleCounter(join(dir, 'qga.state'));
  assert.deepEqual([c.take(), c.take()], [1000n, 1001n]);
  assert.equal(readFileSync(join(dir, 'qga.state'), 'utf8'), '[global]\nfd_counter=1002\n');
});

test('a counter that cannot be saved fails the take and the number stays used', () => {
  const dir = mkdtempSync(join(root, 'gone-'));
  const warnings: string[] = [];
  const c = new HandleCounter(join(dir, 'missing-dir', 'qga.state'), (m) => warnings.push(m));
  assert.throws(() => c.take(), { message: COMMIT_FAILED });
  assert.throws(() => c.take(), { message: COMMIT_FAILED });
  assert.match(warnings[0]!, /^failed to write persistent state to .*: No such file or directory$/);
  const moved = new HandleCounter(join(dir, 'qga.state'));
  assert.equal(moved.take(), 1000n);
});

test('the file is read once: later edits by others do not move the counter back', () => {
  const dir = mkdtempSync(join(root, 'once-'));
  const path = join(dir, 'qga.state');
  writeFileSync(path, '[global]\nfd_counter=50\n');
  const c = new HandleCounter(path);
  assert.equal(c.take(), 50n);
  writeFileSync(path, '[global]\nfd_counter=3\n');
  assert.equal(c.take(), 51n);
});

test('the last int64 handle is refused rather than wrapped', () => {
  const dir = mkdtempSync(join(root, 'max-'));
  const path = join(dir, 'qga.state');
  writeFileSync(path, '[global]\nfd_counter=9223372036854775806\n');
  const c = new HandleCounter(path);
  assert.equal(c.take(), 9223372036854775806n);
  assert.throws(() => c.take(), { message: 'file handle counter exhausted' });
});
