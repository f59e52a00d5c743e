// The addon's readiness watch (libuv poll on a descriptor) that the serial transports wait on, and its
// read/write that return -errno instead of throwing, on a real FIFO.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { closeSync, constants, mkdtempSync, openSync, readSync, rmSync, writeFileSync, writeSync } from 'node:fs';
import { constants as osConstants, tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { loadAddon, type Addon } from '../../../agent/src/freeze/ioctl.js';

describe('addon readiness watch and device I/O', () => {
  let dir: string;
  let fd: number;
  let addon: Addon;
  before(() => {
    const loaded = loadAddon();
    assert.ok('addon' in loaded, 'reason' in loaded ? loaded.reason : '');
    addon = loaded.addon;
    dir = mkdtempSync(join(tmpdir(), 'quiesce-watch-'));
    assert.equal(spawnSync('mkfifo', [join(dir, 'fifo')]).status, 0);
    fd = openSync(join(dir, 'fifo'), constants.O_RDWR | constants.O_NONBLOCK);
  });
  after(() => {
    closeSync(fd);
    rmSync(dir, { recursive: true, force: true });
  });

  test('calls back once per arm, only when there is something to read', async () => {
    const seen: number[] = [];
    const w = addon.watch(fd, (status) => seen.push(status));
    try {
      addon.arm(w);
      await sleep(150);
      assert.deepEqual(seen, [], 'nothing written yet');
      writeSync(fd, 'one');
      await sleep(50);
      assert.deepEqual(seen, [0]);
      // Still readable, but not armed again: no second call.
      await sleep(50);
      assert.deepEqual(seen, [0]);
      addon.arm(w);
      await sleep(50);
      assert.deepEqual(seen, [0, 0], 'armed again while data is waiting: called at once');
      assert.equal(readSync(fd, Buffer.alloc(16)), 3);
      addon.arm(w);
      await sleep(100);
      assert.deepEqual(seen, [0, 0], 'drained: waits again');
      writeSync(fd, 'two');
      await sleep(50);
      assert.deepEqual(seen, [0, 0, 0]);
      assert.equal(readSync(fd, Buffer.alloc(16)), 3);
    } finally {
      addon.unwatch(w);
    }
  });

  test('after unwatch no call comes and arm says the watch has ended', async () => {
    const seen: number[] = [];
    const w = addon.watch(fd, (status) => seen.push(status));
    addon.arm(w);
    addon.unwatch(w);
    addon.unwatch(w);
    writeSync(fd, 'x');
    await sleep(100);
    assert.deepEqual(seen, []);
    assert.throws(() => addon.arm(w), /the watch has ended/);
    assert.equal(readSync(fd, Buffer.alloc(16)), 1);
  });

  test('read and write return counts, and -errno rather than throwing (EAGAIN on an empty FIFO)', () => {
    const EAGAIN = osConstants.errno.EAGAIN;
    const buf = Buffer.alloc(8);
    assert.equal(addon.read(fd, buf), -EAGAIN, 'nothing to read');
    assert.equal(addon.write(fd, Buffer.from('..hello..'), 2, 5), 5, 'only buf[off, off + len)');
    assert.equal(addon.read(fd, buf), 5);
    assert.equal(buf.toString('latin1', 0, 5), 'hello');
    assert.equal(addon.read(fd, buf), -EAGAIN, 'drained');
    const big = Buffer.alloc(16);
    assert.equal(addon.write(fd, big, 0, 0), 0);
    assert.throws(() => addon.write(fd, big, 10, 7), /RangeError: offset and length must lie within the Buffer/);
    assert.throws(() => addon.write(fd, big, -1, 1), /RangeError/);
    assert.throws(
      () => addon.read(fd, 'text' as unknown as Buffer),
      /TypeError: a descriptor and a Buffer are required/,
    );
    assert.equal(addon.read(1 << 20, buf), -osConstants.errno.EBADF, 'a closed descriptor');
    assert.equal(addon.read(fd, buf), -EAGAIN, 'the failed calls wrote nothing');
  });

  test('a descriptor epoll cannot watch (a regular file) is refused, so the transport uses its timer', () => {
    const file = join(dir, 'plain');
    writeFileSync(file, 'x');
    const plain = openSync(file, 'r');
    try {
      assert.throws(() => addon.watch(plain, () => undefined), /operation not permitted/i);
    } finally {
      closeSync(plain);
    }
  });
});
