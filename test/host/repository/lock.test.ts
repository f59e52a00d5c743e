import { after, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { processInfo } from '../../../src/process/pid.js';
import { guestDir } from '../../../src/repository/layout.js';
import { lockRepository, REPO_LOCK } from '../../../src/repository/lock.js';

describe('repository lock', () => {
  const repo = mkdtempSync(join(tmpdir(), 'quiesce-repolock-'));
  after(() => rmSync(repo, { recursive: true, force: true }));
  const file = (guest: string): string => join(guestDir(repo, guest), REPO_LOCK);

  test('held: the file names this process; shared within it; removed on the last release', async () => {
    const a = await lockRepository(repo, 'vm', 'backup');
    const holder = JSON.parse(readFileSync(file('vm'), 'utf8')) as { pid: number; what: string };
    assert.equal(holder.pid, process.pid);
    assert.equal(holder.what, 'backup');
    const b = await lockRepository(repo, 'vm', 'prune');
    await b.release();
    assert.ok(existsSync(file('vm')), 'the first holder still has it');
    await b.release(); // twice is once
    assert.ok(existsSync(file('vm')));
    await a.release();
    assert.equal(existsSync(file('vm')), false);
  });

  test('a live holder in another process: LOCKED, naming it; once it is gone, taken over', async () => {
    const child = spawn('sleep', ['30'], { stdio: 'ignore' });
    try {
      await sleep(50);
      const start = processInfo(child.pid!)!.start;
      mkdirSync(guestDir(repo, 'vm2'), { recursive: true });
      writeFileSync(
        file('vm2'),
        JSON.stringify({ pid: child.pid, start, what: 'restore', since: '2026-12-07T00:00:00.000Z' }),
      );
      await assert.rejects(
        lockRepository(repo, 'vm2', 'prune'),
        (e: Error & { code?: string }) =>
          e.code === 'LOCKED' && e.message.includes(`pid ${child.pid} (restore, since 2026-12-07T00:00:00.000Z)`),
      );
    } finally {
      child.kill('SIGKILL');
      await new Promise((r) => child.once('exit', r));
    }
    const l = await lockRepository(repo, 'vm2', 'prune');
    assert.equal((JSON.parse(readFileSync(file('vm2'), 'utf8')) as { pid: number }).pid, process.pid);
    await l.release();
  });

  test('a reused pid (another start time) and debris are not holders', async () => {
    mkdirSync(guestDir(repo, 'vm3'), { recursive: true });
    writeFileSync(file('vm3'), JSON.stringify({ pid: process.pid, start: 'not-my-start', what: 'x', since: 'y' }));
    const a = await lockRepository(repo, 'vm3', 'backup');
    await a.release();
    writeFileSync(file('vm3'), '{"pid": 12');
    const b = await lockRepository(repo, 'vm3', 'backup');
    await b.release();
    assert.equal(existsSync(file('vm3')), false);
  });
});
