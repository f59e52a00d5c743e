import { test } from 'node:test';
import assert from 'node:assert/strict';
import { constants } from 'node:fs';
import { parseOpenMode } from '../../../agent/src/file/open-mode.js';

const { O_RDONLY, O_WRONLY, O_RDWR, O_CREAT, O_TRUNC, O_APPEND, O_NOCTTY, O_NONBLOCK } = constants;
const extra = O_NOCTTY | O_NONBLOCK;

const table: [string[], number][] = [
  [['r', 'rb'], O_RDONLY],
  [['w', 'wb'], O_WRONLY | O_CREAT | O_TRUNC],
  [['a', 'ab'], O_WRONLY | O_CREAT | O_APPEND],
  [['r+', 'rb+', 'r+b'], O_RDWR],
  [['w+', 'wb+', 'w+b'], O_RDWR | O_CREAT | O_TRUNC],
  [['a+', 'ab+', 'a+b'], O_RDWR | O_CREAT | O_APPEND],
];

for (const [forms, flags] of table) {
  for (const form of forms) {
    test(`mode ${form} opens with the reference's flags, non-blocking and without a controlling tty`, () => {
      const m = parseOpenMode(form);
      assert.equal(m.flags, flags | extra);
      assert.equal(m.create, (flags & O_CREAT) !== 0);
      assert.equal(m.append, (flags & O_APPEND) !== 0);
    });
  }
}

test('anything else is refused with the mode quoted', () => {
  for (const bad of ['', 'z', 'R', 'rw', 'wx', 're', 'r+b+', 'br', ' r', 'r ']) {
    assert.throws(() => parseOpenMode(bad), { message: `invalid file open mode '${bad}'` });
  }
});
