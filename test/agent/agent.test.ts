// The agent without a transport: requests from any number of callers run one at a time, in the order
// they were issued, whether the queue was idle (the request starts at once) or busy.
import { afterEach, beforeEach, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { chmodSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Agent } from '../../agent/src/agent.js';
import { parseOptions } from '../../agent/src/config/options.js';
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
