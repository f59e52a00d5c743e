/**
 * guest-set-vcpus and guest-set-memory-blocks on CPU and memory trees in a
 * temporary directory (the modules take the sysfs directory as a parameter).
 */
import { after, beforeEach, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setMemoryBlocks } from '../../../agent/src/admin/memory-blocks.js';
import { setVcpus } from '../../../agent/src/admin/vcpus.js';

const root = mkdtempSync(join(tmpdir(), 'quiesce-sysfs-set-'));
after(() => rmSync(root, { recursive: true, force: true }));

describe('setVcpus', () => {
  const cpu = join(root, 'cpu');
  beforeEach(() => {
    rmSync(cpu, { recursive: true, force: true });
    for (const d of ['cpu0', 'cpu1', 'cpu2', 'cpu3/online', 'cpu4']) mkdirSync(join(cpu, d), { recursive: true });
    writeFileSync(join(cpu, 'cpu1/online'), '1\n');
    writeFileSync(join(cpu, 'cpu2/online'), '0\n');
    writeFileSync(join(cpu, 'cpu4/online'), '');
  });
  const read = (p: string): string => readFileSync(join(cpu, p), 'latin1');
  const v = (id: number, online: boolean) => ({ logicalId: BigInt(id), online });

  test('writes one byte at the start, only where the state differs', () => {
    assert.equal(setVcpus([v(1, false), v(2, true), v(0, true)], cpu), 3n);
    assert.equal(read('cpu1/online'), '0\n');
    assert.equal(read('cpu2/online'), '1\n');
  });
  test('an empty list is 0', () => {
    assert.equal(setVcpus([], cpu), 0n);
  });
  test('a CPU without an online file cannot be offlined', () => {
    assert.throws(() => setVcpus([v(0, false)], cpu), { message: "logical processor #0 can't be offlined" });
  });
  test('the texts name the path with the doubled slash of the reference', () => {
    assert.throws(() => setVcpus([v(3, true)], cpu), { message: `open("${cpu}/cpu3//online"): Is a directory` });
    assert.throws(() => setVcpus([v(4, true)], cpu), { message: `pread("${cpu}/cpu4//online"): unexpected EOF` });
    assert.throws(() => setVcpus([v(9, true)], cpu), { message: `open("${cpu}/cpu9/"): No such file or directory` });
  });
  test('after a success the first failure ends the list and is dropped', () => {
    assert.equal(setVcpus([v(1, false), v(9, true), v(2, true)], cpu), 1n);
    assert.equal(read('cpu2/online'), '0\n');
  });
});

describe('setMemoryBlocks', () => {
  const mem = join(root, 'memory') + '/';
  beforeEach(() => {
    rmSync(mem, { recursive: true, force: true });
    for (const d of ['memory0', 'memory1', 'memory2', 'memory4', 'memory5/state'])
      mkdirSync(join(mem, d), { recursive: true });
    writeFileSync(join(mem, 'memory0/state'), 'online\n');
    writeFileSync(join(mem, 'memory1/state'), 'offline\n');
    writeFileSync(join(mem, 'memory4/state'), '');
  });
  const b = (i: bigint | number, online: boolean) => ({ physIndex: BigInt(i), online });

  test('one response per block, in order, error-code only where something failed', () => {
    assert.deepEqual(setMemoryBlocks([b(0, true), b(1, true), b(2, true), b(2, false), b(9, true)], mem), [
      { 'phys-index': 0n, response: 'success' },
      { 'phys-index': 1n, response: 'success' },
      { 'phys-index': 2n, response: 'success', 'error-code': 2 },
      { 'phys-index': 2n, response: 'operation-not-supported', 'error-code': 2 },
      { 'phys-index': 9n, response: 'not-found', 'error-code': 2 },
    ]);
    // The word is written at offset 0 without truncating.
    assert.equal(readFileSync(join(mem, 'memory1/state'), 'latin1'), 'onlinee\n');
  });
  test('an empty state file and a state directory fail with errno 0 and EISDIR', () => {
    assert.deepEqual(setMemoryBlocks([b(4, true), b(5, true)], mem), [
      { 'phys-index': 4n, response: 'operation-failed', 'error-code': 0 },
      { 'phys-index': 5n, response: 'operation-failed', 'error-code': 21 },
    ]);
  });
  test('the index is printed signed in the path: 2^64-1 is memory-1', () => {
    mkdirSync(join(mem, 'memory-1'));
    writeFileSync(join(mem, 'memory-1/state'), 'online\n');
    assert.deepEqual(setMemoryBlocks([b((1n << 64n) - 1n, false)], mem), [
      { 'phys-index': (1n << 64n) - 1n, response: 'success' },
    ]);
    assert.equal(readFileSync(join(mem, 'memory-1/state'), 'latin1'), 'offline');
  });
  test('no memory directory: not supported, ENOENT', () => {
    assert.deepEqual(setMemoryBlocks([b(0, true)], join(root, 'none') + '/'), [
      { 'phys-index': 0n, response: 'operation-not-supported', 'error-code': 2 },
    ]);
  });
  test('a memory "directory" that is a file: the response stays success, with ENOTDIR', () => {
    writeFileSync(join(root, 'memfile'), '');
    assert.deepEqual(setMemoryBlocks([b(0, true)], join(root, 'memfile') + '/'), [
      { 'phys-index': 0n, response: 'success', 'error-code': 20 },
    ]);
  });
});
