import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { setTimeout as sleep } from 'node:timers/promises';
import { ownStart, processAlive, processInfo } from '../../../src/process/pid.js';

test('this process is alive; with another start time (a reused pid) it is not', () => {
  assert.equal(processAlive(process.pid, ownStart()), true);
  assert.equal(processAlive(process.pid, '1'), false);
  assert.equal(processInfo(process.pid)?.state !== undefined, true);
});

test('a vanished pid is dead', async () => {
  const child = spawn('true');
  await once(child, 'exit');
  const start = '0';
  assert.equal(processAlive(child.pid!, start), false);
  assert.equal(processInfo(-1), undefined);
});

test('a zombie (exited, not reaped by its parent) is dead although its pid still exists', async (t) => {
  // sh starts a short child, then becomes `sleep`, which never reaps it: the child stays a zombie.
  const parent = spawn('sh', ['-c', 'sleep 0.1 & echo $!; exec sleep 30'], { stdio: ['ignore', 'pipe', 'ignore'] });
  t.after(() => parent.kill('SIGKILL'));
  const [line] = (await once(parent.stdout!, 'data')) as [Buffer];
  const pid = Number(line.toString().trim());
  const start = processInfo(pid)!.start;
  assert.equal(processAlive(pid, start), true, 'alive while it runs');
  for (let i = 0; i < 100 && processInfo(pid)?.state !== 'Z'; i++) await sleep(20);
  assert.equal(processInfo(pid)?.state, 'Z', 'a zombie now');
  assert.equal(processAlive(pid, start), false);
});

test('a stopped process is alive (SIGSTOP does not end a run)', async (t) => {
  const child = spawn('sleep', ['30']);
  t.after(() => {
    child.kill('SIGCONT');
    child.kill('SIGKILL');
  });
  await once(child, 'spawn');
  const start = processInfo(child.pid!)!.start;
  child.kill('SIGSTOP');
  for (let i = 0; i < 100 && processInfo(child.pid!)?.state !== 'T'; i++) await sleep(10);
  assert.equal(processInfo(child.pid!)?.state, 'T');
  assert.equal(processAlive(child.pid!, start), true);
});
