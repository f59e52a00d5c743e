// The agent without a transport: requests from any number of callers run one at a time, in the order
// they were issued, whether the queue was idle (the request starts at once) or busy.
import { afterEach, beforeEach, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { chmodSync, existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { setTimeout as sleep } from 'node:timers/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Agent, AFTER_REPLY_DELAY_MS } from '../../agent/src/agent.js';
import { parseOptions } from '../../agent/src/config/options.js';
import { MARKER_NAME } from '../../agent/src/freeze/marker.js';
import { AgentLog } from '../../agent/src/log.js';
import type { QObject } from '../../agent/src/protocol/index.js';

let dir: string;
beforeEach(() => (dir = mkdtempSync(join(tmpdir(), 'quiesce-agent-'))));
afterEach(() => rmSync(dir, { recursive: true, force: true }));

const request = (execute: string): QObject => new Map<string, QObject>([['execute', execute]]);

describe('agent request queue', () => {
  test('a request issued while another is still running waits for it; order holds', async () => {
    // The freeze's hook takes 300 ms, so the freeze is still running when the others are issued. The
    // include list is empty: nothing is frozen (the freeze counts 0 and runs the thaw hook too).
    const hook = join(dir, 'hook');
    writeFileSync(hook, '#!/bin/sh\nsleep 0.3\n');
    chmodSync(hook, 0o755);
    const cfg = parseOptions(
      ['-m', 'unix-listen', '-p', join(dir, 's'), '-t', dir, '--fsfreeze-include=', `--fsfreeze-hook=${hook}`],
      { QGA_CONF: join(dir, 'none.conf') },
    ).config;
    const agent = await Agent.create(cfg, new AgentLog(false, undefined));
    try {
      const done: string[] = [];
      const issue = (execute: string) =>
        Promise.resolve(agent.execute(request(execute))).then(({ outcome }) => {
          assert.ok(outcome && 'return' in outcome.reply, `${execute}: ${JSON.stringify(outcome?.reply)}`);
          done.push(execute);
        });
      await Promise.all([
        issue('guest-fsfreeze-freeze'),
        issue('guest-ping'),
        issue('guest-fsfreeze-status'),
        issue('guest-info'),
      ]);
      assert.deepEqual(done, ['guest-fsfreeze-freeze', 'guest-ping', 'guest-fsfreeze-status', 'guest-info']);
      // Idle again: the next request starts at once and answers.
      const { outcome } = await agent.execute(request('guest-ping'));
      assert.deepEqual(outcome?.reply, { return: {} });
    } finally {
      await agent.close();
    }
  });
});

describe('agent: work left by a reply', () => {
  test(`waits ${AFTER_REPLY_DELAY_MS} ms after the reply, and close() does it at once`, async () => {
    const logfile = join(dir, 'agent.log');
    const cfg = parseOptions(
      ['-m', 'unix-listen', '-p', join(dir, 's'), '-t', dir, '--fsfreeze-include=', '-l', logfile],
      {
        QGA_CONF: join(dir, 'none.conf'),
      },
    ).config;
    // Found frozen at start (a marker): the thaw leaves the marker's removal and the held log lines behind.
    writeFileSync(join(dir, MARKER_NAME), '');
    let agent = await Agent.create(cfg, new AgentLog(false, logfile));
    try {
      const t0 = performance.now();
      const { outcome } = await agent.execute(request('guest-fsfreeze-thaw'));
      assert.deepEqual(outcome?.reply, { return: 0 });
      assert.equal(existsSync(join(dir, MARKER_NAME)), true, 'the marker outlives the reply');
      assert.equal(existsSync(logfile), false, 'no line written yet');
      while (existsSync(join(dir, MARKER_NAME))) await sleep(2);
      assert.ok(performance.now() - t0 >= AFTER_REPLY_DELAY_MS - 1, 'not before the delay');
      agent.logger.close();
      assert.match(readFileSync(logfile, 'utf8'), /thawed 0 filesystem\(s\) \(command\)/);
    } finally {
      await agent.close();
    }
    // A stop right after the thaw: close() removes the marker and writes the lines without waiting.
    writeFileSync(join(dir, MARKER_NAME), '');
    rmSync(logfile);
    agent = await Agent.create(cfg, new AgentLog(false, logfile));
    await agent.execute(request('guest-fsfreeze-thaw'));
    await agent.close();
    assert.equal(existsSync(join(dir, MARKER_NAME)), false);
    assert.match(readFileSync(logfile, 'utf8'), /thawed 0 filesystem\(s\) \(command\)/);
  });
});
